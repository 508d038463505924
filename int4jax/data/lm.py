"""Language-modelling corpora (PTB, WikiText-2, WikiText-103) as fixed-size token blocks.

The evaluation follows Hugging Face's `run_clm` (the script the paper's GPT-2 numbers come from, paper_spec.md §2.6):
tokenize every line, concatenate the token ids of a split, cut them into blocks of `block_size` tokens and drop the
remainder; the model predicts tokens 1..block_size-1 of each block from the tokens before them, and the perplexity
is exp(mean token cross-entropy) over all blocks. A sliding-window variant (HF's "perplexity of fixed-length models"
recipe) scores every token once with up to `block_size - stride` tokens of extra context; with `stride ==
block_size` it is the non-overlapping evaluation exactly.

Batches are dicts of numpy arrays:
  input_ids   int32 [batch, block_size]
  target_mask float32 [batch, block_size]: 1 where the token is scored (predicted from the tokens before it);
              column 0 is always 0 (no context), and rows that only pad a final batch are all 0.

Where the text comes from:
- `--data_dir` with the standard token files: ptb.{train,valid,test}.txt (Mikolov split) or
  wiki.{train,valid,test}.tokens (WikiText); each line keeps its newline, which GPT-2's BPE maps to token 198, the
  same end-of-sentence marker the Mikolov files count;
- otherwise the Hugging Face `datasets` hub copies (imported lazily: the GPU machine does not have `datasets`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from int4jax.data import ArrayBatchSource, eval_batches

SPLITS = ("train", "valid", "test")
DATASETS = ("ptb", "wikitext2", "wikitext103")

# Standard file names inside --data_dir, per dataset.
_FILE_PATTERNS = {"ptb": "ptb.{split}.txt", "wikitext2": "wiki.{split}.tokens", "wikitext103": "wiki.{split}.tokens"}
# Hugging Face hub copies: (path, config name, text column, {our split: hub split}). The WikiText configs are the
# tokenized "-v1" ones, the same text as the wiki.*.tokens files. (Not exercised offline: no hub access here.)
_HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
_HF_SOURCES = {
    "ptb": ("ptb-text-only/ptb_text_only", None, "sentence", _HF_SPLITS),
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-v1", "text", _HF_SPLITS),
    "wikitext103": ("Salesforce/wikitext", "wikitext-103-v1", "text", _HF_SPLITS),
}


def _check_dataset(dataset: str) -> None:
  if dataset not in DATASETS:
    raise ValueError(f"dataset {dataset!r} is not one of {DATASETS}")


def token_file_paths(dataset: str, data_dir: str | os.PathLike, splits: Sequence[str] = SPLITS) -> dict[str, pathlib.Path]:
  """{split: path} of the standard token files; FileNotFoundError naming every missing file (checked up front)."""
  _check_dataset(dataset)
  bad = [s for s in splits if s not in SPLITS]
  if bad:
    raise ValueError(f"unknown split(s) {bad}; known: {SPLITS}")
  data_dir = pathlib.Path(data_dir).expanduser()
  if not data_dir.is_dir():
    raise FileNotFoundError(f"--data_dir {str(data_dir)!r} is not a directory")
  paths = {s: data_dir / _FILE_PATTERNS[dataset].format(split=s) for s in splits}
  missing = [str(p) for p in paths.values() if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"missing {dataset} token file(s): {', '.join(missing)}")
  return paths


def read_lines(path: str | os.PathLike) -> list[str]:
  """Lines of a token file, newlines kept (GPT-2 encodes them as the end-of-line token)."""
  with open(path, encoding="utf-8") as f:
    return f.readlines()


def load_hf_lines(dataset: str, split: str) -> list[str]:  # pragma: no cover - needs the hub
  """Lines of one split from the `datasets` hub copy, each ending in a newline like the token files."""
  _check_dataset(dataset)
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"--dataset={dataset} without --data_dir needs the `datasets` package; install it or pass "
                      "--data_dir with the token files") from e
  path, name, column, split_names = _HF_SOURCES[dataset]
  ds = datasets.load_dataset(path, name, split=split_names[split])
  return [t if t.endswith("\n") else t + "\n" for t in ds[column]]


def encode_lines(lines: Sequence[str], tokenizer: Any) -> np.ndarray:
  """Concatenated token ids (int32 [n_tokens]) of the lines, each line tokenized on its own as run_clm does."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is not None:  # transformers fast tokenizer: the Rust batch path, no length warnings
    ids = [e.ids for e in backend.encode_batch(list(lines), add_special_tokens=False)]
  else:  # anything with encode(text) -> list[int] (tests use a toy tokenizer)
    ids = [tokenizer.encode(line) for line in lines]
  flat = np.fromiter((t for row in ids for t in row), dtype=np.int32)
  return flat


def chunk_blocks(ids: np.ndarray, block_size: int) -> np.ndarray:
  """run_clm's group_texts: [n_blocks, block_size] from the concatenated ids, the remainder dropped."""
  if block_size < 2:
    raise ValueError(f"{block_size=} must be >= 2 (one token of context, one to predict)")
  n_blocks = len(ids) // block_size
  if n_blocks == 0:
    raise ValueError(f"{len(ids)} tokens are fewer than one block ({block_size=})")
  return np.asarray(ids[: n_blocks * block_size], np.int32).reshape(n_blocks, block_size)


def block_target_mask(n_blocks: int, block_size: int) -> np.ndarray:
  """float32 [n_blocks, block_size]: every token but the first of each block is scored."""
  mask = np.ones((n_blocks, block_size), np.float32)
  mask[:, 0] = 0.0
  return mask


