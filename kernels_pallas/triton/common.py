"""Pieces shared by the portable (Pallas Triton-lowered) kernels: tuning config, shape checks, epilogue math.

The Triton lowering of jax 0.11 has no `erf` and no `round`, so both are built here from lowered primitives
(exp, floor, select) and used identically by the GPU path and by interpret mode on the CPU.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

OUT_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class MatmulConfig:
  """One tile schedule. `block_k` counts unpacked K elements per pipeline step (it must divide K and group_size)."""
  block_m: int
  block_n: int
  block_k: int
  num_warps: int = 4
  num_stages: int = 3

  def compiler_params(self):
    return plt.CompilerParams(num_warps=self.num_warps, num_stages=self.num_stages)


def next_pow2(v: int) -> int:
  return 1 << max(0, (int(v) - 1).bit_length())


def default_config(m: int, n: int, k: int, group_size: int, *, min_block_k: int = 64,
                   max_block_m: int = 64) -> MatmulConfig:
  """Heuristic tile choice: the M tile covers small M in one tile (>= 16, Triton's dot minimum)."""
  block_m = min(max(next_pow2(m), 16), max_block_m)
  small_m = m <= 64
  block_n = next((b for b in ((64, 128, 32, 16) if small_m else (128, 64, 32, 16)) if n % b == 0), 16)
  # Conservative: a 128x128x128 Triton-lowered int8 tile once hung the compiler (hardware.md); 64x128x128 is the
  # default until the GPU sweep says otherwise.
  block_k = next((b for b in (128, 64, 32) if b >= min_block_k and k % b == 0 and group_size % b == 0),
                 min_block_k)
  if small_m:  # weight-bandwidth bound: long K steps, more stages
    block_k = next((b for b in (512, 256, 128, 64) if k % b == 0 and group_size % b == 0), block_k)
  num_warps = 8 if block_m * block_n >= 128 * 128 else 4
  return MatmulConfig(block_m, block_n, block_k, num_warps=num_warps, num_stages=4 if small_m else 3)


def group_size_of(w_scale_shape: tuple[int, ...], n: int, k: int) -> tuple[int, bool]:
  """Returns (group_size, grouped) from a weight-scale shape [N] (per channel) or [N, K // group_size]."""
  if len(w_scale_shape) == 1:
    if w_scale_shape[0] != n:
      raise ValueError(f"w_scale shape {w_scale_shape} must be ({n},) or ({n}, K // group_size)")
    return k, False
  if len(w_scale_shape) != 2 or w_scale_shape[0] != n or w_scale_shape[1] == 0 or k % w_scale_shape[1]:
    raise ValueError(f"w_scale shape {w_scale_shape} must be ({n},) or ({n}, K // group_size) with {k=}")
  return k // w_scale_shape[1], True


def check_epilogue(m: int, n: int, k: int, w_scale, bias, out_dtype, config, *, min_block_k: int):
  """Shared checks of the GEMM epilogue operands and the tile config; returns (group_size, grouped, config)."""
  group_size, grouped = group_size_of(w_scale.shape, n, k)
  if bias is not None and bias.shape != (n,):
    raise ValueError(f"bias.shape={bias.shape} must be ({n},)")
  if jnp.dtype(out_dtype) not in OUT_DTYPES:
    raise ValueError(f"out_dtype={jnp.dtype(out_dtype)} must be bfloat16 or float32")
  if m == 0:
    raise ValueError(f"{m=} must be positive")
  config = config or default_config(m, n, k, group_size, min_block_k=min_block_k)
  check_config(config, n=n, k=k, group_size=group_size, min_block_k=min_block_k)
  return group_size, grouped, config


def check_config(cfg: MatmulConfig, *, n: int, k: int, group_size: int, min_block_k: int = 32) -> None:
  """Raises ValueError naming the first constraint the shape breaks for this tile schedule."""
  block_n, block_k = cfg.block_n, cfg.block_k
  for name, v in (("block_m", cfg.block_m), ("block_n", block_n), ("block_k", block_k)):
    if v < 16 or v & (v - 1):
      raise ValueError(f"{name}={v} must be a power of two >= 16 (Triton tile)")
  if block_k < min_block_k:
    raise ValueError(f"{block_k=} must be >= {min_block_k} (int8 MMA needs >= 32 bytes of K per dot)")
  if n % block_n:
    raise ValueError(f"{n=} must be a multiple of {block_n=}")
  if k % block_k:
    raise ValueError(f"{k=} must be a multiple of {block_k=}")
  if group_size % block_k:
    raise ValueError(f"{group_size=} must be a multiple of {block_k=}")


def erf_f32(x: jax.Array) -> jax.Array:
  """erf from exp and a rational polynomial (Abramowitz & Stegun 7.1.26), |error| <= 1.5e-7."""
  a = jnp.abs(x)
  t = 1.0 / (1.0 + 0.3275911 * a)
  poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
  r = 1.0 - poly * jnp.exp(-a * a)
  return jnp.where(x < 0, -r, r)


def gelu_erf_f32(y: jax.Array) -> jax.Array:
  """Exact-form GELU 0.5 y (1 + erf(y / sqrt 2)) as BERT uses it (not the tanh form); |error| <= 1.1e-7 |y|."""
  return 0.5 * y * (1.0 + erf_f32(y * (1.0 / math.sqrt(2.0))))


def round_half_even(y: jax.Array) -> jax.Array:
  """jnp.round semantics (ties to even) from floor, for lowerings without a round primitive."""
  f = jnp.floor(y)
  d = y - f
  f_odd = (f - 2.0 * jnp.floor(0.5 * f)) != 0.0
  return jnp.where((d > 0.5) | ((d == 0.5) & f_odd), f + 1.0, f)


def dot_nt(a: jax.Array, b: jax.Array, acc_dtype) -> jax.Array:
  """a [m, k] . b [n, k]^T with the requested accumulator (b is K-major, as weights are stored)."""
  return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=acc_dtype)


def deinterleave(t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[..., 2j] -> (t[..., 0::2], t[..., 1::2]) as a register split (lowers to tt.split; strided loads have no
  interpret-mode support in jax 0.11)."""
  return tuple(jnp.unstack(t.reshape(*t.shape[:-1], t.shape[-1] // 2, 2), axis=-1))


def interleave(a: jax.Array, b: jax.Array) -> jax.Array:
  """Inverse of `deinterleave` (lowers to tt.join)."""
  return jnp.stack([a, b], axis=-1).reshape(*a.shape[:-1], 2 * a.shape[-1])


def poison_like(shape, dtype) -> jax.Array:
  """An output buffer pre-filled with NaN (float) or a sentinel (int) to expose tiles a kernel never writes."""
  dtype = jnp.dtype(dtype)
  fill = jnp.nan if jnp.issubdtype(dtype, jnp.floating) else (0xA5 if dtype == jnp.uint8 else -77)
  return jnp.full(shape, fill, dtype)


cdiv = pl.cdiv
