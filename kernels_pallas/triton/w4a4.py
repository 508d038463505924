"""W4A4 GEMM, portable path (Pallas, Triton lowering): packed int4 x packed int4 -> int32 -> fused epilogue.

Layout (layout.py): x_packed [M, K/2] uint8, w_packed [N, K/2] uint8 (weights stored (N, K), K contiguous); byte i
holds element 2i in the LOW nibble and 2i+1 in the HIGH nibble, two's complement. Example: [-8, 7] -> 0x78.
Scales: x_scale [M] f32 (per token), w_scale [N] (per output channel) or [N, K // group_size] (groups along K).

Math: y[m, n] = act( x_scale[m] * sum_g w_scale[n, g] * sum_{k in g} x[m, k] w[n, k] + bias[n] ).
The integer sum is exact: each K tile is split into its even (low nibble) and odd (high nibble) halves,
sum_k x w = x_even . w_even + x_odd . w_odd, two int8 x int8 -> int32 dots on sign-extended nibbles, so nothing is
re-interleaved. Per-group partial sums are exact int32, scaled per group and summed in f32. act is the erf GELU
(common.gelu_erf_f32). M need not be a multiple of block_m: rows >= M are masked on load and on store.
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


def _unpack_nibbles(b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """uint8 tile -> (low, high) int8 tiles, sign-extended by arithmetic shifts."""
  b = lax.bitcast_convert_type(b, jnp.int8)
  return (b << 4) >> 4, b >> 4


def _int_gemm_kernel(x_ref, xs_ref, w_ref, ws_ref, *refs, m, k, group_size, cfg, packed, grouped, has_bias,
                     gelu):
  b_ref = refs[0] if has_bias else None
  o_ref = refs[-1]  # an aliased poison buffer, if any, sits between bias and o_ref and is never read
  block_m, block_n = cfg.block_m, cfg.block_n
  kb = cfg.block_k // 2 if packed else cfg.block_k  # stored elements per K step
  m0 = pl.program_id(0) * block_m
  n0 = pl.multiple_of(pl.program_id(1) * block_n, block_n)
  rows, cols = pl.ds(m0, block_m), pl.ds(n0, block_n)
  row_ok = (m0 + jnp.arange(block_m)) < m

  def k_step(s, acc):
    off = pl.multiple_of(s * kb, kb)
    xb = plt.load(x_ref.at[rows, pl.ds(off, kb)], mask=row_ok[:, None], other=0)
    wb = plt.load(w_ref.at[cols, pl.ds(off, kb)])
    if packed:
      x_lo, x_hi = _unpack_nibbles(xb)
      w_lo, w_hi = _unpack_nibbles(wb)
      return acc + common.dot_nt(x_lo, w_lo, jnp.int32) + common.dot_nt(x_hi, w_hi, jnp.int32)
    return acc + common.dot_nt(xb, wb, jnp.int32)

  steps = group_size // cfg.block_k
  zero = jnp.zeros((block_m, block_n), jnp.int32)
  if grouped:
    def group(g, acc):
      part = lax.fori_loop(g * steps, (g + 1) * steps, k_step, zero)
      return acc + part.astype(jnp.float32) * plt.load(ws_ref.at[cols, g])[None, :]
    acc = lax.fori_loop(0, k // group_size, group, jnp.zeros((block_m, block_n), jnp.float32))
  else:
    acc = lax.fori_loop(0, steps, k_step, zero).astype(jnp.float32) * plt.load(ws_ref.at[cols])[None, :]

  y = acc * plt.load(xs_ref.at[rows], mask=row_ok, other=0.0)[:, None]
  if has_bias:
    y = y + plt.load(b_ref.at[cols]).astype(jnp.float32)[None, :]
  if gelu:
    y = common.gelu_erf_f32(y)
  plt.store(o_ref.at[rows, cols], y.astype(o_ref.dtype), mask=row_ok[:, None])


def check_int_gemm(x, x_scale, w, w_scale, bias, out_dtype, *, packed: bool, config: MatmulConfig | None):
  """Validates shapes/dtypes; returns (m, n, k, group_size, grouped, config). Errors name the offending value."""
  name = "x_packed" if packed else "x_q"
  want = jnp.uint8 if packed else jnp.int8
  if x.ndim != 2 or w.ndim != 2:
    raise ValueError(f"{name} and w must be 2-D, got {x.shape} and {w.shape}")
  for nm, a in ((name, x), ("w", w)):
    if a.dtype != want:
      raise ValueError(f"{nm}.dtype={a.dtype} must be {jnp.dtype(want)}")
  m, kx = x.shape
  n, kw = w.shape
  if kx != kw:
    raise ValueError(f"reduction sizes differ: {name} has {kx}, w has {kw} (stored elements)")
  k = 2 * kx if packed else kx
  if x_scale.shape != (m,):
    raise ValueError(f"x_scale.shape={x_scale.shape} must be ({m},)")
  group_size, grouped, config = common.check_epilogue(m, n, k, w_scale, bias, out_dtype, config,
                                                      min_block_k=64 if packed else 32)
  return m, n, k, group_size, grouped, config


@functools.partial(jax.jit, static_argnames=("gelu", "out_dtype", "packed", "config", "interpret", "poison"))
def int_gemm_pallas(x, x_scale, w, w_scale, bias=None, *, gelu=False, out_dtype=jnp.bfloat16, packed=True,
                    config: MatmulConfig | None = None, interpret=False, poison=False):
  """Shared W4A4 (packed=True) / W8A8 (packed=False) Pallas call. poison=True aliases a NaN-filled output."""
  m, n, k, group_size, grouped, cfg = check_int_gemm(x, x_scale, w, w_scale, bias, out_dtype, packed=packed,
                                                     config=config)
  out_dtype = jnp.dtype(out_dtype)
  inputs = [x, x_scale.astype(jnp.float32), w, w_scale.astype(jnp.float32)]
  if bias is not None:
    inputs.append(bias)
  aliases = {}
  if poison:
    aliases = {len(inputs): 0}
    inputs.append(common.poison_like((m, n), out_dtype))
  kernel = functools.partial(_int_gemm_kernel, m=m, k=k, group_size=group_size, cfg=cfg, packed=packed,
                             grouped=grouped, has_bias=bias is not None, gelu=gelu)
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((m, n), out_dtype),
      grid=(common.cdiv(m, cfg.block_m), n // cfg.block_n),
      input_output_aliases=aliases,
      compiler_params=cfg.compiler_params(),
      interpret=interpret,
      name=f"{'w4a4' if packed else 'w8a8'}_matmul",
  )(*inputs)


def can_use(x_packed, x_scale, w_packed, w_scale, bias=None, gelu=False, out_dtype=jnp.bfloat16, *, config=None):
  """True if the portable kernel supports these operands (shapes/dtypes only; the device is checked by dispatch)."""
  try:
    check_int_gemm(x_packed, x_scale, w_packed, w_scale, bias, out_dtype, packed=True, config=config)
  except ValueError:
    return False
  return True


def w4a4_matmul_pallas(x_packed, x_scale, w_packed, w_scale, bias=None, gelu=False, out_dtype=jnp.bfloat16, *,
                       config=None, interpret=False, poison=False):
  return int_gemm_pallas(x_packed, x_scale, w_packed, w_scale, bias, gelu=gelu, out_dtype=out_dtype, packed=True,
                         config=config, interpret=interpret, poison=poison)


def int_epilogue_xla(acc_f32, x_scale, bias, gelu, out_dtype):
  y = acc_f32 * x_scale.astype(jnp.float32)[:, None]
  if bias is not None:
    y = y + bias.astype(jnp.float32)[None, :]
  if gelu:
    y = jax.nn.gelu(y, approximate=False)
  return y.astype(out_dtype)


def int_gemm_xla(x_int, x_scale, w_int, w_scale, bias, gelu, out_dtype):
  """XLA path on int8 operands [M, K] x [N, K]: int32 dot per group, then the same epilogue (erf GELU exact)."""
  n, k = w_int.shape
  group_size, grouped = common.group_size_of(w_scale.shape, n, k)
  w_scale = w_scale.astype(jnp.float32)
  if not grouped:
    acc = lax.dot_general(x_int, w_int, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    acc = acc.astype(jnp.float32) * w_scale[None, :]
  else:
    g = k // group_size
    xg = x_int.reshape(x_int.shape[0], g, group_size)
    wg = w_int.reshape(n, g, group_size)
    part = jnp.einsum("mgk,ngk->mng", xg, wg, preferred_element_type=jnp.int32)
    acc = jnp.sum(part.astype(jnp.float32) * w_scale[None], axis=-1)
  return int_epilogue_xla(acc, x_scale, bias, gelu, out_dtype)


@functools.partial(jax.jit, static_argnames=("gelu", "out_dtype"))
def w4a4_matmul_xla(x_packed, x_scale, w_packed, w_scale, bias=None, gelu=False, out_dtype=jnp.bfloat16):
  return int_gemm_xla(unpack_int4(x_packed, axis=-1), x_scale, unpack_int4(w_packed, axis=-1), w_scale, bias, gelu,
                      jnp.dtype(out_dtype))