def sliding_windows(ids: np.ndarray, block_size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
  """Windows of `block_size` tokens starting every `stride` tokens, each token scored once.

  Window w covers ids[w*stride : w*stride + block_size]; it scores the tokens that no earlier window scored, so
  from the second window on every scored token sees at least `block_size - stride` tokens of context. A window's
  first token is never scored (no context), so stride == block_size reproduces run_clm's blocks exactly; windows
  that would run past the end are dropped (the tail, as run_clm drops its remainder).
  Returns (input_ids int32 [n_windows, block_size], target_mask float32 [n_windows, block_size]).
  """
  if not 1 <= stride <= block_size:
    raise ValueError(f"{stride=} must be in [1, {block_size=}]")
  if len(ids) < block_size:
    raise ValueError(f"{len(ids)} tokens are fewer than one window ({block_size=})")
  starts = np.arange(0, len(ids) - block_size + 1, stride)
  windows = np.stack([ids[s: s + block_size] for s in starts]).astype(np.int32)
  mask = np.zeros(windows.shape, np.float32)
  mask[0, 1:] = 1.0
  mask[1:, block_size - stride:] = 1.0  # the last `stride` tokens of every later window are new
  mask[:, 0] = 0.0  # a window's first token has no context inside it (stride == block_size: run_clm exactly)
  return windows, mask


@dataclasses.dataclass
class LMSplit:
  """One evaluation split as windows and their target mask (see module docstring)."""
  input_ids: np.ndarray   # int32 [n, block_size]
  target_mask: np.ndarray  # float32 [n, block_size]

  @property
  def num_scored_tokens(self) -> int:
    return int(self.target_mask.sum())

  def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape batches (data.eval_batches; padding rows get an all-zero target_mask) for one compiled step."""
    for batch in eval_batches({"input_ids": self.input_ids, "target_mask": self.target_mask}, batch_size):
      batch["target_mask"] = batch["target_mask"] * batch.pop("weight")[:, None]
      yield batch


def eval_split(ids: np.ndarray, block_size: int, stride: int | None = None) -> LMSplit:
  """Non-overlapping blocks (stride None or == block_size, as run_clm) or sliding windows."""
  if stride is None or stride == block_size:
    blocks = chunk_blocks(ids, block_size)
    return LMSplit(blocks, block_target_mask(*blocks.shape))
  return LMSplit(*sliding_windows(ids, block_size, stride))


def train_source(blocks: np.ndarray, batch_size: int, seed: int = 42) -> ArrayBatchSource:
  """train.BatchSource over non-overlapping training blocks, reshuffled every epoch (data.ArrayBatchSource)."""
  blocks = np.asarray(blocks, np.int32)
  if len(blocks) < batch_size:
    raise ValueError(f"{len(blocks)} training blocks of {blocks.shape[1]} tokens are fewer than one batch "
                     f"({batch_size=})")
  return ArrayBatchSource({"input_ids": blocks, "target_mask": block_target_mask(*blocks.shape)}, batch_size, seed)


@dataclasses.dataclass
class LMCorpus:
  """Token ids of the splits that were asked for, and where they came from."""
  dataset: str
  ids: dict[str, np.ndarray]
  source: str

  def num_tokens(self) -> dict[str, int]:
    return {s: int(len(v)) for s, v in self.ids.items()}


def check_sources(dataset: str, data_dir: str | os.PathLike | None, splits: Sequence[str] = SPLITS) -> None:
  """Fail before any work: unknown dataset, missing token files, or no `datasets` package without --data_dir."""
  _check_dataset(dataset)
  if data_dir:
    token_file_paths(dataset, data_dir, splits)
    return
  if importlib.util.find_spec("datasets") is None:
    raise ImportError(f"--dataset={dataset} without --data_dir needs the `datasets` package (absent here); pass "
                      f"--data_dir with {_FILE_PATTERNS[dataset].format(split='{train,valid,test}')}")


def load_corpus(dataset: str, tokenizer: Any, *, data_dir: str | os.PathLike | None = None,
                splits: Sequence[str] = SPLITS, cache_dir: str | os.PathLike | None = None,
                log: Callable[[str], None] = lambda _: None) -> LMCorpus:
  """Tokenized splits from token files (data_dir) or the hub; cached as .npy in cache_dir when given."""
  check_sources(dataset, data_dir, splits)
  paths = token_file_paths(dataset, data_dir, splits) if data_dir else {}
  source = str(pathlib.Path(data_dir).resolve()) if data_dir else f"datasets:{_HF_SOURCES[dataset][:2]}"
  ids = {}
  for split in splits:
    cache = None
    if cache_dir is not None:
      stat = paths[split].stat() if data_dir else None
      key = f"{dataset}.{split}.{len(tokenizer)}.{stat.st_size if stat else 'hub'}.npy"
      cache = pathlib.Path(cache_dir) / key
      if cache.is_file():
        ids[split] = np.load(cache)
        continue
    lines = read_lines(paths[split]) if data_dir else load_hf_lines(dataset, split)
    ids[split] = encode_lines(lines, tokenizer)
    log(f"tokenized {dataset}/{split}: {len(lines)} lines -> {len(ids[split])} tokens")
    if cache is not None:
      cache.parent.mkdir(parents=True, exist_ok=True)
      np.save(cache, ids[split])
  return LMCorpus(dataset, ids, source)
