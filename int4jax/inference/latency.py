"""End-to-end encoder latency of every inference path, in one process (the paper's Figures 2-3).

Paths (BERT encoder, random weights, no padding mask, batch x seq grid):
  torch_eager_fp16, torch_compile_fp16  HF transformers BertModel in fp16 (SDPA attention), only where torch sees CUDA
  jax_bf16            plain jitted JAX, written here in jnp from the same weights, cuDNN flash attention
  int4jax_bf16        int4jax's own BertModel, fp32 policy, bf16 params and compute
  int4jax_w8a8, int4jax_w4a4, int4jax_w4a4_xlaq, int4jax_w4a4_ffn_in
                      the integer engine (`inference.engine`) on packed weights (`inference.export`), symmetric
                      (ENGINE_POLICIES says what each variant changes)
  xla_int8, xla_fp8   the plain JAX encoder with its four GEMM types quantized in jnp: per-token activation and
                      per-channel weight scales, `lax.dot_general` with preferred_element_type (int32 / f32)

Timing, after warm-up, every path the same way:
  device_ms  device-side: CUPTI's time of every GPU kernel the call launched, summed, mean over `runs` calls (the
             Mosaic GPU profiler's CUPTI hook; it records the whole process, so torch's kernels are timed by the
             same clock); the targets are judged on it. Split by kernel name into GEMM / attention / quantize / other
             (`kernel_category`): the share of time in GEMMs vs the rest, and the heaviest kernels, are in the JSON.
  wall_ms    wall clock around one call followed by `jax.block_until_ready` (torch: `torch.cuda.synchronize`),
             median of `runs` calls: host dispatch and launch gaps included (as a user sees it).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from int4jax.inference import check, engine
from int4jax.models import bert
from int4jax.nn.attention import flash_implementation
from int4jax.quant.policy import make_policy
from kernels_pallas import ops

PATHS = ("torch_eager_fp16", "torch_compile_fp16", "jax_bf16", "int4jax_bf16", "int4jax_w8a8", "int4jax_w4a4",
         "int4jax_w4a4_xlaq", "int4jax_w4a4_ffn_in", "xla_int8", "xla_fp8")
GRID = ((1, 128), (8, 128), (32, 128), (32, 384), (32, 512))
MODELS = ("bert_base", "bert_large")
# Cells run in this order within a grid point (torch.compile last: its compiles are the slowest), so that a time
# budget cuts the least informative cells.
RUN_ORDER = ("jax_bf16", "int4jax_bf16", "int4jax_w4a4", "int4jax_w8a8", "int4jax_w4a4_xlaq", "int4jax_w4a4_ffn_in",
             "xla_int8", "xla_fp8", "torch_eager_fp16", "torch_compile_fp16")
# path -> (policy preset, quantized GEMM types (None: all four), IntMode overrides). int4jax_w4a4_xlaq: the same
# W4A4 engine with the per-token quantization left to XLA (fused with the residual add + LayerNorm around it)
# instead of the quantize_rows kernel: which of the two is faster end to end is a measurement, not a guess.
ENGINE_POLICIES = {"int4jax_w8a8": ("w8a8", None, {}), "int4jax_w4a4": ("w4a4", None, {}),
                   "int4jax_w4a4_xlaq": ("w4a4", None, {"quantize_backend": "xla"}),
                   "int4jax_w4a4_ffn_in": ("w4a4", ("ffn_in",), {})}
BASELINES = ("torch_eager_fp16", "torch_compile_fp16", "jax_bf16", "int4jax_bf16")
_GEMMS = {"query", "key", "value", "output", "intermediate"}


# Kernel-name patterns, checked in this order (cuDNN's flash attention kernels also say "wgmma"; quantize_rows is
# not a GEMM). Lower-case substrings of the CUDA kernel names seen in CUPTI: cuBLAS (xmma, nvjet, cutlass), XLA's
# Triton GEMM fusions (gemm_fusion, triton_gemm, dot), our Pallas kernels (int_gemm_ws_kernel, fp8_gemm_kernel,
# w4a4_matmul, ...), cuDNN / PyTorch attention (flash, fmha, sdpa).
KERNEL_CATEGORIES = (("attention", ("flash", "fmha", "sdpa", "attention", "softmax")),
                     ("quantize", ("quantize",)),
                     ("gemm", ("gemm", "xmma", "nvjet", "cutlass", "wgmma", "matmul", "dot", "s16816", "s1688")))


def kernel_category(name: str) -> str:
  low = name.lower()
  for category, patterns in KERNEL_CATEGORIES:
    if any(p in low for p in patterns):
      return category
  return "other"


def time_calls(fn: Callable[[], Any], sync: Callable[[Any], Any], *, warmup: int, runs: int) -> dict:
  """Wall-clock median of `runs` synced calls after `warmup` (see the module docstring)."""
  for _ in range(warmup):
    sync(fn())
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t0)
  return {"wall_ms": 1e3 * statistics.median(times), "wall_min_ms": 1e3 * min(times), "runs": runs}


def _cupti():
  """The Mosaic GPU extension's CUPTI hooks, or None where there are none (CPU)."""
  if jax.devices()[0].platform != "gpu":
    return None
  try:
    from jax.experimental.mosaic.gpu import profiler  # pylint: disable=g-import-not-at-top
    return profiler.mosaic_gpu_lib._mosaic_gpu_ext  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None


