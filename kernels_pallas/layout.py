"""Packed INT4 layout shared by every kernel in `kernels_pallas`.

Layout (identical to `int4jax.quant.pack_int4`, which this module re-exports when it exists):
- values are signed int4 in [-8, 7], stored two's complement in a nibble;
- two values per uint8 byte along the *reduction* axis K: element 2i in the LOW nibble (bits 0-3), element 2i+1
  in the HIGH nibble (bits 4-7);
- weights are stored (N, K) with K contiguous and packed to (N, K // 2) uint8; activations (M, K) -> (M, K // 2);
- group scales of a weight are (N, K // group_size) float32, a group being `group_size` consecutive K elements
  (group_size is even, so a group never splits a byte).

Worked example: [-8, 7] -> low nibble 0x8 (-8), high nibble 0x7 (7) -> byte 0x78.
                [1, -1] -> low 0x1, high 0xF -> byte 0xF1.

Unpacking a byte b held as int8: low = (b << 4) >> 4 and high = b >> 4, both arithmetic shifts, which sign-extend.
Kernels never re-interleave: sum_k x[k] w[k] = x_even . w_even + x_odd . w_odd, so a packed GEMM is two int8 GEMMs,
one on the low nibbles and one on the high nibbles (see w4a4.py).

Note the order differs from DeepSpeed's quantizer, which packs the *high* nibble first (paper_spec.md §7.2).
"""

from __future__ import annotations

import numpy as np

# Scales of all-zero rows: S = max(absmax, ABSMAX_FLOOR) / 2^(bits-1), so q = 0 and S stays finite and positive.
ABSMAX_FLOOR = 1e-8

try:  # The library's packer is the source of truth; fall back to ours while it is being written.
  from int4jax.quant import pack_int4, unpack_int4  # noqa: F401
except ImportError:  # pragma: no cover - exercised only before int4jax.quant exists
  import jax.numpy as jnp

  def pack_int4(q, *, axis=-1):
    """int8 values in [-8, 7] -> uint8, the size along `axis` halved (element 2i low nibble)."""
    q = jnp.moveaxis(jnp.asarray(q), axis, -1)
    if q.shape[-1] % 2:
      raise ValueError(f"size along axis must be even, got {q.shape[-1]}")
    lo = q[..., 0::2].astype(jnp.uint8) & 0xF
    hi = q[..., 1::2].astype(jnp.uint8) & 0xF
    return jnp.moveaxis(lo | (hi << 4), -1, axis)

  def unpack_int4(p, *, axis=-1):
    """uint8 -> int8 values in [-8, 7], the size along `axis` doubled."""
    p = jnp.moveaxis(jnp.asarray(p), axis, -1).astype(jnp.uint8).view(jnp.int8)
    lo = (p << 4) >> 4
    hi = p >> 4
    out = jnp.stack([lo, hi], axis=-1).reshape(*p.shape[:-1], 2 * p.shape[-1])
    return jnp.moveaxis(out, -1, axis)


def pack_int4_np(q: np.ndarray) -> np.ndarray:
  """NumPy packer along the last axis; independent of the jnp one, used by references and tests."""
  q = np.asarray(q)
  if q.shape[-1] % 2:
    raise ValueError(f"last dimension must be even, got {q.shape[-1]}")
  if q.size and (q.min() < -8 or q.max() > 7):
    raise ValueError(f"int4 values must lie in [-8, 7], got [{q.min()}, {q.max()}]")
  u = q.astype(np.int64) & 0xF
  return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4_np(p: np.ndarray) -> np.ndarray:
  """NumPy unpacker along the last axis: uint8 (..., K/2) -> int8 (..., K)."""
  p = np.asarray(p).astype(np.int64)
  lo, hi = p & 0xF, p >> 4
  out = np.empty(p.shape[:-1] + (2 * p.shape[-1],), np.int64)
  out[..., 0::2], out[..., 1::2] = lo, hi
  return np.where(out >= 8, out - 16, out).astype(np.int8)
