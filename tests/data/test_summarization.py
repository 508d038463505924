"""Summarization data: JSON-lines reading, the deterministic split, BART tokenization, bad input; denoising noise."""
import json

import numpy as np
import pytest

from int4jax import tokenizers
from int4jax.data import denoising
from int4jax.data import summarization as sd


@pytest.fixture(scope="module")
def tok():
  return sd.bart_tokenizer(tokenizers.load_tokenizer("gpt2"))


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_bart_specials_added_to_gpt2_bpe(tok):
  ids = sd.special_ids(tok)
  assert ids == {"bos": 50257, "pad": 50258, "eos": 50259} and tok.mask_token_id == 50260
  assert sd.bart_tokenizer(tok) is tok and len(tok) == 50261      # idempotent


def test_tokenizer_without_bos_eos_is_refused():
  bert = tokenizers.load_tokenizer("bert-base-uncased")
  with pytest.raises(ValueError, match="has no BOS/EOS token"):
    sd.encode(sd.Examples(["a"], ["b"]), sd.bart_tokenizer(bert), 16, 8)


def test_encode_wraps_truncates_and_pads(tok):
  ex = sd.Examples(["one two three four five six seven eight", "hi"], ["a short summary", "x"])
  arr = sd.encode(ex, tok, source_max_len=6, target_max_len=5)
  body = tok(["one two three four five six seven eight"], add_special_tokens=False)["input_ids"][0]
  assert arr["input_ids"][0].tolist() == [50257] + body[:4] + [50259]
  assert arr["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0] and arr["input_ids"][1, 3:].tolist() == [50258] * 3
  x = tok(["x"], add_special_tokens=False)["input_ids"][0]
  assert arr["labels"][1].tolist() == [50257] + x + [50259] + [-100] * (3 - len(x))


def test_single_file_split_is_deterministic_and_disjoint(tmp_path):
  rows = [{"document": f"doc {i}", "summary": f"sum {i}"} for i in range(50)]
  path = _write(tmp_path / "x.jsonl", rows)
  train, held, desc = sd.load_splits("xsum", str(path), heldout_fraction=0.2, split_seed=3)
  train2, held2, _ = sd.load_splits("xsum", str(path), heldout_fraction=0.2, split_seed=3)
  assert len(held) == 10 and len(train) == 40 and held.documents == held2.documents and "seed 3" in desc
  assert not set(train.documents) & set(held.documents)
  assert sd.load_splits("xsum", str(path), heldout_fraction=0.2, split_seed=4)[1].documents != held.documents


def test_missing_fields_name_file_and_line(tmp_path):
  path = _write(tmp_path / "bad.jsonl", [{"document": "d", "summary": "s"}, {"text": "d", "summary": "s"}])
  with pytest.raises(ValueError, match=r"bad.jsonl:2: .*'document' and 'summary'.*\['summary', 'text'\]"):
    sd.load_splits("xsum", str(path))
  with pytest.raises(ValueError, match="not one of"):
    sd.spec("gigaword")


def test_infilling_masks_about_thirty_percent_in_spans():
  rng = np.random.default_rng(0)
  tokens = list(range(100, 400))
  out = denoising.infill(tokens, mask_id=7, ratio=0.3, rng=rng)
  kept = [t for t in out if t != 7]
  assert kept == [t for t in tokens if t in set(kept)]                 # order preserved, nothing invented
  assert 0.2 <= 1 - len(kept) / len(tokens) <= 0.45
  assert out.count(7) < len(tokens) - len(kept)                         # spans collapse to one <mask> each


def test_denoising_batches_are_deterministic():
  segs = denoising.pack_segments([[[1, 2, 3], [4, 5], [6, 7, 8, 9]]] * 6, max_tokens=6)
  assert segs[0] == [[1, 2, 3], [4, 5]] and segs[1] == [[6, 7, 8, 9]]
  src = denoising.DenoisingSource(segs, 4, source_max_len=10, target_max_len=8, bos=0, eos=2, pad=11, mask=99)
  a, b = src.batch_at(5), src.batch_at(5)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  originals = {(0, 1, 2, 3, 4, 5, 2), (0, 6, 7, 8, 9, 2)}
  for labels, ids, mask in zip(a["labels"], a["input_ids"], a["attention_mask"]):
    assert tuple(labels[labels >= 0]) in originals                      # the target is the clean segment
    noised = ids[mask == 1]
    assert noised[0] == 0 and noised[-1] == 2 and set(noised[1:-1]) <= set(range(1, 10)) | {99}
