"""The whole GLUE table in one command: plan the runs, run what is not done, collect a Table C.5-style report.

    tasks = find_tasks(data_root)                       # every GLUE task folder under data_root
    runs = plan(SuiteConfig(model=..., data_root=..., runs_root=...))
    execute(runs, parallel=4)                           # teachers first, then students; skips finished runs
    report = collect(runs_root); write_report(report, "results/glue")   # .md + .json

Layout of runs_root (one run directory of `experiments.glue` per leaf, so each resumes on its own):

    <task>/fp32                                         the FP32 teacher (seed 42, ground truth, one per task)
    <task>/<bits>_<quant_mode>_aug<N>_lr<lr>/seed<s>    students (KD from that teacher)

Selection (as the paper, §2.1 and Table C.5): each run reports its best dev checkpoint (evaluated every
`eval_every_steps` and at the end); for each task and student configuration the reported learning rate is the
one of the grid whose seed-mean of the task's primary metric (metrics.primary_metric) is highest on dev -- the
paper's "best" row takes the per-task maximum over its grid with one seed. GLUE has no labelled test split, so
dev serves for both selections, here as in the paper; mean and sample standard deviation (ddof 1) over seeds
are reported for every metric of the selected checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from int4jax import metrics
from int4jax.data import glue as glue_data
from int4jax.tasks import run_queue

# The tasks of the paper's table (WNLI is in neither its table nor its average).
SUITE_TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")

# paper_spec.md §5.1, Table C.5 (BERT-base rows; W4A4 Budget-A with augmentation, "best" over the LR grid).
PAPER_C5 = {
    "BERT-base FP32 (paper)": {
        "cola": {"mcc": 59.7}, "mnli": {"accuracy_m": 84.9, "accuracy_mm": 85.6},
        "mrpc": {"f1": 90.6, "accuracy": 86.3}, "qnli": {"accuracy": 92.1}, "qqp": {"f1": 88.6, "accuracy": 91.5},
        "rte": {"accuracy": 72.2}, "sst2": {"accuracy": 93.2}, "stsb": {"pearson": 90.1, "spearman": 89.6}},
    "BERT-base W4A4 best (paper)": {
        "cola": {"mcc": 60.5}, "mnli": {"accuracy_m": 84.8, "accuracy_mm": 85.2},
        "mrpc": {"f1": 91.2, "accuracy": 87.0}, "qnli": {"accuracy": 92.0}, "qqp": {"f1": 88.4, "accuracy": 91.4},
        "rte": {"accuracy": 73.6}, "sst2": {"accuracy": 93.7}, "stsb": {"pearson": 90.0, "spearman": 89.6}},
}
PAPER_C5_AVG = {"BERT-base FP32 (paper)": (83.95, 86.98), "BERT-base W4A4 best (paper)": (84.24, 87.21)}


def parse_seeds(seeds: str | Iterable) -> tuple[int, ...]:
  """'1,2,3' or [1, 2, 3] -> (1, 2, 3); duplicates and non-integers are errors."""
  items = [s for s in (seeds.split(",") if isinstance(seeds, str) else seeds) if str(s).strip() != ""]
  try:
    values = tuple(int(str(s).strip()) for s in items)
  except ValueError:
    raise ValueError(f"--seeds={seeds!r} must be a comma-separated list of integers") from None
  if not values:
    raise ValueError("--seeds is empty")
  dupes = sorted({s for s in values if values.count(s) > 1})
  if dupes:
    raise ValueError(f"--seeds={','.join(map(str, values))} repeats {dupes}: each seed runs once")
  return values


def task_dir(data_root: str, task: str) -> str | None:
  """data_root/<GLUE folder name> (e.g. SST-2) or data_root/<task>, if it holds a train and a dev split."""
  spec = glue_data.task_spec(task)
  for name in (spec.tsv_dir, spec.name, spec.tsv_dir.lower()):
    d = os.path.join(data_root, name)
    dev = ("dev_matched.tsv", "dev_mismatched.tsv") if spec.name == "mnli" else ("dev.tsv",)
    if os.path.isfile(os.path.join(d, "train.tsv")) and all(os.path.isfile(os.path.join(d, f)) for f in dev):
      return d
    if os.path.isfile(os.path.join(d, "dataset_dict.json")):
      return d
  return None


def find_tasks(data_root: str, only: Sequence[str] | None = None) -> dict[str, str]:
  """task -> folder for every GLUE task of the table found under data_root (restricted to `only`)."""
  if not os.path.isdir(data_root):
    raise FileNotFoundError(f"--data_root={data_root!r} is not a directory")
  wanted = SUITE_TASKS if not only else tuple(glue_data.task_spec(t).name for t in only)
  found = {t: d for t in wanted if (d := task_dir(data_root, t))}
  if not found:
    names = ", ".join(glue_data.task_spec(t).tsv_dir for t in wanted)
    raise ValueError(f"--data_root={data_root!r} holds no GLUE task: expected sub-folders named {names} with "
                     f"train.tsv and dev.tsv (GLUE layout) or a datasets.save_to_disk folder")
  if only:
    missing = sorted(set(wanted) - set(found))
    if missing:
      raise ValueError(f"--tasks asks for {missing}, not found under {data_root!r}")
  return found


# ----------------------------------------------------------------------------------------------
# Plan


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  model: str
  data_root: str
  runs_root: str
  bits: str = "w4a4"
  quant_modes: tuple[str, ...] = ("sym",)
  seeds: tuple[int, ...] = (42,)
  learning_rates: tuple[float, ...] | None = None   # None: Table C.5's grid for the model
  budget: str | None = "A"                          # Table C.5 is Budget-A; None: epochs from student_flags
  qat: str = "int4jax"                              # "qwix": the Qwix peer (quant/qwix_peer.py)
  augment: int | None = None                        # None: TinyBERT's N_a on Table C.4's tasks, 0 elsewhere
  tasks: tuple[str, ...] | None = None
  teacher_flags: tuple[str, ...] = ()               # extra experiments.glue flags for teachers
  student_flags: tuple[str, ...] = ()               # ... and for students
  task_flags: tuple[tuple[str, str], ...] = ()      # (task, flag) extra flags for one task's runs


@dataclasses.dataclass(frozen=True)
class Run:
  name: str                     # relative workdir, e.g. mrpc/w4a4_sym_aug20_lr0.0001/seed1
  task: str
  kind: str                     # "teacher" | "student"
  workdir: str
  argv: tuple[str, ...]         # experiments.glue flags
  teacher: str | None = None    # workdir of the teacher this run needs

  def done(self) -> bool:
    return os.path.isfile(os.path.join(self.workdir, "summary.json"))


def augment_copies(task: str, augment: int | None) -> int:
  from int4jax.data import augment as augment_lib  # pylint: disable=g-import-not-at-top
  from int4jax.tasks import glue as glue_task  # pylint: disable=g-import-not-at-top
  if augment is not None:
    return augment
  return augment_lib.PAPER_COPIES if task in glue_task.AUGMENTED_TASKS else 0


def student_group(bits: str, quant_mode: str, augment: int, lr: float, budget: str | None = "A",
                  qat: str = "int4jax") -> str:
  return (f"{bits}_{quant_mode}_aug{augment}_{'budget' + budget if budget else 'custom'}_lr{lr:g}"
          f"{'' if qat == 'int4jax' else '_' + qat}")


def plan(cfg: SuiteConfig) -> list[Run]:
  from int4jax.tasks import glue as glue_task  # pylint: disable=g-import-not-at-top
  tasks = find_tasks(cfg.data_root, cfg.tasks)
  lrs = cfg.learning_rates or glue_task.lr_grid(os.path.basename(os.path.normpath(cfg.model)))
  runs = []
  for task, data_dir in tasks.items():
    extra = tuple(f for t, f in cfg.task_flags if t == task)
    common = (f"--task={task}", f"--model={cfg.model}", f"--data_dir={data_dir}")
    teacher = os.path.join(cfg.runs_root, task, "fp32")
    runs.append(Run(f"{task}/fp32", task, "teacher", teacher,
                    common + ("--bits=fp32", f"--workdir={teacher}") + cfg.teacher_flags + extra))
    n_aug = augment_copies(task, cfg.augment)
    for mode in cfg.quant_modes:
      for lr in lrs:
        for seed in cfg.seeds:
          name = f"{task}/{student_group(cfg.bits, mode, n_aug, lr, cfg.budget, cfg.qat)}/seed{seed}"
          workdir = os.path.join(cfg.runs_root, name)
          argv = common + (f"--bits={cfg.bits}", f"--quant_mode={mode}", f"--teacher={teacher}",
                           f"--learning_rate={lr:g}", f"--seed={seed}", f"--augment={n_aug}", f"--qat={cfg.qat}",
                           f"--workdir={workdir}") + ((f"--budget={cfg.budget}",) if cfg.budget else ()) \
              + cfg.student_flags + extra
          runs.append(Run(name, task, "student", workdir, argv, teacher))
  return runs


# ----------------------------------------------------------------------------------------------
# Execute


def _shape_key(run: Run) -> tuple:
  """Runs equal up to seed and workdir compile the same programs (the seed lives in the state, not the step)."""
  return tuple(a for a in run.argv if not a.startswith(("--seed=", "--workdir=")))


def _leaders_first(batch: list[Run]) -> list[tuple[Run, Run | None]]:
  """(run, leader) pairs, the first of each shape group (leader None) first: the others wait for their leader's
  start-up, then read its compiled programs from the persistent cache instead of compiling them again."""
  groups: dict[tuple, list[Run]] = defaultdict(list)
  for r in batch:
    groups[_shape_key(r)].append(r)
  return [(g[0], None) for g in groups.values()] + [(r, g[0]) for g in groups.values() for r in g[1:]]


def execute(runs: Sequence[Run], parallel: int = 1, python: str = sys.executable, stage: str = "all",
            deadline: float | None = None) -> list[dict]:
  """Runs every run not yet done (summary.json), teachers first; `parallel` processes at a time (tasks/run_queue.py).
  A run that fails is reported and its dependants are skipped; the others go on. stage: "all", "teachers" or
  "students". deadline (time.time() value): runs still going then are killed (collected as partial)."""
  kinds = {"all": ("teacher", "student"), "teachers": ("teacher",), "students": ("student",)}[stage]
  todo = [r for r in runs if not r.done() and r.kind in kinds]
  staged = [r for r in runs if r.kind in kinds]
  print(f"[suite] {len(staged)} {stage if stage != 'all' else 'runs'} planned, {len(staged) - len(todo)} already "
        f"done, {len(todo)} to run", flush=True)
  jobs = [run_queue.Job(r.name, (python, "-m", "experiments.glue", *r.argv), r.workdir,
                        needs=(r.teacher,) if r.teacher else (), leader=lead.workdir if lead else None)
          for kind in kinds for r, lead in _leaders_first([r for r in todo if r.kind == kind])]
  return run_queue.run(jobs, parallel, deadline)


# ----------------------------------------------------------------------------------------------
# Collect


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def read_runs(runs_root: str) -> list[dict]:
  """Every finished run under runs_root: its GLUE config, summary, process record and eval curve."""
  out = []
  for dirpath, _, files in os.walk(runs_root):
    if "config.json" not in files or "metrics.jsonl" not in files:
      continue
    cfg = _read_json(os.path.join(dirpath, "config.json"))
    if glue_section(cfg) is None:
      continue
    proc = os.path.join(dirpath, "process.json")
    with open(os.path.join(dirpath, "metrics.jsonl")) as f:
      curve = [json.loads(line) for line in f if line.strip()]
    if "summary.json" in files:
      summary = _read_json(os.path.join(dirpath, "summary.json"))
    else:  # killed at a deadline: its best evaluation so far, marked partial
      summary = _partial_summary(cfg, curve)
      if summary is None:
        continue
    glue = glue_section(cfg)
    out.append({"dir": os.path.relpath(dirpath, runs_root), "glue": glue,
                "qat": glue.get("qat", "int4jax"), "summary": summary,
                "process": _read_json(proc) if os.path.isfile(proc) else None,
                "command": _first_command(dirpath),
                "curve": [{k: v for k, v in r.items() if k in ("step", "split", "loss") or not isinstance(v, str)}
                          for r in curve]})
  return sorted(out, key=lambda r: r["dir"])


def glue_section(cfg: dict) -> dict | None:
  """The GLUE RunConfig of a run's config.json ({"kind": "glue", "run": ...}; older runs: {"glue": ...})."""
  if cfg.get("kind") == "glue":
    return cfg.get("run")
  return cfg.get("glue")


