"""W4A16 GEMM, portable path (Pallas, Triton lowering): bf16 activations x packed int4 weights with group scales.

For small M (decoding, batch-1 latency) where reading the weights is the whole cost.
Layout (layout.py): x [M, K] bf16 (or f32); w_packed [N, K/2] uint8, weights stored (N, K) with K contiguous, byte i
= element 2i in the LOW nibble and 2i+1 in the HIGH nibble, two's complement ([-8, 7] -> 0x78);
w_scale [N, K // group_size] f32 (or [N] per channel).

Math: y = act(sum_g w_scale[n, g] * sum_{k in g} x[m, k] q[n, k] + bias). The nibbles are converted to bf16 in
registers (exact: |q| <= 8) and dotted with x's even / odd columns (a register split of the x tile, Triton's
tt.split), so the weight tile is never re-interleaved; each group's f32 partial sum is scaled once, which costs
block_m x block_n multiplies per group instead of block_n x group_size for dequantizing the weight tile. act is the erf GELU (common.gelu_erf_f32).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels_pallas.triton import common
from kernels_pallas.triton.common import MatmulConfig
from kernels_pallas.layout import unpack_int4

X_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


def _w4a16_kernel(x_ref, w_ref, ws_ref, *refs, m, k, group_size, cfg, grouped, has_bias, gelu):
  b_ref = refs[0] if has_bias else None
  o_ref = refs[-1]
  block_m, block_n = cfg.block_m, cfg.block_n
  kb = cfg.block_k // 2
  m0 = pl.program_id(0) * block_m
  n0 = pl.multiple_of(pl.program_id(1) * block_n, block_n)
  rows, cols = pl.ds(m0, block_m), pl.ds(n0, block_n)
  row_ok = (m0 + jnp.arange(block_m)) < m
  cdt = x_ref.dtype

  def k_step(s, acc):
    off = pl.multiple_of(s * kb, kb)
    xb = plt.load(x_ref.at[rows, pl.ds(2 * off, 2 * kb)], mask=row_ok[:, None], other=0)
    x_even, x_odd = common.deinterleave(xb)
    wb = lax.bitcast_convert_type(plt.load(w_ref.at[cols, pl.ds(off, kb)]), jnp.int8)
    w_lo, w_hi = ((wb << 4) >> 4).astype(cdt), (wb >> 4).astype(cdt)
    return acc + common.dot_nt(x_even, w_lo, jnp.float32) + common.dot_nt(x_odd, w_hi, jnp.float32)

  steps = group_size // cfg.block_k
  zero = jnp.zeros((block_m, block_n), jnp.float32)
  if grouped:
    def group(g, acc):
      part = lax.fori_loop(g * steps, (g + 1) * steps, k_step, zero)
      return acc + part * plt.load(ws_ref.at[cols, g])[None, :]
    y = lax.fori_loop(0, k // group_size, group, zero)
  else:
    y = lax.fori_loop(0, steps, k_step, zero) * plt.load(ws_ref.at[cols])[None, :]
  if has_bias:
    y = y + plt.load(b_ref.at[cols]).astype(jnp.float32)[None, :]
  if gelu:
    y = common.gelu_erf_f32(y)
  plt.store(o_ref.at[rows, cols], y.astype(o_ref.dtype), mask=row_ok[:, None])


def check_w4a16(x, w_packed, w_scale, bias, out_dtype, *, config: MatmulConfig | None):
  if x.ndim != 2 or w_packed.ndim != 2:
    raise ValueError(f"x and w_packed must be 2-D, got {x.shape} and {w_packed.shape}")
  if x.dtype not in X_DTYPES:
    raise ValueError(f"x.dtype={x.dtype} must be bfloat16 or float32")
  if w_packed.dtype != jnp.uint8:
    raise ValueError(f"w_packed.dtype={w_packed.dtype} must be uint8")
  m, k = x.shape
  n, kh = w_packed.shape
  if 2 * kh != k:
    raise ValueError(f"w_packed.shape={w_packed.shape} must be ({n}, {k // 2}) for x.shape={x.shape}")
  group_size, grouped, config = common.check_epilogue(m, n, k, w_scale, bias, out_dtype, config, min_block_k=32)
  return m, n, k, group_size, grouped, config


def can_use(x, w_packed, w_scale, bias=None, out_dtype=jnp.bfloat16, *, gelu=False, config=None):
  try:
    check_w4a16(x, w_packed, w_scale, bias, out_dtype, config=config)
  except ValueError:
    return False
  return True


@functools.partial(jax.jit, static_argnames=("out_dtype", "gelu", "config", "interpret", "poison"))
def w4a16_matmul_pallas(x, w_packed, w_scale, bias=None, out_dtype=jnp.bfloat16, *, gelu=False,
                        config: MatmulConfig | None = None, interpret=False, poison=False):
  m, n, k, group_size, grouped, cfg = check_w4a16(x, w_packed, w_scale, bias, out_dtype, config=config)
  out_dtype = jnp.dtype(out_dtype)
  inputs = [x, w_packed, w_scale.astype(jnp.float32)]
  if bias is not None:
    inputs.append(bias)
  aliases = {}
  if poison:
    aliases = {len(inputs): 0}
    inputs.append(common.poison_like((m, n), out_dtype))
  kernel = functools.partial(_w4a16_kernel, m=m, k=k, group_size=group_size, cfg=cfg, grouped=grouped,
                             has_bias=bias is not None, gelu=gelu)
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((m, n), out_dtype),
      grid=(common.cdiv(m, cfg.block_m), n // cfg.block_n),
      input_output_aliases=aliases,
      compiler_params=cfg.compiler_params(),
      interpret=interpret,
      name="w4a16_matmul",
  )(*inputs)


@functools.partial(jax.jit, static_argnames=("out_dtype", "gelu"))
def w4a16_matmul_xla(x, w_packed, w_scale, bias=None, out_dtype=jnp.bfloat16, *, gelu=False):
  """XLA path: int4 -> x.dtype per group, f32-accumulated dot per group, scaled per group."""
  n = w_packed.shape[0]
  k = x.shape[1]
  group_size, _ = common.group_size_of(w_scale.shape, n, k)
  g = k // group_size
  w = unpack_int4(w_packed, axis=-1).astype(x.dtype).reshape(n, g, group_size)
  part = jnp.einsum("mgk,ngk->mng", x.reshape(x.shape[0], g, group_size), w, preferred_element_type=jnp.float32)
  y = jnp.sum(part * w_scale.astype(jnp.float32).reshape(n, g)[None], axis=-1)
  if bias is not None:
    y = y + bias.astype(jnp.float32)[None, :]
  if gelu:
    y = jax.nn.gelu(y, approximate=False)
  return y.astype(out_dtype)
