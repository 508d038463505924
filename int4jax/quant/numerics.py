"""Integer quantizers (DeepSpeed/ZeroQuant conventions), straight-through fake quantization, INT4 packing.

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

Bit layouts (INT4 packing and later formats) live in `int4jax.quant.formats`.
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

  @property
  def qrange(self) -> tuple[int, int]:
    return int_range(self.bits, self.symmetric)

  def to_dict(self) -> dict:
    return {"bits": self.bits, "symmetric": self.symmetric, "granularity": self.granularity,
            "group_size": self.group_size, "clip": None if self.clip is None else list(self.clip)}

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
  qvalue: jax.Array             # int8 (sym, [-2^(b-1), 2^(b-1)-1]) or uint8 (asym, [0, 2^b-1])
  scale: jax.Array              # float32, keepdims over the reduced axes of the grouped shape
  zero_point: jax.Array | None  # float32 (zp = round(min/S)*S, x^ = q*S + zp); None if symmetric
  spec: QuantSpec = flax.struct.field(pytree_node=False)
  axis: int = flax.struct.field(pytree_node=False)              # normalised (non-negative) reduction axis
  shape: tuple[int, ...] = flax.struct.field(pytree_node=False)  # original shape


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


def quantize(x: jax.Array, spec: QuantSpec, *, axis: int = -1) -> QTensor:
  """Quantize `x` (any float dtype, computed in float32) with `spec`, reducing over `axis` (see module doc)."""
  _check_finite(x, "quantize")
  return _quantize(x, spec, axis)


def _quantize(x: jax.Array, spec: QuantSpec, axis: int) -> QTensor:
  x = jnp.asarray(x, jnp.float32)
  ax = _normalize_axis(axis, x.ndim, spec.granularity)
  gshape = grouped_shape(x.shape, spec, ax)
  lo_q, hi_q = spec.qrange
  levels = 2.0 ** (spec.bits - 1) if spec.symmetric else 2.0 ** spec.bits
  consts = np.array([levels, lo_q, hi_q, *(spec.clip or (0.0, 0.0))], np.float32)
  q, s, zp = _quantize_core(x, consts, gshape=gshape, red=_reduce_axes(len(gshape), spec, ax),
                            symmetric=spec.symmetric, has_clip=spec.clip is not None)
  qdtype = jnp.int8 if spec.symmetric else jnp.uint8
  return QTensor(qvalue=q.astype(qdtype).reshape(x.shape), scale=s, zero_point=zp,
                 spec=spec, axis=ax, shape=tuple(x.shape))


def dequantize(qt: QTensor) -> jax.Array:
  """float32 array of the original shape: q*S (+ zp)."""
  return _dequantize_core(qt.qvalue, qt.scale, qt.zero_point, gshape=grouped_shape(qt.shape, qt.spec, qt.axis))


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