def _partial_summary(cfg: dict, curve: list[dict]) -> dict | None:
  task = glue_section(cfg).get("task")
  evals = [r for r in curve if r.get("split") == "eval"]
  if not evals or task not in metrics.TASK_METRICS:
    return None
  primary = metrics.primary_metric(task)
  best = max(evals, key=lambda r: r[primary])
  names = metrics.TASK_METRICS[task][0]
  return {"partial": True, "best": {n: best[n] for n in names}, "best_step": best["step"],
          "final": {n: evals[-1][n] for n in names}, "step": evals[-1]["step"], "wall_time_s": float("nan"),
          "metric_name": primary, "planned_steps": cfg.get("train", {}).get("num_train_steps")}


def _first_command(dirpath: str) -> str | None:
  path = os.path.join(dirpath, "command.txt")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    lines = f.read().splitlines()
  return "\n".join(lines[:2]) if lines else None


def gpu_seconds_by_pid(pmon_log: str) -> dict[int, float]:
  """`nvidia-smi pmon -s u -d 1` output -> pid: sum over samples of SM% / 100 x 1 s (the SM-busy seconds each
  process was sampled at; with several processes on one GPU, their shares of the busy time)."""
  out: dict[int, float] = defaultdict(float)
  with open(pmon_log) as f:
    for line in f:
      parts = line.split()
      if not parts or line.startswith("#") or len(parts) < 4:
        continue
      try:
        pid, sm = int(parts[1]), parts[3]
      except ValueError:
        continue
      if sm not in ("-", ""):
        out[pid] += float(sm) / 100.0
  return dict(out)


