"""Datasets and the in-memory batch sources that feed `int4jax.train`.

`ArrayBatchSource` implements `train.BatchSource` over a dict of equal-length numpy arrays: batch k of epoch e is
a slice of a permutation seeded by (seed, e), so any global step maps to the same examples on every run, every
device count and after a resume. `eval_batches` cuts a split into fixed-shape batches (the last one padded, with
`weight` 0 on the padding) so the jitted eval step compiles once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


class ArrayBatchSource:
  """Deterministic shuffled batches over in-memory arrays; drops the last partial batch of each epoch."""

  def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, seed: int = 0):
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"arrays must have equal lengths, got {sizes}")
    self.arrays = dict(arrays)
    self.num_examples = next(iter(sizes.values()))
    if batch_size <= 0:
      raise ValueError(f"{batch_size=} must be positive")
    if self.num_examples < batch_size:
      raise ValueError(f"{self.num_examples=} is smaller than {batch_size=}: not one full batch per epoch")
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = self.num_examples // batch_size
    self._perm_epoch, self._perm = -1, None

  def position(self, step: int) -> tuple[int, int]:
    """(epoch, batch index within the epoch) of a global step: the data position stored in checkpoints."""
    return divmod(step, self.steps_per_epoch)

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    epoch, k = self.position(step)
    if epoch != self._perm_epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
      self._perm_epoch = epoch
    idx = np.sort(self._perm[k * self.batch_size:(k + 1) * self.batch_size])
    return {name: a[idx] for name, a in self.arrays.items()}


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-shape batches in order; adds `weight` (1 real, 0 padding). The padding repeats row 0."""
  n = len(next(iter(arrays.values())))
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    weight = (idx < n).astype(np.float32)
    idx = np.where(idx < n, idx, 0)
    batch = {name: a[idx] for name, a in arrays.items()}
    batch["weight"] = weight
    yield batch
