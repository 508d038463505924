"""int4jax.data.lm: token files, run_clm block chunking, sliding windows, the training batch source."""
import pathlib

import numpy as np
import pytest

from int4jax.data import lm

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


class WordTokenizer:
  """Toy tokenizer: one id per whitespace word, plus an end-of-line token, ids in order of first sight."""

  def __init__(self, words=64):
    self.vocab = {"\n": 0, **{f"w{i}": i + 1 for i in range(words)}}

  def __len__(self):
    return len(self.vocab)

  def encode(self, text):
    ids = [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]
    return ids + ([0] if text.endswith("\n") else [])


def write_ptb(tmp_path, splits=lm.SPLITS, lines=20):
  for split in splits:
    (tmp_path / f"ptb.{split}.txt").write_text("".join(f" w{i} w{i + 1} w{i + 2} \n" for i in range(lines)))
  return tmp_path


def test_missing_token_file_is_named(tmp_path):
  write_ptb(tmp_path, splits=("train", "valid"))
  with pytest.raises(FileNotFoundError, match=r"ptb\.test\.txt"):
    lm.token_file_paths("ptb", tmp_path)
  with pytest.raises(FileNotFoundError, match="not a directory"):
    lm.token_file_paths("ptb", tmp_path / "nope")
  with pytest.raises(ValueError, match="dataset 'ptb2'"):
    lm.check_sources("ptb2", tmp_path)


def test_wikitext_file_names(tmp_path):
  for split in lm.SPLITS:
    (tmp_path / f"wiki.{split}.tokens").write_text(" = a = \n")
  paths = lm.token_file_paths("wikitext2", tmp_path)
  assert paths["valid"].name == "wiki.valid.tokens"


def test_chunk_blocks_drops_remainder_like_run_clm():
  ids = np.arange(23, dtype=np.int32)
  blocks = lm.chunk_blocks(ids, 5)
  assert blocks.shape == (4, 5)
  np.testing.assert_array_equal(blocks.reshape(-1), ids[:20])
  with pytest.raises(ValueError, match="fewer than one block"):
    lm.chunk_blocks(ids[:4], 5)


def test_sliding_window_with_stride_equal_block_is_non_overlapping():
  ids = np.arange(37, dtype=np.int32)
  windows, mask = lm.sliding_windows(ids, 8, 8)
  blocks = lm.chunk_blocks(ids, 8)
  np.testing.assert_array_equal(windows, blocks)
  np.testing.assert_array_equal(mask, lm.block_target_mask(*blocks.shape))
  split = lm.eval_split(ids, 8, 8)
  np.testing.assert_array_equal(split.input_ids, blocks)


@pytest.mark.parametrize("stride", [1, 3, 4, 7])
def test_sliding_window_scores_every_token_once(stride):
  n, block = 41, 8
  ids = np.arange(n, dtype=np.int32)  # id == position in the corpus
  windows, mask = lm.sliding_windows(ids, block, stride)
  scored = windows[mask > 0]
  last_end = windows[-1, -1] + 1
  np.testing.assert_array_equal(np.sort(scored), np.arange(1, last_end))  # each once, none skipped
  # Every scored token in a later window has at least block - stride tokens of context inside its window.
  cols = np.nonzero(mask[1:])[1]
  assert cols.min() >= max(block - stride, 1)


def test_eval_batches_pad_with_unscored_rows():
  split = lm.eval_split(np.arange(50, dtype=np.int32), 8)  # 6 blocks
  batches = list(split.batches(4))
  assert [b["input_ids"].shape for b in batches] == [(4, 8), (4, 8)]
  assert batches[1]["target_mask"][2:].sum() == 0
  assert sum(b["target_mask"].sum() for b in batches) == split.num_scored_tokens == 6 * 7


def test_train_source_is_deterministic_and_reshuffles():
  blocks = np.arange(40, dtype=np.int32).reshape(10, 4)
  a, b = lm.train_source(blocks, 3, seed=1), lm.train_source(blocks, 3, seed=1)
  assert a.steps_per_epoch == 3
  for step in (0, 5, 2, 7):  # any order, as after a resume
    np.testing.assert_array_equal(a.batch_at(step)["input_ids"], b.batch_at(step)["input_ids"])
  epoch0 = np.concatenate([a.batch_at(s)["input_ids"] for s in range(3)])
  assert len({tuple(r) for r in epoch0}) == 9  # no block twice in an epoch
  epoch1 = np.concatenate([a.batch_at(s)["input_ids"] for s in range(3, 6)])
  assert not np.array_equal(epoch0, epoch1)
  assert a.batch_at(0)["target_mask"][:, 0].sum() == 0
  with pytest.raises(ValueError, match="fewer than one batch"):
    lm.train_source(blocks, 11)


def test_load_corpus_from_files_and_cache(tmp_path):
  (tmp_path / "data").mkdir()
  data = write_ptb(tmp_path / "data")
  tok = WordTokenizer()
  corpus = lm.load_corpus("ptb", tok, data_dir=data, cache_dir=tmp_path / "cache")
  assert corpus.num_tokens() == {"train": 80, "valid": 80, "test": 80}  # 3 words + newline per line
  assert corpus.ids["train"][3] == 0  # the newline token ends each line
  again = lm.load_corpus("ptb", tok, data_dir=data, cache_dir=tmp_path / "cache")
  np.testing.assert_array_equal(again.ids["valid"], corpus.ids["valid"])
  assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


@pytest.mark.skipif(not (SHARED / "tokenizers" / "gpt2" / "vocab.bpe").is_file(), reason="../shared/data absent")
def test_gpt2_bpe_encodes_lines_with_newline_token():
  import transformers
  path = SHARED / "tokenizers" / "gpt2"
  tok = transformers.GPT2TokenizerFast(vocab=str(path / "encoder.json"), merges=str(path / "vocab.bpe"))
  ids = lm.encode_lines([" hello world \n", " the end \n"], tok)
  assert ids.dtype == np.int32 and list(ids).count(198) == 2


def test_hub_path_needs_datasets(monkeypatch):
  real = lm.importlib.util.find_spec
  monkeypatch.setattr(lm.importlib.util, "find_spec", lambda name: None if name == "datasets" else real(name))
  with pytest.raises(ImportError, match="--data_dir"):
    lm.check_sources("wikitext103", None)


@pytest.mark.skipif(not (SHARED / "ptb" / "ptb.valid.txt").is_file(), reason="../shared/data absent")
def test_real_ptb_valid_blocks():
  from int4jax import tokenizers
  corpus = lm.load_corpus("ptb", tokenizers.load_tokenizer(SHARED / "tokenizers" / "gpt2"), data_dir=SHARED / "ptb",
                          splits=("valid",))
  assert corpus.num_tokens() == {"valid": 92830}   # the count results/lm_ptb.md evaluates on
  assert lm.eval_split(corpus.ids["valid"], 512).input_ids.shape == (181, 512)