def device_profile(fn: Callable[[], Any], sync: Callable[[Any], Any], *, runs: int, top: int = 8) -> dict | None:
  """CUPTI kernel time of `runs` back-to-back calls (already warm): mean per call, split by `kernel_category`,
  and the `top` heaviest kernels. None off the GPU."""
  ext = _cupti()
  if ext is None:
    return None
  ext._cupti_init()  # pylint: disable=protected-access
  try:
    sync([fn() for _ in range(runs)])
  finally:
    timings = ext._cupti_get_timings(True)  # pylint: disable=protected-access
  if not timings:
    return None
  by_cat, by_name = {}, {}
  for name, ms in timings:
    by_cat[kernel_category(name)] = by_cat.get(kernel_category(name), 0.0) + ms / runs
    by_name[name] = by_name.get(name, 0.0) + ms / runs
  total = sum(by_cat.values())
  heavy = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
  return {"device_ms": total, "kernels_per_call": len(timings) / runs,
          "share": {c: v / total for c, v in sorted(by_cat.items())},
          "top_kernels": [{"name": n[:120], "ms": v, "category": kernel_category(n)} for n, v in heavy]}


# ------------------------------------------------------------------ plain JAX encoder (+ XLA int8 / fp8 GEMMs)


def _quant_rows(x, kind):
  """Per-row symmetric quantization in jnp: (codes, scale [rows] f32)."""
  qmax = 127.0 if kind == "int8" else 448.0
  x = x.astype(jnp.float32)
  s = jnp.maximum(jnp.max(jnp.abs(x), axis=-1), 1e-8) / qmax
  y = x / s[:, None]
  q = jnp.clip(jnp.round(y), -qmax, qmax).astype(jnp.int8) if kind == "int8" else y.astype(jnp.float8_e4m3fn)
  return q, s


def xla_quantize_weights(params, kind: str):
  """Every GEMM kernel [K, N] of the four quantized types -> (codes [N, K], per-channel scale [N]), offline."""
  def visit(path, leaf):
    names = [getattr(k, "key", None) for k in path]
    if names[-1] == "kernel" and names[0] == "encoder" and names[-2] in _GEMMS:
      return _quant_rows(leaf.T, kind)
    return leaf
  return jax.tree_util.tree_map_with_path(visit, params)


