"""Quantizers (DeepSpeed/ZeroQuant integers, FP4 E2M1 with MX/NV block scales, BitNet ternary) and the STE.

Formulas (paper_spec.md §1.2, b = bits, all arithmetic in float32, rounding = `jnp.round`, i.e. round half to even):

  symmetric:  S = max|x| / 2^(b-1)          q = clip(round(x / S), -2^(b-1), 2^(b-1) - 1)        x^ = q * S
  asymmetric: S = (max x - min x) / 2^b     zp = round(min / S) * S
              q = clip(round((x - zp) / S), 0, 2^b - 1)                                          x^ = q * S + zp

max/min/max|x| run over one *group*, chosen by `QuantSpec.granularity` and the reduction `axis`:
  tensor          one scale for the whole array;
  channel, token  one scale per slice, reducing over `axis` only (same arithmetic; "token" names the dynamic
                  per-token activation use, "channel" the per-output-channel weight use);
  group           contiguous runs of `group_size` elements along `axis` (K % group_size == 0).
As in DeepSpeed the top element of a group lands one step past the integer range and is clipped: the symmetric
+max maps to 2^(b-1) -> 2^(b-1)-1 (error S), the asymmetric max to 2^b (+-0.5) -> 2^b-1 (error up to 1.5 S).

Deliberate deviations from the DeepSpeed code, all confined to degenerate groups:
  * S is floored at `_TINY` (float32 smallest normal), so an all-zero group gives S = _TINY, q = 0 and x^ = 0
    instead of 0/0 = NaN.
  * asymmetric S is also floored at `_REL_EPS * max(|max|, |min|)` (2^-23 relative). It only acts when a group's
    range is below ~2^(b-23) of its magnitude (constant or near-constant groups); it keeps x / S finite, so a
    constant group c dequantizes to c (to float32 precision) instead of overflowing.
  * the asymmetric integer is computed as round(x/S - round(min/S)) and S as max/2^b - min/2^b, which equal the
    DeepSpeed expressions in exact arithmetic but cannot overflow for |x| up to ~float32 max / 2^b. Results match
    a float64 implementation of the DeepSpeed formulas except at exact rounding ties.
  * qvalue dtype: int8 for symmetric, **uint8** for asymmetric (asymmetric 8-bit needs [0, 255]).
Integers are deterministic; dequantized floats may differ by 1 ulp between call sites because XLA may fuse
q*S + zp into an FMA inside a larger jit.

Non-finite inputs: `quantize`/`fake_quant` on a concrete (non-traced) array containing NaN or +-inf raise
ValueError. Under a trace (jit, grad, vmap) no check is possible; a group that contains a non-finite value gets
scale NaN (and zero point NaN), its qvalues are 0, and every dequantized element of that group is NaN. Other groups
are unaffected.

The straight-through estimator (`fake_quant`) is a `jax.custom_jvp`: the forward is exactly
dequantize(quantize(x)); the tangent is the identity, or is zeroed outside the closed interval [lo, hi] when
`spec.clip = (lo, hi)` is set (the input is clamped to [lo, hi] before the scale is computed). Scales and zero
points get no gradient. Works under jit, grad, vmap and forward-mode autodiff.

Bit layouts (INT4 packing, E2M1 nibbles, E8M0 / E4M3 scale bytes, ternary 2-bit) live in `int4jax.quant.formats`.

Other formats (`QuantSpec.format`, default "int"; everything above is the "int" format)
-------------------------------------------------------------------------------------
fp4_e2m1 (bits=4, symmetric only): elements are FP4 E2M1 values {0, 0.5, 1, 1.5, 2, 3, 4, 6} with a sign.
  q = RNE_E2M1(x / S), x^ = q * S, where RNE_E2M1 rounds |x/S| to the nearest grid value, ties to the even
  mantissa code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4) and saturates at 6
  (the "satfinite" conversion of the OCP spec; E2M1 has no inf/NaN). The sign is kept, so tiny negatives give -0.
  The scale S depends on `scale_format`:
  * "e8m0" = MXFP4, OCP Microscaling Formats (MX) v1.0 §6.3 with granularity="group", group_size=32: one shared
    power-of-two scale per block, S = 2^(floor(log2(amax_block)) - emax_elem), emax_elem = 2 for E2M1, the exponent
    clamped to the E8M0 range [-127, 127]. This is the spec's rounding-down variant (not the later "round the scale
    up" proposals), so amax/S lies in [4, 8) and elements above 6 S saturate to 6 S, as the spec says.
    An all-zero block gets exponent -127 and q = 0. (2^-127 is a float32 subnormal that XLA flushes to 0, so blocks
    with amax < 2^-124 dequantize to 0; no real weight or activation gets there.)
  * "e4m3" = NVFP4 (NVIDIA's description: blocks of 16, E4M3 block scale, FP32 tensor scale), group_size=16:
    tensor scale S_t = amax_tensor / (6 * 448) in float32 (floored at the smallest normal), block scale
    S_b = E4M3_RNE(amax_block / (6 * S_t)) (<= 448 by construction, clamped anyway), S = S_b * S_t (one float32
    product), q = RNE_E2M1(x / S), or 0 where S_b underflows to 0 in E4M3. Choice between variants: the tensor
    scale covers the whole array passed in, as the spec's "per-tensor" says; for dynamic activations that is the
    whole activation tensor of the batch (one token's quantization depends on the batch amax only through S_t, which
    moves S_b within one E4M3 rounding step). We divide by S (NVIDIA's reference kernels multiply by 1/S; the two
    differ only at float32 rounding ties).
  * "fp32": S = amax / 6 in float32 per group (a plain per-channel/-token FP4 quantizer; no preset uses it).
ternary (bits=2, symmetric only, BitNet b1.58 absmean): gamma = mean|x| over the group, S = gamma + eps with
  eps = 1e-5 (the paper writes gamma + eps without a value; 1e-5 is the clamp of the released b1.58 code),
  q = clip(round(x / S), -1, 1), x^ = q * S. The presets use granularity="tensor" (one gamma per weight matrix,
  as BitNet); the other granularities compute the same absmean per channel/token/group.
For both, `clip` and the STE behave as for integers (clamp before the scale, gradient masked outside the clip);
fp4 qvalues are float32 arrays holding E2M1 values, ternary qvalues int8 in {-1, 0, 1}.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Granularity = Literal["tensor", "channel", "group", "token"]
GRANULARITIES = ("tensor", "channel", "group", "token")
Format = Literal["int", "fp4_e2m1", "ternary"]
FORMATS = ("int", "fp4_e2m1", "ternary")
ScaleFormat = Literal["fp32", "e8m0", "e4m3"]
SCALE_FORMATS = ("fp32", "e8m0", "e4m3")

E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # the 8 magnitudes of FP4 E2M1, codes 0..7
E2M1_MAX = 6.0
E2M1_EMAX = 2          # exponent of E2M1's largest normal (6 = 1.5 * 2^2): OCP MX emax_elem
E8M0_EXP_RANGE = (-127, 127)
E4M3_MAX = 448.0       # largest finite float8_e4m3fn
TERNARY_EPS = 1e-5

_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32, ~1.18e-38
_REL_EPS = 2.0 ** -23


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
  """Integer range (lo, hi) of a b-bit quantizer: sym [-2^(b-1), 2^(b-1)-1], asym [0, 2^b-1]."""
  _check_bits(bits)
  if symmetric:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
  return 0, 2 ** bits - 1


def _check_bits(bits: Any) -> None:
  if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
    raise ValueError(f"bits must be an int in [2, 8], got {bits!r}")


@dataclasses.dataclass(frozen=True)
class QuantSpec:
  """What one quantizer does. Hashable (usable as a static jit argument / Linen attribute)."""
  bits: int                                 # 2..8
  symmetric: bool = True
  granularity: Granularity = "channel"
  group_size: int | None = None             # required iff granularity == "group": elements along `axis` per scale
  clip: tuple[float, float] | None = None   # pre-quantization clamp [lo, hi] (the paper's "clip values")
  format: Format = "int"                    # element format (module doc): int | fp4_e2m1 | ternary
  scale_format: ScaleFormat = "fp32"        # fp32 | e8m0 (MX block scale) | e4m3 (NV block scale x fp32 tensor scale)

  def __post_init__(self):
    if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 2 <= self.bits <= 8:
      raise ValueError(f"QuantSpec.bits must be an int in [2, 8], got {self.bits!r}")
    object.__setattr__(self, "bits", int(self.bits))
    if not isinstance(self.symmetric, (bool, np.bool_)):
      raise ValueError(f"QuantSpec.symmetric must be a bool, got {self.symmetric!r}")
    object.__setattr__(self, "symmetric", bool(self.symmetric))
    if self.granularity not in GRANULARITIES:
      raise ValueError(f"QuantSpec.granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
    if self.granularity == "group":
      gs = self.group_size
      if isinstance(gs, bool) or not isinstance(gs, (int, np.integer)) or gs < 1:
        raise ValueError(f"QuantSpec.group_size must be a positive int when granularity='group', got {gs!r}")
      object.__setattr__(self, "group_size", int(gs))
    elif self.group_size is not None:
      raise ValueError(f"QuantSpec.group_size must be None unless granularity='group' "
                       f"(granularity={self.granularity!r}, group_size={self.group_size!r})")
    if self.clip is not None:
      try:
        lo, hi = (float(c) for c in self.clip)
      except (TypeError, ValueError):
        raise ValueError(f"QuantSpec.clip must be a pair (lo, hi) of floats, got {self.clip!r}") from None
      if not lo < hi:  # also rejects NaN
        raise ValueError(f"QuantSpec.clip must satisfy lo < hi, got {self.clip!r}")
      object.__setattr__(self, "clip", (lo, hi))
    self._check_format()

  def _check_format(self):
    if self.format not in FORMATS:
      raise ValueError(f"QuantSpec.format must be one of {FORMATS}, got {self.format!r}")
    if self.scale_format not in SCALE_FORMATS:
      raise ValueError(f"QuantSpec.scale_format must be one of {SCALE_FORMATS}, got {self.scale_format!r}")
    if self.format == "int":
      if self.scale_format != "fp32":
        raise ValueError(f"QuantSpec.scale_format={self.scale_format!r} needs format='fp4_e2m1' (integer scales "
                         f"are fp32)")
      return
    need_bits = {"fp4_e2m1": 4, "ternary": 2}[self.format]
    if self.bits != need_bits:
      raise ValueError(f"QuantSpec.format={self.format!r} needs bits={need_bits}, got bits={self.bits}")
    if not self.symmetric:
      raise ValueError(f"QuantSpec.format={self.format!r} is symmetric by construction (sign-magnitude); "
                       f"asymmetric quantization applies to the integer format only")
    if self.format == "ternary" and self.scale_format != "fp32":
      raise ValueError(f"QuantSpec.format='ternary' uses an fp32 absmean scale, got scale_format="
                       f"{self.scale_format!r}")
    if self.scale_format != "fp32" and self.granularity != "group":
      raise ValueError(f"QuantSpec.scale_format={self.scale_format!r} is a block scale and needs "
                       f"granularity='group' (MXFP4: group_size=32, NVFP4: 16), got {self.granularity!r}")

  @property
  def qrange(self) -> tuple[int, int]:
    """Integer range of the qvalues; ternary (-1, 1). FP formats have no integer range (ValueError)."""
    if self.format == "ternary":
      return -1, 1
    if self.format != "int":
      raise ValueError(f"QuantSpec.format={self.format!r} has no integer range (values lie on the E2M1 grid)")
    return int_range(self.bits, self.symmetric)

  def to_dict(self) -> dict:
    """JSON-ready dict. `format`/`scale_format` appear only when not the integer defaults, so integer specs keep
    the exact dict (and run-directory config) of older versions; `from_dict` fills the defaults back in."""
    d = {"bits": self.bits, "symmetric": self.symmetric, "granularity": self.granularity,
         "group_size": self.group_size, "clip": None if self.clip is None else list(self.clip)}
    if self.format != "int":
      d["format"] = self.format
    if self.scale_format != "fp32":
      d["scale_format"] = self.scale_format
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "QuantSpec":
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"QuantSpec.from_dict: unknown fields {sorted(unknown)}")
    d = dict(d)
    if d.get("clip") is not None:
      d["clip"] = tuple(d["clip"])
    return cls(**d)


@flax.struct.dataclass
class QTensor:
  """A quantized array. `qvalue` has the original shape; `scale`/`zero_point` broadcast to the grouped shape.

  Grouped shape (see `grouped_shape`): the original shape for tensor/channel/token; for group, `axis` of size K is
  split into (K // group_size, group_size), e.g. a Flax kernel [K, N] with axis=0 -> [K/g, g, N], scale [K/g, 1, N].
  """
  qvalue: jax.Array             # int8 (sym, [-2^(b-1), 2^(b-1)-1]) or uint8 (asym, [0, 2^b-1]);
                                # fp4_e2m1: float32 E2M1 values; ternary: int8 in {-1, 0, 1}
  scale: jax.Array              # float32, keepdims over the reduced axes of the grouped shape
                                # (e8m0: exact powers of two; e4m3: the E4M3 block scale S_b as float32)
  zero_point: jax.Array | None  # float32 (zp = round(min/S)*S, x^ = q*S + zp); None if symmetric
  spec: QuantSpec = flax.struct.field(pytree_node=False)
  axis: int = flax.struct.field(pytree_node=False)              # normalised (non-negative) reduction axis
  shape: tuple[int, ...] = flax.struct.field(pytree_node=False)  # original shape
  tensor_scale: jax.Array | None = None  # float32 scalar S_t of NVFP4 (x^ = q * (scale * S_t)); None otherwise


def _normalize_axis(axis: int, ndim: int, granularity: str) -> int:
  if granularity == "tensor" and ndim == 0:
    return 0
  if not -ndim <= axis < ndim:
    raise ValueError(f"axis={axis} is out of range for an array of rank {ndim}")
  return axis % ndim


def grouped_shape(shape: tuple[int, ...], spec: QuantSpec, axis: int) -> tuple[int, ...]:
  """The shape the scales broadcast against (see QTensor). `axis` must be normalised."""
  shape = tuple(shape)
  if spec.granularity != "group":
    return shape
  k, g = shape[axis], spec.group_size
  if k % g:
    raise ValueError(f"K={k} (size along axis {axis}) must be a multiple of group_size={g}")
  return shape[:axis] + (k // g, g) + shape[axis + 1:]


def _reduce_axes(ndim_grouped: int, spec: QuantSpec, axis: int) -> tuple[int, ...]:
  if spec.granularity == "tensor":
    return tuple(range(ndim_grouped))
  return (axis + 1,) if spec.granularity == "group" else (axis,)


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_finite(x, fn: str) -> None:
  if _is_concrete(x):
    a = np.asarray(x)
    if not np.all(np.isfinite(a)):
      raise ValueError(f"{fn}: input contains NaN/inf ({int(np.sum(np.isnan(a)))} NaN, "
                       f"{int(np.sum(np.isinf(a)))} inf); quantization scales would be undefined")


@functools.partial(jax.jit, static_argnames=("gshape", "red", "symmetric", "has_clip"))
def _quantize_core(x, consts, *, gshape, red, symmetric, has_clip):
  """x: float32 -> (q as float32 integers in x's shape, S, zp or None), S/zp in the grouped shape.

  `consts` = [levels, q_lo, q_hi, clip_lo, clip_hi] travel as a traced array so that one compiled program serves
  every bit width (levels = 2^(b-1) for sym, 2^b for asym).
  """
  levels, lo_q, hi_q, c_lo, c_hi = (consts[i] for i in range(5))
  xg = x.reshape(gshape)
  if has_clip:
    xg = jnp.clip(xg, c_lo, c_hi)
  if symmetric:
    amax = jnp.max(jnp.abs(xg), axis=red, keepdims=True)
    s = jnp.maximum(amax / levels, _TINY)
    s = jnp.where(jnp.isfinite(amax), s, jnp.nan)
    q = jnp.clip(jnp.round(xg / s), lo_q, hi_q)
    zp = None
  else:
    mx = jnp.max(xg, axis=red, keepdims=True)
    mn = jnp.min(xg, axis=red, keepdims=True)
    s = jnp.maximum(mx / levels - mn / levels, jnp.maximum(_REL_EPS * jnp.maximum(jnp.abs(mx), jnp.abs(mn)), _TINY))
    s = jnp.where(jnp.isfinite(mx) & jnp.isfinite(mn), s, jnp.nan)
    zq = jnp.round(mn / s)  # zero point in units of S
    q = jnp.clip(jnp.round(xg / s - zq), lo_q, hi_q)
    zp = zq * s
  q = jnp.where(jnp.isnan(q), 0.0, q).reshape(x.shape)  # NaN groups: defined qvalue 0 (scale carries the NaN)
  return q, s, zp


def round_to_e2m1(v: jax.Array) -> jax.Array:
  """Round float32 `v` to the nearest signed E2M1 value, ties to the even mantissa code, saturating at +-6.

  The E2M1 grid has spacing 0.5 below 2, 1 in [2, 4) and 2 in [4, 6]; within each binade the even multiples of the
  spacing are exactly the even mantissa codes, so round-half-even of |v| / spacing is the format's RNE. Exact:
  dividing by 0.5, 1 or 2 never rounds. NaN stays NaN.
  """
  a = jnp.abs(v)
  step = jnp.where(a < 2.0, 0.5, jnp.where(a < 4.0, 1.0, 2.0)).astype(v.dtype)
  return jnp.copysign(jnp.minimum(jnp.round(a / step) * step, E2M1_MAX), v)


def _clip_group(x, clip, gshape, has_clip):
  xg = x.reshape(gshape)
  return jnp.clip(xg, clip[0], clip[1]) if has_clip else xg


@functools.partial(jax.jit, static_argnames=("gshape", "red", "scale_format", "has_clip"))
def _quantize_fp4_core(x, clip, *, gshape, red, scale_format, has_clip):
  """x float32 -> (E2M1 values in x's shape, block scale in the grouped shape, tensor scale or None)."""
  xg = _clip_group(x, clip, gshape, has_clip)
  amax = jnp.max(jnp.abs(xg), axis=red, keepdims=True)
  s_t = None
  if scale_format == "e8m0":
    _, e = jnp.frexp(amax)  # amax = m * 2^e, m in [0.5, 1): floor(log2(amax)) = e - 1 (exact)
    lo, hi = E8M0_EXP_RANGE
    exp = jnp.where(amax > 0, jnp.clip(e - 1 - E2M1_EMAX, lo, hi), lo)
    s = jnp.ldexp(jnp.ones_like(amax), exp)
  elif scale_format == "e4m3":
    s_t = jnp.maximum(jnp.max(jnp.abs(xg)) / (E2M1_MAX * E4M3_MAX), _TINY)
    s_b = jnp.clip(amax / (s_t * E2M1_MAX), 0.0, E4M3_MAX).astype(jnp.float8_e4m3fn).astype(jnp.float32)
    s = s_b
  else:
    s = jnp.maximum(amax / E2M1_MAX, _TINY)
  finite = jnp.isfinite(amax)
  s = jnp.where(finite, s, jnp.nan)
  full = s if s_t is None else s * s_t
  q = round_to_e2m1(xg / jnp.where(full > 0, full, 1.0))
  q = jnp.where((full > 0) & finite, q, 0.0)  # all-zero / underflowed blocks: q = 0; NaN blocks: q = 0, scale NaN
  if s_t is not None:
    s_t = jnp.where(jnp.all(finite), s_t, jnp.nan)
  return q.reshape(x.shape), s, s_t


@functools.partial(jax.jit, static_argnames=("gshape", "red", "has_clip"))
def _quantize_ternary_core(x, clip, *, gshape, red, has_clip):
  """x float32 -> (q in {-1, 0, 1} as float32 in x's shape, S = mean|x| + eps in the grouped shape, None)."""
  xg = _clip_group(x, clip, gshape, has_clip)
  s = jnp.mean(jnp.abs(xg), axis=red, keepdims=True) + TERNARY_EPS
  q = jnp.clip(jnp.round(xg / s), -1.0, 1.0)
  q = jnp.where(jnp.isnan(q), 0.0, q)
  return q.reshape(x.shape), s, None


def quantize(x: jax.Array, spec: QuantSpec, *, axis: int = -1) -> QTensor:
  """Quantize `x` (any float dtype, computed in float32) with `spec`, reducing over `axis` (see module doc)."""
  _check_finite(x, "quantize")
  return _quantize(x, spec, axis)


def _quantize(x: jax.Array, spec: QuantSpec, axis: int) -> QTensor:
  x = jnp.asarray(x, jnp.float32)
  ax = _normalize_axis(axis, x.ndim, spec.granularity)
  gshape = grouped_shape(x.shape, spec, ax)
  if spec.format != "int":
    clip = np.array(spec.clip or (0.0, 0.0), np.float32)
    core = _quantize_fp4_core if spec.format == "fp4_e2m1" else _quantize_ternary_core
    static = dict(scale_format=spec.scale_format) if spec.format == "fp4_e2m1" else {}
    q, s, s_t = core(x, clip, gshape=gshape, red=_reduce_axes(len(gshape), spec, ax), has_clip=spec.clip is not None,
                     **static)
    if spec.format == "ternary":
      q = q.astype(jnp.int8)
    return QTensor(qvalue=q, scale=s, zero_point=None, spec=spec, axis=ax, shape=tuple(x.shape), tensor_scale=s_t)
  lo_q, hi_q = spec.qrange
  levels = 2.0 ** (spec.bits - 1) if spec.symmetric else 2.0 ** spec.bits
  consts = np.array([levels, lo_q, hi_q, *(spec.clip or (0.0, 0.0))], np.float32)
  q, s, zp = _quantize_core(x, consts, gshape=gshape, red=_reduce_axes(len(gshape), spec, ax),
                            symmetric=spec.symmetric, has_clip=spec.clip is not None)
  qdtype = jnp.int8 if spec.symmetric else jnp.uint8
  return QTensor(qvalue=q.astype(qdtype).reshape(x.shape), scale=s, zero_point=zp,
                 spec=spec, axis=ax, shape=tuple(x.shape))


def integer_codes(x: jax.Array, spec: QuantSpec, *, axis: int = -1) -> tuple[jax.Array, jax.Array]:
  """(codes, scale) with fake_quant(x) == codes * scale up to one float32 rounding, `codes` integer-valued float32
  (q + zero_point / S for asymmetric specs, so |codes| <= 2^bits) and `scale` constant along `axis`, for the
  specs whose scale does not vary along the reduction axis: integer format, tensor/channel/token granularity.
  A matmul over `axis` can then sum the codes exactly and apply the scales once (nn/dense.py)."""
  if spec.format != "int" or spec.granularity == "group":
    raise ValueError(f"integer_codes: {spec.format} / {spec.granularity} scales vary along the reduction axis")
  qt = _quantize(x, spec, axis)
  codes = qt.qvalue.astype(jnp.float32)
  if qt.zero_point is not None:
    codes = codes + jnp.round(qt.zero_point / qt.scale)  # zp = zq * S with zq an integer: recovered exactly
  return codes, qt.scale


def dequantize(qt: QTensor) -> jax.Array:
  """float32 array of the original shape: q*S (+ zp); NVFP4: q * (S_b * S_t)."""
  scale = qt.scale if qt.tensor_scale is None else qt.scale * qt.tensor_scale
  return _dequantize_core(qt.qvalue, scale, qt.zero_point, gshape=grouped_shape(qt.shape, qt.spec, qt.axis))


@functools.partial(jax.jit, static_argnames=("gshape",))
def _dequantize_core(q, s, zp, *, gshape):
  y = q.astype(jnp.float32).reshape(gshape) * s
  if zp is not None:
    y = y + zp
  return y.reshape(q.shape)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _fake_quant(x: jax.Array, spec: QuantSpec, axis: int) -> jax.Array:
  return dequantize(_quantize(x, spec, axis)).astype(x.dtype)


@_fake_quant.defjvp
def _fake_quant_jvp(spec, axis, primals, tangents):
  (x,), (t,) = primals, tangents
  y = _fake_quant(x, spec, axis)
  if spec.clip is None:
    return y, t
  lo, hi = spec.clip
  inside = (x >= lo) & (x <= hi)
  return y, jnp.where(inside, t, jnp.zeros_like(t))


def fake_quant(x: jax.Array, spec: QuantSpec, *, axis: int = -1) -> jax.Array:
  """dequantize(quantize(x)) in x's dtype, with a straight-through gradient (masked outside `spec.clip`)."""
  _check_finite(x, "fake_quant")
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return _fake_quant(x, spec, axis)


def mxfp4_spec(*, clip: tuple[float, float] | None = None) -> QuantSpec:
  """MXFP4 (OCP MX v1.0): E2M1 elements, blocks of 32 along the reduction axis, E8M0 power-of-two scale."""
  return QuantSpec(bits=4, granularity="group", group_size=32, clip=clip, format="fp4_e2m1", scale_format="e8m0")


def nvfp4_spec(*, clip: tuple[float, float] | None = None) -> QuantSpec:
  """NVFP4: E2M1 elements, blocks of 16 along the reduction axis, E4M3 block scale x fp32 tensor scale."""
  return QuantSpec(bits=4, granularity="group", group_size=16, clip=clip, format="fp4_e2m1", scale_format="e4m3")


def ternary_spec(*, granularity: Granularity = "tensor", clip: tuple[float, float] | None = None) -> QuantSpec:
  """BitNet b1.58 ternary weights: absmean scale (one per tensor by default), q in {-1, 0, 1}."""
  return QuantSpec(bits=2, granularity=granularity, clip=clip, format="ternary")
