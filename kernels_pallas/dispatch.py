"""One entry point per kernel family; picks the implementation by device and shape.

backend="auto": Mosaic GPU (kernels_pallas.hopper_<family>) on sm_90 when that module exists and its
`can_use(m, n, k, w_scale_shape=..., out_dtype=...)` accepts the problem; else the portable Pallas Triton kernel on a
CUDA GPU; on the CPU only with interpret=True (else an error). "triton" / "mosaic" force a path; "xla" runs the plain
XLA implementation (unpack + int32 dot + the same epilogue). An unsupported shape or dtype raises ValueError naming
the problem, unless allow_xla_fallback=True, in which case the XLA implementation runs and a warning is logged.
Layouts and math of each op: see w4a4.py, w8a8.py, w4a16.py, quantize_rows.py (packed layout: layout.py).
"""

from __future__ import annotations

import importlib
from typing import Literal

from absl import logging
import jax
import jax.numpy as jnp

from kernels_pallas import quantize_rows as _qr
from kernels_pallas import w4a4 as _w4a4
from kernels_pallas import w4a16 as _w4a16
from kernels_pallas import w8a8 as _w8a8

Backend = Literal["auto", "triton", "mosaic", "xla"]
BACKENDS = ("auto", "triton", "mosaic", "xla")


def _device() -> tuple[str, str | None]:
  d = jax.devices()[0]
  return d.platform, getattr(d, "compute_capability", None)


def _hopper_module(family: str):
  """kernels_pallas.hopper_<family>, or None if it is absent or fails to import (logged once)."""
  try:
    return importlib.import_module(f"kernels_pallas.hopper_{family}")
  except ImportError as e:
    if f"hopper_{family}" not in _hopper_module.missing:
      _hopper_module.missing.add(f"hopper_{family}")
      logging.info("kernels_pallas.hopper_%s unavailable (%s); using the portable path", family, e)
    return None


_hopper_module.missing = set()


def _mosaic_ok(family: str, op: str, m: int, n: int, k: int, w_scale_shape, out_dtype) -> tuple[bool, str]:
  mod = _hopper_module(family)
  if mod is None or not hasattr(mod, op) or not hasattr(mod, "can_use"):
    return False, f"no Mosaic kernel module kernels_pallas.hopper_{family} providing {op}"
  try:
    ok = bool(mod.can_use(m, n, k, w_scale_shape=w_scale_shape, out_dtype=out_dtype))
  except Exception as e:  # noqa: BLE001 - a broken probe must not take the portable path down
    return False, f"hopper_{family}.can_use raised {e!r}"
  return ok, "" if ok else f"hopper_{family}.can_use rejected {m=} {n=} {k=} w_scale_shape={w_scale_shape}"


def _choose(backend: str, interpret: bool, family: str, op: str, dims, w_scale_shape, out_dtype) -> str:
  """Returns "mosaic", "triton" (maybe in interpret mode) or "xla"; raises ValueError for an impossible request."""
  if backend not in BACKENDS:
    raise ValueError(f"{backend=} must be one of {BACKENDS}")
  if backend == "xla":
    return "xla"
  if interpret and backend != "mosaic":  # interpret mode exists for the portable kernels only
    return "triton"
  platform, cc = _device()
  if backend == "mosaic" or (backend == "auto" and platform == "gpu" and cc and cc.startswith("9.") and dims):
    ok, why = _mosaic_ok(family, op, *dims, w_scale_shape, out_dtype) if dims else (False, f"no Mosaic {op}")
    if ok:
      return "mosaic"
    if backend == "mosaic":
      raise ValueError(f"backend='mosaic' unavailable: {why}")
  if platform == "gpu" or interpret:
    return "triton"
  raise ValueError(f"{op}: no Pallas kernel runs on platform={platform!r}; pass interpret=True (slow, for tests) "
                   "or backend='xla'")


def _run(op: str, backend: str, interpret: bool, allow_xla_fallback: bool, check, pallas_fn, xla_fn, mosaic_fn,
         family: str, dims, w_scale_shape, out_dtype):
  try:
    choice = _choose(backend, interpret, family, op, dims, w_scale_shape, out_dtype)
    if choice == "xla":
      return xla_fn()
    check()  # shape/dtype validation of the Pallas kernels; ValueError names the problem
  except ValueError as e:
    if not allow_xla_fallback:
      raise
    logging.warning("%s: falling back to XLA: %s", op, e)
    return xla_fn()
  if choice == "mosaic":
    return mosaic_fn()
  return pallas_fn(interpret)


