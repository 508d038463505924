"""Turns results/scripts/multi_gpu.sh's outputs into results/multi_gpu.{md,json} and the loss-curve PNG (issue 18).

    python results/scripts/collect_multi_gpu.py OUT/multi_gpu_glue.tgz OUT/multi_gpu_lm.tgz [--out_dir results]

Each tgz holds one job's four legs (see multi_gpu.sh): `one`/`all` (1 vs N devices, same global batch; fresh for the
first STEPS/2 steps, then resumed on the same device count) and `one_then_all`/`all_then_one` (resumed on the other
device count from the checkpoint at STEPS/2). Its sibling multi_gpu_<job>.json carries the settings. Reported:
  * per-step relative loss difference |L_N - L_1| / |L_1|, max over the first 100 steps (target <= 1e-5) and over all;
  * final eval metrics of every leg;
  * throughput: median of the per-step `examples_per_s` rows (training steps only) per leg; scaling = N-device /
    1-device throughput of the fresh legs, efficiency = scaling / N (target >= 0.9 for the GPT-2 job);
  * resume check: the cross-resumed leg started at STEPS/2 (its log says so) and, from there on, its losses match the
    leg that ran the first half on the same devices (`all_then_one` vs `all`, `one_then_all` vs `one`), max relative
    difference <= the tolerance.
A job whose json says "blocked" (fewer than 2 GPUs) is reported as blocked with its reason.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tarfile
import tempfile

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

LEGS = ("one", "all", "one_then_all", "all_then_one")
TOLERANCE = 1e-5
FIRST_STEPS = 100
SCALING_TARGET = 0.9


def read_rows(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def train_losses(rows: list[dict]) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in rows if r.get("split") == "train"}


def max_relative(a: dict[int, float], b: dict[int, float], steps) -> float | None:
  steps = [s for s in steps if s in a and s in b]
  if not steps:
    return None
  return float(max(abs(a[s] - b[s]) / max(abs(b[s]), 1e-30) for s in steps))


def median_throughput(rows: list[dict], first: int, last: int) -> float | None:
  values = [r["examples_per_s"] for r in rows if r.get("split") == "train" and first <= r["step"] <= last
            and isinstance(r.get("examples_per_s"), (int, float)) and np.isfinite(r["examples_per_s"])]
  return float(statistics.median(values)) if values else None


def resumed_at(log_text: str) -> list[int]:
  return [int(m) for m in re.findall(r"resuming from step (\d+)", log_text)]


def collect_job(folder: str, meta: dict) -> dict:
  half, steps, n = meta["half"], meta["steps"], meta["num_devices"]
  legs = {}
  for leg in LEGS:
    rows = read_rows(os.path.join(folder, leg, "metrics.jsonl"))
    with open(os.path.join(folder, f"{leg}.log"), errors="replace") as f:
      log = f.read()
    legs[leg] = {"rows": rows, "loss": train_losses(rows), "resumed_at": resumed_at(log),
                 "final": next((r for r in reversed(rows) if r.get("split") == "eval"), None)}
  one, all_ = legs["one"]["loss"], legs["all"]["loss"]
  first = range(1, min(FIRST_STEPS, steps) + 1)
  rel_first = max_relative(all_, one, first)
  rel_all = max_relative(all_, one, range(1, steps + 1))
  throughput = {leg: {"fresh_half": median_throughput(legs[leg]["rows"], 2, half),
                      "resumed_half": median_throughput(legs[leg]["rows"], half + 2, steps)} for leg in LEGS}
  t1, tn = throughput["one"]["fresh_half"], throughput["all"]["fresh_half"]
  scaling = None if not (t1 and tn) else tn / t1
  resume = {}
  for leg, same_first_half, devices in (("all_then_one", "all", f"{n} -> 1"), ("one_then_all", "one", f"1 -> {n}")):
    rel = max_relative(legs[leg]["loss"], legs[same_first_half]["loss"], range(half + 1, steps + 1))
    complete = all(s in legs[leg]["loss"] for s in range(1, steps + 1))
    resume[leg] = {"devices": devices, "resumed_at": legs[leg]["resumed_at"], "steps_logged": len(legs[leg]["loss"]),
                   "max_rel_diff_vs_" + same_first_half: rel,
                   "ok": bool(half in legs[leg]["resumed_at"] and complete and rel is not None and rel <= TOLERANCE)}
  return {
      "settings": meta,
      "max_rel_loss_diff_first_steps": rel_first, "first_steps": len(first),
      "loss_equal_first_steps": rel_first is not None and rel_first <= TOLERANCE,
      "max_rel_loss_diff_all_steps": rel_all,
      "final_eval": {leg: legs[leg]["final"] for leg in LEGS},
      "examples_per_s": throughput, "scaling": scaling, "efficiency": None if scaling is None else scaling / n,
      "resume": resume,
      "curves": {leg: [[s, legs[leg]["loss"][s]] for s in sorted(legs[leg]["loss"])] for leg in LEGS},
  }


def plot(jobs: dict, path: str) -> None:
  ran = {k: v for k, v in jobs.items() if "curves" in v}
  fig, axes = plt.subplots(len(ran), 2, figsize=(11, 3.6 * len(ran)), squeeze=False)
  for row, (name, job) in enumerate(ran.items()):
    n = job["settings"]["num_devices"]
    labels = {"one": "1 device", "all": f"{n} devices", "one_then_all": f"1 -> {n} at step {job['settings']['half']}",
              "all_then_one": f"{n} -> 1 at step {job['settings']['half']}"}
    for leg, style in zip(LEGS, ("-", "--", ":", "-.")):
      s, l = np.asarray(job["curves"][leg]).T
      axes[row, 0].plot(s, l, style, label=labels[leg])
    axes[row, 0].set(title=f"{name}: training loss", xlabel="step", ylabel="loss")
    axes[row, 0].legend(fontsize=8)
    one = dict(map(tuple, job["curves"]["one"]))
    for leg in ("all", "all_then_one", "one_then_all"):
      pts = [(s, abs(l - one[s]) / abs(one[s])) for s, l in job["curves"][leg] if s in one]
      s, d = np.asarray(pts).T
      axes[row, 1].semilogy(s, np.maximum(d, 1e-12), ".", ms=3, label=f"{labels[leg]} vs 1 device")
    axes[row, 1].axhline(TOLERANCE, color="k", lw=0.8, ls="--", label="1e-5")
    axes[row, 1].set(title=f"{name}: relative loss difference", xlabel="step", ylabel="|dL| / L (floor 1e-12)")
    axes[row, 1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def fmt(x, spec=".2e"):
  return "n/a" if x is None else format(x, spec)


def markdown(jobs: dict, png: str | None) -> str:
  lines = ["# Data-parallel training on 1 vs N devices (issue 18)", "",
           "Written by `results/scripts/collect_multi_gpu.py` from `results/scripts/multi_gpu.sh`'s outputs. Same "
           "global batch on 1 and N devices, fp32 compute (matmul precision `highest`), a metrics row per step.", ""]
  for name, job in jobs.items():
    s = job["settings"]
    if s.get("status") == "blocked":
      lines += [f"## {name}: blocked", "", s.get("reason", ""), ""]
      continue
    n = s["num_devices"]
    where = "forced CPU host devices (SMOKE)" if s.get("smoke") else "; ".join(s.get("gpus") or ["devices unknown"])
    lines += [f"## {name}: 1 vs {n} devices ({where}, jax {s.get('jax')})",
              "", f"{s['steps']} steps, global batch {s['global_batch']}, cross-device resume at step {s['half']}.", "",
              "| check | value | target | pass |", "|---|---|---|---|",
              f"| max relative loss difference, steps 1-{job['first_steps']} | "
              f"{fmt(job['max_rel_loss_diff_first_steps'])} | <= 1e-5 | {job['loss_equal_first_steps']} |",
              f"| max relative loss difference, all {s['steps']} steps | {fmt(job['max_rel_loss_diff_all_steps'])} "
              "| (reported) | |"]
    for leg, r in job["resume"].items():
      key = next(k for k in r if k.startswith("max_rel"))
      lines.append(f"| resume {r['devices']} (resumed at {r['resumed_at']}, {r['steps_logged']} steps logged), "
                   f"{key.replace('_', ' ')} | {fmt(r[key])} | <= 1e-5 | {r['ok']} |")
    t = job["examples_per_s"]
    target = f">= {SCALING_TARGET}" if name == "lm" else "(reported)"
    ok = "" if job["efficiency"] is None or name != "lm" else str(job["efficiency"] >= SCALING_TARGET)
    lines += [f"| throughput 1 device / {n} devices (ex/s, median per step) | {fmt(t['one']['fresh_half'], '.1f')} / "
              f"{fmt(t['all']['fresh_half'], '.1f')} | | |",
              f"| scaling (efficiency = scaling / {n}) | {fmt(job['scaling'], '.2f')} ({fmt(job['efficiency'], '.2f')}) "
              f"| {target} | {ok} |", "", "Final evaluation of each leg:", ""]
    for leg, final in job["final_eval"].items():
      shown = {k: round(v, 6) for k, v in (final or {}).items() if isinstance(v, float)}
      lines.append(f"- `{leg}`: {shown}")
    lines.append("")
  if png:
    lines += [f"![loss curves and relative differences]({os.path.basename(png)})", ""]
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("outputs", nargs="+", help="multi_gpu_<job>.tgz (or .json for a blocked job) files")
  ap.add_argument("--out_dir", default="results")
  args = ap.parse_args()
  jobs = {}
  with tempfile.TemporaryDirectory() as tmp:
    for path in args.outputs:
      meta_path = re.sub(r"\.(tgz|json)$", ".json", path)
      if not os.path.isfile(meta_path):
        raise SystemExit(f"{meta_path} (the run's settings, written next to the tgz) is missing")
      with open(meta_path) as f:
        meta = json.load(f)
      if meta.get("status") == "blocked":
        jobs[meta["part"]] = {"settings": meta}
        continue
      with tarfile.open(re.sub(r"\.json$", ".tgz", path)) as tar:
        tar.extractall(tmp, filter="data")
      jobs[meta["part"]] = collect_job(os.path.join(tmp, meta["part"]), meta)
  os.makedirs(args.out_dir, exist_ok=True)
  png = os.path.join(args.out_dir, "multi_gpu_curves.png") if any("curves" in j for j in jobs.values()) else None
  if png:
    plot(jobs, png)
  with open(os.path.join(args.out_dir, "multi_gpu.json"), "w") as f:
    json.dump(jobs, f, indent=1)
  with open(os.path.join(args.out_dir, "multi_gpu.md"), "w") as f:
    f.write(markdown(jobs, png))
  print(markdown(jobs, None))


if __name__ == "__main__":
  main()
