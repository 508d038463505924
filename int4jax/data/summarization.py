"""Summarization data (XSum, CNN/DailyMail) as padded BART batches.

Sources:
- local JSON lines (`--data_dir` holding `{train,validation,test}.jsonl`, or a single `*.jsonl` file such as the
  shared `xsum/test_subset1000.jsonl`) with `document`/`summary` fields (`article`/`highlights` for CNN/DM);
  a single-split source is split deterministically (`split_examples`: a seeded permutation, held-out fraction);
- otherwise Hugging Face `datasets` (`xsum`, `cnn_dailymail` 3.0.0), imported lazily (no hub access offline, and the
  GPU machine has no `datasets`).

Tokenization follows BART's fine-tuning scripts (HF `run_summarization`): source = <s> document </s> truncated to
`source_max_len` (1024), labels = <s> summary </s> truncated to `target_max_len` (128 XSum, 142 CNN/DM); the decoder
reads labels shifted right behind decoder_start (models/bart.shift_tokens_right). Arrays:
  input_ids, attention_mask  int32 [n, source_len]   right-padded with pad
  labels                      int32 [n, target_len]   -100 after the summary's </s>
The tokenizer must have BOS and EOS (BART wraps both sides with them) and a pad token; `bart_tokenizer` turns the
GPT-2 BPE (which only has <|endoftext|>) into BART's layout by adding <s>, <pad>, </s>, <mask>.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class SummarizationSpec:
  name: str
  document_field: str
  summary_field: str
  source_max_len: int
  target_max_len: int
  hf_path: str
  hf_config: str | None = None


DATASETS = {
    "xsum": SummarizationSpec("xsum", "document", "summary", 1024, 128, "EdinburghNLP/xsum"),
    "cnn_dailymail": SummarizationSpec("cnn_dailymail", "article", "highlights", 1024, 142, "abisee/cnn_dailymail",
                                       "3.0.0"),
}
SPLITS = ("train", "validation", "test")


def spec(name: str) -> SummarizationSpec:
  if name not in DATASETS:
    raise ValueError(f"dataset {name!r} is not one of {sorted(DATASETS)}")
  return DATASETS[name]


@dataclasses.dataclass(frozen=True)
class Examples:
  documents: list[str]
  summaries: list[str]

  def __len__(self) -> int:
    return len(self.documents)

  def take(self, idx: Sequence[int]) -> "Examples":
    return Examples([self.documents[i] for i in idx], [self.summaries[i] for i in idx])


def read_jsonl(path: str | os.PathLike, s: SummarizationSpec) -> Examples:
  """Every line a JSON object with the spec's document/summary fields (`document`/`summary` also accepted for
  CNN/DM); a line without them raises ValueError naming the file, line and fields."""
  docs, sums = [], []
  fields = [(s.document_field, s.summary_field), ("document", "summary")]
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = json.loads(line)
      pair = next(((d, m) for d, m in fields if isinstance(row.get(d), str) and isinstance(row.get(m), str)), None)
      if pair is None:
        raise ValueError(f"{path}:{n}: a {s.name} example needs string fields {s.document_field!r} and "
                         f"{s.summary_field!r}; this line has {sorted(row)}")
      docs.append(row[pair[0]])
      sums.append(row[pair[1]])
  if not docs:
    raise ValueError(f"{path}: no examples")
  return Examples(docs, sums)


def split_examples(examples: Examples, heldout_fraction: float, seed: int = 0) -> tuple[Examples, Examples]:
  """Deterministic (train, held-out) split of a single-split source: a permutation seeded by `seed`."""
  if not 0 < heldout_fraction < 1:
    raise ValueError(f"heldout_fraction={heldout_fraction} must be in (0, 1)")
  n = len(examples)
  n_heldout = max(1, int(round(n * heldout_fraction)))
  if n_heldout >= n:
    raise ValueError(f"{n} examples cannot be split with heldout_fraction={heldout_fraction}")
  perm = np.random.default_rng(seed).permutation(n)
  return examples.take(sorted(perm[n_heldout:])), examples.take(sorted(perm[:n_heldout]))


def load_splits(dataset: str, data_dir: str | os.PathLike | None = None, *, heldout_fraction: float = 0.1,
                split_seed: int = 0) -> tuple[Examples, Examples, str]:
  """(train, eval, description). data_dir: a .jsonl file or a folder of {train,validation,test}.jsonl (a folder
  with one .jsonl is split like a file); None reads `datasets` (train / validation)."""
  s = spec(dataset)
  if data_dir is None:
    return _load_hf(s, "train"), _load_hf(s, "validation"), f"datasets {s.hf_path} train/validation"
  path = pathlib.Path(data_dir).expanduser()
  if path.is_dir():
    named = {split: path / f"{split}.jsonl" for split in SPLITS if (path / f"{split}.jsonl").is_file()}
    if "train" in named and ("validation" in named or "test" in named):
      heldout = named.get("validation", named.get("test"))
      return read_jsonl(named["train"], s), read_jsonl(heldout, s), f"{named['train']} / {heldout}"
    files = sorted(path.glob("*.jsonl"))
    if len(files) != 1:
      raise FileNotFoundError(f"{str(path)!r} has neither train.jsonl + validation.jsonl nor exactly one .jsonl file "
                              f"(found {[f.name for f in files]})")
    path = files[0]
  if not path.is_file():
    raise FileNotFoundError(f"summarization data {str(path)!r} does not exist")
  train, heldout = split_examples(read_jsonl(path, s), heldout_fraction, split_seed)
  return train, heldout, f"{path} split {1 - heldout_fraction:.2f}/{heldout_fraction:.2f} (seed {split_seed})"


def _load_hf(s: SummarizationSpec, split: str) -> Examples:  # pragma: no cover - needs the hub
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise FileNotFoundError(f"no --data_dir given and the `datasets` package is missing for {s.name}") from e
  ds = datasets.load_dataset(s.hf_path, s.hf_config, split=split)
  return Examples(list(ds[s.document_field]), list(ds[s.summary_field]))


# ---------------------------------------------------------------------------------------------------------------
# Tokenization

BART_SPECIALS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "mask_token": "<mask>"}


def bart_tokenizer(tokenizer):
  """Adds BART's <s>, <pad>, </s>, <mask> to the GPT-2 BPE, whose only special token is <|endoftext|> (BART's
  vocabulary is GPT-2's BPE plus these four; the ids are appended after GPT-2's, deterministically). Any other
  tokenizer is returned unchanged (`special_ids` then says what it lacks)."""
  if tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>" and tokenizer.mask_token is None:
    tokenizer.add_special_tokens(BART_SPECIALS)
  return tokenizer


def special_ids(tokenizer) -> dict[str, int]:
  """{bos, eos, pad} token ids; ValueError when the tokenizer lacks one."""
  ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
  missing = [k for k, v in ids.items() if v is None]
  if missing:
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has no {'/'.join(missing).upper()} token; BART "
                     f"summarization wraps sources and summaries in BOS ... EOS and pads with PAD "
                     f"(data.summarization.bart_tokenizer adds them to a GPT-2 BPE)")
  return ids


def encode_texts(texts: Sequence[str], tokenizer, max_len: int) -> list[list[int]]:
  """<s> text </s>, the text's tokens cut to max_len - 2."""
  if max_len < 3:
    raise ValueError(f"max length {max_len} leaves no room for a token between BOS and EOS")
  ids = special_ids(tokenizer)
  body = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
  return [[ids["bos"]] + b[:max_len - 2] + [ids["eos"]] for b in body]


