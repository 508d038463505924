"""W8A8 GEMM, portable path (Pallas, Triton lowering): int8 x int8 -> int32 -> the W4A4 epilogue.

Layout: x_q [M, K] int8 (per-token scale x_scale [M] f32), w_q [N, K] int8 stored (N, K) with K contiguous
(per-channel w_scale [N] or per-group [N, K // group_size]). No packing: one byte per value, two's complement.
y[m, n] = act( x_scale[m] * sum_g w_scale[n, g] * sum_{k in g} x[m, k] w[n, k] + bias[n] ), act = erf GELU.
The kernel body is shared with W4A4 (`w4a4._int_gemm_kernel` with packed=False).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels_pallas.triton.w4a4 import check_int_gemm, int_gemm_pallas, int_gemm_xla


def can_use(x_q, x_scale, w_q, w_scale, bias=None, gelu=False, out_dtype=jnp.bfloat16, *, config=None):
  try:
    check_int_gemm(x_q, x_scale, w_q, w_scale, bias, out_dtype, packed=False, config=config)
  except ValueError:
    return False
  return True


def w8a8_matmul_pallas(x_q, x_scale, w_q, w_scale, bias=None, gelu=False, out_dtype=jnp.bfloat16, *, config=None,
                       interpret=False, poison=False):
  return int_gemm_pallas(x_q, x_scale, w_q, w_scale, bias, gelu=gelu, out_dtype=out_dtype, packed=False,
                         config=config, interpret=interpret, poison=poison)


@functools.partial(jax.jit, static_argnames=("gelu", "out_dtype"))
def w8a8_matmul_xla(x_q, x_scale, w_q, w_scale, bias=None, gelu=False, out_dtype=jnp.bfloat16):
  return int_gemm_xla(x_q, x_scale, w_q, w_scale, bias, gelu, jnp.dtype(out_dtype))
