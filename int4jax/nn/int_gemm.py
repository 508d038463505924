"""Integer-mode GEMM of `QDense`: packed weights, per-token activation codes, the kernels' fused epilogue.

The quantized weight of one Dense layer is held in the kernels' layout (`int4jax.quant.formats`):

  w_q       4-bit: (N, K/2) uint8, packed signed nibbles; 8-bit: (N, K) int8. K contiguous.
  w_scale   (N,) per output channel or (N, K/group_size) per group, float32.
  w_offset  asymmetric weights only, same shape as w_scale: the dequantized weight is w_q * w_scale + w_offset.
  w_sum     asymmetric activations only, (N,) float32: sum_k of the dequantized weight row.
  bias      (N,) float32.

Asymmetric codes q in [0, 2^b - 1] are stored shifted to the signed range, q_s = q - 2^(b-1), so the same signed
kernels run them: x^ = q S + zp = q_s S + (zp + 2^(b-1) S) = q_s S + offset. With per-token activation offsets c_x and
per-(channel, group) weight offsets c_w the exact product expands to

  sum_k x^[m,k] w^[n,k] = S_x[m] sum_g S_w[n,g] (q_x . q_w)_g                      <- the integer kernel
                        + S_x[m] sum_g c_w[n,g] rowsum_g(q_x)[m]                      <- weight zero points
                        + c_x[m] w_sum[n]                                             <- activation zero points

(the paper's zero-point correction term). Symmetric layers run the kernel alone, with bias and erf GELU fused into
its epilogue; asymmetric ones run the kernel with an f32 output and add the corrections, bias and GELU in jnp.

Activations are quantized per token exactly as `numerics.fake_quant` does in training (clip first, then
S = max|x| / 2^(b-1), round half to even): symmetric ones by `kernels_pallas.ops.quantize_rows`, fused with the
preceding LayerNorm when the model hands over the pre-norm input (`pre_ln`) and no clip range is set; asymmetric ones
by `numerics` in jnp. W4A4 runs `ops.w4a4_matmul`; any other integer pairing (W8A8, W4A8) runs `ops.w8a8_matmul` on
int8 codes; weight-only layers (A16) run `ops.w4a16_matmul` for symmetric 4-bit weights, else a bf16 dot on the
dequantized weight.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from int4jax.quant import numerics
from int4jax.quant.formats import pack_int4, unpack_int4, unpack_int4_np
from int4jax.quant.numerics import QuantSpec
from kernels_pallas import ops

INT_PARAM_NAMES = ("w_q", "w_scale", "w_offset", "w_sum", "bias")
GEMM_BACKENDS = ops.BACKENDS


@dataclasses.dataclass(frozen=True)
class IntMode:
  """How integer-mode layers call the kernels (hashable: a Linen attribute).

  backend: `kernels_pallas.ops` backend for the GEMMs ("auto" picks by the measured table; "xla" forces XLA's
    integer dots; a path name forces that path). quantize_rows uses "auto" unless backend is "triton" or "xla".
  interpret: run the Pallas kernels in interpret mode (CPU tests).
  allow_xla_fallback: let a shape the chosen kernel cannot take run on XLA instead of raising.
  fuse_ln: quantize straight from the pre-LayerNorm input (LayerNorm fused into quantize_rows) where possible.
  fuse_qkv: one QKV GEMM per layer (the export concatenates the three weights along N).
  quantize_backend: force quantize_rows' path ("triton" | "xla"; "xla" lets XLA fuse the per-token quantization
    with the residual add and LayerNorm around it); None: as `backend` says.
  """
  backend: str = "auto"
  interpret: bool = False
  allow_xla_fallback: bool = False
  fuse_ln: bool = True
  fuse_qkv: bool = True
  quantize_backend: str | None = None

  def __post_init__(self):
    if self.quantize_backend not in (None, "auto", "triton", "xla"):
      raise ValueError(f"IntMode.quantize_backend={self.quantize_backend!r} is not one of None, 'auto', 'triton', "
                       "'xla'")
    paths = {p for ps in ops.PATHS.values() for p in ps}
    if self.backend not in ops.BACKENDS and self.backend not in paths:
      raise ValueError(f"IntMode.backend={self.backend!r} is not one of {ops.BACKENDS} or a kernel path "
                       f"{sorted(paths)}")

  def kw(self, op_backend: str | None = None) -> dict:
    return dict(backend=op_backend or self.backend, interpret=self.interpret,
                allow_xla_fallback=self.allow_xla_fallback)

  @property
  def rows_backend(self) -> str:
    if self.quantize_backend is not None:
      return self.quantize_backend
    return self.backend if self.backend in ("triton", "xla") else "auto"


def check_specs(w_spec: QuantSpec, a_spec: QuantSpec | None, where: str) -> None:
  """ValueError naming the layer when integer mode cannot run this pair of quantizers."""
  if w_spec.bits not in (4, 8):
    raise ValueError(f"{where}: integer mode runs 4- or 8-bit weights, got {w_spec.bits}-bit")
  if a_spec is not None:
    if a_spec.bits not in (4, 8):
      raise ValueError(f"{where}: integer mode runs 4- or 8-bit activations, got {a_spec.bits}-bit")
    if a_spec.granularity != "token":
      raise ValueError(f"{where}: integer mode quantizes activations per token, the policy asks for "
                       f"{a_spec.granularity!r}")


def param_shapes(k: int, n: int, w_spec: QuantSpec, a_spec: QuantSpec | None) -> dict[str, tuple[tuple, Any]]:
  """name -> (shape, dtype) of the integer-mode params of a [K] -> [N] layer (see the module docstring)."""
  if w_spec.bits == 4 and k % 2:
    raise ValueError(f"a 4-bit weight needs an even K, got K={k}")
  groups = k // w_spec.group_size if w_spec.granularity == "group" else None
  s_shape = (n,) if groups is None else (n, groups)
  shapes = {"w_q": ((n, k // 2), jnp.uint8) if w_spec.bits == 4 else ((n, k), jnp.int8),
            "w_scale": (s_shape, jnp.float32)}
  if not w_spec.symmetric:
    shapes["w_offset"] = (s_shape, jnp.float32)
  if a_spec is not None and not a_spec.symmetric:
    shapes["w_sum"] = ((n,), jnp.float32)
  return shapes


# ------------------------------------------------------------------ export side (NumPy, once per layer)


def pack_weight(kernel: np.ndarray, w_spec: QuantSpec, a_spec: QuantSpec | None) -> dict[str, np.ndarray]:
  """Flax kernel [K, N] float -> the integer-mode params (without bias), with the codes training's fake_quant uses."""
  kernel = np.asarray(kernel, np.float32)
  if not np.all(np.isfinite(kernel)):
    raise ValueError(f"pack_weight: the [K, N]={kernel.shape} kernel holds NaN/inf; its scales would be undefined")
  k, n = kernel.shape
  codes, scale, zp = jax.device_get(_weight_codes(jnp.asarray(kernel), w_spec))
  scale = np.asarray(scale, np.float32)
  # scale: channel [1, N] -> (N,); group [K/g, 1, N] -> (N, K/g); tensor [1, 1] -> (N,)
  to_nk = lambda a: (np.broadcast_to(a.reshape(-1), (n,)) if a.size in (1, n) and w_spec.granularity != "group"
                     else a.reshape(-1, n).T)
  out = {"w_q": np.asarray(codes), "w_scale": np.ascontiguousarray(to_nk(scale), np.float32)}
  if not w_spec.symmetric:
    half = 2 ** (w_spec.bits - 1)
    out["w_offset"] = np.ascontiguousarray(to_nk(np.asarray(zp, np.float32)) + half * to_nk(scale), np.float32)
  if a_spec is not None and not a_spec.symmetric:
    out["w_sum"] = dequantized_weight_np(out, w_spec.bits).sum(axis=1).astype(np.float32)
  return out


