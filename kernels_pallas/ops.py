"""The one public entry to the INT4/INT8 kernels: W4A4, W8A8, W4A16 GEMMs with fused epilogues, and quantize_rows.

    from kernels_pallas import ops
    w = ops.prepare_weight(w_packed, "w4a4")          # optional, once at export/load time
    q, s = ops.quantize_rows(h, 4, ln_gamma, ln_beta)  # packed int4 activations + per-token scales
    y = ops.w4a4_matmul(q, s, w, w_scale, bias, gelu=True)
    y = ops.matmul(q, w, w_scale, x_scale=s, bias=bias, gelu=True)  # the same, op chosen by the operand types

Operands (layout defined once in `int4jax.quant.formats`): packed int4 is (rows, K/2) uint8, element 2i in the low
nibble; weights are stored (N, K), K contiguous; x_scale [M] f32 per token; w_scale [N] per channel or
[N, K // group_size] per group; bias [N]. Every GEMM returns
y[m, n] = act(x_scale[m] * sum_g w_scale[n, g] * sum_{k in g} x[m, k] w[n, k] + bias[n]) in out_dtype
(act = erf GELU when gelu=True), with the integer sum exact. Exact references: `kernels_pallas.reference`.

Choosing a path (`backend`):
- "auto": on an sm_90 GPU, the fastest *correct* path for this (device kind, op, shape class) in the committed table
  `kernels_pallas/tables/<device kind>.json`, written by `python -m kernels_pallas.bench --out results/kernels`
  from CUPTI times of every path, XLA's own dots with the same epilogue included; paths that cannot take the
  operands (per-group scales, f32 output, ...) and paths measured inexact (`INEXACT`: the FP8 ones, whose tensor
  cores drop low bits of long sums) are skipped in table order. Without a table for the device: the Mosaic
  kernel if it accepts the shape, else the portable Triton kernel. Other CUDA GPUs: the Triton kernel. CPU: an error
  unless interpret=True (the Triton kernels in interpret mode, for tests). The choice is logged once per shape.
- "triton" | "mosaic" | "xla": force a family (mosaic = the module's default kernel; xla = unpack + int dot).
- a path name from PATHS[op] (e.g. "xla_fp8", "mosaic_fp8"): force that path (bench and tests).
A shape a forced Pallas path cannot take raises ValueError naming the problem, unless allow_xla_fallback=True.

Prepared weights: `prepare_weight(w_packed, op)` returns a `PreparedWeight` pytree holding the canonical packed
bytes plus the offline layouts the fast paths read (int8 (N, K) for the int8 W4A4 paths, XLA's jnp.int4 (N, K) for
its W4A16 path; e4m3 (N, K) for the FP8 paths on request). Every matmul accepts it in place of w_packed; canonical
packed weights keep working (paths that need another layout then convert inside the call, which the table's timings
do not include, so prepare weights that are used more than once).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp

from int4jax.quant.formats import as_jnp_int4, int4_to_e4m3, unpack_int4
from kernels_pallas import xla_paths
from kernels_pallas.triton import quantize_rows as _qr
from kernels_pallas.triton import w4a4 as _w4a4
from kernels_pallas.triton import w4a16 as _w4a16
from kernels_pallas.triton import w8a8 as _w8a8

BACKENDS = ("auto", "triton", "mosaic", "xla")
# Every path each op can run; "auto" picks among them by the measured table.
PATHS = {
    "w4a4": ("mosaic_fp8", "mosaic_fp8_promote", "mosaic_ws", "xla_fp8", "xla_int8", "xla_bf16", "triton"),
    "w8a8": ("mosaic_ws", "mosaic_1wg", "xla_int8", "triton"),
    "w4a16": ("mosaic", "xla_int4w", "xla_bf16", "triton"),
    "quantize_rows": ("triton", "xla"),
}
# Paths that are not exact for every valid operand (measured on the H200, NOTES.md runs 5-6): never chosen by
# "auto", only when named. Hopper's FP8 tensor cores do not keep a full f32 sum: XLA's FP8 GEMM gave -215040 for
# -229376 at K = 4096, and the Mosaic FP8 kernel without promotion was off by 8384 of -214872 (x = 7, w in {-8, -7}).
INEXACT = {("w4a4", "xla_fp8"), ("w4a4", "mosaic_fp8")}
FAMILY_DEFAULT = {"w4a4": {"mosaic": "mosaic_ws", "xla": "xla_int8"},
                  "w8a8": {"mosaic": "mosaic_ws", "xla": "xla_int8"},
                  "w4a16": {"mosaic": "mosaic", "xla": "xla_bf16"},
                  "quantize_rows": {"mosaic": None, "xla": "xla"}}
TABLE_DIR = os.path.join(os.path.dirname(__file__), "tables")


# ------------------------------------------------------------------ prepared weights


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PreparedWeight:
  """A weight in the canonical packed layout plus offline layouts for the fast paths (None where not made)."""
  packed: jax.Array                 # (N, K/2) uint8, canonical
  e4m3: Any = None                  # (N, K) float8_e4m3fn: int4_to_e4m3(packed)
  int8: Any = None                  # (N, K) int8: unpack_int4(packed)
  int4: Any = None                  # (N, K) jnp.int4 (XLA's storage): the W4A16 XLA path

  @property
  def shape(self):
    return self.packed.shape


DEFAULT_LAYOUTS = {"w4a4": ("int8",), "w4a16": ("int4",)}
_MAKE = {"e4m3": int4_to_e4m3, "int8": unpack_int4, "int4": lambda p: xla_paths.int4_from_packed(p)}


def prepare_weight(w_packed, op: str = "w4a4", *, layouts=None) -> PreparedWeight:
  """Offline layouts of a packed (N, K/2) uint8 int4 weight, made once (jittable). Defaults: "w4a4" -> int8 (N, K)
  (the exact int8 tensor-core paths "auto" picks); "w4a16" -> XLA's jnp.int4 (N, K). layouts=("int8", "e4m3") adds
  the FP8 layout (`formats.int4_to_e4m3`) for the FP8 paths, which "auto" never picks (ops.INEXACT)."""
  if isinstance(w_packed, PreparedWeight):
    return w_packed
  if w_packed.dtype != jnp.uint8 or w_packed.ndim != 2:
    raise ValueError(f"prepare_weight: w_packed must be (N, K/2) uint8, got {w_packed.shape} {w_packed.dtype}")
  if op not in DEFAULT_LAYOUTS:
    raise ValueError(f"prepare_weight: op={op!r} must be one of {tuple(DEFAULT_LAYOUTS)}")
  layouts = DEFAULT_LAYOUTS[op] if layouts is None else tuple(layouts)
  unknown = set(layouts) - set(_MAKE)
  if unknown:
    raise ValueError(f"prepare_weight: unknown layouts {sorted(unknown)}; choose from {sorted(_MAKE)}")
  return PreparedWeight(w_packed, **{name: _MAKE[name](w_packed) for name in layouts})


def _packed(w):
  return w.packed if isinstance(w, PreparedWeight) else w


def _layout(w, name):
  """The weight in offline layout `name`, converted in the call if it was not prepared."""
  if isinstance(w, PreparedWeight) and getattr(w, name) is not None:
    return getattr(w, name)
  p = _packed(w)
  return {"e4m3": lambda: int4_to_e4m3(p), "int8": lambda: unpack_int4(p),
          "int4": lambda: xla_paths.int4_from_packed(p)}[name]()


# ------------------------------------------------------------------ the measured table


def _device():
  d = jax.devices()[0]
  return d.platform, getattr(d, "compute_capability", None), d.device_kind


def _is_sm90() -> bool:
  platform, cc, _ = _device()
  return platform == "gpu" and bool(cc) and cc.startswith("9.")


def table_path(device_kind: str) -> str:
  return os.path.join(TABLE_DIR, device_kind.replace(" ", "_") + ".json")


@functools.cache
def load_table(device_kind: str) -> dict | None:
  path = table_path(device_kind)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def ranked_paths(table: dict, op: str, m: int, n: int, k: int) -> list[str]:
  """Paths of the table's closest entry, fastest first: same op; the nearest (N, K) in log scale; then the nearest
  benchmarked M in log scale (ties go to the larger M)."""
  rows = [e for e in table["entries"] if e["op"] == op]
  if not rows:
    return []
  dist = lambda e: abs(math.log(e["n"] / n)) + abs(math.log(e["k"] / k))
  best = min(dist(e) for e in rows)
  rows = [e for e in rows if dist(e) == best]
  e = min(rows, key=lambda e: (abs(math.log(e["m"] / max(m, 1))), -e["m"]))
  return [p for p, _ in e["ranked"]]


_logged: set = set()


def _log_choice(op, dims, path, why):
  key = (op, dims, path)
  if key not in _logged:
    _logged.add(key)
    logging.info("kernels_pallas.ops.%s %s: path %s (%s)", op, dims, path, why)


# ------------------------------------------------------------------ path feasibility


def _mosaic(mod_name):
  return importlib.import_module(f"kernels_pallas.mosaic.{mod_name}")


def _feasible(op, path, m, n, k, w_scale_shape, out_dtype) -> bool:
  """Whether `path` takes these operands on this device (a cheap static check)."""
  if path.startswith("mosaic"):
    if not _is_sm90():
      return False
    if op == "w4a4" and path.startswith("mosaic_fp8"):
      return _mosaic("fp8").can_use(m, n, k, w_scale_shape=w_scale_shape, out_dtype=out_dtype)
    mod = {"w4a4": "w4a4", "w8a8": "w8a8", "w4a16": "w4a16"}.get(op)
    return bool(mod) and _mosaic(mod).can_use(m, n, k, w_scale_shape=w_scale_shape, out_dtype=out_dtype)
  if path == "xla_fp8" and k >= 2 ** 18:
    return False
  if path == "triton":
    return jax.devices()[0].platform == "gpu"
  return True


def choose_path(op: str, backend: str, interpret: bool, m: int, n: int, k: int, w_scale_shape=None,
                out_dtype=jnp.bfloat16) -> str:
  """The path name that `backend` selects for these operands (see the module docstring); ValueError if none."""
  paths = PATHS[op]
  if backend not in BACKENDS and backend not in paths:
    raise ValueError(f"{backend=} must be one of {BACKENDS} or a path of {op}: {paths}")
  dims = (m, n, k)
  platform, _, kind = _device()
  if backend == "triton" and not interpret and platform != "gpu":
    raise ValueError(f"{op}: no Pallas kernel runs on platform={platform!r}; pass interpret=True (slow, for tests) "
                     "or backend='xla'")
  if backend in paths:
    return backend
  if backend in ("mosaic", "xla"):
    path = FAMILY_DEFAULT[op][backend]
    if path is None or (backend == "mosaic" and not _feasible(op, path, m, n, k, w_scale_shape, out_dtype)):
      raise ValueError(f"backend='mosaic' unavailable for {op} {dims} w_scale_shape={w_scale_shape} "
                       f"out_dtype={jnp.dtype(out_dtype).name} on {_device()[2]}")
    return path
  if interpret:
    return "triton"
  if backend == "auto" and _is_sm90():
    table = load_table(kind)
    if table is not None:
      for path in ranked_paths(table, op, m, n, k):
        if path in paths and (op, path) not in INEXACT and _feasible(op, path, m, n, k, w_scale_shape, out_dtype):
          _log_choice(op, dims, path, f"table {os.path.basename(table_path(kind))}")
          return path
    path = FAMILY_DEFAULT[op]["mosaic"]
    if path and _feasible(op, path, m, n, k, w_scale_shape, out_dtype):
      _log_choice(op, dims, path, "no table entry; Mosaic default")
      return path
  if platform == "gpu":
    return "triton"
  raise ValueError(f"{op}: no Pallas kernel runs on platform={platform!r}; pass interpret=True (slow, for tests) "
                   "or backend='xla'")


def _run(op, backend, interpret, allow_xla_fallback, dims, w_scale_shape, out_dtype, check, impls, xla_path):
  try:
    path = choose_path(op, backend, interpret, *dims, w_scale_shape=w_scale_shape, out_dtype=out_dtype)
    if path == "triton":
      check()  # shape/dtype validation of the portable kernels; ValueError names the problem
  except ValueError as e:
    if not allow_xla_fallback:
      raise
    logging.warning("%s: falling back to XLA: %s", op, e)
    path = xla_path
  return impls[path]()


# ------------------------------------------------------------------ the ops


def w4a4_matmul(x_packed, x_scale, w_packed, w_scale, bias=None, gelu: bool = False, out_dtype=jnp.bfloat16, *,
                backend: str = "auto", interpret: bool = False, allow_xla_fallback: bool = False, config=None):
  """x_packed [M, K/2] u8, x_scale [M] f32, w_packed [N, K/2] u8 | PreparedWeight, w_scale [N] | [N, G] -> [M, N]."""
  wp = _packed(w_packed)
  m, n, k = x_packed.shape[0], wp.shape[0], 2 * x_packed.shape[-1]
  od = jnp.dtype(out_dtype)
  x_int = lambda: unpack_int4(x_packed)

  def mosaic_fp8(promote):
    fp8 = _mosaic("fp8")
    cfg = dataclasses.replace(config or fp8.DEFAULT, promote=promote)
    x = as_jnp_int4(x_packed) if cfg.a_in_regs else int4_to_e4m3(x_packed)
    return fp8.fp8_gemm(x, _layout(w_packed, "e4m3"), x_scale.reshape(-1), w_scale, bias, gelu=gelu, out_dtype=od,
                        config=cfg)

  def mosaic_ws():
    mod = _mosaic("w4a4")
    return mod._core.int_gemm_ws(as_jnp_int4(x_packed), _layout(w_packed, "int8"), x_scale.reshape(-1),
                                 w_scale, bias, gelu=gelu, out_dtype=od, config=config or mod.DEFAULT)

  impls = {
      "mosaic_fp8": lambda: mosaic_fp8(False),
      "mosaic_fp8_promote": lambda: mosaic_fp8(True),
      "mosaic_ws": mosaic_ws,
      "xla_fp8": lambda: xla_paths.int_matmul(x_int(), x_scale, _layout(w_packed, "e4m3"), w_scale, bias,
                                              kind="fp8", gelu=gelu, out_dtype=od),
      "xla_int8": lambda: xla_paths.int_matmul(x_int(), x_scale, _layout(w_packed, "int8"), w_scale, bias,
                                               kind="int8", gelu=gelu, out_dtype=od),
      "xla_bf16": lambda: xla_paths.int_matmul(x_int(), x_scale, _layout(w_packed, "int8"), w_scale, bias,
                                               kind="bf16", gelu=gelu, out_dtype=od),
      "triton": lambda: _w4a4.w4a4_matmul_pallas(x_packed, x_scale, wp, w_scale, bias, gelu, od, config=config,
                                                 interpret=interpret),
  }
  return _run("w4a4", backend, interpret, allow_xla_fallback, (m, n, k), tuple(w_scale.shape), od,
              lambda: _w4a4.check_int_gemm(x_packed, x_scale, wp, w_scale, bias, od, packed=True, config=config),
              impls, "xla_int8")


def w8a8_matmul(x_q, x_scale, w_q, w_scale, bias=None, gelu: bool = False, out_dtype=jnp.bfloat16, *,
                backend: str = "auto", interpret: bool = False, allow_xla_fallback: bool = False, config=None):
  """x_q [M, K] int8, x_scale [M] f32, w_q [N, K] int8, w_scale [N] | [N, K/group_size] f32 -> [M, N]."""
  m, n, k = x_q.shape[0], w_q.shape[0], x_q.shape[-1]
  od = jnp.dtype(out_dtype)

  def mosaic(single_wg):
    mod = _mosaic("w8a8")
    cfg = config or (mod.SINGLE_WG if single_wg else mod.DEFAULT)
    return mod.w8a8_matmul(x_q, x_scale, w_q, w_scale, bias, gelu, out_dtype=od, config=cfg)

  impls = {
      "mosaic_ws": lambda: mosaic(False),
      "mosaic_1wg": lambda: mosaic(True),
      "xla_int8": lambda: _w8a8.w8a8_matmul_xla(x_q, x_scale, w_q, w_scale, bias, gelu, od),
      "triton": lambda: _w8a8.w8a8_matmul_pallas(x_q, x_scale, w_q, w_scale, bias, gelu, od, config=config,
                                                 interpret=interpret),
  }
  return _run("w8a8", backend, interpret, allow_xla_fallback, (m, n, k), tuple(w_scale.shape), od,
              lambda: _w4a4.check_int_gemm(x_q, x_scale, w_q, w_scale, bias, od, packed=False, config=config),
              impls, "xla_int8")


def w4a16_matmul(x, w_packed, w_scale, bias=None, out_dtype=jnp.bfloat16, *, gelu: bool = False,
                 backend: str = "auto", interpret: bool = False, allow_xla_fallback: bool = False, config=None):
  """x [M, K] bf16, w_packed [N, K/2] u8 | PreparedWeight, w_scale [N, K/group_size] (or [N]) f32 -> [M, N]."""
  wp = _packed(w_packed)
  m, n, k = x.shape[0], wp.shape[0], x.shape[-1]
  od = jnp.dtype(out_dtype)
  impls = {
      "mosaic": lambda: _mosaic("w4a16").w4a16_matmul(x, wp, w_scale, bias, od, gelu=gelu, config=config),
      "xla_int4w": lambda: xla_paths.w4a16_int4w(x, _layout(w_packed, "int4"), w_scale, bias, gelu=gelu,
                                                 out_dtype=od),
      "xla_bf16": lambda: _w4a16.w4a16_matmul_xla(x, wp, w_scale, bias, od, gelu=gelu),
      "triton": lambda: _w4a16.w4a16_matmul_pallas(x, wp, w_scale, bias, od, gelu=gelu, config=config,
                                                   interpret=interpret),
  }
  return _run("w4a16", backend, interpret, allow_xla_fallback, (m, n, k), tuple(w_scale.shape), od,
              lambda: _w4a16.check_w4a16(x, wp, w_scale, bias, od, config=config), impls, "xla_bf16")


def quantize_rows(x, bits: int, ln_gamma=None, ln_beta=None, eps: float = 1e-5, *, backend: str = "auto",
                  interpret: bool = False, allow_xla_fallback: bool = False):
  """x [M, K] -> (q [M, K/2] u8 (bits=4) | [M, K] int8 (bits=8), scale [M] f32); optional fused LayerNorm first."""
  m, k = x.shape if x.ndim == 2 else (0, 0)
  impls = {"triton": lambda: _qr.quantize_rows_pallas(x, bits, ln_gamma, ln_beta, eps, interpret=interpret),
           "xla": lambda: _qr.quantize_rows_xla(x, bits, ln_gamma, ln_beta, eps)}
  return _run("quantize_rows", backend, interpret, allow_xla_fallback, (m, k, k), None, jnp.bfloat16,
              lambda: _qr.check_quantize_rows(x, bits, ln_gamma, ln_beta), impls, "xla")


def matmul(x, w, w_scale, *, x_scale=None, bias=None, gelu: bool = False, out_dtype=jnp.bfloat16,
           backend: str = "auto", interpret: bool = False, allow_xla_fallback: bool = False, config=None):
  """One GEMM entry, the op chosen by the activation operand: packed int4 x (uint8 [M, K/2]) with x_scale -> W4A4;
  int8 x [M, K] with x_scale -> W8A8 (w int8 [N, K], or a PreparedWeight: its int4 values as int8); float x [M, K]
  without x_scale -> W4A16."""
  kw = dict(backend=backend, interpret=interpret, allow_xla_fallback=allow_xla_fallback, config=config)
  if jnp.issubdtype(x.dtype, jnp.floating):
    if x_scale is not None:
      raise ValueError(f"matmul: float activations ({x.dtype}) take no x_scale (W4A16); quantize them first")
    return w4a16_matmul(x, w, w_scale, bias, out_dtype, gelu=gelu, **kw)
  if x_scale is None:
    raise ValueError(f"matmul: integer activations ({x.dtype}) need their per-token x_scale")
  if x.dtype == jnp.uint8:
    return w4a4_matmul(x, x_scale, w, w_scale, bias, gelu, out_dtype, **kw)
  if x.dtype == jnp.int8:  # a PreparedWeight of int4 values runs as W4A8 through its int8 layout
    return w8a8_matmul(x, x_scale, _layout(w, "int8") if isinstance(w, PreparedWeight) else w, w_scale, bias, gelu,
                       out_dtype, **kw)
  raise ValueError(f"matmul: x.dtype={x.dtype} must be uint8 (packed int4), int8 or a float type")
