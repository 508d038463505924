"""W4A16 decode GEMM for Hopper (small M): bf16 activations x packed int4 weights, Pallas Mosaic GPU.

Packed layout (int4jax.quant.pack_int4): signed int4 in [-8, 7], two per uint8 along K, element 2i in
the LOW nibble, 2i+1 in the HIGH nibble (two's complement); weights ``w_packed`` uint8 ``[N, K/2]``.
Example byte 0x7F: element 2i = 0xF = -1, element 2i+1 = 0x7 = 7. This is XLA's in-memory order for
``jnp.int4``, so the wrapper reinterprets the bytes as ``int4 [N, K]`` (bitcast + reshape, free).
Weight scales: per output channel ``[N]`` or per group of ``group_size`` along K, ``[N, K/group_size]``.

At M <= 64 the cost is reading the weights once. The kernel computes the transposed product
``acc[n, m] = sum_k w[n, k] x[m, k]``: the weight tile (block_n rows of N) is the register A operand of
wgmma after an int4 -> bf16 register cast (times the group scale when per group), the tiny activation
tile sits in shared memory as the B operand (N of wgmma = M padded to 8/16), so tensor cores do the
math and the SMs only stream int4 bytes. Grid = (N / block_n, split_k): many CTAs with a
``num_stages``-deep TMA pipeline each keep enough bytes in flight to saturate HBM. Each split writes
an f32 partial ``[split_k, N, M_pad]``; one small XLA fusion sums the splits and applies
per-channel scale, bias, GELU and the cast (M_pad x N elements: negligible next to the weights).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
import jax.experimental.pallas as pl
import jax.experimental.pallas.mosaic_gpu as plgpu

from int4jax.quant.formats import as_jnp_int4
from kernels_pallas.mosaic.w8a8 import _is_hopper, _transforms


@dataclasses.dataclass(frozen=True)
class Config:
  block_n: int = 64
  block_k: int = 256       # elements; capped at group_size for per-group scales
  split_k: int = 2
  num_stages: int = 4
  semantics: str = "warpgroup"


DEFAULT = Config()
MAX_M = 64


def pick_config(m: int, n: int, k: int) -> Config:
  """Enough CTAs to fill 132 SMs a few times over."""
  ntiles = n // 64
  split = 1
  while ntiles * split < 8 * 132 and k // (split * 2) >= 1024:
    split *= 2
  return dataclasses.replace(DEFAULT, split_k=split)


def can_use(m: int, n: int, k: int, *, w_scale_shape=None, out_dtype=jnp.bfloat16,
            config: Config | None = None) -> bool:
  if not _is_hopper() or m > MAX_M:
    return False
  cfg = config or pick_config(m, n, k)
  bk = cfg.block_k
  if w_scale_shape is not None and len(w_scale_shape) == 2:
    gs = k // w_scale_shape[1]
    bk = min(bk, gs)
    if gs % bk or (k // cfg.split_k) % gs:
      return False
  return n % cfg.block_n == 0 and k % (cfg.split_k * bk) == 0


# jit per (shapes, gelu, out_dtype, config): a model calls this kernel once per layer with the same shapes, and the
# jitted call is traced and lowered once for all of them (un-jitted, each call re-ran the Mosaic lowering: ~1 s
# each, 96 s for BERT-large W4A4 at 8x128 on the H200).
@functools.partial(jax.jit, static_argnames=("gelu", "out_dtype", "config"))
def w4a16_matmul(x, w_packed, w_scale, bias=None, out_dtype=jnp.bfloat16, *, gelu: bool = False,
                 config: Config | None = None):
  """x bf16 [M, K]; w_packed uint8 [N, K/2]; w_scale [N] or [N, K/group_size]; bias [N] -> [M, N]."""
  m, k = x.shape
  n, kh = w_packed.shape
  if kh * 2 != k:
    raise ValueError(f"{x.shape=} and {w_packed.shape=} disagree on K")
  if m > MAX_M:
    raise ValueError(f"{m=} must be <= {MAX_M} for the decode kernel")
  cfg = config or pick_config(m, n, k)
  bn, bk, split = cfg.block_n, cfg.block_k, cfg.split_k
  grouped = w_scale.ndim == 2
  gs = k // w_scale.shape[1] if grouped else k
  if grouped:
    bk = min(bk, gs)
    if gs % bk:
      raise ValueError(f"group_size={gs} must be a multiple of block_k={bk}")
  kc = k // split
  if n % bn:
    raise ValueError(f"{n=} must be a multiple of {bn=}")
  if kc % bk or (grouped and kc % gs):
    raise ValueError(f"{k=} must split into {split=} chunks that are multiples of {bk=} and {gs=}")
  mp = max(8, -(-m // 8) * 8)
  xp = jnp.pad(x.astype(jnp.bfloat16), ((0, mp - m), (0, 0)))
  w4 = as_jnp_int4(w_packed)
  x_tr = _transforms(bk, jnp.bfloat16, "rhs")
  x_sw_elems = 64  # 128-byte swizzle of bf16
  if bk < x_sw_elems:
    x_sw_elems = bk
  w_tr = _transforms(bk, jnp.int4, "lhs")
  o_tr = _transforms(mp, jnp.float32, "out")
  steps = bk // x_sw_elems

  def w4a16_gemm_kernel(w_gmem, x_gmem, s_gmem, o_gmem, o_smem):
    ni = lax.axis_index("n")
    ki = lax.axis_index("k")

    def compute(acc_ref):
      def body(idx, w_smem, x_smem, *s_smem):
        w = w_smem[...]
        if steps == 1:
          plgpu.wgmma_wait(0)
        if grouped:
          s = plgpu.load(s_smem[0].at[0], layout=plgpu.Layout.WGMMA.reduce(1), optimized=False)
          s = s.astype(jnp.bfloat16)
        for j in range(steps):
          ks = slice(j * x_sw_elems, (j + 1) * x_sw_elems)
          wj = w[:, ks].astype(jnp.bfloat16)
          if grouped:
            wj = wj * lax.broadcast_in_dim(s, wj.shape, [0])
          plgpu.wgmma(acc_ref, wj, x_smem.at[:, ks].T)
          plgpu.wgmma_wait(1)

      specs = [
          plgpu.BlockSpec((bn, bk), lambda kk: (0, kk), transforms=w_tr, delay_release=1),
          plgpu.BlockSpec((mp, bk), lambda kk: (0, kk), transforms=x_tr, delay_release=1),
      ]
      args = [w_gmem.at[pl.ds(ni * bn, bn), pl.ds(ki * kc, kc)], x_gmem.at[:, pl.ds(ki * kc, kc)]]
      if grouped:
        specs.append(plgpu.BlockSpec((1, bn), lambda kk: (lax.div(kk * bk, gs), 0), delay_release=1))
        args.append(s_gmem.at[pl.ds(ki * (kc // gs), kc // gs), pl.ds(ni * bn, bn)])
      plgpu.emit_pipeline(body, grid=(kc // bk,), in_specs=specs,
                          max_concurrent_steps=cfg.num_stages)(*args)
      plgpu.wgmma_wait(0)
      return acc_ref[...]

    acc = pl.run_scoped(compute, plgpu.ACC((bn, mp), jnp.float32))
    o_smem[...] = acc
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_smem, o_gmem.at[ki, pl.ds(ni * bn, bn)])
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)

  sem = (plgpu.LoweringSemantics.Warpgroup if cfg.semantics == "warpgroup"
         else plgpu.LoweringSemantics.Lane)
  f = plgpu.kernel(
      w4a16_gemm_kernel,  # the CUDA kernel's name in profiles
      out_type=jax.ShapeDtypeStruct((split, n, mp), jnp.float32),
      grid=(n // bn, split),
      grid_names=("n", "k"),
      scratch_types=[plgpu.SMEM((bn, mp), jnp.float32, transforms=o_tr)],
      compiler_params=plgpu.CompilerParams(lowering_semantics=sem),
  )
  s_t = (w_scale.astype(jnp.float32).T if grouped else jnp.zeros((1, n), jnp.float32))
  part = f(w4, xp, s_t)
  y = part.sum(0)[:, :m].T
  if not grouped:
    y = y * w_scale.astype(jnp.float32).reshape(1, n)
  if bias is not None:
    y = y + bias.astype(jnp.float32).reshape(1, n)
  if gelu:
    y = jax.nn.gelu(y, approximate=False)
  return y.astype(out_dtype)