def _dense(x, p, kind: str | None):
  k = p["kernel"]
  if kind is None:
    y = jnp.dot(x, k, preferred_element_type=jnp.float32)
  else:
    (wq, ws), (xq, xs) = k, _quant_rows(x.reshape(-1, x.shape[-1]), kind)
    acc = jax.lax.dot_general(xq, wq, (((1,), (1,)), ((), ())),
                              preferred_element_type=jnp.int32 if kind == "int8" else jnp.float32)
    y = (acc.astype(jnp.float32) * xs[:, None] * ws[None, :]).reshape(x.shape[:-1] + (wq.shape[0],))
  return (y + p["bias"].astype(jnp.float32)).astype(jnp.bfloat16)


def _ln(x, p, eps):
  x32 = x.astype(jnp.float32)
  mu = jnp.mean(x32, -1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mu), -1, keepdims=True)
  return ((x32 - mu) * jax.lax.rsqrt(var + eps) * p["scale"].astype(jnp.float32)
          + p["bias"].astype(jnp.float32)).astype(jnp.bfloat16)


def plain_encoder(params, ids, cfg: bert.BertConfig, kind: str | None = None):
  """BERT encoder in plain jnp, bf16 (kind None) or with int8/fp8 GEMMs; returns the sequence output."""
  e = params["embeddings"]
  x = (e["word_embeddings"]["embedding"][ids] + e["position_embeddings"]["embedding"][None, : ids.shape[1]]
       + e["token_type_embeddings"]["embedding"][0])
  x = _ln(x, e["layer_norm"], cfg.layer_norm_eps)
  b, s = ids.shape
  for i in range(cfg.num_layers):
    p = params["encoder"][f"layer_{i}"]
    a = p["attention"]
    heads = lambda t: t.reshape(b, s, cfg.num_heads, cfg.head_dim)
    q, k, v = (heads(_dense(x, a[n], kind)) for n in ("query", "key", "value"))
    o = jax.nn.dot_product_attention(q, k, v, implementation=flash_implementation(q)).reshape(b, s, -1)
    x = _ln(x + _dense(o, a["output"], kind), p["attention_norm"], cfg.layer_norm_eps)
    h = jax.nn.gelu(_dense(x, p["intermediate"], kind).astype(jnp.float32), approximate=False).astype(jnp.bfloat16)
    x = _ln(x + _dense(h, p["output"], kind), p["output_norm"], cfg.layer_norm_eps)
  return x


# ------------------------------------------------------------------ torch


