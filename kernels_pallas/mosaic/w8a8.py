"""W8A8 (and the shared integer core of W4A4) GEMM for Hopper, Pallas Mosaic GPU lowering.

Computes ``out[m, n] = epilogue(sum_k x[m, k] * w[n, k])`` with exact int32 accumulation on the
int8 tensor cores (wgmma s8 x s8 -> s32), then in registers
``acc * x_scale[m] * w_scale[n] + bias[n]``, optional GELU (erf), cast to bf16.

Layout: ``x`` int8 ``[M, K]`` and ``w`` int8 ``[N, K]`` (weights stored (N, K), K contiguous: wgmma
wants 8-bit operands K-major, and this is the layout XLA's int8 path also needs).  For W4A4 the same
kernel takes ``jnp.int4`` operands (see ``hopper_w4a4``): the activation tile is cast int4 -> int8 in
registers and used as the register A operand of wgmma; the weight tile is cast int4 -> int8 in
registers and stored to an int8 shared-memory tile that is the B operand.

Grid: one CTA (one warpgroup) per (block_m, block_n) output tile; a TMA pipeline of
``num_stages`` streams the K tiles. M is padded up to block_m by the wrapper.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
import jax.experimental.pallas as pl
import jax.experimental.pallas.mosaic_gpu as plgpu

from kernels_pallas.triton.common import gelu_erf_f32


@dataclasses.dataclass(frozen=True)
class Config:
  block_m: int = 128
  block_n: int = 128
  block_k: int = 128      # elements (not bytes)
  num_stages: int = 4
  semantics: str = "warpgroup"   # "warpgroup" | "lane"
  overlap: int = 1      # 1: keep one wgmma in flight (wait(1), delay_release=1, 2 unpack slots)
  sub_k: int = 2        # wgmmas per pipeline step (register-A slices), >= 2 for overlap with register A
  w_prepass: int = 0    # W4A4 only: unpack the int4 weights to int8 in one XLA pass before the GEMM


SINGLE_WG = Config()   # 1 warpgroup per 128x128 tile, non-persistent: 777 TOPS at 3072x4096x1024


def _is_hopper() -> bool:
  try:
    d = jax.devices()[0]
    return d.platform == "gpu" and getattr(d, "compute_capability", "") in ("9.0", "9.0a")
  except Exception:  # noqa: BLE001
    return False


def can_use(m: int, n: int, k: int, *, w_scale_shape=None, out_dtype=jnp.bfloat16,
            config=None) -> bool:
  """True when the Mosaic kernel supports this problem on this device."""
  if not _is_hopper():
    return False
  if w_scale_shape is not None and len(w_scale_shape) != 1:
    return False  # per-group weight scales: not in the integer-accumulating kernel
  config = config or DEFAULT
  # bf16 output only: the epilogue stages the output tile in SMEM, and an f32 tile overflows the 227 KiB of
  # SMEM beside the operand pipeline (seen on the H100: 262208 > 232448 bytes); f32 goes to the Triton path.
  return (n % config.block_n == 0 and k % config.block_k == 0 and m >= 1
          and jnp.dtype(out_dtype) == jnp.dtype(jnp.bfloat16))


def _check_out_dtype(out_dtype):
  if jnp.dtype(out_dtype) != jnp.dtype(jnp.bfloat16):
    raise ValueError(f"{out_dtype=}: the Hopper int GEMMs write bf16 only (an f32 output tile does not fit in "
                     "SMEM beside the pipeline); use the dispatcher, which sends f32 to the Triton path")


def _swizzle(ncols: int, dtype, role: str) -> tuple[int, int]:
  bits = jnp.iinfo(dtype).bits if jnp.issubdtype(dtype, jnp.integer) else jnp.finfo(dtype).bits
  swz = plgpu.find_swizzle(ncols * bits, role)
  return swz, swz * 8 // bits


def _transforms(ncols, dtype, role):
  swz, elems = _swizzle(ncols, dtype, role)
  return (plgpu.TilingTransform((8, elems)), plgpu.SwizzleTransform(swz))


# jit per (shapes, gelu, out_dtype, config): a model calls this kernel once per layer with the same shapes, and the
# jitted call is traced and lowered once for all of them (un-jitted, each call re-ran the Mosaic lowering: ~1 s
# each, 96 s for BERT-large W4A4 at 8x128 on the H200).
@functools.partial(jax.jit, static_argnames=("gelu", "out_dtype", "config"))
def int_gemm(x, w, x_scale, w_scale, bias, *, gelu: bool, out_dtype, config: Config = SINGLE_WG):
  """x: int8|int4 [M, K]; w: int8|int4 [N, K]; x_scale [M] f32; w_scale [N] f32; bias [N] or None."""
  _check_out_dtype(out_dtype)
  m, k = x.shape
  n, k2 = w.shape
  cfg = config
  bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
  if k != k2:
    raise ValueError(f"{x.shape=} and {w.shape=} disagree on K")
  if n % bn:
    raise ValueError(f"{n=} must be a multiple of {bn=}")
  if k % bk:
    raise ValueError(f"{k=} must be a multiple of {bk=}")
  mp = pl.cdiv(m, bm) * bm
  if mp != m:
    x = jnp.pad(x, ((0, mp - m), (0, 0)))
    x_scale = jnp.pad(x_scale, (0, mp - m))
  if bias is None:
    bias = jnp.zeros((n,), jnp.float32)
  x_scale = x_scale.astype(jnp.float32)
  w_scale = w_scale.astype(jnp.float32)
  bias = bias.astype(jnp.float32)
  x4 = x.dtype == jnp.int4
  w4 = w.dtype == jnp.int4
  x_tr = _transforms(bk, x.dtype, "lhs")
  w_tr = _transforms(bk, w.dtype, "rhs")
  w8_tr = _transforms(bk, jnp.int8, "rhs")
  out_tr = _transforms(bn, out_dtype, "out")

  def int_gemm_kernel(x_gmem, w_gmem, xs_gmem, ws_gmem, b_gmem, o_gmem, o_smem, *maybe_w8):
    mi = lax.axis_index("m")
    ni = lax.axis_index("n")

    def compute(acc_ref):
      def body(idx, x_smem, w_smem):
        if w4:
          (w8_smem,) = maybe_w8
          if cfg.overlap:
            w8_smem = w8_smem.at[lax.rem(idx[0], 2)]
          else:
            w8_smem = w8_smem.at[0]
          w8_smem[...] = w_smem[...].astype(jnp.int8)
          plgpu.commit_smem()
          b_ref = w8_smem
        else:
          b_ref = w_smem
        if not cfg.overlap:
          a = x_smem[...].astype(jnp.int8) if x4 else x_smem
          plgpu.wgmma(acc_ref, a, b_ref.T)
          plgpu.wgmma_wait(0)
          return
        if x4:
          xa = x_smem[...]
          sk = bk // cfg.sub_k
          for j in range(cfg.sub_k):
            ks = slice(j * sk, (j + 1) * sk)
            plgpu.wgmma(acc_ref, xa[:, ks].astype(jnp.int8), b_ref.at[:, ks].T)
            plgpu.wgmma_wait(1)
        else:
          plgpu.wgmma(acc_ref, x_smem, b_ref.T)
          plgpu.wgmma_wait(1)

      plgpu.emit_pipeline(
          body,
          grid=(k // bk,),
          in_specs=[
              plgpu.BlockSpec((bm, bk), lambda kk: (0, kk), transforms=x_tr, delay_release=cfg.overlap),
              plgpu.BlockSpec((bn, bk), lambda kk: (0, kk), transforms=w_tr, delay_release=cfg.overlap),
          ],
          max_concurrent_steps=cfg.num_stages,
      )(x_gmem.at[pl.ds(mi * bm, bm)], w_gmem.at[pl.ds(ni * bn, bn)])
      plgpu.wgmma_wait(0)
      return acc_ref[...]

    acc = pl.run_scoped(compute, plgpu.ACC((bm, bn), jnp.int32))
    row = plgpu.Layout.WGMMA.reduce(1)
    col = plgpu.Layout.WGMMA.reduce(0)
    xs = plgpu.load(xs_gmem.at[pl.ds(mi * bm, bm)], layout=row, optimized=False)
    ws = plgpu.load(ws_gmem.at[pl.ds(ni * bn, bn)], layout=col, optimized=False)
    bb = plgpu.load(b_gmem.at[pl.ds(ni * bn, bn)], layout=col, optimized=False)
    y = acc.astype(jnp.float32) * lax.broadcast_in_dim(xs, (bm, bn), [0])
    y = y * lax.broadcast_in_dim(ws, (bm, bn), [1]) + lax.broadcast_in_dim(bb, (bm, bn), [1])
    if gelu:
      y = gelu_erf_f32(y)  # no math.erf layout rule in Mosaic GPU
    o_smem[...] = y.astype(out_dtype)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_smem, o_gmem.at[pl.ds(mi * bm, bm), pl.ds(ni * bn, bn)])
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)

  scratch = [plgpu.SMEM((bm, bn), out_dtype, transforms=out_tr)]
  if w4:
    scratch.append(plgpu.SMEM((2, bn, bk), jnp.int8, transforms=w8_tr))
  sem = (plgpu.LoweringSemantics.Warpgroup if cfg.semantics == "warpgroup"
         else plgpu.LoweringSemantics.Lane)
  f = plgpu.kernel(
      int_gemm_kernel,  # the CUDA kernel's name in profiles
      out_type=jax.ShapeDtypeStruct((mp, n), out_dtype),
      grid=(mp // bm, n // bn),
      grid_names=("m", "n"),
      scratch_types=scratch,
      compiler_params=plgpu.CompilerParams(lowering_semantics=sem),
  )
  out = f(x, w, x_scale, w_scale, bias)
  return out[:m] if mp != m else out


def w8a8_matmul(x, x_scale, w, w_scale, bias=None, gelu: bool = False, *,
                out_dtype=jnp.bfloat16, config=None):
  """x int8 [M, K], x_scale [M] (per token), w int8 [N, K], w_scale [N] (per channel), bias [N]."""
  if x.dtype != jnp.int8 or w.dtype != jnp.int8:
    raise ValueError(f"w8a8 wants int8 operands, got {x.dtype=} {w.dtype=}")
  config = config or DEFAULT
  if isinstance(config, WSConfig):
    return w8a8_matmul_ws(x, x_scale, w, w_scale, bias, gelu, out_dtype=out_dtype, config=config)
  return int_gemm(x, w, x_scale.reshape(-1), w_scale.reshape(-1), bias, gelu=gelu,
                  out_dtype=out_dtype, config=config)


@dataclasses.dataclass(frozen=True)
class WSConfig:
  """Warp-specialized persistent variant: 1 TMA warpgroup + 2 wgmma warpgroups, CTA tile (2*block_m, block_n)."""
  block_m: int = 128
  block_n: int = 128
  block_k: int = 128
  num_stages: int = 4


# jit per (shapes, gelu, out_dtype, config): a model calls this kernel once per layer with the same shapes, and the
# jitted call is traced and lowered once for all of them (un-jitted, each call re-ran the Mosaic lowering: ~1 s
# each, 96 s for BERT-large W4A4 at 8x128 on the H200).
@functools.partial(jax.jit, static_argnames=("gelu", "out_dtype", "config"))
def int_gemm_ws(x, w, x_scale, w_scale, bias, *, gelu: bool, out_dtype, config: WSConfig = WSConfig()):
  """Same contract as int_gemm; x int8|int4 (int4: cast to int8 in registers, wgmma A), w int8 (SMEM)."""
  _check_out_dtype(out_dtype)
  m, k = x.shape
  n, _ = w.shape
  bm, bn, bk = config.block_m, config.block_n, config.block_k
  cta_m = 2 * bm
  if n % bn or k % bk:
    raise ValueError(f"{n=} must be a multiple of {bn=} and {k=} of {bk=}")
  if w.dtype != jnp.int8:
    raise ValueError(f"int_gemm_ws wants int8 weights, got {w.dtype}")
  mp = pl.cdiv(m, cta_m) * cta_m
  if mp != m:
    x = jnp.pad(x, ((0, mp - m), (0, 0)))
    x_scale = jnp.pad(x_scale, (0, mp - m))
  bias = jnp.zeros((n,), jnp.float32) if bias is None else bias.astype(jnp.float32)
  x_scale = x_scale.astype(jnp.float32)
  w_scale = w_scale.astype(jnp.float32)
  x4 = x.dtype == jnp.int4
  x_tr = _transforms(bk, x.dtype, "lhs")
  w_tr = _transforms(bk, jnp.int8, "rhs")
  out_tr = _transforms(bn, out_dtype, "out")
  m_iters, n_iters, k_iters = mp // cta_m, n // bn, k // bk
  row = plgpu.Layout.WGMMA.reduce(1)
  col = plgpu.Layout.WGMMA.reduce(0)

  def int_gemm_ws_kernel(x_gmem, w_gmem, xs_gmem, ws_gmem, b_gmem, o_gmem, o_smem):
    def get_pipeline(body, ctx):
      return plgpu.emit_pipeline_warp_specialized(
          body, grid=(k_iters,), memory_registers=40,
          in_specs=[plgpu.BlockSpec((cta_m, bk), lambda kk: (0, kk), transforms=x_tr, memory_space=plgpu.SMEM),
                    plgpu.BlockSpec((bn, bk), lambda kk: (0, kk), transforms=w_tr, memory_space=plgpu.SMEM)],
          wg_axis="wg", num_compute_wgs=2, max_concurrent_steps=config.num_stages, compute_context=ctx)

    ignore = lambda *_, **__: None

    @functools.partial(pl.run_scoped,
                       allocs=get_pipeline(ignore, ignore).get_allocations(x_gmem, w_gmem),
                       collective_axes="wg")
    def _scope(allocs):
      wg = lax.axis_index("wg")

      @plgpu.nd_loop((m_iters * n_iters,), collective_axes="sm")
      def _tiles(info):
        (lin,) = info.index
        mi = lax.div(lin, n_iters)
        ni = lax.rem(lin, n_iters)
        row0 = mi * cta_m + wg * bm

        def ctx(eval_pipeline):
          @functools.partial(pl.run_scoped, acc_ref=plgpu.ACC((bm, bn), jnp.int32))
          def _acc(acc_ref):
            eval_pipeline(acc_ref)
            acc = acc_ref[...]
            xs = plgpu.load(xs_gmem.at[pl.ds(row0, bm)], layout=row, optimized=False)
            ws = plgpu.load(ws_gmem.at[pl.ds(ni * bn, bn)], layout=col, optimized=False)
            bb = plgpu.load(b_gmem.at[pl.ds(ni * bn, bn)], layout=col, optimized=False)
            y = acc.astype(jnp.float32) * lax.broadcast_in_dim(xs, (bm, bn), [0])
            y = y * lax.broadcast_in_dim(ws, (bm, bn), [1]) + lax.broadcast_in_dim(bb, (bm, bn), [1])
            if gelu:
              y = gelu_erf_f32(y)  # no math.erf layout rule in Mosaic GPU
            plgpu.wait_smem_to_gmem(0, wait_read_only=True)
            o_smem[wg] = y.astype(out_dtype)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(o_smem.at[wg], o_gmem.at[pl.ds(row0, bm), pl.ds(ni * bn, bn)])

        def mma(_, x_smem, w_smem, acc_ref):
          a = x_smem.at[pl.ds(wg * bm, bm)]
          if x4:
            a = a[...].astype(jnp.int8)
          plgpu.wgmma(acc_ref, a, w_smem.T)
          plgpu.wgmma_wait(0)
          return acc_ref

        get_pipeline(mma, ctx)(x_gmem.at[pl.ds(mi * cta_m, cta_m)], w_gmem.at[pl.ds(ni * bn, bn)],
                               allocations=allocs)
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)

  num_sms = getattr(jax.devices()[0], "core_count", 132)
  f = plgpu.kernel(
      int_gemm_ws_kernel,  # the CUDA kernel's name in profiles
      out_type=jax.ShapeDtypeStruct((mp, n), out_dtype),
      grid=(num_sms,), grid_names=("sm",), num_threads=3, thread_name="wg",
      scratch_types=[plgpu.SMEM((2, bm, bn), out_dtype, transforms=out_tr)],
      compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
  )
  out = f(x, w, x_scale, w_scale, bias)
  return out[:m] if mp != m else out


def w8a8_matmul_ws(x, x_scale, w, w_scale, bias=None, gelu: bool = False, *, out_dtype=jnp.bfloat16,
                   config: WSConfig = WSConfig(num_stages=3)):
  return int_gemm_ws(x, w, x_scale.reshape(-1), w_scale.reshape(-1), bias, gelu=gelu, out_dtype=out_dtype,
                     config=config)


# Default: the warp-specialized kernel (results/kernels/H100.md: 1.13-1.24x XLA int8, ~1.5x bf16 at M >= 3072).
DEFAULT = WSConfig(num_stages=3)
