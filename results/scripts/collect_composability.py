"""Issue 14 results: gather the GPU runs of minilm_gpu.sh (the composability/ folder), write
results/composability.{md,json}.

  python results/scripts/collect_composability.py --gather <runs dir> --sha <sha> > composability_runs.json  (GPU)
  python results/scripts/collect_composability.py <composability_runs.json> [--out results/composability]   (here)

Metric: best dev accuracy over the run's evaluations (the paper's convention, as results/glue_sst2_minilm.md);
MRPC also reports F1 at that evaluation. Students are grouped by variant over seeds (mean, sample std, per seed).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

VARIANTS = {  # name -> (description, paper reference)
    "w4a4": ("W4A4 (QAT + KD)", "Table 2 'Q only': 84.9/85.6 -> 84.8/85.2"),
    "s24_static_pq": ("W4A4 + 2:4 static l1, P=>Q", "Table C.3 static: about -0.4 avg; Fig. 7 P=>Q 3 ep 84.31/84.79"),
    "s24_static_qp": ("W4A4 + 2:4 static l1, Q=>P", "Fig. 7 Q=>P 3 ep 84.18/84.54"),
    "s24_movement_pq": ("W4A4 + 2:4 movement, P=>Q", "Fig. C.2 movement 3 ep 83.83/84.07 (static 84.31/84.79)"),
    "s24_movement_qp": ("W4A4 + 2:4 movement, Q=>P", "(not in the paper)"),
    "s14_static_pq": ("W4A4 + 1:4 (75%) static, P=>Q", "Table 2 75%: 84.11/83.99 (-0.79/-1.6), 21 ep"),
}
TARGET = 0.6  # the bar: W4A4 + 2:4 static within 0.6 points of the teacher


def gather(root: str, sha: str) -> dict:
  out = {"git_commit": sha, "runs": {}}
  for name in ("gpu.txt", "walls.txt", "driver.txt"):   # driver.txt: the GPU command, when the driver wrote one
    path = os.path.join(root, name)
    out[name.split(".")[0]] = open(path).read() if os.path.exists(path) else None
  for name in sorted(os.listdir(root)):
    d = os.path.join(root, name)
    if not os.path.isfile(os.path.join(d, "config.json")):
      continue
    rec = {"config": json.load(open(os.path.join(d, "config.json")))}
    rows = []
    if os.path.exists(os.path.join(d, "metrics.jsonl")):
      rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl")) if line.strip()]
    rec["evals"] = [r for r in rows if r.get("split") == "eval"]
    for extra in ("summary.json", "policy.json", "command.txt"):
      path = os.path.join(d, extra)
      if os.path.exists(path):
        rec[extra.split(".")[0]] = json.load(open(path)) if extra.endswith(".json") else open(path).read()
    out["runs"][name] = rec
  return out


def _best(rec: dict) -> dict | None:
  evals = rec.get("evals") or []
  if not evals:
    return None
  b = max(evals, key=lambda r: r["accuracy"])  # first of equal maxima, as the train loop's best/
  return {"accuracy": b["accuracy"], "f1": b.get("f1"), "step": b["step"], "last_step": evals[-1]["step"]}


def _variant_and_seed(name: str, task: str):
  rest = name[len(task) + 1:]
  if "_s" not in rest:
    return rest, None
  variant, seed = rest.rsplit("_s", 1)
  return variant, int(seed) if seed.isdigit() else seed


def summarize(runs_json: dict) -> dict:
  tasks = {}
  for name, rec in runs_json["runs"].items():
    glue = rec["config"].get("run") or rec["config"].get("glue") or {}   # config.json: {"train", "kind", "run"}
    task = glue.get("task")
    if task is None:
      continue
    variant, seed = _variant_and_seed(name, task)
    t = tasks.setdefault(task, {"teacher": None, "variants": {}})
    train = rec["config"].get("train", {})
    best = _best(rec)
    row = {"seed": seed, "best": best, "complete": bool(rec.get("summary")) and best is not None
           and best["last_step"] == train.get("num_train_steps"),
           "steps": train.get("num_train_steps"), "batch": train.get("batch_size"),
           "policy": (rec.get("policy") or {}).get("name"), "layer_map": glue.get("layer_map"),
           "train_wall_s": (rec.get("summary") or {}).get("wall_time_s"),
           "epochs": (rec.get("summary") or {}).get("epochs"), "max_train_examples": glue.get("max_train_examples"),
           "command": (rec.get("command") or "").splitlines()[0] if rec.get("command") else None}
    if variant == "fp32":
      t["teacher"] = row
    else:
      t["variants"].setdefault(variant, []).append(row)
  for t in tasks.values():
    teacher_acc = None if not (t["teacher"] and t["teacher"]["best"]) else t["teacher"]["best"]["accuracy"]
    for order, variant in enumerate(_ordered(t["variants"])):
      rows = t["variants"][variant]
      accs = [r["best"]["accuracy"] for r in rows if r["best"]]
      f1s = [r["best"]["f1"] for r in rows if r["best"] and r["best"]["f1"] is not None]
      t.setdefault("stats", {})[variant] = {
          "label": describe(variant, rows)[0], "order": order, "n": len(accs), "mean": statistics.mean(accs) if accs else None,
          "std": statistics.stdev(accs) if len(accs) > 1 else None,
          "f1_mean": statistics.mean(f1s) if f1s else None,
          "gap": None if not accs or teacher_acc is None else statistics.mean(accs) - teacher_acc,
          "all_complete": all(r["complete"] for r in rows)}
  return tasks


def _ordered(variants) -> list[str]:
  """The known variants in VARIANTS' order, then the others (layer-reduced students) sorted."""
  return [v for v in VARIANTS if v in variants] + sorted(v for v in variants if v not in VARIANTS)