def mean_std(values: Sequence[float]) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
          "values": [float(x) for x in v]}


def config_label(run: dict) -> str:
  g = run["glue"]
  if g.get("bits") == "fp32":
    return "FP32 teacher"
  aug = g.get("augment", 0)
  qat = "" if run["qat"] == "int4jax" else f" [{run['qat']}]"
  budget = f" Budget-{g['budget']}" if g.get("budget") else f" {g.get('num_train_steps') or g.get('num_epochs')}" \
      f"{' steps' if g.get('num_train_steps') else ' ep'}"
  return f"{g['bits'].upper()} {g['quant_mode']}{' +aug' + str(aug) if aug else ''}{budget}{qat}"


def collect(runs_root: str, pmon_log: str | None = None) -> dict:
  """Groups runs by (task, configuration, learning rate), aggregates seeds, selects the best LR per task.
  pmon_log: an `nvidia-smi pmon -s u -d 1` log of the runs, for per-run GPU seconds."""
  runs = read_runs(runs_root)
  gpu = gpu_seconds_by_pid(pmon_log) if pmon_log and os.path.isfile(pmon_log) else None
  if not runs:
    raise ValueError(f"no finished run (summary.json) under {runs_root!r}")
  groups: dict[tuple, list[dict]] = defaultdict(list)
  for r in runs:
    pid = (r["process"] or {}).get("pid")
    r["gpu_s"] = None if gpu is None or pid is None else gpu.get(pid, 0.0)
    g = r["glue"]
    groups[(g["task"], config_label(r), float(g["learning_rate"]))].append(r)
  cells: dict[str, dict[str, dict]] = defaultdict(dict)   # label -> task -> selected aggregate
  grid: list[dict] = []
  for (task, label, lr), members in sorted(groups.items()):
    seeds = [m["glue"]["seed"] for m in members]
    names = metrics.TASK_METRICS[task][0]
    agg = {name: mean_std([m["summary"]["best"][name] for m in members]) for name in names}
    timing = {k: mean_std([(m["process"] or {}).get("wall_s", m["summary"].get("wall_time_s", 0.0))
                           for m in members]) for k in ("wall_s",)}
    first = [m["summary"].get("first_step_s") for m in members if m["summary"].get("first_step_s") is not None]
    partial = [m["dir"] for m in members if m["summary"].get("partial")]
    entry = {"task": task, "label": label, "learning_rate": lr, "seeds": seeds, "metrics": agg, "partial": partial,
             "process_wall_s": timing["wall_s"], "first_step_s": mean_std(first) if first else None,
             "train_wall_s": mean_std([m["summary"]["wall_time_s"] for m in members]),
             "cpu_s": mean_std([(m["process"] or {}).get("cpu_s", float("nan")) for m in members]),
             "gpu_s": None if gpu is None else mean_std([m["gpu_s"] or 0.0 for m in members]),
             "steps": members[0]["summary"]["step"], "epochs": members[0]["summary"].get("epochs"),
             "batch_size": members[0]["glue"].get("batch_size"), "budget": members[0]["glue"].get("budget"),
             "runs": [m["dir"] for m in members]}
    grid.append(entry)
    primary = metrics.primary_metric(task)
    best = cells[label].get(task)
    if best is None or agg[primary]["mean"] > best["metrics"][primary]["mean"]:
      cells[label][task] = entry
  tasks = sorted({e["task"] for e in grid})
  return {"runs_root": os.path.abspath(runs_root), "tasks": tasks, "grid": grid, "selected": cells,
          "targets": _targets(cells, tasks), "averages": _averages(cells), "runs": runs,
          "paper": {label: {t: row[t] for t in tasks if t in row} for label, row in PAPER_C5.items()}}


