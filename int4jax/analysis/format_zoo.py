"""The 4-bit format comparison (issue 17): which students exist, reading their run directories, one table + plot.

Every student is a QAT+KD run of the GLUE task (`experiments.glue`) distilled from the same FP32 teacher, with the
same steps, batch, learning rate, clip, KD terms and seeds; only `--bits` / `--quant_mode` differ (STUDENTS). This
module knows nothing about running them (experiments/formats.py does): it turns run directories into records
(`read_run`), records into per-format statistics over seeds (`summarize`), and statistics into
`<prefix>.json/.md/.png` (`write_results`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Iterable

import numpy as np

from int4jax.quant import policy as policy_lib


@dataclasses.dataclass(frozen=True)
class Student:
  bits: str        # a quant.policy preset
  quant_mode: str  # sym | asym (asym only for integer presets)
  label: str


TEACHER = Student("fp32", "sym", "FP32 teacher")
STUDENTS = (Student("w4a4", "sym", "INT4 sym"), Student("w4a4", "asym", "INT4 asym"),
            Student("w4a4_mxfp4", "sym", "MXFP4"), Student("w4a4_nvfp4", "sym", "NVFP4"),
            Student("w1.58a8", "sym", "ternary W + INT8 A"))

# What the published comparisons claim (qualitative; no numbers copied), shown next to our table.
PUBLISHED_CLAIMS = """\
- OCP MX / Rouhani et al. 2023 ("Microscaling Data Formats for Deep Learning", arXiv:2310.10537): direct-cast
  MXFP4 for weights *and* activations loses noticeable accuracy; with quantization-aware fine-tuning MXFP4 weights
  (with wider activations) come close to FP32.
- NVIDIA's NVFP4 material (2025) and follow-up LLM studies (e.g. Egiazarian et al. 2025, "Bridging the Gap Between
  Promise and Performance for Microscaling FP4 Quantization"): NVFP4 is clearly more accurate than MXFP4 at 4 bits,
  attributed to the smaller block (16 vs 32) and the finer E4M3 scale vs MXFP4's power-of-two scale.
