"""BART's denoising pretraining data: text infilling + sentence permutation (Lewis et al. 2020, §2.2 and §5.1).

A corpus is a list of documents, each a list of sentences (token ids). Here a sentence is one line of the source
text: PTB and WikiText are one sentence (or paragraph) per line, and XSum documents put one sentence per line.
Consecutive sentences are packed into segments of at most `target_max_len - 2` tokens (`pack_segments`); the model
reconstructs a segment (labels = <s> segment </s>) from its corrupted copy:
- sentence permutation: the segment's sentences in a random order;
- text infilling: span lengths drawn from Poisson(3) until `mask_ratio` (BART: 0.3) of the tokens are covered, each
  span (at a random start) replaced by one <mask>; a length-0 span inserts a <mask>.
Noise is drawn per batch from a generator seeded by (seed, step), so batches are deterministic and a resumed run
sees the same ones (the `train.BatchSource` contract).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from int4jax.data.summarization import IGNORE

POISSON_LAMBDA = 3.0


def pack_segments(documents: Sequence[Sequence[Sequence[int]]], max_tokens: int) -> list[list[list[int]]]:
  """Consecutive sentences of each document packed into segments of <= max_tokens tokens (long sentences cut)."""
  segments = []
  for doc in documents:
    current, size = [], 0
    for sent in doc:
      sent = list(sent)[:max_tokens]
      if not sent:
        continue
      if current and size + len(sent) > max_tokens:
        segments.append(current)
        current, size = [], 0
      current.append(sent)
      size += len(sent)
    if current:
      segments.append(current)
  return segments


def infill(tokens: Sequence[int], mask_id: int, ratio: float, rng: np.random.Generator) -> list[int]:
  """Text infilling on one token list (module docstring)."""
  n = len(tokens)
  masked = np.zeros(n, bool)
  inserts = np.zeros(n + 1, bool)
  target = int(round(ratio * n))
  covered, attempts = 0, 0
  while covered < target and attempts < 4 * n + 8:
    attempts += 1
    length = rng.poisson(POISSON_LAMBDA)
    start = int(rng.integers(0, n + 1 if length == 0 else n))
    if length == 0:
      inserts[start] = True
      continue
    masked[start:start + length] = True
    covered = int(masked.sum())
  out = []
  for i in range(n):
    if inserts[i]:
      out.append(mask_id)
    if masked[i]:
      if i == 0 or not masked[i - 1]:   # one <mask> per span
        out.append(mask_id)
    else:
      out.append(tokens[i])
  if inserts[n]:
    out.append(mask_id)
  return out


class DenoisingSource:
  """train.BatchSource of (corrupted segment -> segment) pairs in the summarization array layout."""

  def __init__(self, segments: list[list[list[int]]], batch_size: int, *, source_max_len: int, target_max_len: int,
               bos: int, eos: int, pad: int, mask: int, mask_ratio: float = 0.3, seed: int = 0):
    if len(segments) < batch_size:
      raise ValueError(f"{len(segments)} text segments are fewer than one batch of {batch_size}")
    self.segments, self.batch_size, self.seed = segments, batch_size, seed
    self.source_max_len, self.target_max_len = source_max_len, target_max_len
    self.bos, self.eos, self.pad, self.mask, self.mask_ratio = bos, eos, pad, mask, mask_ratio
    self.num_examples = len(segments)
    self.steps_per_epoch = self.num_examples // batch_size

  def position(self, step: int) -> tuple[int, int]:
    return divmod(step, self.steps_per_epoch)

  def example(self, index: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    sents = self.segments[index]
    original = [t for s in sents for t in s][:self.target_max_len - 2]
    order = rng.permutation(len(sents))
    permuted = [t for i in order for t in sents[i]]
    noised = infill(permuted, self.mask, self.mask_ratio, rng)[:self.source_max_len - 2]
    return [self.bos] + noised + [self.eos], [self.bos] + original + [self.eos]

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    epoch, k = self.position(step)
    perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
    rng = np.random.default_rng([self.seed, 1, step])
    src = np.full((self.batch_size, self.source_max_len), self.pad, np.int32)
    mask = np.zeros_like(src)
    labels = np.full((self.batch_size, self.target_max_len), IGNORE, np.int32)
    for row, idx in enumerate(np.sort(perm[k * self.batch_size:(k + 1) * self.batch_size])):
      s, t = self.example(int(idx), rng)
      src[row, :len(s)], mask[row, :len(s)], labels[row, :len(t)] = s, 1, t
    return {"input_ids": src, "attention_mask": mask, "labels": labels}

  def eval_arrays(self, num: int, seed: int = 12345) -> dict[str, np.ndarray]:
    """A fixed set of `num` noised examples (the last segments) for the denoising loss on held-out text."""
    rng = np.random.default_rng(seed)
    rows = [self.example(i, rng) for i in range(max(0, self.num_examples - num), self.num_examples)]
    src = np.full((len(rows), self.source_max_len), self.pad, np.int32)
    labels = np.full((len(rows), self.target_max_len), IGNORE, np.int32)
    for r, (s, t) in enumerate(rows):
      src[r, :len(s)], labels[r, :len(t)] = s, t
    return {"input_ids": src, "attention_mask": (np.arange(self.source_max_len)[None] <
                                                 np.array([len(s) for s, _ in rows])[:, None]).astype(np.int32),
            "labels": labels}


def read_text_documents(paths: Sequence[str], tokenizer, lines_per_document: int = 64) -> list[list[list[int]]]:
  """Text files -> documents of up to `lines_per_document` non-empty lines, each line one sentence of token ids."""
  docs = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      lines = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("=")]
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"] if lines else []
    for i in range(0, len(ids), lines_per_document):
      docs.append(ids[i:i + lines_per_document])
  return docs


def documents_from_texts(texts: Sequence[str], tokenizer) -> list[list[list[int]]]:
  """Multi-line documents (XSum) -> one document each, its lines as sentences."""
  docs = []
  for text in texts:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if lines:
      docs.append(tokenizer(lines, add_special_tokens=False)["input_ids"])
  return docs