def w4a4_matmul(x_packed, x_scale, w_packed, w_scale, bias=None, gelu: bool = False, out_dtype=jnp.bfloat16, *,
                backend: Backend = "auto", interpret: bool = False, allow_xla_fallback: bool = False, config=None):
  """x_packed [M, K/2] u8, x_scale [M] f32, w_packed [N, K/2] u8, w_scale [N] | [N, K/group_size] f32 -> [M, N]."""
  m, n, k = x_packed.shape[0], w_packed.shape[0], 2 * x_packed.shape[-1]
  return _run(
      "w4a4_matmul", backend, interpret, allow_xla_fallback,
      lambda: _w4a4.check_int_gemm(x_packed, x_scale, w_packed, w_scale, bias, out_dtype, packed=True,
                                   config=config),
      lambda interp: _w4a4.w4a4_matmul_pallas(x_packed, x_scale, w_packed, w_scale, bias, gelu, out_dtype,
                                              config=config, interpret=interp),
      lambda: _w4a4.w4a4_matmul_xla(x_packed, x_scale, w_packed, w_scale, bias, gelu, out_dtype),
      lambda: _hopper_module("w4a4").w4a4_matmul(x_packed, x_scale, w_packed, w_scale, bias, gelu=gelu,
                                                 out_dtype=out_dtype),
      "w4a4", (m, n, k), tuple(w_scale.shape), out_dtype)


def w8a8_matmul(x_q, x_scale, w_q, w_scale, bias=None, gelu: bool = False, out_dtype=jnp.bfloat16, *,
                backend: Backend = "auto", interpret: bool = False, allow_xla_fallback: bool = False, config=None):
  """x_q [M, K] int8, x_scale [M] f32, w_q [N, K] int8, w_scale [N] | [N, K/group_size] f32 -> [M, N]."""
  m, n, k = x_q.shape[0], w_q.shape[0], x_q.shape[-1]
  return _run(
      "w8a8_matmul", backend, interpret, allow_xla_fallback,
      lambda: _w4a4.check_int_gemm(x_q, x_scale, w_q, w_scale, bias, out_dtype, packed=False, config=config),
      lambda interp: _w8a8.w8a8_matmul_pallas(x_q, x_scale, w_q, w_scale, bias, gelu, out_dtype, config=config,
                                              interpret=interp),
      lambda: _w8a8.w8a8_matmul_xla(x_q, x_scale, w_q, w_scale, bias, gelu, out_dtype),
      lambda: _hopper_module("w8a8").w8a8_matmul(x_q, x_scale, w_q, w_scale, bias, gelu=gelu, out_dtype=out_dtype),
      "w8a8", (m, n, k), tuple(w_scale.shape), out_dtype)


def w4a16_matmul(x, w_packed, w_scale, bias=None, out_dtype=jnp.bfloat16, *, gelu: bool = False,
                 backend: Backend = "auto", interpret: bool = False, allow_xla_fallback: bool = False, config=None):
  """x [M, K] bf16, w_packed [N, K/2] u8, w_scale [N, K/group_size] (or [N]) f32 -> [M, N]."""
  m, n, k = x.shape[0], w_packed.shape[0], x.shape[-1]
  return _run(
      "w4a16_matmul", backend, interpret, allow_xla_fallback,
      lambda: _w4a16.check_w4a16(x, w_packed, w_scale, bias, out_dtype, config=config),
      lambda interp: _w4a16.w4a16_matmul_pallas(x, w_packed, w_scale, bias, out_dtype, gelu=gelu, config=config,
                                                interpret=interp),
      lambda: _w4a16.w4a16_matmul_xla(x, w_packed, w_scale, bias, out_dtype, gelu=gelu),
      lambda: _hopper_module("w4a16").w4a16_matmul(x, w_packed, w_scale, bias, out_dtype, gelu=gelu),
      "w4a16", (m, n, k), tuple(w_scale.shape), out_dtype)


def quantize_rows(x, bits: int, ln_gamma=None, ln_beta=None, eps: float = 1e-5, *, backend: Backend = "auto",
                  interpret: bool = False, allow_xla_fallback: bool = False):
  """x [M, K] -> (q [M, K/2] u8 (bits=4) | [M, K] int8 (bits=8), scale [M] f32); optional fused LayerNorm first."""
  return _run(
      "quantize_rows", backend, interpret, allow_xla_fallback,
      lambda: _qr.check_quantize_rows(x, bits, ln_gamma, ln_beta),
      lambda interp: _qr.quantize_rows_pallas(x, bits, ln_gamma, ln_beta, eps, interpret=interp),
      lambda: _qr.quantize_rows_xla(x, bits, ln_gamma, ln_beta, eps),
      lambda: _hopper_module("quantize_rows").quantize_rows(x, bits, ln_gamma, ln_beta, eps),
      "quantize_rows", None, None, None)
