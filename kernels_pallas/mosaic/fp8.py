"""W4A4 on the Hopper FP8 tensor cores (wgmma e4m3 x e4m3 -> f32), Pallas Mosaic GPU.

Every INT4 value -8..7 is exact in float8_e4m3fn and every product (|p| <= 64) is exact, so the GEMM is an
integer GEMM as long as the accumulator keeps every partial sum exactly. Operands:
- weights: the offline layout `int4jax.quant.formats.int4_to_e4m3` (N, K) float8_e4m3fn, K contiguous (one byte
  per value; made once by `kernels_pallas.ops.prepare_weight`), TMA'd to SMEM, wgmma B operand;
- activations: either packed int4 (bitcast of the canonical (M, K/2) uint8), TMA'd as int4 and cast int4 -> e4m3
  in registers (Mosaic's prmt lookup-table cast), wgmma A from registers (`a_in_regs=True`); or (M, K) e4m3 bytes
  from SMEM (`a_in_regs=False`, one XLA unpack pass of x first).
Warp-specialized persistent kernel: one TMA warpgroup and two wgmma warpgroups, CTA tile (2*block_m, block_n), a
grid-stride loop over output tiles in planar-snake order (L2 reuse), `num_stages` TMA stages.

FP8 accumulation: Hopper's fp8 wgmma does not keep a full f32 sum (DeepSeek-V3 report: about 14 bits). With
`promote=True` each K step (block_k = 128 values, |partial| <= 128 * 64 = 2^13, exact) goes into a fresh wgmma
accumulator that is added to an f32 register total (exact below 2^24, K < 2^18), as DeepGEMM does.
tests/kernels/test_hopper.py checks both settings against the int64 reference with all -8 operands.
Epilogue (f32 registers): acc * x_scale[m] * w_scale[n] + bias[n] (+ erf GELU), bf16 via SMEM + TMA store.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
import jax.experimental.pallas as pl
import jax.experimental.pallas.mosaic_gpu as plgpu

from kernels_pallas.mosaic.w8a8 import _check_out_dtype, _is_hopper, _transforms
from kernels_pallas.triton.common import gelu_erf_f32

E4M3 = jnp.float8_e4m3fn


@dataclasses.dataclass(frozen=True)
class FP8Config:
  block_m: int = 128
  block_n: int = 128
  block_k: int = 128       # values per K step (128 bytes of e4m3 = one 128-byte swizzle row)
  num_stages: int = 4
  a_in_regs: bool = True   # x int4 -> e4m3 in registers (else x e4m3 from SMEM)
  promote: bool = False    # fresh accumulator per K step, summed in f32 registers
  snake_width: int = 0     # planar-snake tile width over the output grid (0: row-major, as mosaic/w8a8.py)
  prefetch: bool = False   # load the epilogue's scales and bias before the K loop (hides their latency)
  overlap: int = 0         # 1: one wgmma in flight (wait(1), slots released a step late): WRONG results on the H200
                           # (NOTES.md, run 5); kept only to reproduce that finding


DEFAULT = FP8Config()


def can_use(m: int, n: int, k: int, *, w_scale_shape=None, out_dtype=jnp.bfloat16, config=None) -> bool:
  config = config or DEFAULT
  if not _is_hopper() or (w_scale_shape is not None and len(w_scale_shape) != 1):
    return False
  return (n % config.block_n == 0 and k % config.block_k == 0 and k < 2 ** 18
          and jnp.dtype(out_dtype) == jnp.dtype(jnp.bfloat16))


# jit per (shapes, gelu, out_dtype, config): a model calls this kernel once per layer with the same shapes, and the
# jitted call is traced and lowered once for all of them (un-jitted, each call re-ran the Mosaic lowering: ~1 s
# each, 96 s for BERT-large W4A4 at 8x128 on the H200).
@functools.partial(jax.jit, static_argnames=("gelu", "out_dtype", "config"))
def fp8_gemm(x, w_e4m3, x_scale, w_scale, bias, *, gelu: bool, out_dtype=jnp.bfloat16,
             config: FP8Config = DEFAULT):
  """x: int4 [M, K] (a_in_regs) or e4m3 [M, K]; w_e4m3 [N, K]; x_scale [M]; w_scale [N]; bias [N] | None."""
  _check_out_dtype(out_dtype)
  m, k = x.shape
  n, k2 = w_e4m3.shape
  cfg = config
  bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
  if k != k2 or w_e4m3.dtype != E4M3:
    raise ValueError(f"{x.shape=} / {w_e4m3.shape=} {w_e4m3.dtype=}: want w float8_e4m3fn [N, K], same K")
  if cfg.a_in_regs != (x.dtype == jnp.int4):
    raise ValueError(f"{x.dtype=} does not match a_in_regs={cfg.a_in_regs} (int4 in registers, e4m3 from SMEM)")
  if n % bn or k % bk:
    raise ValueError(f"{n=} must be a multiple of {bn=} and {k=} of {bk=}")
  cta_m = 2 * bm
  mp = pl.cdiv(m, cta_m) * cta_m
  if mp != m:
    x = jnp.pad(x, ((0, mp - m), (0, 0)))
    x_scale = jnp.pad(x_scale, (0, mp - m))
  bias = jnp.zeros((n,), jnp.float32) if bias is None else bias.astype(jnp.float32)
  x_scale = x_scale.astype(jnp.float32)
  w_scale = w_scale.astype(jnp.float32)
  x_tr = _transforms(bk, x.dtype, "lhs")
  w_tr = _transforms(bk, E4M3, "rhs")
  out_tr = _transforms(bn, out_dtype, "out")
  m_iters, n_iters, k_iters = mp // cta_m, n // bn, k // bk
  row = plgpu.Layout.WGMMA.reduce(1)
  col = plgpu.Layout.WGMMA.reduce(0)

  overlap = 0 if cfg.promote else cfg.overlap

  def fp8_gemm_kernel(x_gmem, w_gmem, xs_gmem, ws_gmem, b_gmem, o_gmem, o_smem):
    def get_pipeline(body, ctx):
      return plgpu.emit_pipeline_warp_specialized(
          body, grid=(k_iters,), memory_registers=40,
          in_specs=[plgpu.BlockSpec((cta_m, bk), lambda kk: (0, kk), transforms=x_tr, memory_space=plgpu.SMEM,
                                    delay_release=overlap),
                    plgpu.BlockSpec((bn, bk), lambda kk: (0, kk), transforms=w_tr, memory_space=plgpu.SMEM,
                                    delay_release=overlap)],
          wg_axis="wg", num_compute_wgs=2, max_concurrent_steps=cfg.num_stages, compute_context=ctx)

    ignore = lambda *_, **__: None

    @functools.partial(pl.run_scoped,
                       allocs=get_pipeline(ignore, ignore).get_allocations(x_gmem, w_gmem),
                       collective_axes="wg")
    def _scope(allocs):
      wg = lax.axis_index("wg")

      @plgpu.nd_loop((m_iters * n_iters,), collective_axes="sm")
      def _tiles(info):
        (lin,) = info.index
        if cfg.snake_width:
          mi, ni = plgpu.planar_snake(lin, (m_iters, n_iters), 1, cfg.snake_width)
        else:
          mi, ni = lax.div(lin, n_iters), lax.rem(lin, n_iters)
        row0 = mi * cta_m + wg * bm

        def load_epilogue_operands():  # issued before the K loop, so their latency hides behind it
          return (plgpu.load(xs_gmem.at[pl.ds(row0, bm)], layout=row, optimized=False),
                  plgpu.load(ws_gmem.at[pl.ds(ni * bn, bn)], layout=col, optimized=False),
                  plgpu.load(b_gmem.at[pl.ds(ni * bn, bn)], layout=col, optimized=False))

        def epilogue(acc, operands):
          xs, ws, bb = operands
          y = acc * lax.broadcast_in_dim(xs, (bm, bn), [0])
          y = y * lax.broadcast_in_dim(ws, (bm, bn), [1]) + lax.broadcast_in_dim(bb, (bm, bn), [1])
          if gelu:
            y = gelu_erf_f32(y)
          plgpu.wait_smem_to_gmem(0, wait_read_only=True)
          o_smem[wg] = y.astype(out_dtype)
          plgpu.commit_smem()
          plgpu.copy_smem_to_gmem(o_smem.at[wg], o_gmem.at[pl.ds(row0, bm), pl.ds(ni * bn, bn)])

        def a_operand(x_smem):
          a = x_smem.at[pl.ds(wg * bm, bm)]
          return a[...].astype(E4M3) if cfg.a_in_regs else a

        if cfg.promote:
          def ctx(eval_pipeline):
            operands = load_epilogue_operands() if cfg.prefetch else None
            total = eval_pipeline(jnp.zeros((bm, bn), jnp.float32))
            epilogue(total, operands or load_epilogue_operands())

          def mma(_, x_smem, w_smem, total):
            def step(acc_ref):
              plgpu.wgmma(acc_ref, a_operand(x_smem), w_smem.T)
              plgpu.wgmma_wait(0)
              return acc_ref[...]
            return total + pl.run_scoped(step, plgpu.ACC((bm, bn), jnp.float32))
        else:
          def ctx(eval_pipeline):
            @functools.partial(pl.run_scoped, acc_ref=plgpu.ACC((bm, bn), jnp.float32))
            def _acc(acc_ref):
              operands = load_epilogue_operands() if cfg.prefetch else None
              eval_pipeline(acc_ref)
              plgpu.wgmma_wait(0)
              epilogue(acc_ref[...], operands or load_epilogue_operands())

          def mma(_, x_smem, w_smem, acc_ref):
            plgpu.wgmma(acc_ref, a_operand(x_smem), w_smem.T)
            plgpu.wgmma_wait(overlap)
            return acc_ref

        get_pipeline(mma, ctx)(x_gmem.at[pl.ds(mi * cta_m, cta_m)], w_gmem.at[pl.ds(ni * bn, bn)],
                               allocations=allocs)
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)

  num_sms = getattr(jax.devices()[0], "core_count", 132)
  f = plgpu.kernel(
      fp8_gemm_kernel,  # the CUDA kernel's name in profiles
      out_type=jax.ShapeDtypeStruct((mp, n), out_dtype),
      grid=(num_sms,), grid_names=("sm",), num_threads=3, thread_name="wg",
      scratch_types=[plgpu.SMEM((2, bm, bn), out_dtype, transforms=out_tr)],
      compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
  )
  out = f(x, w_e4m3, x_scale, w_scale, bias)
  return out[:m] if mp != m else out
