"""The per-element GEMM check (`reference.epilogue_bound` + `check_gemm_output`) accepts correct kernels and catches
wrong ones: a dropped bias, two swapped scales, a skipped tile, a 3-ulp error in one element.

The kernel under test is the portable W4A4 kernel in interpret mode (CPU, CI); the Hopper tests and the bench use
the same check on the GPU paths. Inputs are seeded from fresh entropy and the seed is printed.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from kernel_testlib import fresh_rng, int4_operand, packed
from kernels_pallas import ops, reference

M, K, N = 37, 256, 192


def _case(rng, group=None):
  xq = int4_operand(rng, M, K, zero_row=5, extreme_rows=(0, 1))
  wq = int4_operand(rng, N, K, extreme_rows=(0, 1))
  xs = rng.uniform(0.01, 0.2, M).astype(np.float32)
  ws = rng.uniform(0.001, 0.05, (N, K // group) if group else N).astype(np.float32)
  b = rng.standard_normal(N).astype(np.float32)
  return xq, xs, wq, ws, b


def _run(xq, xs, wq, ws, b, *, gelu, out_dtype):
  args = [jnp.asarray(packed(xq)), jnp.asarray(xs), jnp.asarray(packed(wq)), jnp.asarray(ws),
          None if b is None else jnp.asarray(b)]
  return np.asarray(ops.w4a4_matmul(*args, gelu=gelu, out_dtype=out_dtype, interpret=True))


def _check(out, xq, xs, wq, ws, b, *, gelu, out_dtype, seed, what=""):
  y, mag = reference.int_gemm_exact(xq, xs, wq, ws, b, gelu=gelu)
  bound = reference.epilogue_bound(mag, b, y, np.dtype(out_dtype), gelu=gelu)
  reference.check_gemm_output(out, y, bound, what=what, seed=seed)


@pytest.mark.parametrize("out_dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("gelu,group", [(False, None), (True, 128)])
def test_check_accepts_the_correct_kernel(out_dtype, gelu, group):
  rng, seed = fresh_rng()
  xq, xs, wq, ws, b = _case(rng, group)
  out = _run(xq, xs, wq, ws, b, gelu=gelu, out_dtype=out_dtype)
  _check(out, xq, xs, wq, ws, b, gelu=gelu, out_dtype=out_dtype, seed=seed)


@pytest.mark.parametrize("mutation", ["drop_bias", "swap_w_scales", "swap_x_scales", "skip_tile", "nan_tile",
                                      "three_ulps"])
def test_check_rejects_a_wrong_epilogue(mutation):
  rng, seed = fresh_rng()
  xq, xs, wq, ws, b = _case(rng)
  kxs, kws, kb = xs.copy(), ws.copy(), b
  if mutation == "drop_bias":
    kb = None
  elif mutation == "swap_w_scales":
    kws[[3, 7]] = kws[[7, 3]]
  elif mutation == "swap_x_scales":
    kxs[[2, 9]] = kxs[[9, 2]]
  out = _run(xq, kxs, wq, kws, kb, gelu=False, out_dtype=jnp.bfloat16).astype(np.float64)
  if mutation == "skip_tile":
    out[16:32, 64:128] = 0.0  # a tile the kernel never wrote (zero-initialised memory)
  elif mutation == "nan_tile":
    out[32:, :64] = np.nan  # a tile left at the poison value
  elif mutation == "three_ulps":
    i, j = 20, 50
    out[i, j] += 3 * reference.bf16_ulp(out[i, j])
  with pytest.raises(AssertionError, match="outside the epilogue bound"):
    _check(out, xq, xs, wq, ws, b, gelu=False, out_dtype=jnp.bfloat16, seed=seed, what=mutation)


def test_bound_is_one_bf16_ulp_plus_f32_rounding():
  """The stated bound: integer sums exact; f32 part 8 eps of |acc xs ws| + |b|; then 1 bf16 ulp of the value."""
  acc_scaled = np.array([[1.0, 1024.0]])
  y = np.array([[1.5, -3.0]])
  bound = reference.epilogue_bound(acc_scaled, np.array([0.5, 0.0]), y, np.dtype(jnp.bfloat16), gelu=False)
  f32 = 8 * 2.0 ** -24 * np.array([[1.5, 1024.0]])
  np.testing.assert_allclose(bound, f32 + np.array([[2.0 ** -7, 2.0 ** -6]]))