def torch_status() -> str | None:
  """None when torch with CUDA is usable here, else why not."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return "torch is not installed"
  if not torch.cuda.is_available():
    return f"torch {torch.__version__} sees no CUDA device"
  return None


def torch_model(cfg: bert.BertConfig):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf_cfg = transformers.BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                                   num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                                   intermediate_size=cfg.intermediate_size, attn_implementation="sdpa")
  return transformers.BertModel(hf_cfg, add_pooling_layer=False).eval().half().cuda(), torch


# ------------------------------------------------------------------ the benchmark


@dataclasses.dataclass
class Settings:
  models: tuple[str, ...] = MODELS
  grid: tuple[tuple[int, int], ...] = GRID
  paths: tuple[str, ...] = PATHS
  warmup: int = 3
  runs: int = 30
  budget_s: float = 330.0          # later (model, point, path) cells are skipped once this much time has passed
  config_overrides: dict = dataclasses.field(default_factory=dict)  # e.g. a tiny model for the CPU smoke run


def _jax_sync(x):
  return jax.block_until_ready(x)


class _ModelState:
  """Weights and compiled callables of one model, built on first use (so a skipped model costs nothing)."""

  def __init__(self, name: str, overrides: dict, mode, want_torch: bool, want_compile: bool):
    t0 = time.perf_counter()
    self.name, self.cfg = name, bert.PRESETS[name](**overrides)
    model = bert.build(self.cfg, "base")
    # Random weights drawn on the host from the parameter shapes (check.model_params with init_std): jitting
    # BERT-large's init took 78 s of XLA compilation on the H200 for weights whose values do not matter to a timing.
    self.params = check.model_params(model, {"input_ids": jnp.zeros((1, 8), jnp.int32)}, init_std=0.02)
    # One jitted cast, not one dispatched (and compiled) convert per leaf.
    self.bf16 = jax.jit(lambda p: jax.tree.map(lambda a: a.astype(jnp.bfloat16), p))(self.params)
    jax.block_until_ready(self.bf16)
    t_jax = time.perf_counter() - t0
    self.mode, self.fns, self.torch_fns = mode, {}, {}
    if want_torch:
      tm, self.torch = torch_model(self.cfg)
      self.torch_fns["torch_eager_fp16"] = tm
      if want_compile:
        self.torch_fns["torch_compile_fp16"] = self.torch.compile(tm)
    logging.info("%s: weights built in %.1f s (JAX %.1f s, torch model %s)", name, time.perf_counter() - t0, t_jax,
                 want_torch)

  def jax_fn(self, path: str):
    """(jitted fn(weights, ids), weights) for a JAX path: the weights are jit arguments, never baked-in constants."""
    if path not in self.fns:
      cfg, bf16 = self.cfg, self.bf16
      if path == "jax_bf16":
        fn, weights = (lambda w, ids: plain_encoder(w, ids, cfg)), bf16
      elif path in ("xla_int8", "xla_fp8"):
        fn, weights = _xla_path(bf16, cfg, path[4:])
      elif path == "int4jax_bf16":
        fn, weights = _own_bf16(cfg, bf16)
      else:
        preset, gemms, overrides = ENGINE_POLICIES[path]
        fn, weights = _engine_path(self.params, cfg, preset, gemms, dataclasses.replace(self.mode, **overrides))
      self.fns[path] = (jax.jit(fn), weights)
    return self.fns[path]


def cell_order(settings: Settings) -> list[tuple[str, tuple[int, int], str]]:
  """(model, point, path) cells, most informative first, so that a time budget cuts the least: the JAX paths the
  targets name (bf16 baselines, W4A4, W8A8) for every model, then the strongest other baselines (XLA's int8 and
  fp8, PyTorch eager and compiled: torch.compile recompiles once for dynamic shapes, then reuses), then the
  paper's FFN-in-only variant."""
  tier = {"jax_bf16": 0, "int4jax_bf16": 0, "int4jax_w4a4": 0, "int4jax_w8a8": 0, "xla_int8": 1, "xla_fp8": 1,
          "torch_eager_fp16": 1, "torch_compile_fp16": 1, "int4jax_w4a4_xlaq": 1, "int4jax_w4a4_ffn_in": 2}
  cells = [(m, pt, p) for m in settings.models for pt in settings.grid for p in settings.paths]
  return sorted(cells, key=lambda c: (tier[c[2]], settings.models.index(c[0]), settings.grid.index(c[1]),
                                      RUN_ORDER.index(c[2])))


def run(settings: Settings, on_row: Callable[[dict], Any] | None = None) -> dict:
  """Times every cell of `settings`; `on_row(result so far)` after each cell, so that a run killed from outside
  (a machine's time limit) still leaves every finished cell behind."""
  t_start = time.perf_counter()
  tstat = torch_status()
  info = {"jax": jax.__version__, "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
          "torch": tstat or "available", "timing": ("device: CUPTI kernel time per call, mean of back-to-back runs "
          "(judged); wall: median of synced calls incl. dispatch" if _cupti() else "wall clock per synced call "
          "incl. dispatch, median of runs (no CUPTI here)"), "runs": settings.runs, "warmup": settings.warmup}
  # Shapes a chosen kernel cannot take run XLA's path; ops logs each choice and fallback once (see the log).
  mode = engine.default_mode(allow_xla_fallback=True)
  want_torch = tstat is None and any(p.startswith("torch") for p in settings.paths)
  states: dict[str, _ModelState] = {}
  rows = {}
  for model_name, (batch, seq), path in cell_order(settings):
    row = {"model": model_name, "batch": batch, "seq": seq, "path": path}
    key = (model_name, batch, seq, path)
    if path.startswith("torch") and tstat is not None:
      rows[key] = dict(row, status=f"not available: {tstat}")
    elif time.perf_counter() - t_start > settings.budget_s:
      rows[key] = dict(row, status="skipped: time budget")
    else:
      rows[key] = _time_cell(row, states, settings, mode, want_torch)
    if on_row is not None:
      on_row(_result(info, rows, settings, t_start))
  return _result(info, rows, settings, t_start)