@functools.partial(jax.jit, static_argnames=("w_spec",))
def _weight_codes(kernel, w_spec: QuantSpec):
  """(codes in the kernels' (N, K) layout: packed uint8 | int8, scale, zero point | None) of numerics.quantize."""
  qt = numerics.quantize(kernel, w_spec, axis=0)
  q = qt.qvalue.astype(jnp.int32)
  if not w_spec.symmetric:  # asymmetric codes shifted to the signed range (module docstring)
    q = q - 2 ** (w_spec.bits - 1)
  q_nk = q.T.astype(jnp.int8)  # (N, K), K contiguous
  return (pack_int4(q_nk, axis=-1) if w_spec.bits == 4 else q_nk), qt.scale, qt.zero_point


def dequantized_weight_np(p: dict[str, np.ndarray], bits: int) -> np.ndarray:
  """float64 (N, K) weight the integer params stand for: w_q * w_scale (+ w_offset), per channel or group."""
  q = unpack_int4_np(p["w_q"]) if bits == 4 else np.asarray(p["w_q"])
  q = q.astype(np.float64)
  n, k = q.shape
  s = np.asarray(p["w_scale"], np.float64).reshape(n, -1)
  off = np.asarray(p.get("w_offset", np.zeros_like(s)), np.float64).reshape(n, -1)
  g = s.shape[1]
  w = q.reshape(n, g, k // g) * s[..., None] + off[..., None]
  return w.reshape(n, k)


# ------------------------------------------------------------------ forward (traced)


def _int8_codes(q, bits):
  """Codes as int8 [.., K]: packed 4-bit unpacked, 8-bit as is."""
  if isinstance(q, ops.PreparedWeight):
    return q.int8 if q.int8 is not None else unpack_int4(q.packed)
  return unpack_int4(q) if bits == 4 else q


def quantize_tokens(x2, a_spec: QuantSpec, mode: IntMode, pre_ln=None):
  """x2 [M, K] -> (codes: packed uint8 (4-bit) | int8, scale [M] f32, offset [M] f32 | None)."""
  bits = a_spec.bits
  if a_spec.symmetric:
    if pre_ln is not None and a_spec.clip is None and mode.fuse_ln:
      y, gamma, beta, eps = pre_ln
      return (*ops.quantize_rows(y.reshape(-1, y.shape[-1]), bits, gamma, beta, eps, **mode.kw(mode.rows_backend)),
              None)
    if a_spec.clip is not None:
      x2 = jnp.clip(x2.astype(jnp.float32), *a_spec.clip)
    q, s = ops.quantize_rows(x2, bits, **mode.kw(mode.rows_backend))
    return q, s, None
  qt = numerics._quantize(x2, a_spec, -1)  # exactly training's quantizer (clip, scale, zero point)
  half = 2 ** (bits - 1)
  q = (qt.qvalue.astype(jnp.int32) - half).astype(jnp.int8)
  s = qt.scale.reshape(-1)
  offset = (qt.zero_point + half * qt.scale).reshape(-1)
  return (pack_int4(q, axis=-1) if bits == 4 else q), s, offset


def _group_rowsum(codes_int8, groups: int):
  m, k = codes_int8.shape
  return jnp.sum(codes_int8.reshape(m, groups, k // groups).astype(jnp.int32), axis=-1).astype(jnp.float32)


def int_dense(x2, p: dict, w_spec: QuantSpec, a_spec: QuantSpec | None, mode: IntMode, *, gelu: bool, out_dtype,
              pre_ln=None):
  """x2 [M, K] (the layer input; `pre_ln` = (y, gamma, beta, eps) with x2 = LayerNorm(y)) -> [M, N] out_dtype."""
  w_q, w_scale, bias = p["w_q"], p["w_scale"], p.get("bias")
  asym = not w_spec.symmetric or (a_spec is not None and not a_spec.symmetric)
  fused_bias, fused_gelu = (None, False) if asym else (bias, gelu)
  kernel_out = jnp.float32 if asym else out_dtype
  if a_spec is None:  # weight-only
    if w_spec.bits == 4 and not asym:
      return ops.w4a16_matmul(x2.astype(jnp.bfloat16), w_q, w_scale, bias, out_dtype, gelu=gelu, **mode.kw())
    n = w_scale.shape[0]
    s = w_scale.reshape(n, -1, 1)
    off = p["w_offset"].reshape(n, -1, 1) if "w_offset" in p else 0.0
    codes = _int8_codes(w_q, w_spec.bits)
    w = (codes.reshape(n, s.shape[1], -1).astype(jnp.float32) * s + off).reshape(n, -1)
    y = jax.lax.dot_general(x2.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (((1,), (1,)), ((), ())),
                            preferred_element_type=jnp.float32)
    return _finish(y, bias, gelu, out_dtype)
  xq, xs, x_off = quantize_tokens(x2, a_spec, mode, pre_ln)
  if a_spec.bits == 4 and w_spec.bits == 4:
    y = ops.w4a4_matmul(xq, xs, w_q, w_scale, fused_bias, fused_gelu, kernel_out, **mode.kw())
  else:
    x8 = unpack_int4(xq) if a_spec.bits == 4 else xq
    y = ops.w8a8_matmul(x8, xs, _int8_codes(w_q, w_spec.bits), w_scale, fused_bias, fused_gelu, kernel_out,
                        **mode.kw())
  if not asym:
    return y
  if not w_spec.symmetric:
    c_w = p["w_offset"].reshape(w_scale.shape[0], -1)  # [N, G]
    rows = _group_rowsum(unpack_int4(xq) if a_spec.bits == 4 else xq, c_w.shape[1])  # [M, G]
    y = y + xs[:, None] * jnp.dot(rows, c_w.T, precision=jax.lax.Precision.HIGHEST)
  if x_off is not None:
    y = y + x_off[:, None] * p["w_sum"][None, :]
  return _finish(y, bias, gelu, out_dtype)


def _finish(y, bias, gelu, out_dtype):
  if bias is not None:
    y = y + bias.astype(jnp.float32)[None, :]
  if gelu:
    y = jax.nn.gelu(y, approximate=False)
  return y.astype(out_dtype)
