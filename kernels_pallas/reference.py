"""Exact NumPy references for the kernels (CPU only, never jitted).

Integer parts are exact int64 (`exact_int_matmul`); group partial sums are int64 times float64 scales summed in
float64; the epilogue (scales, bias, erf-exact GELU) runs in float64 and is cast to `out_dtype` last. Inputs may be NumPy or JAX
arrays; outputs are NumPy arrays (bf16 outputs use ml_dtypes' bfloat16, as JAX does).
"""

from __future__ import annotations

import math

import numpy as np

from kernels_pallas.layout import ABSMAX_FLOOR, pack_int4_np, unpack_int4_np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_erf_f64(y: np.ndarray) -> np.ndarray:
  """Exact (erf) GELU, the one BERT, GPT-2 (`gelu_new` aside) and BART use: 0.5 y (1 + erf(y / sqrt 2))."""
  return 0.5 * y * (1.0 + _erf(y / math.sqrt(2.0)))


def _f64(a) -> np.ndarray:
  return np.asarray(a).astype(np.float64)


def exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """a [M, K] int . b [N, K]^T -> int64, exactly. Runs as a float64 BLAS matmul when every partial sum is provably
  below 2^53 (then float64 arithmetic on integers is exact), else as an int64 matmul (slow without BLAS)."""
  a, b = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
  bound = a.shape[1] * (int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0)))
  if bound < 2 ** 53:
    return (a.astype(np.float64) @ b.T.astype(np.float64)).astype(np.int64)
  return a @ b.T