def _time_cell(row: dict, states: dict, settings: Settings, mode, want_torch: bool) -> dict:
  """One (model, point, path) cell: its row with status "ok" and the timings, or the error that stopped it."""
  model_name, batch, seq, path = row["model"], row["batch"], row["seq"], row["path"]
  try:
    if model_name not in states:
      states[model_name] = _ModelState(model_name, settings.config_overrides, mode, want_torch,
                                       "torch_compile_fp16" in settings.paths)
    st = states[model_name]
    ids_np = np.random.default_rng(batch * 1000 + seq).integers(0, st.cfg.vocab_size, (batch, seq))
    if path.startswith("torch"):
      torch = st.torch
      tids = torch.as_tensor(ids_np).cuda()
      # An explicit all-ones mask: without one, torch.compile traces HF BERT's SDPA attention into an fp32 math
      # softmax + TF32 GEMMs (37 ms instead of 23 at BERT-large 32x512 on the H200); with it, compiled and eager
      # both run cuDNN flash attention. Same model: every position is attended to either way.
      tmask = torch.ones_like(tids)
      t0 = time.perf_counter()
      with torch.inference_mode():
        st.torch_fns[path](input_ids=tids, attention_mask=tmask)
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        call, sync = (lambda: st.torch_fns[path](input_ids=tids, attention_mask=tmask).last_hidden_state,
                      lambda _: torch.cuda.synchronize())
        res = time_calls(call, sync, warmup=settings.warmup, runs=settings.runs)
        prof = device_profile(call, sync, runs=settings.runs)
    else:
      ids = jnp.asarray(ids_np, jnp.int32)
      f, weights = st.jax_fn(path)
      call, sync = (lambda: f(weights, ids)), _jax_sync
      t0 = time.perf_counter()
      sync(call())
      first = time.perf_counter() - t0
      res = time_calls(call, sync, warmup=settings.warmup, runs=settings.runs)
      prof = device_profile(call, sync, runs=settings.runs)
    res.update(prof or {})
    # The one number each cell is judged by: device time where CUPTI gave it, else the wall clock.
    res["median_ms"] = res.get("device_ms", res["wall_ms"])
    logging.info("%s %dx%d %s: device %s ms, wall %.3f ms (first call %.1f s)%s", model_name, batch, seq, path,
                 f"{prof['device_ms']:.3f}" if prof else "n/a", res["wall_ms"], first,
                 f", GEMM share {prof['share'].get('gemm', 0):.0%}" if prof else "")
    return dict(row, status="ok", first_call_s=first, **res)
  except Exception as e:  # pylint: disable=broad-except
    logging.exception("%s %dx%d %s failed", model_name, batch, seq, path)
    return dict(row, status=f"error: {type(e).__name__}: {str(e)[:300]}")


def _result(info: dict, rows: dict, settings: Settings, t_start: float) -> dict:
  """The run's JSON object: info (wall time so far, the dispatcher's logged kernel choices) and the rows in grid
  order; cells not reached yet are listed as such."""
  info = dict(info, wall_s=time.perf_counter() - t_start,
              kernel_paths=sorted(map(str, getattr(ops, "_logged", ()))))  # the dispatcher's choices, as logged
  order = [(m, b, s, p) for m in settings.models for b, s in settings.grid for p in settings.paths]
  return {"info": info, "rows": [rows.get(k, {"model": k[0], "batch": k[1], "seq": k[2], "path": k[3],
                                              "status": "not reached: run stopped"}) for k in order]}


