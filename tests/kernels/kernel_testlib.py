"""Shared helpers for the kernel tests: fresh seeds, input builders, tolerance checks (tolerances written here)."""

from __future__ import annotations

import numpy as np

from kernels_pallas import reference
from kernels_pallas.layout import pack_int4_np

# Tolerances, per output dtype (reference is float64):
# - integer part: bit-exact (f32 output, unit scales, |acc| < 2^24).
# - f32 output: |out - ref| <= F32_RTOL * max|ref| (f32 epilogue, f32 sum of group partials, GELU erf approx 1.5e-7).
# - bf16 output: ||out - ref|| / ||ref|| < 1e-2 and |out - ref| <= 2^-8 |ref| + BF16_ATOL_REL * max|ref|, i.e. at
#   most half a bf16 ulp of the value plus the f32 part.
F32_RTOL = 2e-6
BF16_REL_NORM = 1e-2
BF16_ATOL_REL = 1e-5


def fresh_rng() -> tuple[np.random.Generator, int]:
  seed = int(np.random.SeedSequence().entropy % (2 ** 63))
  print(f"random seed = {seed}  (rerun with np.random.default_rng({seed}))")
  return np.random.default_rng(seed), seed


def int4_operand(rng, rows: int, k: int, *, zero_row: int | None = None, extreme_rows=()) -> np.ndarray:
  """int8 [rows, k] in [-8, 7] with -8/+7 boundary rows (all -8 and all 7) and optionally an all-zero row."""
  q = rng.integers(-8, 8, (rows, k)).astype(np.int8)
  q[:, :2] = [-8, 7]  # every row holds both boundaries
  for i, r in enumerate(extreme_rows):
    q[r] = -8 if i % 2 == 0 else 7
  if zero_row is not None:
    q[zero_row] = 0
  return q


def int8_operand(rng, rows: int, k: int, *, zero_row: int | None = None, extreme_rows=()) -> np.ndarray:
  q = rng.integers(-128, 128, (rows, k)).astype(np.int8)
  q[:, :2] = [-128, 127]
  for i, r in enumerate(extreme_rows):
    q[r] = -128 if i % 2 == 0 else 127
  if zero_row is not None:
    q[zero_row] = 0
  return q


def packed(q: np.ndarray) -> np.ndarray:
  return pack_int4_np(q)


def assert_close(out, ref, out_dtype, seed, what=""):
  out = np.asarray(out).astype(np.float64)
  ref = np.asarray(ref).astype(np.float64)
  msg = f"{what} seed={seed}"
  assert out.shape == ref.shape, msg
  assert np.isfinite(out).all(), f"non-finite (unwritten?) outputs at {np.argwhere(~np.isfinite(out))[:5]} {msg}"
  scale = np.abs(ref).max() + 1e-30
  err = np.abs(out - ref)
  if np.dtype(out_dtype) == np.float32:
    assert err.max() <= F32_RTOL * scale, f"max err {err.max():.3g} > {F32_RTOL} * {scale:.3g} {msg}"
  else:
    rel = np.linalg.norm(out - ref) / (np.linalg.norm(ref) + 1e-30)
    assert rel < BF16_REL_NORM, f"relative norm error {rel:.3g} {msg}"
    bound = 2.0 ** -8 * np.abs(ref) + BF16_ATOL_REL * scale
    bad = err > bound
    assert not bad.any(), (f"{bad.sum()} elements beyond half a bf16 ulp, e.g. at {np.argwhere(bad)[:3]}: "
                           f"out={out[bad][:3]} ref={ref[bad][:3]} {msg}")


def check_int_gemm(out, xq, xs, wq, ws, b, gelu, out_dtype, seed, what=""):
  """The shared per-element check of an integer GEMM (reference.epilogue_bound): integer sums exact (int64), then the
  f32 epilogue's rounding and 1 bf16 ulp (bf16 out) or 1 f32 ulp (f32 out) of the exact value."""
  y, mag = reference.int_gemm_exact(xq, xs, wq, ws, b, gelu=gelu)
  bound = reference.epilogue_bound(mag, b, y, np.dtype(out_dtype), gelu=gelu)
  reference.check_gemm_output(out, y, bound, what=what, seed=seed)