def _grouped_int_matmul(x_int: np.ndarray, w_int: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
  """[M, K] int x [N, K] int with w_scale [N] or [N, G] -> float64 [M, N] of sum_g (x_g . w_g) * s_g."""
  x_int, w_int = x_int.astype(np.int64), w_int.astype(np.int64)
  w_scale = _f64(w_scale)
  if w_scale.ndim == 1:
    return exact_int_matmul(x_int, w_int).astype(np.float64) * w_scale[None, :]
  n, k = w_int.shape
  g = w_scale.shape[1]
  if k % g:
    raise ValueError(f"{k=} must be a multiple of the number of groups {g=}")
  gs = k // g
  out = np.zeros((x_int.shape[0], n), np.float64)
  for j in range(g):
    part = exact_int_matmul(x_int[:, j * gs:(j + 1) * gs], w_int[:, j * gs:(j + 1) * gs])
    out += part.astype(np.float64) * w_scale[None, :, j]
  return out


def _epilogue(acc: np.ndarray, x_scale, bias, gelu: bool, out_dtype) -> np.ndarray:
  y = acc * _f64(x_scale)[:, None]
  if bias is not None:
    y = y + _f64(bias)[None, :]
  if gelu:
    y = gelu_erf_f64(y)
  return y.astype(np.dtype(out_dtype))


def w4a4_matmul_ref(x_packed, x_scale, w_packed, w_scale, bias=None, gelu=False, out_dtype=np.float32):
  """x_packed [M, K/2] u8, x_scale [M] f32, w_packed [N, K/2] u8, w_scale [N] or [N, K/group_size] -> [M, N]."""
  x_int = unpack_int4_np(np.asarray(x_packed))
  w_int = unpack_int4_np(np.asarray(w_packed))
  return _epilogue(_grouped_int_matmul(x_int, w_int, w_scale), x_scale, bias, gelu, out_dtype)


def w8a8_matmul_ref(x_q, x_scale, w_q, w_scale, bias=None, gelu=False, out_dtype=np.float32):
  """x_q [M, K] int8, w_q [N, K] int8, scales as in `w4a4_matmul_ref` -> [M, N]."""
  acc = _grouped_int_matmul(np.asarray(x_q), np.asarray(w_q), w_scale)
  return _epilogue(acc, x_scale, bias, gelu, out_dtype)


def w4a16_matmul_ref(x, w_packed, w_scale, bias=None, out_dtype=np.float32, *, gelu=False):
  """x [M, K] bf16/f32, w_packed [N, K/2] u8, w_scale [N, K/group_size] (or [N]) -> [M, N], all in float64."""
  w = unpack_int4_np(np.asarray(w_packed)).astype(np.float64)
  w_scale = _f64(w_scale)
  if w_scale.ndim == 1:
    w_scale = w_scale[:, None]
  w = (w.reshape(w.shape[0], w_scale.shape[1], -1) * w_scale[:, :, None]).reshape(w.shape)
  y = _f64(x) @ w.T
  if bias is not None:
    y = y + _f64(bias)[None, :]
  if gelu:
    y = gelu_erf_f64(y)
  return y.astype(np.dtype(out_dtype))


def layer_norm_f64(x, gamma, beta, eps: float) -> np.ndarray:
  x = _f64(x)
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  y = (x - mean) / np.sqrt(var + eps)
  if gamma is not None:
    y = y * _f64(gamma)
  if beta is not None:
    y = y + _f64(beta)
  return y


def quantize_rows_ref(x, bits: int, ln_gamma=None, ln_beta=None, eps: float = 1e-5, *, return_unrounded=False):
  """Symmetric per-token quantization, DeepSpeed convention, in float64.

  x [M, K] -> (q, scale [M] f32) with S = max(max|x_row|, ABSMAX_FLOOR) / 2^(bits-1),
  q = clip(round_half_even(x / S), -2^(bits-1), 2^(bits-1) - 1); q is packed [M, K/2] uint8 for bits=4 and int8
  [M, K] for bits=8. With ln_gamma/ln_beta (or either), LayerNorm(eps) runs first and is what gets quantized.
  return_unrounded=True also returns x / S (float64), which tests use to excuse round-half ties.
  """
  if bits not in (4, 8):
    raise ValueError(f"{bits=} must be 4 or 8")
  x = _f64(x)
  if ln_gamma is not None or ln_beta is not None:
    x = layer_norm_f64(x, ln_gamma, ln_beta, eps)
  qmax = 2 ** (bits - 1)
  scale = np.maximum(np.abs(x).max(-1), ABSMAX_FLOOR) / qmax
  y = x / scale[:, None]
  q = np.clip(np.round(y), -qmax, qmax - 1).astype(np.int8)
  out = pack_int4_np(q) if bits == 4 else q
  res = (out, scale.astype(np.float32))
  return res + (y,) if return_unrounded else res


# ------------------------------------------------------------------ the per-element check of a GEMM output

F32_EPS = 2.0 ** -24  # unit roundoff of f32 (round to nearest)


def bf16_ulp(v: np.ndarray) -> np.ndarray:
  """Spacing of bf16 numbers at |v| (8 significant bits): 2^(floor(log2 |v|) - 7); the smallest normal's at 0."""
  a = np.maximum(np.abs(np.asarray(v, np.float64)), 2.0 ** -126)
  return np.exp2(np.floor(np.log2(a)) - 7)


def epilogue_bound(acc_scaled, bias, y_exact, out_dtype, *, gelu: bool, bf16_ulps: float = 1.0) -> np.ndarray:
  """Per-element error bound of a kernel output, derived from its epilogue arithmetic.

  acc_scaled = |x_scale[m]| * sum_g |w_scale[n, g]| * |acc_g[m, n]| (exact integer partial sums, float64),
  bias = [N] or None, y_exact = the float64 reference output (after GELU if any).
  The integer sums are exact and convert to f32 exactly (|acc| < 2^24). The f32 epilogue does at most 2 roundings
  per group term (two scale products), one per group sum and one for the bias add, each <= F32_EPS relative
  (we allow 8 F32_EPS of the magnitudes |acc x_scale w_scale| + |bias|, covering up to 4 groups without
  cancellation luck). GELU propagates that error with |gelu'| <= 1.13 and adds its own erf approximation
  (<= 1.5e-7 |y|, 1e-6 |y| allowed for XLA's erf). The cast to the output adds half an ulp; `bf16_ulps` (1 by
  default) ulps of the exact value are allowed for bf16 outputs, 1 f32 ulp for f32 outputs.
  """
  mag = np.abs(np.asarray(acc_scaled, np.float64))
  if bias is not None:
    mag = mag + np.abs(_f64(bias))[None, :]
  f32_part = 8 * F32_EPS * mag
  y = np.abs(np.asarray(y_exact, np.float64))
  if gelu:
    f32_part = 1.13 * f32_part + 1e-6 * mag
  if np.dtype(out_dtype) == np.float32:
    return f32_part + 2 * F32_EPS * y
  return f32_part + bf16_ulps * bf16_ulp(y)


def check_gemm_output(out, y_exact, bound, *, what: str = "", seed=None) -> None:
  """Raises AssertionError naming the first offending elements if any |out - y_exact| > bound or out is not finite
  (an unwritten, NaN-poisoned tile fails here)."""
  out = np.asarray(out).astype(np.float64)
  y_exact = np.asarray(y_exact, np.float64)
  tag = f"{what} seed={seed}"
  if out.shape != y_exact.shape:
    raise AssertionError(f"shape {out.shape} != {y_exact.shape} {tag}")
  err = np.abs(out - y_exact)
  bad = ~(err <= bound)  # NaN counts as bad
  if bad.any():
    idx = np.argwhere(bad)[:3]
    ex = ", ".join(f"[{i},{j}] out={out[i, j]:.6g} ref={y_exact[i, j]:.6g} bound={bound[i, j]:.3g}" for i, j in idx)
    raise AssertionError(f"{int(bad.sum())} of {bad.size} elements outside the epilogue bound: {ex} {tag}")


def int_gemm_exact(x_int, x_scale, w_int, w_scale, bias=None, *, gelu=False):
  """Exact int64 partial sums of an integer GEMM -> (y_exact float64 [M, N], acc_scaled for `epilogue_bound`)."""
  x_int, w_int = np.asarray(x_int), np.asarray(w_int)
  w_scale = _f64(w_scale)
  ws2 = w_scale[:, None] if w_scale.ndim == 1 else w_scale
  g = ws2.shape[1]
  gs = w_int.shape[1] // g
  xs = _f64(x_scale)
  y = np.zeros((x_int.shape[0], w_int.shape[0]), np.float64)
  mag = np.zeros_like(y)
  for j in range(g):
    part = exact_int_matmul(x_int[:, j * gs:(j + 1) * gs], w_int[:, j * gs:(j + 1) * gs]).astype(np.float64)
    y += part * ws2[None, :, j]
    mag += np.abs(part) * np.abs(ws2[None, :, j])
  y *= xs[:, None]
  mag *= np.abs(xs)[:, None]
  if bias is not None:
    y += _f64(bias)[None, :]
  if gelu:
    y = gelu_erf_f64(y)
  return y, mag