def _averages(cells: dict) -> dict:
  out = {}
  for label, by_task in cells.items():
    scores = {t: {k: v["mean"] for k, v in e["metrics"].items()} for t, e in by_task.items()}
    try:
      out[label] = metrics.glue_average(scores)
    except ValueError as e:
      out[label] = {"missing": str(e)}
  return out


TARGET_GAP = 0.5   # issue 12: every W4A4 student within 0.5 points of its teacher (seed mean)


def _targets(cells: dict, tasks: list[str]) -> list[dict]:
  teacher = cells.get("FP32 teacher", {})
  out = []
  for label, by_task in cells.items():
    if label == "FP32 teacher":
      continue
    for task in tasks:
      if task not in by_task or task not in teacher:
        continue
      for name in metrics.TASK_METRICS[task][0]:
        gap = by_task[task]["metrics"][name]["mean"] - teacher[task]["metrics"][name]["mean"]
        out.append({"label": label, "task": task, "metric": name, "gap": gap, "met": gap >= -TARGET_GAP})
  return out


# ----------------------------------------------------------------------------------------------
# Report


def _cell(task_entry: dict | None, task: str) -> str:
  if task_entry is None:
    return "–"
  parts = []
  for name in metrics.TASK_METRICS[task][0]:
    m = task_entry["metrics"][name]
    parts.append(f"{m['mean']:.2f}" + (f" ± {m['std']:.2f}" if m["n"] > 1 else ""))
  return " / ".join(parts)