- Fine-grained INT vs FP studies (e.g. Chen et al. 2025, "INT v.s. FP") report that integer formats with the same
  block size and scale can match or beat the FP4 formats, so "FP4 beats INT4" depends on the granularity compared.
  Our INT4 rows are per-channel weights / per-token activations (the paper's), a coarser granularity than MX/NV.
- BitNet b1.58 (Ma et al. 2024, arXiv:2402.17764) matches FP16 LLaMA from about 3B parameters when trained from
  scratch with ternary weights; converting a small pretrained model to ternary weights by short fine-tuning is
  reported to lose accuracy (e.g. BitDistill, 2025), which our short-budget QAT+KD setting tests directly.
"""


def run_name(task: str, student: Student, seed: int | None) -> str:
  """Run directory name: the teacher has one per task, students one per (format, seed)."""
  if student == TEACHER:
    return f"{task}_fp32"
  return f"{task}_{student.bits}_{student.quant_mode}_s{seed}"


def label_of(bits: str, quant_mode: str) -> str:
  for s in (TEACHER,) + STUDENTS:
    if (s.bits, s.quant_mode) == (bits, quant_mode) or (bits == "fp32" and s == TEACHER):
      return s.label
  return f"{bits} {quant_mode}"


def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def read_run(workdir: str) -> dict:
  """A run directory of experiments.glue -> one flat record (status "ok", or "missing" with the reason)."""
  rec: dict[str, Any] = {"name": os.path.basename(os.path.normpath(workdir)), "status": "missing"}
  cfg_path, summary_path = os.path.join(workdir, "config.json"), os.path.join(workdir, "summary.json")
  if not os.path.isfile(cfg_path):
    return {**rec, "reason": "no config.json (the run did not start)"}
  stored = _read_json(cfg_path)
  glue = stored.get("run", stored.get("glue", {}))  # train.rundir's {"kind", "run"}; "glue" before the tasks layer
  rec.update({k: glue.get(k) for k in ("task", "model", "bits", "quant_mode", "seed", "num_train_steps",
                                        "batch_size", "learning_rate", "max_train_examples", "kd_losses",
                                        "max_seq_length")})
  cmd_path = os.path.join(workdir, "command.txt")
  if os.path.isfile(cmd_path):
    with open(cmd_path) as f:
      rec["command"] = f.read().strip()
  evals = []
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if os.path.isfile(metrics_path):
    with open(metrics_path) as f:
      evals = [row for row in map(json.loads, filter(str.strip, f)) if row.get("split") == "eval"]
  rec["evals"] = evals
  if not os.path.isfile(summary_path):
    if not evals:
      return {**rec, "reason": "no summary.json and no evaluation (the run was stopped early)"}
    from int4jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    name = metrics_lib.primary_metric(rec["task"]) if rec["task"] != "synthetic" else "accuracy"
    best = max(evals, key=lambda row: row[name])
    keep = lambda row: {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
    rec.update(status="partial", reason=f"stopped after step {evals[-1]['step']}; evaluations so far used",
               metric_name=name, best=keep(best), final=keep(evals[-1]), best_step=best["step"],
               steps=evals[-1]["step"], wall_time_s=None, examples_per_s=None, epochs=None)
    return rec
  s = _read_json(summary_path)
  rec.update(status="ok", metric_name=s["metric_name"], best=s["best"], final=s["final"], best_step=s["best_step"],
             steps=s.get("step"), wall_time_s=s.get("wall_time_s"), examples_per_s=s.get("examples_per_s"),
             epochs=s.get("epochs"))
  return rec


def collect(root: str) -> list[dict]:
  """Records of every run directory directly under `root` (sorted by name)."""
  return [read_run(os.path.join(root, d)) for d in sorted(os.listdir(root))
          if os.path.isfile(os.path.join(root, d, "config.json"))]


def _stats(values: list[float]) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()) if v.size else None, "std": float(v.std(ddof=1)) if v.size > 1 else None,
          "n": int(v.size), "values": [float(x) for x in v]}


def summarize(records: Iterable[dict]) -> dict:
  """Per task and format: the primary metric of the best checkpoint and of the final step, over seeds; the gap of
  each student's mean to its teacher; the winner per task. Missing runs are listed, never averaged in; partial
  runs (stopped early: a deadline, a timeout or a kill) count with their evaluations so far (best and last) and
  are listed."""
  records = list(records)
  ok = [r for r in records if r["status"] in ("ok", "partial")]
  tasks = list(dict.fromkeys(r["task"] for r in ok))  # in the order of the runs (the command's --tasks)
  out: dict[str, Any] = {"tasks": {}, "missing": [r["name"] for r in records if r["status"] == "missing"],
                         "partial": [f"{r['name']} (step {r['steps']})" for r in records if r["status"] == "partial"]}
  for task in tasks:
    rows = [r for r in ok if r["task"] == task]
    metric = rows[0]["metric_name"]
    teacher = [r for r in rows if r["bits"] == "fp32"]
    t_best = _stats([r["best"][metric] for r in teacher])
    entries = []
    for st in (TEACHER,) + STUDENTS:
      runs = [r for r in rows if r["bits"] == st.bits and (st == TEACHER or r["quant_mode"] == st.quant_mode)]
      if not runs:
        continue
      best = _stats([r["best"][metric] for r in runs])
      final = _stats([r["final"][metric] for r in runs])
      gap = None if st == TEACHER or t_best["mean"] is None else best["mean"] - t_best["mean"]
      entries.append({"label": st.label, "bits": st.bits, "quant_mode": st.quant_mode, "best": best,
                      "final": final, "gap_to_teacher": gap, "seeds": sorted(r["seed"] for r in runs),
                      "steps": sorted({r["steps"] for r in runs}), "wall_time_s": _stats([r["wall_time_s"] or 0
                                                                                          for r in runs])["mean"]})
    out["tasks"][task] = {"metric": metric, "rows": entries, "verdict": _verdict(entries, metric)}
  return out


def _verdict(entries: list[dict], metric: str) -> str:
  """One plain sentence: the best student by mean, and whether its lead exceeds the seed spread."""
  students = sorted([e for e in entries if e["bits"] != "fp32"], key=lambda e: -e["best"]["mean"])
  if not students:
    return "no student finished"
  top = students[0]
  text = f"{top['label']} has the highest mean {metric} ({top['best']['mean']:.2f})"
  if len(students) > 1:
    second = students[1]
    lead = top["best"]["mean"] - second["best"]["mean"]
    spreads = [s for s in (top["best"]["std"], second["best"]["std"]) if s is not None]
    if lead == 0:
      text += f", tied with {second['label']}"
    elif not spreads:
      text += f", {lead:.2f} ahead of {second['label']} (one seed: no spread to compare with)"
    elif lead > max(spreads):
      text += f", {lead:.2f} ahead of {second['label']}, more than the seed spread (sd <= {max(spreads):.2f})"
    else:
      text += (f", but only {lead:.2f} ahead of {second['label']}, within the seed spread "
               f"(sd up to {max(spreads):.2f}): a tie")
  last = students[-1]
  return text + f"; last: {last['label']} ({last['best']['mean']:.2f})."


def _fmt(s: dict) -> str:
  if s["mean"] is None:
    return "–"
  return f"{s['mean']:.2f}" + ("" if s["std"] is None else f" ± {s['std']:.2f}")


def render_markdown(summary: dict, meta: dict) -> str:
  """results/formats.md: setup, one table (rows: formats; columns: tasks), verdicts, published claims, commands."""
  tasks = list(summary["tasks"])
  describe = {p: (w, a) for p, w, a in policy_lib.describe()}
  lines = ["# The 4-bit format zoo: INT4 vs MXFP4 vs NVFP4 vs ternary under one QAT+KD recipe (issue 17)", ""]
  lines += [meta.get("setup", "").strip(), ""] if meta.get("setup") else []
  head = "| format | weights | activations | " + " | ".join(
      f"{t} {summary['tasks'][t]['metric']} best | Δ teacher | final" for t in tasks) + " |"
  lines += [head, "|" + "---|" * (3 + 3 * len(tasks))]
  labels = [TEACHER] + list(STUDENTS)
  for st in labels:
    cells = []
    found = False
    for t in tasks:
      e = next((e for e in summary["tasks"][t]["rows"] if e["label"] == st.label), None)
      if e is None:
        cells += ["–", "–", "–"]
        continue
      found = True
      gap = "–" if e["gap_to_teacher"] is None else f"{e['gap_to_teacher']:+.2f}"
      cells += [_fmt(e["best"]) + f" (n={e['best']['n']})", gap, _fmt(e["final"])]
    if found:
      w, a = describe.get(st.bits, ("?", "?"))
      if st.quant_mode == "asym":
        w, a = w.replace(" sym ", " asym "), a.replace(" sym ", " asym ")
      lines.append(f"| {st.label} | {w} | {a} | " + " | ".join(cells) + " |")
  lines += ["", "Metric values are dev-set percentages, mean ± sample sd over seeds (n = number of seeds); "
            "'best' is the best evaluated checkpoint (the paper's convention), 'final' the last step.", ""]
  lines += ["## Which format wins where", ""]
  lines += [f"- **{t}**: {summary['tasks'][t]['verdict']}" for t in tasks]
  if summary["missing"]:
    lines += [f"- Missing runs (not averaged in): {', '.join(summary['missing'])}"]
  if summary["partial"]:
    lines += [f"- Partial runs (stopped before their last step; their best evaluation so far is averaged in): "
              f"{', '.join(summary['partial'])}"]
  lines += ["", "## What the published comparisons claim", "", PUBLISHED_CLAIMS.strip(), ""]
  lines += ["## Run", ""]
  for key in ("gpu", "commit", "date", "device_minutes", "command"):
    if meta.get(key):
      lines.append(f"- {key.replace('_', ' ')}: `{meta[key]}`" if key in ("commit", "command") else
                   f"- {key.replace('_', ' ')}: {meta[key]}")
  lines += ["- every run's exact command (with its git SHA) is in `formats.json` under `runs[].command`.", ""]
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """One panel per task: a bar per format (mean of best checkpoints), a dot per seed, the teacher as a line."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = list(summary["tasks"])
  fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.5 * max(1, len(tasks)), 4), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    info = summary["tasks"][task]
    students = [e for e in info["rows"] if e["bits"] != "fp32"]
    xs = np.arange(len(students))
    ax.bar(xs, [e["best"]["mean"] for e in students], color="#8fb3d9")
    for x, e in zip(xs, students):
      ax.plot([x] * e["best"]["n"], e["best"]["values"], "k.", ms=6)
    teacher = next((e for e in info["rows"] if e["bits"] == "fp32"), None)
    if teacher is not None:
      ax.axhline(teacher["best"]["mean"], color="#c0392b", ls="--", label="FP32 teacher")
      ax.legend(loc="lower left")
    values = [v for e in info["rows"] for v in e["best"]["values"]]
    if values:
      ax.set_ylim(max(0.0, min(values) - 5), min(100.0, max(values) + 2))
    ax.set_xticks(xs, [e["label"].replace(" + ", "\n+ ") for e in students], fontsize=8)
    ax.set_title(f"{task}: dev {info['metric']} (best checkpoint)")
    ax.set_ylabel(f"{info['metric']} (%)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_results(records: list[dict], prefix: str, meta: dict) -> list[str]:
  """<prefix>.json (meta, summary, every run record), <prefix>.md, <prefix>.png. Returns the paths."""
  summary = summarize(records)
  if not summary["tasks"]:
    raise ValueError(f"no finished run among {len(records)} records: nothing to tabulate "
                     f"(missing: {summary['missing']})")
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  paths = [prefix + ".json", prefix + ".md", prefix + ".png"]
  with open(paths[0], "w") as f:
    json.dump({"meta": meta, "summary": summary, "runs": records}, f, indent=1, sort_keys=True,
              default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o))
  with open(paths[1], "w") as f:
    f.write(render_markdown(summary, meta))
  plot(summary, paths[2])
  return paths
