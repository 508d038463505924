"""Kernel benchmark: our INT4/INT8 GEMMs against XLA's bf16, int8, fp8 and int4-weight paths.

    PYTHONPATH=. python -m kernels_pallas.bench [--quick] [--out results/kernels]
    PYTHONPATH=. python -m kernels_pallas.bench --variant w4a16 --m 16 --n 28672 --k 8192 \
        --cfg block_n=64,block_k=256,split_k=2,num_stages=4      # one config: check + time, one JSON line

Timing (device side): CUPTI through ``jax.experimental.mosaic.gpu.profiler.measure`` gives the summed
GPU time of every kernel one call launches (so wrapper pads, bitcasts and epilogue fusions count;
host launch gaps do not). Each path is compiled and run twice to warm up, then called ``reps`` (>= 20)
times cycling through ``n_sets`` (>= 4) independent input sets whose total size exceeds 2x the 50 MB
L2, and the median is reported. Every path's output is checked against an exact reference first.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from kernels_pallas.mosaic import w4a4 as hopper_w4a4, w4a16 as hopper_w4a16, w8a8 as hopper_w8a8

L2_BYTES = 50 * 2**20

# ---------------------------------------------------------------- timing


def _measure_fn():
  try:
    from jax.experimental.mosaic.gpu import profiler
    return profiler.measure
  except Exception:  # noqa: BLE001
    return None


def time_call(fn, arg_sets, reps=30):
  """Median device time (µs) of fn(*args) over reps calls, rotating arg_sets; plus the method."""
  jfn = jax.jit(fn)
  for a in arg_sets[:2]:
    jax.block_until_ready(jfn(*a))
  measure = _measure_fn()
  times = []
  if measure is not None:
    try:
      m = measure(jfn)
      for i in range(reps):
        _, ms = m(*arg_sets[i % len(arg_sets)])
        times.append(ms * 1e3)
      return statistics.median(times), "cupti"
    except Exception:  # noqa: BLE001  (no CUPTI: fall back to wall clock over a batch)
      times = []
  for i in range(reps):
    a = arg_sets[i % len(arg_sets)]
    t0 = time.perf_counter()
    jax.block_until_ready(jfn(*a))
    times.append((time.perf_counter() - t0) * 1e6)
  return statistics.median(times), "wall"


def n_sets_for(set_bytes):
  return int(min(32, max(4, math.ceil(2 * L2_BYTES / max(set_bytes, 1)))))


def _rand_like(key, a, bits):
  """A fresh device array with a's shape/dtype and the same value range (for timing rotation)."""
  dt = a.dtype
  if dt == jnp.uint8:
    return jax.random.randint(key, a.shape, 0, 256, jnp.int32).astype(jnp.uint8)
  if dt in (jnp.int8, jnp.int4, jnp.float8_e4m3fn):
    lim = 8 if bits == 4 else 128
    return jax.random.randint(key, a.shape, -lim, lim, jnp.int32).astype(dt)
  if dt == jnp.float32:
    return jax.random.uniform(key, a.shape, jnp.float32, 0.5, 2.0) / 64
  return jax.random.normal(key, a.shape, jnp.float32).astype(dt)


def rotation_sets(first, count, bits, seed=1):
  sets = [first]
  for i in range(1, count):
    keys = jax.random.split(jax.random.key(seed * 1000 + i), len(first))
    sets.append(tuple(_rand_like(kk, a, bits) for kk, a in zip(keys, first)))
  return sets


# ---------------------------------------------------------------- inputs


def _pack(q):
  q = np.asarray(q, np.int8).astype(np.uint8) & 0xF
  return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def make_int_inputs(rng, m, n, k, bits):
  lo, hi = (-8, 8) if bits == 4 else (-128, 128)
  xq = rng.integers(lo, hi, (m, k), dtype=np.int8)
  wq = rng.integers(lo, hi, (n, k), dtype=np.int8)
  xq[0, :] = lo  # boundaries: a row of -8 (-128) and one of +7 (+127) when M allows
  if m > 1:
    xq[1, :] = hi - 1
  if m > 2:
    xq[2, :] = 0   # a zero row
  xs = rng.uniform(0.5, 2.0, (m,)).astype(np.float32) / 64
  ws = rng.uniform(0.5, 2.0, (n,)).astype(np.float32) / 64
  b = rng.normal(size=(n,)).astype(np.float32)
  return xq, wq, xs, ws, b


