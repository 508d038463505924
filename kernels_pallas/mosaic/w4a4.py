"""W4A4 GEMM for Hopper on the int8 tensor cores (no INT4 ones): int4 -> int8 in registers, exact s8 wgmma.

Layout (`int4jax.quant.formats`, the one definition): packed uint8 [rows, K/2], element 2i in the LOW nibble; weights
(N, K), K contiguous. `formats.as_jnp_int4` reinterprets those bytes as jnp.int4 [rows, K] (XLA's own order, no data
movement), so TMA streams int4 tiles (half the bytes of int8) and registers cast int4 -> int8 (Mosaic's prmt/lop3
path). wgmma s8 x s8 -> s32 accumulates exactly (|x w| <= 64: K < 2^25 cannot overflow); epilogue
acc * x_scale[m] * w_scale[n] + bias[n] (+ erf GELU) in f32, bf16 out. Per-channel weight scales only.

Kernels (mosaic/w8a8.py holds both): the default is the warp-specialized persistent `int_gemm_ws` with x int4 in
registers and W as int8 from SMEM (W unpacked once: `ops.prepare_weight`, or one XLA pass per call in
`w4a4_matmul_ws`); measured on the H200 in results/kernels/NVIDIA_H200.md. FUSED (W int4 -> int8 SMEM inside the
loop, one warpgroup) and PREPASS are kept for comparison (results/kernels/H100.md).
"""
from __future__ import annotations

import jax.numpy as jnp

from int4jax.quant.formats import as_jnp_int4, unpack_int4
from kernels_pallas.mosaic import w8a8 as _core

Config = _core.Config
# Fully fused (in-loop weight unpack to SMEM, 1 warpgroup): ~400 TOPS on the H100, kept for comparison.
FUSED = _core.Config(block_m=128, block_n=128, block_k=256, num_stages=4)
# Default: the warp-specialized persistent kernel (H200: 100.8 µs at 12288x4096x1024 with prepared int8 weights).
DEFAULT = _core.WSConfig()
# Variant that unpacks the weights int4 -> int8 in one XLA pass per call (reads N*K/2 bytes, writes N*K)
# and then runs the x:int4-in-registers, w:int8-from-SMEM kernel; the pass is inside the timed call.
PREPASS = _core.Config(block_m=128, block_n=128, block_k=256, num_stages=4, w_prepass=1)


def can_use(m: int, n: int, k: int, *, w_scale_shape=None, out_dtype=jnp.bfloat16,
            config: Config = DEFAULT) -> bool:
  return k % 2 == 0 and _core.can_use(m, n, k, w_scale_shape=w_scale_shape,
                                      out_dtype=out_dtype, config=config)


def w4a4_matmul(x_packed, x_scale, w_packed, w_scale, bias=None, gelu: bool = False, *,
                out_dtype=jnp.bfloat16, config=DEFAULT):
  """x_packed uint8 [M, K/2], x_scale [M], w_packed uint8 [N, K/2], w_scale [N], bias [N] -> [M, N]."""
  if x_packed.shape[1] != w_packed.shape[1]:
    raise ValueError(f"{x_packed.shape=} and {w_packed.shape=} disagree on K/2")
  if w_scale.ndim != 1:
    raise ValueError(f"{w_scale.shape=}: the Hopper W4A4 kernel takes per-channel weight scales")
  if isinstance(config, _core.WSConfig):
    return w4a4_matmul_ws(x_packed, x_scale, w_packed, w_scale, bias, gelu, out_dtype=out_dtype, config=config)
  w = unpack_int4(w_packed) if config.w_prepass else as_jnp_int4(w_packed)
  return _core.int_gemm(as_jnp_int4(x_packed), w, x_scale.reshape(-1),
                        w_scale, bias, gelu=gelu, out_dtype=out_dtype, config=config)


def w4a4_matmul_ws(x_packed, x_scale, w_packed, w_scale, bias=None, gelu: bool = False, *,
                   out_dtype=jnp.bfloat16, config: _core.WSConfig = _core.WSConfig()):
  """Warp-specialized persistent variant: weights unpacked to int8 by one XLA pass (inside the call),
  activations stay int4 through TMA and are cast to int8 in registers (wgmma A operand)."""
  if w_scale.ndim != 1:
    raise ValueError(f"{w_scale.shape=}: the Hopper W4A4 kernel takes per-channel weight scales")
  return _core.int_gemm_ws(as_jnp_int4(x_packed), unpack_int4(w_packed), x_scale.reshape(-1), w_scale,
                           bias, gelu=gelu, out_dtype=out_dtype, config=config)
