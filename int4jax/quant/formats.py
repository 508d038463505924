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

FP4 E2M1 (`encode_e2m1` / `pack_fp4`): one 4-bit code per element, sign bit 3, exponent bits 2-1 (bias 1), mantissa
bit 0; exponent 0 is subnormal (0.5 * m). All 16 codes:
    0x0 +0    0x1 +0.5  0x2 +1.0  0x3 +1.5  0x4 +2.0  0x5 +3.0  0x6 +4.0  0x7 +6.0
    0x8 -0    0x9 -0.5  0xA -1.0  0xB -1.5  0xC -2.0  0xD -3.0  0xE -4.0  0xF -6.0
Codes pack two per byte in the same nibble order as INT4 (element 2i low nibble, 2i+1 high nibble), e.g. values
[1.5, -6.0] -> codes 0x3, 0xF -> byte 0xF3; [-0.5, 4.0] -> 0x9, 0x6 -> byte 0x69. This is the bit pattern of
ml_dtypes.float4_e2m1fn and of the OCP MX v1.0 FP4 element.

Block scales (`pack_block_fp4`), one byte per block, laid out as the QTensor's scale with the block axis squeezed
(a Flax kernel [K, N] quantized along K -> [K / group_size, N]):
  E8M0 (MXFP4): the biased exponent, byte = log2(S) + 127, 0xFF = NaN (never produced). S = 1 -> 0x7F,
    S = 2^-3 -> 0x7C, S = 2^-127 -> 0x00. Worked block: 32 weights with amax 0.09 -> floor(log2 0.09) = -4,
    S = 2^(-4-2) = 2^-6 -> byte 0x79; 0.09 = 5.76 S -> 6 S (code 0x7); 0.0703125 = 4.5 S -> 4 S (code 0x6, the
    grid step above 4 is 2); 0.078125 = 5 S is a tie -> 4 S (even mantissa, code 0x6).
  E4M3 (NVFP4): the float8_e4m3fn bit pattern (sign, 4 exponent bits bias 7, 3 mantissa bits; 0x7F = NaN), read by
    jax's own float8_e4m3fn conversion: S_b = 1.0 -> 0x38, 448 -> 0x7E, 0.5 -> 0x30, 2^-9 (smallest) -> 0x01.
    The float32 tensor scale S_t travels as a float32 scalar next to the bytes.

Ternary (`pack_ternary`, BitNet b1.58): four values per byte, 2 bits each, code = q + 1 (-1 -> 0b00, 0 -> 0b01,
+1 -> 0b10; 0b11 is invalid), element 4i + j in bits [2j, 2j + 1] (first element in the lowest bits, as the
nibble order above). Worked example: [-1, 0, 1, 1] -> 0b10_10_01_00 = 0xA4; [0, 0, 0, 0] -> 0x55. The offset code
makes decoding one subtraction; the per-tensor absmean scale stays a float32 scalar.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from int4jax.quant import numerics


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


# ------------------------------------------------------------------------------------------------------ FP4 E2M1

E2M1_VALUES = tuple(numerics.E2M1_GRID) + tuple(-v for v in numerics.E2M1_GRID)  # value of code 0x0 .. 0xF
_E2M1_TABLE = np.array(E2M1_VALUES, np.float32)
_E2M1_TABLE[8] = -0.0


def encode_e2m1(v: jax.Array) -> jax.Array:
  """E2M1 values (float, on the grid; e.g. `quantize(...).qvalue` of an fp4 spec) -> uint8 codes 0..15.

  The sign bit is the float's sign bit, so -0.0 -> 0x8. Concrete inputs off the grid raise ValueError.
  """
  v = jnp.asarray(v, jnp.float32)
  if _is_concrete(v) and v.size:
    a = np.abs(np.asarray(v))
    off = ~np.isin(a, numerics.E2M1_GRID)
    if off.any():
      raise ValueError(f"encode_e2m1: {int(off.sum())} values are not E2M1 values (first: {a[off][0]!r}); "
                       f"round with numerics.round_to_e2m1 first")
  grid = jnp.asarray(numerics.E2M1_GRID, jnp.float32)
  magnitude = jnp.argmax(jnp.abs(v)[..., None] == grid, axis=-1)
  return (magnitude | (jnp.signbit(v).astype(jnp.int32) << 3)).astype(jnp.uint8)