# ---------------------------------------------------------------- one shape


def rel_err(out, ref):
  out = np.asarray(out, np.float64)
  ref = np.asarray(ref, np.float64)
  if not np.all(np.isfinite(out)):
    return float("inf")
  return float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-30))


def bench_gemm(m, n, k, *, paths, reps=30, seed=0, gelu=False, out_dtype=jnp.bfloat16, configs=None):
  """Returns {path: {us, tops, gbps, err, method} | {error}} for one (M, N, K)."""
  rng = np.random.default_rng(seed)
  configs = configs or {}
  res = {}
  # byte counts of the stored operands per path (inputs read once + output written once)
  out_b = m * n * jnp.dtype(out_dtype).itemsize
  flops = 2.0 * m * n * k

  def run(name, build_sets, fn, ref_fn, nbytes, tol, bits=4):
    try:
      probe = build_sets(1)[0]
      out = jax.jit(fn)(*probe)
      err = rel_err(out, ref_fn(*probe))
      if not err <= tol:
        res[name] = {"error": f"check failed: rel err {err:.3g} > {tol}", "err": err}
        return
      sets = rotation_sets(probe, n_sets_for(nbytes), bits)
      us, how = time_call(fn, sets, reps)
      res[name] = {"us": us, "tops": flops / us / 1e6, "gbps": nbytes / us / 1e3, "err": err,
                   "method": how, "bytes": nbytes}
    except Exception as e:  # noqa: BLE001
      res[name] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
      traceback.print_exc(limit=3, file=sys.stderr)

  def sets_int(bits, count):
    out = []
    for _ in range(count):
      xq, wq, xs, ws, b = make_int_inputs(rng, m, n, k, bits)
      out.append((xq, wq, xs, ws, b))
    return out

  def dev(*a):
    return tuple(jax.device_put(v) for v in a)

  # XLA bf16 (weights stored (N, K); cuBLAS handles either layout)
  if "xla_bf16" in paths:
    def b_sets(c):
      return [dev(rng.normal(size=(m, k)).astype(jnp.bfloat16),
                  rng.normal(size=(n, k)).astype(jnp.bfloat16)) for _ in range(c)]
    f = lambda x, w: lax.dot_general(x, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.bfloat16)
    r = lambda x, w: np.asarray(x, np.float32) @ np.asarray(w, np.float32).T
    run("xla_bf16", b_sets, f, r, 2 * (m * k + n * k) + 2 * m * n, 2e-2)
  if "xla_int8" in paths:
    def i_sets(c):
      return [dev(*s[:2]) for s in sets_int(8, c)]
    f = lambda x, w: lax.dot_general(x, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    r = lambda x, w: np.asarray(x, np.int64) @ np.asarray(w, np.int64).T
    run("xla_int8", i_sets, f, r, m * k + n * k + 4 * m * n, 0.0, bits=8)
  if "xla_fp8" in paths:
    def f_sets(c):
      return [dev(*(jnp.asarray(v).astype(jnp.float8_e4m3fn) for v in s[:2])) for s in sets_int(4, c)]
    f = lambda x, w: lax.dot_general(x, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.bfloat16)
    r = lambda x, w: np.asarray(x, np.float32) @ np.asarray(w, np.float32).T
    run("xla_fp8", f_sets, f, r, m * k + n * k + 2 * m * n, 1e-2)
  # The three W4A4 variants share inputs, reference and byte count; they differ in entry point and config.
  w4a4_variants = (("mosaic_w4a4", hopper_w4a4.w4a4_matmul, configs.get("w4a4", hopper_w4a4.FUSED)),
                   ("mosaic_w4a4_pp", hopper_w4a4.w4a4_matmul, hopper_w4a4.PREPASS),
                   ("mosaic_w4a4_ws", hopper_w4a4.w4a4_matmul_ws, configs.get("w4a4_ws", hopper_w8a8.WSConfig())))
  for name, entry, cfg in w4a4_variants:
    if name not in paths:
      continue
    def s4(c):
      return [dev(_pack(s[0]), s[2], _pack(s[1]), s[3], s[4]) for s in sets_int(4, c)]
    f = functools.partial(entry, gelu=gelu, out_dtype=out_dtype, config=cfg)
    r = lambda xp, xs, wp, ws, b: hopper_w4a4.reference(jnp.asarray(xp), jnp.asarray(xs), jnp.asarray(wp),
                                                       jnp.asarray(ws), jnp.asarray(b), gelu=gelu,
                                                       out_dtype=jnp.float32)
    run(name, s4, f, r, (m * k + n * k) // 2 + 8 * m + 8 * n + out_b, 1e-2)
  # The two W8A8 variants share inputs, reference and byte count; they differ in entry point and config.
  w8a8_variants = (("mosaic_w8a8_ws", hopper_w8a8.w8a8_matmul_ws,
                    configs.get("w8a8_ws", hopper_w8a8.WSConfig(num_stages=3))),
                   ("mosaic_w8a8", hopper_w8a8.w8a8_matmul, configs.get("w8a8", hopper_w8a8.SINGLE_WG)))
  for name, entry, cfg in w8a8_variants:
    if name not in paths:
      continue
    def s8(c):
      return [dev(s[0], s[2], s[1], s[3], s[4]) for s in sets_int(8, c)]
    f = functools.partial(entry, gelu=gelu, out_dtype=out_dtype, config=cfg)
    r = lambda x, xs, w, ws, b: hopper_w8a8.reference(jnp.asarray(x), jnp.asarray(xs), jnp.asarray(w),
                                                     jnp.asarray(ws), jnp.asarray(b), gelu=gelu,
                                                     out_dtype=jnp.float32)
    run(name, s8, f, r, m * k + n * k + 8 * m + 8 * n + out_b, 1e-2, bits=8)
  if "mosaic_w4a16" in paths and m <= hopper_w4a16.MAX_M:
    cfg = configs.get("w4a16")
    def s16(c):
      return [dev(rng.normal(size=(m, k)).astype(jnp.bfloat16), _pack(s[1]), s[3], s[4])
              for s in sets_int(4, c)]
    f = lambda x, wp, ws, b: hopper_w4a16.w4a16_matmul(x, wp, ws, b, gelu=gelu, out_dtype=out_dtype,
                                                       config=cfg)
    r = lambda x, wp, ws, b: hopper_w4a16.reference(jnp.asarray(x), jnp.asarray(wp), jnp.asarray(ws),
                                                    jnp.asarray(b), gelu=gelu, out_dtype=jnp.float32)
    run("mosaic_w4a16", s16, f, r, 2 * m * k + n * k // 2 + 4 * n + out_b, 2e-2)
  # XLA's int4-weight path: weights held as jnp.int4 [N, K] (XLA's own packed storage), convert + dot.
  # (Feeding it our uint8 bytes through bitcast_convert_type crashes XLA 0.11.2's gemm fusion:
  # triton_tiling_propagation.cc:557 Check failed: dst_dim_it != dst_dim_end.)  Kept last for that reason.
  if "xla_int4w" in paths:
    def q_sets(c):
      return [dev(rng.normal(size=(m, k)).astype(jnp.bfloat16), jnp.asarray(s[1]).astype(jnp.int4), s[3])
              for s in sets_int(4, c)]
    def f(x, w4, ws):
      y = lax.dot_general(x, w4.astype(jnp.bfloat16), (((1,), (1,)), ((), ())),
                          preferred_element_type=jnp.float32)
      return (y * ws[None, :]).astype(jnp.bfloat16)
    r = lambda x, w4, ws: np.asarray(x, np.float32) @ (np.asarray(w4.astype(jnp.int8), np.float32)
                                                       * np.asarray(ws)[:, None]).T
    run("xla_int4w", q_sets, f, r, 2 * m * k + n * k // 2 + 2 * m * n, 2e-2)
  return res


# ---------------------------------------------------------------- entry points


def _parse_cfg(kind, s):
  base = {"w4a4": hopper_w4a4.FUSED, "w8a8": hopper_w8a8.SINGLE_WG,
          "w4a16": hopper_w4a16.DEFAULT, "w4a4_ws": hopper_w8a8.WSConfig(),
          "w8a8_ws": hopper_w8a8.WSConfig(num_stages=3)}[kind]
  kv = {}
  for item in filter(None, (s or "").split(",")):
    key, val = item.split("=")
    kv[key] = val if key == "semantics" else int(val)
  return dataclasses.replace(base, **kv)


# Variant lists for device calls: (variant, m, n, k, cfg, extra flags). One process each, under timeout.
SWEEPS = {
    "r2": [
        ("w4a16", 16, 28672, 8192, "split_k=4", "--baselines"),
        ("w4a16", 16, 28672, 8192, "split_k=8", ""),
        ("w4a16", 16, 28672, 8192, "split_k=4,num_stages=6", ""),
        ("w4a16", 16, 28672, 8192, "split_k=2,block_k=512", ""),
        ("w4a16", 1, 28672, 8192, "split_k=4", "--baselines"),
        ("w4a16", 16, 4096, 4096, "split_k=4", "--baselines"),
        ("w4a16", 16, 4096, 4096, "split_k=8", ""),
        ("w8a8", 3072, 4096, 1024, "", "--baselines"),
        ("w8a8", 3072, 4096, 1024, "overlap=0", ""),
        ("w4a4", 3072, 4096, 1024, "", ""),
        ("w4a4", 3072, 4096, 1024, "block_k=128,sub_k=1,overlap=0", ""),
        ("w4a4", 3072, 4096, 1024, "block_m=64,block_n=256,block_k=128", ""),
        ("w4a4", 3072, 4096, 1024, "num_stages=3", ""),
        ("w4a4", 12288, 4096, 1024, "", "--baselines"),
    ],
    "r3": [
        ("w8a8_ws", 3072, 4096, 1024, "", ""),
        ("w4a4_ws", 3072, 4096, 1024, "", ""),
    ],
    "r1": [
        ("w4a16", 16, 28672, 8192, "split_k=2", "--baselines"),
        ("w4a16", 16, 28672, 8192, "split_k=1", ""),
        ("w4a16", 16, 28672, 8192, "split_k=4", ""),
        ("w4a16", 1, 28672, 8192, "split_k=2", "--baselines"),
        ("w4a16", 16, 4096, 4096, "split_k=4", "--baselines"),
        ("w8a8", 3072, 4096, 1024, "", "--baselines"),
        ("w4a4", 3072, 4096, 1024, "", ""),
        ("w4a4", 3072, 4096, 1024, "semantics=lane", ""),
        ("w8a8", 12288, 4096, 1024, "", ""),
    ],
}


def run_sweep(variants, out_dir, timeout_s=120):
  import subprocess
  rows = []
  log = open(os.path.join(out_dir, "sweep.log"), "a")
  for (kind, m, n, k, cfg, extra) in variants:
    cmd = [sys.executable, "-m", "kernels_pallas.bench", "--variant", kind, "--m", str(m), "--n", str(n),
           "--k", str(k), "--cfg", cfg] + extra.split()
    t0 = time.time()
    try:
      pr = subprocess.run(["timeout", str(timeout_s)] + cmd, capture_output=True, text=True)
      outp, errp, rc = pr.stdout, pr.stderr, pr.returncode
    except Exception as e:  # noqa: BLE001
      outp, errp, rc = "", repr(e), -1
    log.write(f"==== {' '.join(cmd)} rc={rc} {time.time()-t0:.0f}s\n{errp[-6000:]}\n{outp[-3000:]}\n")
    log.flush()
    line = next((l for l in outp.splitlines()[::-1] if l.startswith("{")), None)
    rows.append((kind, m, n, k, cfg, rc, json.loads(line) if line else None))
  with open(os.path.join(out_dir, "sweep.jsonl"), "a") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  print(f"{'variant':8} {'M':>6} {'N':>6} {'K':>6} {'cfg':28} path          us      TOPS    GB/s   err")
  for (kind, m, n, k, cfg, rc, js) in rows:
    if not js:
      print(f"{kind:8} {m:6} {n:6} {k:6} {cfg:28} rc={rc} (see sweep.log)")
      continue
    for path, v in js["res"].items():
      if "us" in v:
        print(f"{kind:8} {m:6} {n:6} {k:6} {cfg:28} {path:12} {v['us']:8.1f} {v['tops']:7.1f} {v['gbps']:7.0f} {v['err']:.1e}")
      else:
        print(f"{kind:8} {m:6} {n:6} {k:6} {cfg:28} {path:12} {v['error'][:150]}")


BERT_M = (32, 512, 3072, 12288)
BERT_NK = lambda h: [(h, h), (3 * h, h), (4 * h, h), (h, 4 * h)]
DECODE = [(m, n, k) for m in (1, 16) for (n, k) in ((4096, 4096), (28672, 8192))]
BASE_PATHS = ("xla_bf16", "xla_int8", "xla_fp8", "xla_int4w")


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=None)
  p.add_argument("--variant", default=None, help="w4a4|w8a8|w4a16: time one config")
  p.add_argument("--m", type=int); p.add_argument("--n", type=int); p.add_argument("--k", type=int)
  p.add_argument("--cfg", default="")
  p.add_argument("--reps", type=int, default=30)
  p.add_argument("--gelu", action="store_true")
  p.add_argument("--baselines", action="store_true")
  p.add_argument("--ws_from", default=None, help="sweep.jsonl: add the warp-specialized paths if they ran there")
  p.add_argument("--shapes", default=None, help="kind:h:M:N:K,... instead of the full list")
  p.add_argument("--part", default="1/1", help="i/n: run every n-th shape starting at i (split a run)")
  p.add_argument("--sweep", default=None, help="name in SWEEPS: one subprocess per variant")
  a = p.parse_args(argv)
  if a.sweep:
    return run_sweep(SWEEPS[a.sweep], os.environ.get("OUT", "/tmp"))
  if a.variant:
    cfg = _parse_cfg(a.variant, a.cfg)
    paths = ["mosaic_" + a.variant] + (["xla_bf16", "xla_int8", "xla_int4w"] if a.baselines else [])
    r = bench_gemm(a.m, a.n, a.k, paths=paths, reps=a.reps, gelu=a.gelu, configs={a.variant: cfg})
    print(json.dumps({"variant": a.variant, "m": a.m, "n": a.n, "k": a.k, "cfg": dataclasses.asdict(cfg),
                      "res": r}))
    return
  shapes = []
  for h in (768, 1024):
    for (n, k) in BERT_NK(h):
      for m in BERT_M:
        if a.quick and (m not in (3072, 12288) or h != 1024):
          continue
        shapes.append(("bert", h, m, n, k))
  for (m, n, k) in DECODE:
    shapes.append(("decode", 0, m, n, k))
  ws_paths = []
  if a.ws_from and os.path.exists(a.ws_from):
    for line in open(a.ws_from):
      kind, *_, js = json.loads(line)
      if kind.endswith("_ws") and js and all("us" in v for v in js["res"].values()):
        ws_paths.append("mosaic_" + kind)
    ws_paths = sorted(set(ws_paths))
  print("warp-specialized paths enabled:", ws_paths, flush=True)
  pi, pn = (int(v) for v in a.part.split("/"))
  shapes = shapes[pi - 1::pn]
  if a.shapes:
    shapes = [(t[0], *map(int, t[1:])) for t in (x.split(":") for x in a.shapes.split(","))]
  rows = []
  for (kind, h, m, n, k) in shapes:
    paths = list(BASE_PATHS)
    ours = ["mosaic_w4a4"] + (ws_paths or ["mosaic_w4a4_pp", "mosaic_w8a8"])  # ws replaces pp and the 1-WG w8a8
    paths += ours if kind == "bert" else []
    if m <= hopper_w4a16.MAX_M:
      paths.append("mosaic_w4a16")
    t0 = time.time()
    r = bench_gemm(m, n, k, paths=paths, reps=a.reps)
    rows.append({"kind": kind, "h": h, "m": m, "n": n, "k": k, "res": r})
    print(f"{kind} h={h} M={m} N={n} K={k} ({time.time()-t0:.0f}s): " + "  ".join(
        f"{p}={v['us']:.1f}us" if "us" in v else f"{p}=ERR" for p, v in r.items()), flush=True)
    if a.out:  # after every shape, so a run cut short keeps what it measured
      _dump(a, argv, rows, pi, pn)
  if a.out and pn == 1:
    write_markdown(a.out, _meta(a, argv), rows)


def _meta(a, argv):
  return {"gpu": jax.devices()[0].device_kind, "gpu_file": gpu_name(), "jax": jax.__version__, "python": platform.python_version(),
          "commit": os.environ.get("GIT_COMMIT", "unknown"), "command": " ".join(["python -m kernels_pallas.bench"] + (argv or sys.argv[1:])),
          "timing": "CUPTI summed kernel time per call (jax.experimental.mosaic.gpu.profiler.measure), "
                    "median of %d calls rotating >=4 input sets > 2x L2, after 2 warm-up calls" % a.reps}


def _dump(a, argv, rows, pi, pn):
  os.makedirs(a.out, exist_ok=True)
  suffix = "" if pn == 1 else f".part{pi}of{pn}"
  with open(os.path.join(a.out, f"{gpu_name()}{suffix}.json"), "w") as f:
    json.dump({"meta": _meta(a, argv), "rows": rows}, f, indent=1)


def gpu_name():
  kind = jax.devices()[0].device_kind
  return "H100" if "H100" in kind else kind.replace(" ", "_")


OURS = ("mosaic_w4a4", "mosaic_w4a4_pp", "mosaic_w4a4_ws", "mosaic_w8a8", "mosaic_w8a8_ws", "mosaic_w4a16")


def write_markdown(out_dir, meta, rows, name=None):
  """Per shape and path: µs, TOPS, GB/s, ratio vs XLA bf16 and XLA int8 (same run), targets."""
  lines = [f"# Kernel timings on {meta['gpu']}", "",
           f"- command: `{meta['command']}`", f"- commit: `{meta['commit']}`",
           f"- jax {meta['jax']}, python {meta['python']}", f"- timing: {meta['timing']}",
           "- TOPS = 2*M*N*K / time; GB/s = (inputs read once + output written once, in each path's own "
           "storage format) / time; ratios are XLA path time / our time (> 1 is faster than XLA).", ""]
  lines.append("| kind | M | N | K | path | µs | TOPS | GB/s | vs bf16 | vs int8 | max rel err |")
  lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    res = r["res"]
    bf = res.get("xla_bf16", {}).get("us")
    i8 = res.get("xla_int8", {}).get("us")
    for p, v in res.items():
      if "us" not in v:
        lines.append(f"| {r['kind']} | {r['m']} | {r['n']} | {r['k']} | {p} | error: {v['error'][:80]} | | | | | |")
        continue
      vb = f"{bf / v['us']:.2f}x" if bf else ""
      vi = f"{i8 / v['us']:.2f}x" if i8 else ""
      lines.append(f"| {r['kind']} | {r['m']} | {r['n']} | {r['k']} | {p} | {v['us']:.1f} | {v['tops']:.1f} | "
                   f"{v['gbps']:.0f} | {vb} | {vi} | {v['err']:.1e} |")
  lines += ["", "## Targets (issue 5)", ""]
  for r in rows:
    res = r["res"]
    bf = res.get("xla_bf16", {}).get("us")
    i8 = res.get("xla_int8", {}).get("us")
    if r["kind"] == "bert" and r["m"] >= 3072 and r["h"] == 1024:
      for p in ("mosaic_w4a4", "mosaic_w4a4_pp", "mosaic_w4a4_ws"):
        v = res.get(p, {})
        if "us" in v and bf and i8:
          ok = bf / v["us"] >= 1.5 and i8 / v["us"] >= 1.0
          lines.append(f"- W4A4 {p} M={r['m']} N={r['n']} K={r['k']}: {bf / v['us']:.2f}x bf16 (>= 1.5), "
                       f"{i8 / v['us']:.2f}x int8 (>= 1.0): {'MET' if ok else 'NOT MET'}")
    if r["kind"] == "decode" and r["n"] == 28672:
      v = res.get("mosaic_w4a16", {})
      if "us" in v and bf:
        lines.append(f"- W4A16 M={r['m']} 8192x28672: {bf / v['us']:.2f}x bf16 (>= 3.0): "
                     f"{'MET' if bf / v['us'] >= 3.0 else 'NOT MET'}")
  with open(os.path.join(out_dir, f"{name or gpu_name()}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def merge(out_dir, parts):
  """Merge --part outputs into <gpu>.json/.md (run on any machine)."""
  rows, meta = [], None
  for pth in parts:
    d = json.load(open(pth))
    meta = meta or d["meta"]
    rows += d["rows"]
  order = {("bert", h, m, n, k): i for i, (_, h, m, n, k) in enumerate(
      [("bert", h, m, n, k) for h in (768, 1024) for (n, k) in BERT_NK(h) for m in BERT_M])}
  rows.sort(key=lambda r: (r["kind"] != "bert", order.get((r["kind"], r["h"], r["m"], r["n"], r["k"]), 0),
                           r["m"], r["n"]))
  meta["command"] = meta["command"].split(" --part")[0]
  name = meta.get("gpu_file", "H100")
  with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=1)
  write_markdown(out_dir, meta, rows, name)


if __name__ == "__main__":
  main()
