"""The one definition of every bit layout in int4jax. `kernels_pallas` imports it and never redefines it.

INT4 packing layout (`pack_int4`): two 4-bit two's-complement values per uint8 along `axis`; element 2i goes to the
LOW nibble and element 2i+1 to the HIGH nibble. Worked example: values [-8, 7] -> low nibble 0x8, high nibble 0x7
-> byte 0x78; values [1, -1] -> 0x1 | 0xF << 4 = 0xF1. `unpack_int4` sign-extends back to int8. This is the
low-nibble-first order of most GPU int4 layouts (CUTLASS s4); DeepSpeed's `quantization_utils.h` packs the first
element in the HIGH nibble, so byte streams from DeepSpeed must be nibble-swapped. Asymmetric 4-bit values [0, 15]
use `pack_uint4`/`unpack_uint4`: the same nibble order, unsigned (no sign extension).

Weights are stored (N, K) with K contiguous and packed to (N, K // 2) uint8; activations (M, K) -> (M, K // 2);
group scales of a weight are (N, K // group_size) float32 (group_size even, so a group never splits a byte).
Unpacking a byte b held as int8: low = (b << 4) >> 4 and high = b >> 4, both arithmetic shifts, which sign-extend.

`pack_int4_np` / `unpack_int4_np` are NumPy versions written independently of the jnp ones (int64 arithmetic),
used by exact references and tests to cross-check the jnp packers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_pack_input(q, axis: int, lo: int, hi: int, fn: str) -> int:
  if not jnp.issubdtype(q.dtype, jnp.integer):
    raise ValueError(f"{fn}: expects an integer array, got dtype {q.dtype}")
  ndim = q.ndim
  if not -ndim <= axis < ndim:
    raise ValueError(f"{fn}: axis={axis} is out of range for an array of rank {ndim}")
  axis %= ndim
  size = q.shape[axis]
  if size % 2:
    raise ValueError(f"{fn}: size {size} along axis {axis} must be even (two values per byte)")
  if _is_concrete(q) and np.size(q):
    a = np.asarray(q)
    mn, mx = int(a.min()), int(a.max())
    if mn < lo or mx > hi:
      raise ValueError(f"{fn}: values must lie in [{lo}, {hi}], got min={mn}, max={mx}")
  return axis


def _pack_nibbles(q: jax.Array, axis: int) -> jax.Array:
  v = jnp.moveaxis(jnp.asarray(q).astype(jnp.int32), axis, -1)
  v = v.reshape(v.shape[:-1] + (v.shape[-1] // 2, 2)) & 0xF
  packed = (v[..., 0] | (v[..., 1] << 4)).astype(jnp.uint8)
  return jnp.moveaxis(packed, -1, axis)


def _unpack_nibbles(p: jax.Array, axis: int, signed: bool) -> jax.Array:
  p = jnp.asarray(p)
  if p.dtype != jnp.uint8:
    raise ValueError(f"unpack: expects a uint8 array, got dtype {p.dtype}")
  ndim = p.ndim
  if not -ndim <= axis < ndim:
    raise ValueError(f"unpack: axis={axis} is out of range for an array of rank {ndim}")
  v = jnp.moveaxis(p.astype(jnp.int32), axis, -1)
  nib = jnp.stack([v & 0xF, v >> 4], axis=-1)
  if signed:
    nib = (nib ^ 8) - 8  # sign-extend 4-bit two's complement
  nib = nib.reshape(v.shape[:-1] + (2 * v.shape[-1],))
  return jnp.moveaxis(nib.astype(jnp.int8 if signed else jnp.uint8), -1, axis % ndim)


def pack_int4(q: jax.Array, *, axis: int = -1) -> jax.Array:
  """Pack signed integers in [-8, 7] (any int dtype) two per uint8 along `axis` (size halves).

  Element 2i -> low nibble, 2i+1 -> high nibble, two's complement: [-8, 7] -> 0x78. Value range is checked only
  for concrete inputs (ValueError naming min/max); shape/dtype checks always. Jittable.
  """
  q = q if hasattr(q, "dtype") else np.asarray(q)
  ax = _check_pack_input(q, axis, -8, 7, "pack_int4")
  return _pack_nibbles(q, ax)


def unpack_int4(p: jax.Array, *, axis: int = -1) -> jax.Array:
  """Inverse of `pack_int4`: uint8 -> int8 in [-8, 7], size along `axis` doubles."""
  return _unpack_nibbles(p, axis, signed=True)


def pack_uint4(q: jax.Array, *, axis: int = -1) -> jax.Array:
  """Pack unsigned integers in [0, 15] (asymmetric 4-bit qvalues); same nibble order as `pack_int4`."""
  q = q if hasattr(q, "dtype") else np.asarray(q)
  ax = _check_pack_input(q, axis, 0, 15, "pack_uint4")
  return _pack_nibbles(q, ax)


def unpack_uint4(p: jax.Array, *, axis: int = -1) -> jax.Array:
  """Inverse of `pack_uint4`: uint8 -> uint8 in [0, 15]."""
  return _unpack_nibbles(p, axis, signed=False)


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


def int4_to_e4m3(p: jax.Array, *, axis: int = -1) -> jax.Array:
  """Offline FP8 weight layout for the Hopper FP8 tensor-core W4A4 path: packed int4 -> float8_e4m3fn, one byte
  per value, size along `axis` doubles (weights (N, K/2) uint8 -> (N, K) e4m3, K contiguous, the K-major B
  operand of wgmma). Every int4 value is exact in e4m3 (3 mantissa bits cover |v| <= 8), so this is a re-encoding,
  not a rounding. Worked example: byte 0x78 (values [-8, 7]) -> e4m3 bytes [0xD0, 0x4E]; 0xF1 ([1, -1]) ->
  [0x38, 0xB8]; 0 -> 0x00. Made once at export (`kernels_pallas.ops.prepare_weight(w, layouts=("e4m3",))`), never
  per call. The values are exact; the FP8 tensor cores' sums are not (kernels_pallas/NOTES.md).
  """
  return unpack_int4(p, axis=axis).astype(jnp.float8_e4m3fn)


def as_jnp_int4(p: jax.Array) -> jax.Array:
  """Packed (..., K/2) uint8 -> jnp.int4 (..., K) as a reinterpretation of the same bytes (no arithmetic): XLA keeps
  jnp.int4 two per byte with the first element in the LOW nibble, which is exactly `pack_int4`'s order. Worked
  example: byte 0x78 -> int4 values [-8, 7]. Kernels TMA such arrays as int4 tiles. (Feeding the result straight
  into an XLA dot crashed XLA 0.11.2's gemm fusion; XLA paths use `unpack_int4(p).astype(jnp.int4)` instead.)"""
  q = jax.lax.bitcast_convert_type(jnp.asarray(p).astype(jnp.uint8), jnp.int4)
  return q.reshape(*p.shape[:-1], p.shape[-1] * 2)