def _paper_cell(row: dict, task: str) -> str:
  vals = row.get(task)
  return "–" if not vals else " / ".join(f"{vals[n]:.1f}" for n in metrics.TASK_METRICS[task][0])


def markdown(report: dict, header: str = "") -> str:
  tasks = report["tasks"]
  heads = [f"{t.upper()} ({'/'.join(metrics.TASK_METRICS[t][0])})" for t in tasks]
  lines = [header] if header else []
  lines += ["| run | LR (selected) | " + " | ".join(heads) + " | Avg | Avg w/o CoLA |",
            "|---|---|" + "---|" * len(tasks) + "---|---|"]
  order = sorted(report["selected"], key=lambda l: (l != "FP32 teacher", l))
  for label in order:
    by_task = report["selected"][label]
    lrs = ", ".join(f"{t}: {by_task[t]['learning_rate']:g}" for t in tasks if t in by_task)
    avg = report["averages"].get(label, {})
    a = (f"{avg['avg']:.2f} | {avg['avg_wo_cola']:.2f}" if "avg" in avg else "– | –")
    lines.append(f"| {label} | {lrs} | " + " | ".join(_cell(by_task.get(t), t) for t in tasks) + f" | {a} |")
  for label, row in PAPER_C5.items():
    a, b = PAPER_C5_AVG[label]
    lines.append(f"| *{label}* | Table C.5 | " + " | ".join(_paper_cell(row, t) for t in tasks) +
                 f" | *{a:.2f}* | *{b:.2f}* |")
  lines += ["", "Selection as the paper: each run reports its best dev checkpoint; per task and configuration the "
            "learning rate with the highest seed-mean of the primary metric on dev is shown (GLUE has no labelled "
            "test split, so dev serves both selections); mean ± sample std (ddof 1) over seeds.", "",
            "Every learning rate of the grid (process wall = the whole `experiments.glue` process; first step = "
            "`train_and_evaluate` entry to the first finished step, i.e. compilation or a compile-cache read; "
            "GPU s = SM-busy seconds sampled by `nvidia-smi pmon`, the run's share when runs share the GPU):", "",
            "| task | run | LR | seeds | metrics | steps × batch (epochs) | process wall s | first step s | "
            "GPU s (pmon) |", "|---|---|---|---|---|---|---|---|---|"]
  for e in report["grid"]:
    fs = e["first_step_s"]
    lines.append(f"| {e['task']} | {e['label']} | {e['learning_rate']:g} | {','.join(map(str, e['seeds']))} | "
                 f"{_cell(e, e['task'])} | {e['steps']} × {e['batch_size']} ({(e['epochs'] or 0):.2f}) | "
                 f"{e['process_wall_s']['mean']:.0f} | {'–' if fs is None else format(fs['mean'], '.1f')} | "
                 f"{'–' if not e.get('gpu_s') else format(e['gpu_s']['mean'], '.0f')} |"
                 + (f" partial: {len(e['partial'])} run(s) stopped at the deadline" if e["partial"] else ""))
  if report["targets"]:
    lines += ["", f"Target: every student within {TARGET_GAP} points of its teacher (seed mean, selected LR):", "",
              "| run | task | metric | gap | met |", "|---|---|---|---|---|"]
    for t in report["targets"]:
      lines.append(f"| {t['label']} | {t['task']} | {t['metric']} | {t['gap']:+.2f} | "
                   f"{'yes' if t['met'] else '**no**'} |")
    missed = sorted({(t["label"], t["task"]) for t in report["targets"] if not t["met"]})
    if missed:
      lines += ["", "Eval curves behind the missed targets (primary dev metric by step; full curves, train loss "
                "included, in the JSON):", ""]
      curves = {r["dir"]: r["curve"] for r in report["runs"]}
      for label, task in missed:
        entry = report["selected"][label][task]
        teacher = report["selected"].get("FP32 teacher", {}).get(task)
        primary = metrics.primary_metric(task)
        for d in (teacher["runs"] if teacher else []) + entry["runs"]:
          pts = [f"{r['step']}:{r[primary]:.1f}" for r in curves.get(d, []) if r.get("split") == "eval"]
          lines.append(f"- `{d}` {primary}: " + " ".join(pts))
  return "\n".join(lines) + "\n"