def _xla_path(bf16_params, cfg, kind):
  qparams = jax.jit(xla_quantize_weights, static_argnums=1)(bf16_params, kind)
  return (lambda w, ids: plain_encoder(w, ids, cfg, kind)), qparams


def _own_bf16(cfg, bf16_params):
  model = bert.build(dataclasses.replace(cfg, policy=make_policy("fp32"), dtype=jnp.bfloat16), "base")
  return (lambda w, ids: model.apply({"params": w}, ids).logits), bf16_params


def _engine_path(params, cfg, preset, gemms, mode):
  policy = make_policy(preset, gemms=gemms or ("qkv", "attn_out", "ffn_in", "ffn_out"))
  eng = engine.from_float(params, dataclasses.replace(cfg, policy=policy), "base", int_mode=mode)
  return (lambda w, ids: eng.model.apply({"params": w}, ids).logits), eng.params


# ------------------------------------------------------------------ reports


def speedups(rows: list[dict]) -> list[dict]:
  """Sets speedup_vs_<baseline> (baseline ms / this ms) for each ok row, per (model, batch, seq), from these rows
  alone (ratios a run's JSON already holds are recomputed, so a baseline row dropped from it takes its ratios
  along). Rows of a merged table (with `source`) keep the speedups computed within their own run (`merge`)."""
  base = {}
  for r in rows:
    if r["status"] == "ok":
      base[(r["model"], r["batch"], r["seq"], r["path"])] = r["median_ms"]
  out = []
  for r in rows:
    if "source" in r:
      out.append(dict(r))
      continue
    r = {k: v for k, v in r.items() if not k.startswith("speedup_vs_")}
    if r["status"] == "ok":
      for b in BASELINES:
        ms = base.get((r["model"], r["batch"], r["seq"], b))
        if ms:
          r[f"speedup_vs_{b}"] = ms / r["median_ms"]
    out.append(r)
  return out


def merge(results: list[dict]) -> dict:
  """One table from several runs on the same device, cell by cell: the first run that measured a cell supplies it,
  later runs fill the cells the earlier ones skipped (so a short run of the missing baselines completes a full
  grid without replacing it). Speedups are computed within each run before merging (a ratio never mixes two
  runs: every run times its own baselines), and every row keeps `source`, its run's index in info["sources"]
  (command, commit)."""
  if not results:
    raise ValueError("merge needs at least one latency result")
  devices = sorted({r["info"]["device"] for r in results})
  if len(devices) > 1:
    raise ValueError(f"latency results from different devices cannot share a table: {devices}")
  cells, sources = {}, []
  for res in results:
    # An input that is itself a merged table brings its own sources (its rows' `source` indexes them).
    own = res["info"].get("sources") or [{"command": res["info"].get("command", ""),
                                          "commit": res["info"].get("commit", "")}]
    for r in speedups(res["rows"]):
      key = (r["model"], r["batch"], r["seq"], r["path"])
      if key not in cells or (r["status"] == "ok" and cells[key]["status"] != "ok"):
        cells[key] = dict(r, source=len(sources) + r.get("source", 0))
    sources += own
  info = dict(results[-1]["info"], sources=sources)
  order = {}
  for res in results:  # grid order of the runs as they listed their cells
    for r in res["rows"]:
      order.setdefault((r["model"], r["batch"], r["seq"]), len(order))
  rows = sorted(cells.values(), key=lambda r: (order[(r["model"], r["batch"], r["seq"])], PATHS.index(r["path"])))
  return {"info": info, "rows": rows}


def _source_tag(i: int) -> str:
  return chr(ord("a") + i)


