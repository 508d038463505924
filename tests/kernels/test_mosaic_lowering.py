"""Every Mosaic GPU kernel configuration lowers for the CUDA platform, on the CPU (CI has no GPU).

Lowering runs Pallas' Mosaic GPU rules (layouts, swizzles, shared-memory budget, wgmma operand checks) without a
device, so a kernel edit that breaks them fails here instead of on the GPU machine. What lowering cannot see
(PTX assembly, races, speed) is for tests/kernels/test_hopper.py and the bench on the GPU.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from int4jax.quant.formats import as_jnp_int4
from kernels_pallas.mosaic import fp8, w4a4, w4a16, w8a8

S = jax.ShapeDtypeStruct
M, N, K = 512, 256, 1024
F32 = jnp.float32


def _lower(f, *args):
  try:
    jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",))
  except (ImportError, NotImplementedError) as e:  # a jaxlib without the Mosaic GPU lowering: say so
    pytest.skip(f"Mosaic GPU lowering unavailable here: {e}")


@pytest.mark.parametrize("kw", [{}, {"promote": True}, {"snake_width": 4}, {"prefetch": True},
                                {"a_in_regs": False, "num_stages": 3}])
def test_fp8_configs_lower(kw):
  cfg = dataclasses.replace(fp8.DEFAULT, **kw)
  xd = jnp.int4 if cfg.a_in_regs else jnp.float8_e4m3fn
  _lower(lambda x, w, xs, ws, b: fp8.fp8_gemm(x, w, xs, ws, b, gelu=True, config=cfg),
         S((M, K), xd), S((N, K), jnp.float8_e4m3fn), S((M,), F32), S((N,), F32), S((N,), F32))


def test_fp8_smem_overflow_is_reported():
  cfg = dataclasses.replace(fp8.DEFAULT, a_in_regs=False, num_stages=4)  # 4 x 48 KiB + the output tiles
  with pytest.raises(Exception, match="shared memory"):
    jax.jit(lambda x, w, xs, ws, b: fp8.fp8_gemm(x, w, xs, ws, b, gelu=False, config=cfg)).trace(
        S((M, K), jnp.float8_e4m3fn), S((N, K), jnp.float8_e4m3fn), S((M,), F32), S((N,), F32),
        S((N,), F32)).lower(lowering_platforms=("cuda",))


@pytest.mark.parametrize("name", ["ws", "fused", "prepass"])
def test_w4a4_kernels_lower(name):
  cfg = {"ws": w4a4.DEFAULT, "fused": w4a4.FUSED, "prepass": w4a4.PREPASS}[name]
  _lower(lambda xp, xs, wp, ws, b: w4a4.w4a4_matmul(xp, xs, wp, ws, b, True, config=cfg),
         S((M, K // 2), jnp.uint8), S((M,), F32), S((N, K // 2), jnp.uint8), S((N,), F32), S((N,), F32))


def test_w4a4_ws_with_prepared_int8_weights_lowers():
  _lower(lambda xp, xs, w8, ws, b: w8a8.int_gemm_ws(as_jnp_int4(xp), w8, xs, ws, b, gelu=False, out_dtype=jnp.bfloat16),
         S((M, K // 2), jnp.uint8), S((M,), F32), S((N, K), jnp.int8), S((N,), F32), S((N,), F32))


@pytest.mark.parametrize("single_wg", [False, True])
def test_w8a8_kernels_lower(single_wg):
  cfg = w8a8.SINGLE_WG if single_wg else w8a8.DEFAULT
  _lower(lambda x, xs, w, ws, b: w8a8.w8a8_matmul(x, xs, w, ws, b, True, config=cfg),
         S((M, K), jnp.int8), S((M,), F32), S((N, K), jnp.int8), S((N,), F32), S((N,), F32))


@pytest.mark.parametrize("m,grouped", [(1, False), (16, True)])
def test_w4a16_kernel_lowers(m, grouped):
  n, k = 4096, 4096
  ws = S((n, k // 128), F32) if grouped else S((n,), F32)
  _lower(lambda x, w, s, b: w4a16.w4a16_matmul(x, w, s, b, gelu=True),
         S((m, k), jnp.bfloat16), S((n, k // 2), jnp.uint8), ws, S((n,), F32))