def _pad(rows: list[list[int]], width: int, value: int) -> np.ndarray:
  out = np.full((len(rows), width), value, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def encode(examples: Examples, tokenizer, source_max_len: int, target_max_len: int) -> dict[str, np.ndarray]:
  """Padded arrays (module docstring) at fixed widths source_max_len / target_max_len, so one jit serves all."""
  ids = special_ids(tokenizer)
  src = encode_texts(examples.documents, tokenizer, source_max_len)
  tgt = encode_texts(examples.summaries, tokenizer, target_max_len)
  input_ids = _pad(src, source_max_len, ids["pad"])
  return {"input_ids": input_ids, "attention_mask": (_pad(src, source_max_len, -1) >= 0).astype(np.int32),
          "labels": _pad(tgt, target_max_len, IGNORE)}


def check_lengths(s: SummarizationSpec, source_max_len: int | None, target_max_len: int | None,
                  max_positions: int) -> tuple[int, int]:
  """The spec's lengths unless overridden; each must fit the model's position table."""
  src = source_max_len or s.source_max_len
  tgt = target_max_len or s.target_max_len
  for name, v in (("source", src), ("target", tgt)):
    if not 3 <= v <= max_positions:
      raise ValueError(f"{name} max length {v} must be in [3, max_position_embeddings={max_positions}]")
  return src, tgt


def describe(tokenizer: Any) -> dict[str, Any]:
  return {"tokenizer_class": type(tokenizer).__name__, "tokenizer_vocab_size": len(tokenizer), **special_ids(tokenizer)}