def plot_curves(report: dict, path: str) -> bool:
  """Dev metric against training step for every run, one panel per task, one colour per configuration (seeds
  share it): where a student falls short of its teacher, the curves show whether it was still climbing when its
  budget ended. False (nothing written) without matplotlib, e.g. on the GPU machine."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  tasks = list(report["tasks"])
  labels = sorted({config_label(r) for r in report["runs"]})
  colors = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
  fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4.5), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    shown = set()
    for r in report["runs"]:
      if r["glue"].get("task") != task:
        continue
      pts = [(c["step"], c[k]) for c in r["curve"] if c.get("split") == "eval"
             for k in ("accuracy",) if k in c]
      if not pts:
        continue
      label = config_label(r)
      ax.plot(*zip(*pts), color=colors[label], lw=2.5 if label == "FP32 teacher" else 1.2, alpha=0.8,
              label=None if label in shown else label)
      shown.add(label)
    ax.set_title(f"{task}: dev accuracy during training")
    ax.set_xlabel("step")
    ax.set_ylabel("dev accuracy (%)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def write_report(report: dict, out_prefix: str, header: str = "", extra: dict | None = None) -> tuple[str, str]:
  """<out_prefix>.md, <out_prefix>.json (the JSON holds every run's curve) and <out_prefix>_curves.png."""
  os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
  md, js = f"{out_prefix}.md", f"{out_prefix}.json"
  text = markdown(report, header)
  if plot_curves(report, f"{out_prefix}_curves.png"):
    text += f"\n![dev accuracy curves]({os.path.basename(out_prefix)}_curves.png)\n"
  with open(md, "w") as f:
    f.write(text)
  with open(js, "w") as f:
    json.dump({**report, **(extra or {})}, f, indent=1, sort_keys=True, default=_jsonable)
  return md, js


def _jsonable(x):
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  raise TypeError(f"not JSON serializable: {type(x)}")