def markdown(result: dict, command: str = "", commit: str = "") -> str:
  info, rows = result["info"], speedups(result["rows"])
  paths = [p for p in PATHS if any(r["path"] == p for r in rows)]
  if "sources" in info:  # a merged table: each cell names its run; ratios are within that run
    runs = "; ".join(f"[{_source_tag(i)}] `{src['command']}` (commit {src['commit']})"
                     for i, src in enumerate(info["sources"]))
    origin = (f"Merged from {len(info['sources'])} runs, cell by cell (the first run that measured a cell supplies "
              f"it, later runs fill the cells it skipped); each "
              f"cell's [run] tag names its run and its ratios use that run's own baselines: {runs}; "
              f"jax {info['jax']}; torch: {info['torch']}.")
  else:
    origin = f"Command: `{command}`; commit {commit}; jax {info['jax']}; torch: {info['torch']}."
  lines = [f"# End-to-end BERT encoder latency on {info['device']}", "", origin,
           f"Timing: {info['timing']} ({info['runs']} runs, {info['warmup']} warm-up). Random weights, no padding "
           "mask. ms (speedup vs jax_bf16).", ""]
  cell = {(r["model"], r["batch"], r["seq"], r["path"]): r for r in rows}
  for model in dict.fromkeys(r["model"] for r in rows):
    lines += [f"## {model}", "", "| batch x seq | " + " | ".join(paths) + " |", "|---" * (len(paths) + 1) + "|"]
    for b, s in dict.fromkeys((r["batch"], r["seq"]) for r in rows if r["model"] == model):
      cells = []
      for p in paths:
        r = cell.get((model, b, s, p))
        if r is None:
          cells.append("")
        elif r["status"] != "ok":
          cells.append(r["status"].split(":")[0])
        else:
          sp = r.get("speedup_vs_jax_bf16")
          cells.append(f"{r['median_ms']:.3f}" + (f" ({sp:.2f}x)" if sp and p != "jax_bf16" else "")
                       + (f" [{_source_tag(r['source'])}]" if "sources" in info else ""))
      lines.append(f"| {b}x{s} | " + " | ".join(cells) + " |")
    lines.append("")
    bases = [p for p in BASELINES if any(r["path"] == p and r["status"] == "ok" for r in rows)]
    quant = [p for p in paths if p not in BASELINES]
    if bases and quant:
      lines += [f"Speedup of each path vs each baseline ({model}; baseline ms / path ms):", "",
                "| batch x seq | path | " + " | ".join(f"vs {b}" for b in bases) + " |",
                "|---|---" + "|---" * len(bases) + "|"]
      for b, s in dict.fromkeys((r["batch"], r["seq"]) for r in rows if r["model"] == model):
        for p in quant:
          r = cell.get((model, b, s, p))
          if r is None or r["status"] != "ok":
            continue
          sps = [r.get(f"speedup_vs_{x}") for x in bases]
          lines.append(f"| {b}x{s} | {p} | " + " | ".join("" if v is None else f"{v:.2f}x" for v in sps) + " |")
      lines.append("")
  lines += profile_lines(rows)
  lines += targets(rows)
  bad = sorted({r["status"] for r in rows if r["status"] != "ok"})
  if bad:
    lines += ["Cells not measured: " + "; ".join(bad), ""]
  return "\n".join(lines)


def profile_lines(rows: list[dict]) -> list[str]:
  """Where the device time goes: per cell, the share in GEMMs / attention / quantize / other kernels (CUPTI), and
  the wall-clock time beside the device time (the gap is host dispatch and launch latency)."""
  prof = [r for r in rows if r["status"] == "ok" and "share" in r]
  if not prof:
    return []
  cats = ("gemm", "attention", "quantize", "other")
  out = ["## Where the time goes (CUPTI kernel time by kernel name)", "",
         "| model | batch x seq | path | device ms | wall ms | " + " | ".join(cats) + " |",
         "|---|---|---|---|---|" + "---|" * len(cats)]
  for r in prof:
    out.append(f"| {r['model']} | {r['batch']}x{r['seq']} | {r['path']} | {r['device_ms']:.3f} | {r['wall_ms']:.3f} | "
               + " | ".join(f"{100 * r['share'].get(c, 0.0):.0f}%" for c in cats) + " |")
  return out + [""]