def decode_e2m1(codes: jax.Array) -> jax.Array:
  """uint8 codes 0..15 -> float32 E2M1 values (0x8 -> -0.0)."""
  return jnp.asarray(_E2M1_TABLE)[jnp.asarray(codes).astype(jnp.int32) & 0xF]


def pack_fp4(v: jax.Array, *, axis: int = -1) -> jax.Array:
  """E2M1 values -> uint8, two codes per byte along `axis` (element 2i low nibble), size along `axis` halves."""
  codes = encode_e2m1(v)
  ax = _check_pack_input(codes, axis, 0, 15, "pack_fp4")
  return _pack_nibbles(codes, ax)


def unpack_fp4(p: jax.Array, *, axis: int = -1) -> jax.Array:
  """Inverse of `pack_fp4`: uint8 -> float32 E2M1 values, size along `axis` doubles."""
  return decode_e2m1(_unpack_nibbles(p, axis, signed=False))


# ------------------------------------------------------------------------------------------------- scale bytes

def encode_e8m0(scale: jax.Array) -> jax.Array:
  """Powers of two 2^e, e in [-127, 127] -> uint8 biased exponents e + 127. Concrete inputs are checked.

  2^-127 is a float32 subnormal that XLA may flush to 0; a scale of exactly 0 therefore encodes as 0x00 too.
  """
  s = jnp.asarray(scale, jnp.float32)
  if _is_concrete(s) and s.size:
    a = np.asarray(s, np.float32)
    m, _ = np.frexp(a)
    bad = ~((a == 0) | ((m == 0.5) & (a >= 2.0 ** -127) & (a <= 2.0 ** 127)))
    if bad.any():
      raise ValueError(f"encode_e8m0: scales must be powers of two in [2^-127, 2^127], got {a[bad][0]!r}")
  _, e = jnp.frexp(s)
  return jnp.where(s > 0, e - 1 + 127, 0).astype(jnp.uint8)


def decode_e8m0(b: jax.Array) -> jax.Array:
  """uint8 biased exponents -> float32 2^(b - 127); 0xFF -> NaN (the E8M0 NaN)."""
  b = jnp.asarray(b).astype(jnp.int32)
  return jnp.where(b == 255, jnp.nan, jnp.ldexp(jnp.ones(b.shape, jnp.float32), b - 127))


def encode_e4m3(scale: jax.Array) -> jax.Array:
  """float32 values representable in float8_e4m3fn -> their uint8 bit patterns (checked for concrete inputs)."""
  s = jnp.asarray(scale, jnp.float32)
  f8 = s.astype(jnp.float8_e4m3fn)
  if _is_concrete(s) and s.size and not np.array_equal(np.asarray(f8.astype(jnp.float32)), np.asarray(s)):
    raise ValueError("encode_e4m3: scales must be exactly representable in float8_e4m3fn")
  return jax.lax.bitcast_convert_type(f8, jnp.uint8)


def decode_e4m3(b: jax.Array) -> jax.Array:
  """uint8 bit patterns -> float32 values of float8_e4m3fn."""
  return jax.lax.bitcast_convert_type(jnp.asarray(b, jnp.uint8), jnp.float8_e4m3fn).astype(jnp.float32)


@flax.struct.dataclass
class PackedFP4:
  """A block-scaled FP4 QTensor as bytes: `data` two E2M1 codes per byte along `axis` (size halves), `scale` one
  byte per block (E8M0 or E4M3, the QTensor's scale shape with the block axis squeezed), `tensor_scale` the NVFP4
  float32 scalar (None for MXFP4)."""
  data: jax.Array
  scale: jax.Array
  tensor_scale: Any
  spec: numerics.QuantSpec = flax.struct.field(pytree_node=False)
  axis: int = flax.struct.field(pytree_node=False)
  shape: tuple[int, ...] = flax.struct.field(pytree_node=False)


def pack_block_fp4(qt: numerics.QTensor) -> PackedFP4:
  """MXFP4 / NVFP4 QTensor -> PackedFP4 (group_size must be even so that a byte never spans two blocks)."""
  spec = qt.spec
  if spec.format != "fp4_e2m1" or spec.scale_format not in ("e8m0", "e4m3"):
    raise ValueError(f"pack_block_fp4: needs a block-scaled fp4_e2m1 QTensor (MXFP4 / NVFP4), got {spec}")
  if spec.group_size % 2:
    raise ValueError(f"pack_block_fp4: group_size={spec.group_size} must be even")
  scale = jnp.squeeze(qt.scale, axis=qt.axis + 1)
  scale_bytes = encode_e8m0(scale) if spec.scale_format == "e8m0" else encode_e4m3(scale)
  return PackedFP4(data=pack_fp4(qt.qvalue, axis=qt.axis), scale=scale_bytes, tensor_scale=qt.tensor_scale,
                   spec=spec, axis=qt.axis, shape=qt.shape)