def describe(variant: str, rows: list[dict]) -> tuple[str, str]:
  """(description, paper reference) of a variant; layer-reduced students are named by their layer map."""
  lmap = rows[0]["layer_map"]
  return VARIANTS.get(variant, (
      f"W4A4, {len(lmap)}-layer student (teacher layers {', '.join(map(str, lmap))})" if lmap else variant,
      "Table 3 (BART-base encoder 6+3 W4A4: 44.83 -> 44.23 R1 CNN/DM; no BERT row)"))


def _fmt(v, nd=2, sign=False):
  return "–" if v is None else (f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}")


def write(runs_json: dict, out: str) -> None:
  tasks = summarize(runs_json)
  lines = ["# Composability: W4A4 with N:M sparsity and with layer reduction (issue 14; paper Table 2, C.3, Fig. 7)",
           "", "all-MiniLM-L6-v2, one FP32 teacher per task, every student initialised from it and distilled from it",
           "(Logit + Att* + Rep, W4A4 symmetric per-channel weights / per-token activations, clip [-5, 5], lr 1e-4,",
           "batch 64). Sparsity: N:M = N kept of every M weights along K (2:4 = 50%, 1:4 = 75%, our choice for the",
           "paper's unnamed 75% pattern), on all four GEMM types; static = l1 mask from the teacher's |W|, fixed;",
           "movement = scores S that start at W^2/2 (the magnitude mask) and add W * (W_new - W) each step (Sanh et",
           "al.'s -W * dL/dW for SGD; the step the optimizer took for AdamW), mask recomputed on a schedule",
           "(int4jax/quant/sparsity.py). The",
           "layer-reduced student keeps teacher layers 1, 3, 5 (init and KD map). Metric: best dev accuracy.", ""]
  target_met = []
  for task, t in sorted(tasks.items()):
    teacher = t["teacher"]
    tacc = teacher["best"]["accuracy"] if teacher and teacher["best"] else None
    lines += [f"## {task.upper()}", "",
              f"FP32 teacher: **{_fmt(tacc)}**" + (f" (F1 {_fmt(teacher['best']['f1'])})"
                                                    if teacher and teacher["best"] and teacher["best"]["f1"] else "")
              + (f", {teacher['steps']} steps x {teacher['batch']}" if teacher else ""), "",
              "| student | dev acc. mean | ± std | gap to teacher | per seed | F1 mean | steps × batch | paper |",
              "|---|---|---|---|---|---|---|---|"]
    for variant in _ordered(t["variants"]):
      rows, st = t["variants"][variant], t["stats"][variant]
      desc, paper = describe(variant, rows)
      per_seed = ", ".join(f"{r['seed']}: {_fmt(r['best']['accuracy'] if r['best'] else None)}"
                           + ("" if r["complete"] else "*") for r in sorted(rows, key=lambda r: str(r["seed"])))
      lines.append(f"| {desc} | {_fmt(st['mean'])} | {_fmt(st['std'])} | {_fmt(st['gap'], sign=True)} | {per_seed} | "
                   f"{_fmt(st['f1_mean'])} | {rows[0]['steps']} × {rows[0]['batch']}"
                   + (f" (first {rows[0]['max_train_examples']} ex.)" if rows[0]["max_train_examples"] else "")
                   + f" | {paper} |")
    st = t.get("stats", {}).get("s24_static_pq")
    if st and st["gap"] is not None:
      target_met.append((task, st["gap"] >= -TARGET))
    lines.append("")
  if target_met:
    lines += ["Target (W4A4 + 2:4 static within %.1f points of the teacher on both tasks): **%s** (%s)." % (
        TARGET, "met" if all(ok for _, ok in target_met) else "not met",
        ", ".join(f"{task}: {'yes' if ok else 'no'}" for task, ok in target_met)), ""]
  lines += ["\\* run did not reach its last evaluation (timeout); its best so far is shown.", "",
            "P=>Q and Q=>P with a static magnitude mask compute the same function (symmetric per-channel scales: each",
            "column's largest |w| is the largest of its group and is kept; tests/quant/test_sparsity.py checks the",
            "weights are bit-identical), but the two orders compile to different programs whose float operations run",
            "in another order, so the trainings drift apart at rounding level: their difference here is this setup's",
            "run-to-run noise, not an effect of the order. With movement masks the orders can differ for real",
            "(quant/sparsity.py docstring).", "",
            "Movement pruning: the first version (scores starting at 0, S -= W * dL/dW; GPU run at 9b3c1d1, seed 1)",
            "collapsed to the majority class on both tasks: a kept weight's score spreads in proportion to |W|, so",
            "the first mask recompute swapped out many of the largest weights at once. Scores now start at W^2/2 and",
            "accumulate the optimizer's actual step (commit 87010cd; tests/quant/test_sparsity.py holds the collapse",
            "as a failing case of the old rule); the rows above are runs of the fixed rule only (the collapsed runs",
            "are left out). With this start the score is the current W^2/2 minus half the sum of squared steps, so",
            "the mask mostly tracks the present magnitudes: stable, and close to iterative magnitude pruning.", "",
            "Storage (int4jax/quant/formats.compress_nm, per weight before scales): dense INT4 0.5 B/param, 2:4 INT4",
            "0.375 B/param (values 0.25 + 2-bit indices 0.125), 1:4 INT4 0.1875 B/param.", "",
            f"- Commit: `{runs_json.get('git_commit')}`", "- GPU / versions: `" +
            " | ".join((runs_json.get("gpu") or "").strip().splitlines()) + "`",
            "- Walls: " + "; ".join((runs_json.get("walls") or "").strip().splitlines()), "",
            "## Commands", "", "```",
            (runs_json.get("driver") or "MINILM=<all-MiniLM-L6-v2 dir> DATA=<data dir> WHL=<qwix wheel dir> "
             "OUT=<out> bash results/scripts/minilm_gpu.sh <sha>").strip(),
            "python results/scripts/collect_composability.py <out>/composability_runs.json", "```", ""]
  seeds = sorted({str(r["seed"]) for t in tasks.values() for rows in t["variants"].values() for r in rows})
  examples = sorted({r["command"] for t in tasks.values() for rows in t["variants"].values() for r in rows
                     if r["command"] and seeds and str(r["seed"]) == seeds[0]})
  lines += [f"Per-run commands (seed {seeds[0] if seeds else '–'}):", "", "```"] + examples + ["```", ""]
  with open(out + ".md", "w") as f:
    f.write("\n".join(lines))
  with open(out + ".json", "w") as f:
    json.dump({"summary": tasks, "git_commit": runs_json.get("git_commit"), "gpu": runs_json.get("gpu"),
               "walls": runs_json.get("walls")}, f, indent=1, sort_keys=True)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("runs_json", nargs="?")
  p.add_argument("--gather", metavar="RUNS_DIR")
  p.add_argument("--sha", default="unknown")
  p.add_argument("--out", default=os.path.join("results", "composability"))
  a = p.parse_args(argv)
  if a.gather:
    json.dump(gather(a.gather, a.sha), sys.stdout, indent=1, sort_keys=True)
    return
  if not a.runs_json:
    p.error("give the composability_runs.json of a GPU run, or --gather RUNS_DIR")
  write(json.load(open(a.runs_json)), a.out)
  print(f"wrote {a.out}.md and {a.out}.json")


if __name__ == "__main__":
  main()
