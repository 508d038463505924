"""A small classification task the project generates itself, for CPU demos and tests (no downloads).

Each example is `[CLS] w_1 ... w_L [SEP] [PAD]...` over a 64-token vocabulary. Tokens 5..14 are "positive",
15..24 "negative", the rest neutral filler. The label is 1 when positive tokens outnumber negative ones; on a
tie it is 1 when the first non-neutral token is positive (so order matters too). Counting plus a first-position
rule is easy for a 2-layer BERT to learn to ~95-100%, yet not separable by any single token, so a badly quantized
student visibly loses accuracy. Generation is a pure function of (split seed, size): identical on every machine.
"""

from __future__ import annotations

import numpy as np

VOCAB_SIZE = 64
PAD_ID, CLS_ID, SEP_ID = 0, 1, 2
POSITIVE = np.arange(5, 15)
NEGATIVE = np.arange(15, 25)
NEUTRAL = np.arange(25, VOCAB_SIZE)
NUM_LABELS = 2
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
DEFAULT_SIZES = {"train": 8192, "validation": 1024, "test": 1024}


def label_of(tokens: np.ndarray) -> int:
  """The rule, for one unpadded token sequence (no CLS/SEP)."""
  pos = int(np.isin(tokens, POSITIVE).sum())
  neg = int(np.isin(tokens, NEGATIVE).sum())
  if pos != neg:
    return int(pos > neg)
  marked = tokens[np.isin(tokens, POSITIVE) | np.isin(tokens, NEGATIVE)]
  return int(len(marked) > 0 and marked[0] in POSITIVE)


def make_split(split: str, num_examples: int | None = None, max_seq_length: int = 32) -> dict[str, np.ndarray]:
  """{input_ids, attention_mask, token_type_ids: [n, max_seq_length] int32, labels: [n] int32}."""
  if split not in SPLIT_SEEDS:
    raise ValueError(f"synthetic split {split!r} unknown; choose from {sorted(SPLIT_SEEDS)}")
  n = DEFAULT_SIZES[split] if num_examples is None else num_examples
  if max_seq_length < 8:
    raise ValueError(f"{max_seq_length=} must be at least 8 for the synthetic task")
  rng = np.random.default_rng([20230127, SPLIT_SEEDS[split]])
  ids = np.full((n, max_seq_length), PAD_ID, np.int32)
  labels = np.zeros((n,), np.int32)
  for i in range(n):
    length = int(rng.integers(4, max_seq_length - 1))
    num_marked = int(rng.integers(1, min(7, length) + 1))
    kind = rng.random(num_marked) < 0.5
    marked = np.where(kind, rng.choice(POSITIVE, num_marked), rng.choice(NEGATIVE, num_marked))
    tokens = rng.choice(NEUTRAL, length)
    tokens[rng.choice(length, num_marked, replace=False)] = marked
    ids[i, 0], ids[i, 1:length + 1], ids[i, length + 1] = CLS_ID, tokens, SEP_ID
    labels[i] = label_of(tokens)
  return {"input_ids": ids, "attention_mask": (ids != PAD_ID).astype(np.int32),
          "token_type_ids": np.zeros_like(ids), "labels": labels}
