"""W4A4 GEMM for Hopper (no INT4 tensor cores): unpack in registers, exact int8 wgmma.

Packed layout (int4jax.quant.pack_int4, shared with the portable path): signed int4 in [-8, 7], two
per uint8 along K, element 2i in the LOW nibble, element 2i+1 in the HIGH nibble, two's complement.
Activations ``x_packed`` uint8 ``[M, K/2]``; weights ``w_packed`` uint8 ``[N, K/2]`` (K contiguous).
Example byte: 0xF8 holds element 2i = 0x8 = -8 and element 2i+1 = 0xF = -1.

That is exactly XLA's in-memory order for ``jnp.int4`` (first element in the low nibble), so the
wrapper reinterprets the bytes as ``int4 [*, K]`` with a bitcast + reshape (no data movement) and the
Mosaic kernel in ``hopper_w8a8.int_gemm`` does the rest: TMA streams packed int4 tiles (half the
bytes of int8), registers cast int4 -> int8 (Mosaic's prmt/lop3 fast path), wgmma s8 x s8 -> s32
accumulates exactly (|x*w| <= 64, so K < 2^25 cannot overflow), epilogue
``acc * x_scale[m] * w_scale[n] + bias[n]`` (+ GELU erf) in f32, cast to bf16 / f32.
Weight scales per output channel only (per-group scales would break the single integer accumulator).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from kernels_pallas.mosaic import w8a8 as _core

Config = _core.Config
# Fully fused (in-loop weight unpack to SMEM, 1 warpgroup): ~400 TOPS on the H100, kept for comparison.
FUSED = _core.Config(block_m=128, block_n=128, block_k=256, num_stages=4)
# Default: warp-specialized persistent kernel after one XLA weight-unpack pass (results/kernels/H100.md:
# 1.18x XLA bf16 at 12288x4096x1024, 0.76-0.93x at M=3072; the fused one is ~0.5x).
DEFAULT = _core.WSConfig()
# Variant that unpacks the weights int4 -> int8 in one XLA pass per call (reads N*K/2 bytes, writes N*K)
# and then runs the x:int4-in-registers, w:int8-from-SMEM kernel; the pass is inside the timed call.
PREPASS = _core.Config(block_m=128, block_n=128, block_k=256, num_stages=4, w_prepass=1)


def can_use(m: int, n: int, k: int, *, w_scale_shape=None, out_dtype=jnp.bfloat16,
            config: Config = DEFAULT) -> bool:
  return k % 2 == 0 and _core.can_use(m, n, k, w_scale_shape=w_scale_shape,
                                      out_dtype=out_dtype, config=config)


def packed_to_int4(p):
  """uint8 [..., K/2] (low nibble first) -> int4 [..., K]; a reinterpretation, no arithmetic."""
  q = lax.bitcast_convert_type(p.astype(jnp.uint8), jnp.int4)
  return q.reshape(*p.shape[:-1], p.shape[-1] * 2)


def w4a4_matmul(x_packed, x_scale, w_packed, w_scale, bias=None, gelu: bool = False, *,
                out_dtype=jnp.bfloat16, config=DEFAULT):
  """x_packed uint8 [M, K/2], x_scale [M], w_packed uint8 [N, K/2], w_scale [N], bias [N] -> [M, N]."""
  if x_packed.shape[1] != w_packed.shape[1]:
    raise ValueError(f"{x_packed.shape=} and {w_packed.shape=} disagree on K/2")
  if w_scale.ndim != 1:
    raise ValueError(f"{w_scale.shape=}: the Hopper W4A4 kernel takes per-channel weight scales")
  if isinstance(config, _core.WSConfig):
    return w4a4_matmul_ws(x_packed, x_scale, w_packed, w_scale, bias, gelu, out_dtype=out_dtype, config=config)
  w = unpack_ref(w_packed) if config.w_prepass else packed_to_int4(w_packed)
  return _core.int_gemm(packed_to_int4(x_packed), w, x_scale.reshape(-1),
                        w_scale, bias, gelu=gelu, out_dtype=out_dtype, config=config)


def unpack_ref(p):
  """Arithmetic unpack (independent of the bitcast): low nibble = even element."""
  p = p.astype(jnp.int32)
  lo = ((p & 0xF) ^ 8) - 8
  hi = (((p >> 4) & 0xF) ^ 8) - 8
  return jnp.stack([lo, hi], axis=-1).reshape(*p.shape[:-1], p.shape[-1] * 2).astype(jnp.int8)


def reference(x_packed, x_scale, w_packed, w_scale, bias=None, *, gelu=False, out_dtype=jnp.bfloat16):
  return _core.reference(unpack_ref(x_packed), x_scale, unpack_ref(w_packed), w_scale, bias,
                         gelu=gelu, out_dtype=out_dtype)


def w4a4_matmul_ws(x_packed, x_scale, w_packed, w_scale, bias=None, gelu: bool = False, *,
                   out_dtype=jnp.bfloat16, config: _core.WSConfig = _core.WSConfig()):
  """Warp-specialized persistent variant: weights unpacked to int8 by one XLA pass (inside the call),
  activations stay int4 through TMA and are cast to int8 in registers (wgmma A operand)."""
  if w_scale.ndim != 1:
    raise ValueError(f"{w_scale.shape=}: the Hopper W4A4 kernel takes per-channel weight scales")
  return _core.int_gemm_ws(packed_to_int4(x_packed), unpack_ref(w_packed), x_scale.reshape(-1), w_scale,
                           bias, gelu=gelu, out_dtype=out_dtype, config=config)