def unpack_block_fp4(p: PackedFP4) -> numerics.QTensor:
  """Inverse of `pack_block_fp4` (bit-exact: `dequantize` of the result equals that of the packed QTensor)."""
  decode = decode_e8m0 if p.spec.scale_format == "e8m0" else decode_e4m3
  scale = jnp.expand_dims(decode(p.scale), p.axis + 1)
  return numerics.QTensor(qvalue=unpack_fp4(p.data, axis=p.axis), scale=scale, zero_point=None, spec=p.spec,
                          axis=p.axis, shape=p.shape, tensor_scale=p.tensor_scale)


# ----------------------------------------------------------------------------------------------------- ternary

def pack_ternary(q: jax.Array, *, axis: int = -1) -> jax.Array:
  """Ternary qvalues in {-1, 0, 1} -> uint8, four per byte along `axis` (code q + 1, element 4i + j in bits 2j..)."""
  q = q if hasattr(q, "dtype") else np.asarray(q)
  ax = _check_pack_input(q, axis, -1, 1, "pack_ternary")
  if q.shape[ax] % 4:
    raise ValueError(f"pack_ternary: size {q.shape[ax]} along axis {ax} must be a multiple of 4 (four per byte)")
  v = jnp.moveaxis(jnp.asarray(q).astype(jnp.int32) + 1, ax, -1)
  v = v.reshape(v.shape[:-1] + (v.shape[-1] // 4, 4))
  packed = v[..., 0] | (v[..., 1] << 2) | (v[..., 2] << 4) | (v[..., 3] << 6)
  return jnp.moveaxis(packed.astype(jnp.uint8), -1, ax)


def unpack_ternary(p: jax.Array, *, axis: int = -1) -> jax.Array:
  """Inverse of `pack_ternary`: uint8 -> int8 in {-1, 0, 1}, size along `axis` x4 (the invalid code 3 -> 2)."""
  p = jnp.asarray(p)
  if p.dtype != jnp.uint8:
    raise ValueError(f"unpack_ternary: expects a uint8 array, got dtype {p.dtype}")
  if not -p.ndim <= axis < p.ndim:
    raise ValueError(f"unpack_ternary: axis={axis} is out of range for an array of rank {p.ndim}")
  v = jnp.moveaxis(p.astype(jnp.int32), axis, -1)
  codes = jnp.stack([(v >> (2 * j)) & 0x3 for j in range(4)], axis=-1).reshape(v.shape[:-1] + (4 * v.shape[-1],))
  return jnp.moveaxis((codes - 1).astype(jnp.int8), -1, axis % p.ndim)


# ----------------------------------------------------------------------------------------------
# N:M-sparse INT4 weights, compressed (quant/sparsity.py makes the masks)
#
# A weight (N, K) int4 whose every group of M consecutive values along K holds at most N_keep non-zeros (2:4, 1:4)
# is stored as
#   values  (N, K*N_keep/M // 2) uint8: the kept int4 values of each row in K order, packed with `pack_int4`;
#   indices (N, K*N_keep/M // 4) uint8: each kept value's position inside its group (0..M-1, 2 bits since M <= 4),
#           four per byte, the first in the LOWEST two bits (the nibble order of pack_int4, one level down),
#           within a group in increasing position: NVIDIA's 2:4 metadata order.
# Scales are the dense weight's (one float32 per output channel, or per group along K) and are not changed.
# Worked example, 2:4, one row K=8: [0, 3, 0, -2 | 5, 0, 0, 1] keeps [3, -2, 5, 1] at positions [1, 3, 0, 3];
#   values  = pack_int4([3, -2, 5, 1]) = [0xE3, 0x15]   (3 | 0xE << 4; 5 | 1 << 4)
#   indices = [1 | 3 << 2 | 0 << 4 | 3 << 6] = [0xCD]
#   3 bytes for 8 weights: 0.375 bytes per parameter, against 0.5 for dense int4 (and 1/4 of that again for 1:4:
#   values 0.125 + indices 0.0625 = 0.1875), before scales.
# A group with fewer than N_keep non-zeros stores explicit zeros at its lowest free positions, so any weight
# that fits the pattern round-trips exactly.

_NM_INDEX_BITS = 2


def _check_nm(q: np.ndarray, n_keep: int, m: int) -> None:
  if not (0 < n_keep < m <= 1 << _NM_INDEX_BITS):
    raise ValueError(f"compress_nm: pattern {n_keep}:{m} needs 0 < N < M <= 4 (2-bit indices)")
  if q.ndim != 2:
    raise ValueError(f"compress_nm: expects a 2-D (N, K) weight, got shape {q.shape}")
  k = q.shape[1]
  kept = k * n_keep // m if k % m == 0 else None
  if kept is None or kept % 4:
    raise ValueError(f"compress_nm: K={k} must be a multiple of M={m} with K*N/M={k * n_keep / m:g} a multiple of "
                     f"4 (two values per byte, four indices per byte)")
  if q.size and (q.min() < -8 or q.max() > 7):
    raise ValueError(f"compress_nm: int4 values must lie in [-8, 7], got [{q.min()}, {q.max()}]")
  nonzero = (q.reshape(q.shape[0], k // m, m) != 0).sum(-1)
  if nonzero.max(initial=0) > n_keep:
    row, group = np.argwhere(nonzero > n_keep)[0]
    raise ValueError(f"compress_nm: row {row}, group {group} has {nonzero[row, group]} non-zeros; "
                     f"a {n_keep}:{m} weight has at most {n_keep}")


def compress_nm(q, n_keep: int = 2, m: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """(values, indices) of an N:M-sparse int4 weight (N, K), layout above. NumPy, host side (export time)."""
  q = np.asarray(q).astype(np.int64)
  _check_nm(q, n_keep, m)
  rows, k = q.shape
  g = q.reshape(rows, k // m, m)
  # Kept positions per group: the non-zeros first (stable, in increasing position), padded with the lowest zeros.
  pos = np.argsort(g == 0, axis=-1, kind="stable")[..., :n_keep]
  pos = np.sort(pos, axis=-1)
  values = np.take_along_axis(g, pos, axis=-1).reshape(rows, -1)
  idx = pos.reshape(rows, -1, 4)
  indices = (idx[..., 0] | idx[..., 1] << 2 | idx[..., 2] << 4 | idx[..., 3] << 6).astype(np.uint8)
  return pack_int4_np(values), indices


def decompress_nm(values: np.ndarray, indices: np.ndarray, n_keep: int = 2, m: int = 4) -> np.ndarray:
  """Inverse of `compress_nm`: (values, indices) -> dense int8 (N, K)."""
  vals = unpack_int4_np(values).astype(np.int64)
  ind = np.asarray(indices).astype(np.int64)
  pos = np.stack([(ind >> s) & 3 for s in (0, 2, 4, 6)], axis=-1).reshape(ind.shape[0], -1)
  if pos.shape != vals.shape:
    raise ValueError(f"decompress_nm: {vals.shape[1]} values vs {pos.shape[1]} indices per row")
  rows, kept = vals.shape
  groups = kept // n_keep
  dense = np.zeros((rows, groups, m), np.int64)
  np.put_along_axis(dense, pos.reshape(rows, groups, n_keep), vals.reshape(rows, groups, n_keep), axis=-1)
  return dense.reshape(rows, groups * m).astype(np.int8)


def nm_storage_bytes(shape: tuple[int, int], n_keep: int = 2, m: int = 4, *, scale_bytes: int = 0) -> dict:
  """Bytes of a compressed N:M int4 weight of `shape` (N, K) and bytes per (dense) parameter, with the dense int4
  size beside it; `scale_bytes` (e.g. 4 * N for per-channel fp32 scales) is added to both."""
  rows, k = shape
  kept = rows * k * n_keep // m
  values, indices = kept // 2, kept * _NM_INDEX_BITS // 8
  total = values + indices + scale_bytes
  dense = rows * k // 2 + scale_bytes
  return {"values_bytes": values, "index_bytes": indices, "scale_bytes": scale_bytes, "total_bytes": total,
          "bytes_per_param": total / (rows * k), "dense_int4_bytes_per_param": dense / (rows * k)}
