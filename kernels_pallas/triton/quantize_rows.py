"""Token-wise dynamic quantization (optionally fused with the preceding LayerNorm), portable path (Pallas, Triton).

x [M, K] bf16/f32 -> (q, scale [M] f32), symmetric, DeepSpeed convention (paper_spec.md §1.2, §8):
S = max(max_k |x[m, k]|, ABSMAX_FLOOR) / 2^(bits-1), q = clip(round_half_even(x / S), -2^(bits-1), 2^(bits-1) - 1).
bits=4: q is packed [M, K/2] uint8, element 2i in the LOW nibble, 2i+1 in the HIGH nibble, two's complement
([-8, 7] -> 0x78; layout.py). bits=8: q is [M, K] int8.
With ln_gamma (and optional ln_beta) the row is first LayerNorm'ed in f32 (biased variance, eps inside the rsqrt) and
the f32 LN output, not a bf16-rounded copy, is quantized.

One program owns `block_rows` whole rows (the per-token scale is an in-register reduction, as in ZeroQuant App. D).
Each row tile is split in registers into its even and odd columns (tt.split), exactly the split the packed byte
needs, so packing is a shift and an or. K is padded to a power of two in registers and masked.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels_pallas.triton import common
from kernels_pallas.layout import ABSMAX_FLOOR, pack_int4

X_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32), jnp.dtype(jnp.float16))


def _quantize_rows_kernel(x_ref, *refs, m, k, bits, block_rows, kh_pad, has_gamma, has_beta, eps):
  refs = list(refs)
  g_ref = refs.pop(0) if has_gamma else None
  b_ref = refs.pop(0) if has_beta else None
  q_ref, s_ref = refs[-2:]
  kh = k // 2
  r0 = pl.program_id(0) * block_rows
  rows = pl.ds(r0, block_rows)
  row_ok = (r0 + jnp.arange(block_rows)) < m
  col_ok = jnp.arange(kh_pad) < kh  # on the even/odd halves
  mask = row_ok[:, None] & col_ok[None, :]
  full_cols = pl.ds(0, 2 * kh_pad)
  full_mask = row_ok[:, None] & (jnp.arange(2 * kh_pad) < k)[None, :]

  def load_vec(ref):
    v = plt.load(ref.at[full_cols], mask=jnp.arange(2 * kh_pad) < k, other=0).astype(jnp.float32)
    return common.deinterleave(v)

  xe, xo = common.deinterleave(plt.load(x_ref.at[rows, full_cols], mask=full_mask, other=0).astype(jnp.float32))

  if has_gamma:
    mean = (jnp.sum(xe, axis=1) + jnp.sum(xo, axis=1)) * (1.0 / k)
    xe = jnp.where(col_ok[None, :], xe - mean[:, None], 0.0)
    xo = jnp.where(col_ok[None, :], xo - mean[:, None], 0.0)
    var = (jnp.sum(xe * xe, axis=1) + jnp.sum(xo * xo, axis=1)) * (1.0 / k)
    rstd = jax.lax.rsqrt(var + eps)[:, None]
    ge, go = load_vec(g_ref)
    xe, xo = xe * rstd * ge[None, :], xo * rstd * go[None, :]
    if has_beta:
      be, bo = load_vec(b_ref)
      xe, xo = xe + be[None, :], xo + bo[None, :]

  qmax = float(2 ** (bits - 1))
  absmax = jnp.maximum(jnp.max(jnp.abs(xe), axis=1), jnp.max(jnp.abs(xo), axis=1))
  scale = jnp.maximum(absmax, ABSMAX_FLOOR) * (1.0 / qmax)  # exact: a power-of-two divisor
  qe = jnp.clip(common.round_half_even(xe / scale[:, None]), -qmax, qmax - 1.0)
  qo = jnp.clip(common.round_half_even(xo / scale[:, None]), -qmax, qmax - 1.0)
  if bits == 4:
    lo = qe.astype(jnp.int32) & 0xF
    hi = (qo.astype(jnp.int32) & 0xF) << 4
    plt.store(q_ref.at[rows, pl.ds(0, kh_pad)], (lo | hi).astype(jnp.uint8), mask=mask)
  else:
    plt.store(q_ref.at[rows, full_cols], common.interleave(qe, qo).astype(jnp.int8), mask=full_mask)
  plt.store(s_ref.at[rows], scale, mask=row_ok)


def check_quantize_rows(x, bits, ln_gamma, ln_beta):
  if x.ndim != 2:
    raise ValueError(f"x must be 2-D [M, K], got shape {x.shape}")
  if x.dtype not in X_DTYPES:
    raise ValueError(f"x.dtype={x.dtype} must be bfloat16, float16 or float32")
  if bits not in (4, 8):
    raise ValueError(f"{bits=} must be 4 or 8")
  m, k = x.shape
  if m == 0 or k == 0 or k % 2:
    raise ValueError(f"{k=} must be even and positive and {m=} positive")
  if ln_beta is not None and ln_gamma is None:
    raise ValueError("ln_beta without ln_gamma: pass ln_gamma (ones for none) to run the LayerNorm")
  for name, p in (("ln_gamma", ln_gamma), ("ln_beta", ln_beta)):
    if p is not None and p.shape != (k,):
      raise ValueError(f"{name}.shape={p.shape} must be ({k},)")
  kh_pad = common.next_pow2(k // 2)
  if kh_pad > 8192:
    raise ValueError(f"{k=} must be <= 16384 (a whole row is held in registers)")
  return m, k, kh_pad


def can_use(x, bits, ln_gamma=None, ln_beta=None, eps=1e-5):
  try:
    check_quantize_rows(x, bits, ln_gamma, ln_beta)
  except ValueError:
    return False
  return True


@functools.partial(jax.jit, static_argnames=("bits", "eps", "block_rows", "interpret", "poison"))
def quantize_rows_pallas(x, bits, ln_gamma=None, ln_beta=None, eps=1e-5, *, block_rows=None, interpret=False,
                         poison=False):
  m, k, kh_pad = check_quantize_rows(x, bits, ln_gamma, ln_beta)
  if block_rows is None:  # about 4K elements per program per half-row tile
    block_rows = min(max(1, 4096 // kh_pad), common.next_pow2(m), 32)
  num_warps = 8 if block_rows * kh_pad >= 4096 else 4
  q_shape = (m, k // 2) if bits == 4 else (m, k)
  q_dtype = jnp.uint8 if bits == 4 else jnp.int8
  inputs = [x] + [p for p in (ln_gamma, ln_beta) if p is not None]
  aliases = {}
  if poison:
    aliases = {len(inputs): 0, len(inputs) + 1: 1}
    inputs += [common.poison_like(q_shape, q_dtype), common.poison_like((m,), jnp.float32)]
  kernel = functools.partial(_quantize_rows_kernel, m=m, k=k, bits=bits, block_rows=block_rows, kh_pad=kh_pad,
                             has_gamma=ln_gamma is not None, has_beta=ln_beta is not None, eps=float(eps))
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct(q_shape, q_dtype), jax.ShapeDtypeStruct((m,), jnp.float32)),
      grid=(common.cdiv(m, block_rows),),
      input_output_aliases=aliases,
      compiler_params=plt.CompilerParams(num_warps=num_warps, num_stages=1),
      interpret=interpret,
      name=f"quantize_rows_int{bits}",
  )(*inputs)


@functools.partial(jax.jit, static_argnames=("bits", "eps"))
def quantize_rows_xla(x, bits, ln_gamma=None, ln_beta=None, eps=1e-5):
  x = x.astype(jnp.float32)
  if ln_gamma is not None:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - mean) * jax.lax.rsqrt(jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True) + eps)
    x = x * ln_gamma.astype(jnp.float32)
    if ln_beta is not None:
      x = x + ln_beta.astype(jnp.float32)
  qmax = float(2 ** (bits - 1))
  scale = jnp.maximum(jnp.max(jnp.abs(x), axis=-1), ABSMAX_FLOOR) / qmax
  q = jnp.clip(jnp.round(x / scale[:, None]), -qmax, qmax - 1).astype(jnp.int8)
  return (pack_int4(q, axis=-1) if bits == 4 else q), scale