def targets(rows: list[dict]) -> list[str]:
  """The issue's targets, read off this run: met / not met / not measured, with the numbers. Ratios come from the
  rows' speedups, i.e. from within one run also in a merged table."""
  rows = speedups(rows)
  ms = {(r["model"], r["batch"], r["seq"], r["path"]): r["median_ms"] for r in rows if r["status"] == "ok"}
  vs = {(r["model"], r["batch"], r["seq"], r["path"]): r for r in rows if r["status"] == "ok"}
  points = list(dict.fromkeys((r["batch"], r["seq"]) for r in rows))
  out = ["## Targets", ""]

  def verdict(ok):
    return "not measured" if ok is None else ("met" if ok else "NOT met")

  for model in dict.fromkeys(r["model"] for r in rows):
    ratios = [(pt, 1.0 / vs[(model, *pt, "int4jax_bf16")]["speedup_vs_jax_bf16"]) for pt in points
              if "speedup_vs_jax_bf16" in vs.get((model, *pt, "int4jax_bf16"), {})]
    ok = all(r <= 1.05 for _, r in ratios) if ratios else None
    out.append(f"- {model}: int4jax bf16 within 5% of plain JAX bf16 at every point: {verdict(ok)} ("
               + ", ".join(f"{b}x{s} {r:.3f}" for (b, s), r in ratios) + ")")
  m = "bert_large"

  def speedup(pt, path):  # vs the faster of the two bf16 paths: the smaller of the two speedups
    got = [vs.get((m, *pt, path), {}).get(f"speedup_vs_{b}") for b in ("jax_bf16", "int4jax_bf16")]
    got = [g for g in got if g is not None]
    return min(got) if got else None

  sp = {pt: speedup(pt, "int4jax_w4a4") for pt in points}
  big = [sp.get(pt) for pt in ((32, 384), (32, 512))]
  ok = None if None in big else all(v >= 1.5 for v in big)
  shown = ", ".join(f"{b}x{s} {v:.2f}x" for (b, s), v in sp.items() if v)
  out.append(f"- {m} W4A4 >= 1.5x the faster bf16 JAX path at 32x384 and 32x512: {verdict(ok)}"
             + (f" ({shown})" if shown else ""))
  vals = [v for v in sp.values() if v is not None]
  out.append(f"- {m} W4A4 never slower than it: {verdict(all(v >= 1.0 for v in vals) if vals else None)}")
  v = speedup((32, 512), "int4jax_w8a8")
  out.append(f"- {m} W8A8 >= 1.3x at 32x512: {verdict(None if v is None else v >= 1.3)}"
             + ("" if v is None else f" ({v:.2f}x)"))
  t = ms.get((m, 1, 128, "int4jax_w4a4"))
  out.append(f"- {m} W4A4 at 1x128 <= 1.2 ms: {verdict(None if t is None else t <= 1.2)}"
             + ("" if t is None else f" ({t:.3f} ms)"))
  return out + [""]


def plot(result: dict, path: str) -> None:
  """Latency per path per grid point, one panel per model (the paper's Figures 2-3 as grouped bars)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in result["rows"] if r["status"] == "ok"]
  models = list(dict.fromkeys(r["model"] for r in rows))
  if not models:
    return
  fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
  for ax, model in zip(axes[0], models):
    mr = [r for r in rows if r["model"] == model]
    points = list(dict.fromkeys((r["batch"], r["seq"]) for r in mr))
    paths = [p for p in PATHS if any(r["path"] == p for r in mr)]
    width = 0.8 / max(len(paths), 1)
    for j, p in enumerate(paths):
      ys = [next((r["median_ms"] for r in mr if (r["batch"], r["seq"]) == pt and r["path"] == p), np.nan)
            for pt in points]
      ax.bar(np.arange(len(points)) + j * width, ys, width, label=p)
    ax.set_xticks(np.arange(len(points)) + 0.4 - width / 2, [f"{b}x{s}" for b, s in points])
    ax.set_yscale("log")
    ax.set_ylabel("ms (median)")
    ax.set_title(f"{model} on {result['info']['device']}")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
