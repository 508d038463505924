"""Three GLUE studies and an engine check in one process queue, sharing one FP32 teacher per task.

    jobs, views = plan(StudiesConfig(model=..., data_root=..., work=...))
    make_views(views); records = run_queue.run(jobs, max_par=10, deadline=...)

The studies: fidelity (issue 12: W4A4 sym/asym, with and without augmentation, and the Qwix peer), composability
(issue 14: W4A4 with 2:4 / 1:4 sparsity and a layer-reduced student) and the 4-bit format zoo (issue 17), then the
integer engine against fake quantization on the first-seed W4A4 students (issue 10). Run separately, their drivers
trained three teachers per task and started ~36 processes on one GPU, none of which reached a first step. Here
every student of a task distils the same teacher with the same budget (`student_flags`: steps, batch, learning rate,
clip and KD terms), so the runs the studies have in common are trained once: issue 12's W4A4 sym and asym students
without augmentation are also issue 14's "W4A4 alone" and issue 17's "INT4 sym" / "INT4 asym" rows.

Layout under `work`; each study's own collector reads its folder:

    runs/<task>/fp32, runs/<task>/<group>/seed<s>   issue 12, glue_suite's layout (experiments.glue_suite --collect)
    composability/<task>_<variant>_s<seed>         issue 14 (results/scripts/collect_composability.py)
    formats/<task>_<bits>_<mode>_s<seed>           issue 17 (experiments.formats --collect_only)
    engine/<task>_<mode>/<kind>/stdout.log         issue 10 (experiments.eval, ENGINE_EVALS; engine_report)
    prep/<task>                                    the job that builds the augmentation caches once per task and
                                                   seed (into $INT4JAX_CACHE/augment) before the +aug students

Shared runs appear in the other studies' folders as relative symlinks (`views`), so a tarball of `work` collects
anywhere.

Priority (the queue's order): the teachers; issue 12's first seed (per task: sym, asym, Qwix, the augmentation
caches of every seed, then sym and asym with augmentation, which follow the runs without: the same step count makes
the same compiled programs); the engine evaluations; issues 14 and 17's first seed; issue 12's other seeds; issues 14
and 17's other seeds, optional (started only when their first seed's wall time still fits before the deadline).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence

from int4jax.analysis import format_zoo
from int4jax.tasks import glue_suite, run_queue

# Issue 14's sparse students: name (collect_composability.VARIANTS) -> N:M pattern, pruning method, order.
SPARSE = {"s24_static_pq": ("2:4", "static", "pq"), "s24_static_qp": ("2:4", "static", "qp"),
          "s24_movement_pq": ("2:4", "movement", "pq"), "s24_movement_qp": ("2:4", "movement", "qp"),
          "s14_static_pq": ("1:4", "static", "pq")}
# Issue 17's students that issue 12 does not train already.
NEW_FORMATS = tuple(s for s in format_zoo.STUDENTS if s.bits != "w4a4")
# Issue 10: each first-seed W4A4 student of `engine_task` through experiments.eval: the integer engine at its
# production bf16 compute and at fp32 (which separates bf16 rounding from the integer arithmetic), and fake quant.
ENGINE_EVALS = {"int_bf16": ("--engine=int",), "int_fp32": ("--engine=int", "--engine_dtype=float32"), "fake": ()}
ENGINE_TARGET = 0.1   # points of dev accuracy between the engine and fake quantization


@dataclasses.dataclass(frozen=True)
class StudiesConfig:
  model: str
  data_root: str                               # holds the GLUE task folders (MRPC/, SST-2/)
  work: str
  tasks: tuple[str, ...] = ("mrpc", "sst2")
  seeds: tuple[int, ...] = (1, 2, 3)           # the first is every study's; the others follow it
  augment: tuple[tuple[str, int], ...] = (("mrpc", 10), ("sst2", 1))   # issue 12's copies per task
  learning_rate: float = 1e-4
  teacher_flags: tuple[str, ...] = ()          # experiments.glue flags: "--flag" for every task, "task:--flag" for one
  student_flags: tuple[str, ...] = ()
  mask_update_every: int = 25                  # movement pruning's mask schedule (steps)
  student_layers: int = 3                      # issue 14's layer-reduced student
  engine_task: str = "sst2"                    # issue 10's numerics check on this task's first-seed W4A4 students
  python: str = sys.executable


def flags_for(entries: Sequence[str], task: str) -> tuple[str, ...]:
  """The flags of `entries` ("--flag" or "task:--flag") that apply to `task`."""
  out = []
  for e in entries:
    scope, sep, flag = e.partition(":")
    if sep and not e.startswith("-"):
      if scope not in glue_suite.SUITE_TASKS + ("wnli",):
        raise ValueError(f"flag entry {e!r}: {scope!r} is not a GLUE task (use --flag or task:--flag)")
      if scope == task:
        out.append(flag)
    else:
      out.append(e)
  return tuple(out)


def _flag(argv: Sequence[str], name: str) -> str | None:
  return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), None)


def _replace(argv: Sequence[str], **flags) -> tuple[str, ...]:
  """argv with --name=value set for each flag (replaced where present, appended otherwise; None drops it)."""
  out = [a for a in argv if a.split("=", 1)[0].lstrip("-") not in flags]
  return tuple(out) + tuple(f"--{k}={v}" for k, v in flags.items() if v is not None)


def plan(cfg: StudiesConfig) -> tuple[list[run_queue.Job], list[tuple[str, str]]]:
  """(jobs in priority order, views as (symlink, target) pairs)."""
  aug = dict(cfg.augment)
  work = os.path.abspath(cfg.work)
  first = cfg.seeds[0]
  teachers, p12, p1417, engine, views = [], [], [], [], []
  later12 = {s: [] for s in cfg.seeds[1:]}     # seed-major: every task's second seed before any third
  later1417 = {s: [] for s in cfg.seeds[1:]}

  def job(name, module, argv, workdir, needs=(), leader=None, optional=False):
    return run_queue.Job(name, (cfg.python, "-m", module) + tuple(argv), workdir, tuple(needs), leader, optional)

  for task in cfg.tasks:
    n_aug = aug.get(task, 0)
    suite = {}   # (qat, augment, quant_mode, seed) -> glue_suite.Run
    groups = [("int4jax", 0, ("sym", "asym")), ("qwix", 0, ("sym",))] + ([("int4jax", n_aug, ("sym", "asym"))]
                                                                         if n_aug else [])
    for qat, copies, modes in groups:
      runs = glue_suite.plan(glue_suite.SuiteConfig(
          model=cfg.model, data_root=cfg.data_root, runs_root=os.path.join(work, "runs"), quant_modes=modes,
          seeds=cfg.seeds, learning_rates=(cfg.learning_rate,), budget=None, qat=qat, augment=copies, tasks=(task,),
          teacher_flags=flags_for(cfg.teacher_flags, task), student_flags=flags_for(cfg.student_flags, task)))
      teacher = runs[0]
      suite.update({(qat, copies, _flag(r.argv, "quant_mode"), int(_flag(r.argv, "seed"))): r for r in runs[1:]})
    teachers.append(job(teacher.name, "experiments.glue", teacher.argv, teacher.workdir))
    t = (teacher.workdir,)

    def student(key, seed, leader=None, needs=t):
      r = suite[key + (seed,)]
      return job(r.name, "experiments.glue", r.argv, r.workdir, needs, leader)

    plain = [("int4jax", 0, "sym"), ("int4jax", 0, "asym"), ("qwix", 0, "sym")]
    p12 += [student(k, first) for k in plain]
    for seed in later12:
      later12[seed] += [student(k, seed, suite[k + (first,)].workdir) for k in plain]
    if n_aug:  # one process builds every seed's augmentation cache (its key: task, copies, seed, tokenizer, data)
      prep = os.path.join(work, "prep", task)
      argv = _replace(suite[("int4jax", n_aug, "sym", first)].argv, seed=None, workdir=prep,
                      seeds=",".join(map(str, cfg.seeds)), prepare_only="true")
      p12.append(job(f"{task}/augmentation caches", "experiments.glue", argv, prep, t))
      for seed in cfg.seeds:  # leader: the run without augmentation (same steps and shapes: the same programs)
        (p12 if seed == first else later12[seed]).extend(
            student(("int4jax", n_aug, m), seed, suite[("int4jax", 0, m, first)].workdir, t + (prep,))
            for m in ("sym", "asym"))

    # Issues 14 and 17: issue 12's W4A4 sym student without augmentation with one thing changed.
    base = suite[("int4jax", 0, "sym", first)].argv
    every = lambda m: cfg.mask_update_every if m == "movement" else None
    derived = [(lambda s, v=v: f"composability/{task}_{v}_s{s}",
                dict(sparsity=p, prune=m, order=o, mask_update_every=every(m))) for v, (p, m, o) in SPARSE.items()]
    derived.append((lambda s: f"composability/{task}_layers{cfg.student_layers}_s{s}",
                    dict(num_layers=cfg.student_layers)))
    derived += [(lambda s, st=st: "formats/" + format_zoo.run_name(task, st, s),
                 dict(bits=st.bits, quant_mode=st.quant_mode)) for st in NEW_FORMATS]
    for name_of, change in derived:
      for seed in cfg.seeds:
        wd = os.path.join(work, name_of(seed))
        j = job(name_of(seed), "experiments.glue", _replace(base, seed=seed, workdir=wd, **change), wd, t,
                None if seed == first else os.path.join(work, name_of(first)), optional=seed != first)
        (p1417 if seed == first else later1417[seed]).append(j)

    # Views: the shared runs under the names issues 14 and 17 read.
    for link in (f"composability/{task}_fp32", "formats/" + format_zoo.run_name(task, format_zoo.TEACHER, None)):
      views.append((os.path.join(work, link), teacher.workdir))
    for seed in cfg.seeds:
      plain_dir = {m: suite[("int4jax", 0, m, seed)].workdir for m in ("sym", "asym")}
      views.append((os.path.join(work, f"composability/{task}_w4a4_s{seed}"), plain_dir["sym"]))
      views += [(os.path.join(work, "formats", format_zoo.run_name(task, st, seed)), plain_dir[st.quant_mode])
                for st in format_zoo.STUDENTS if st.bits == "w4a4"]

    if task == cfg.engine_task:   # issue 10: the first-seed W4A4 students, integer engine and fake quantization
      for mode in ("sym", "asym"):
        run = suite[("int4jax", 0, mode, first)].workdir
        for kind, extra in ENGINE_EVALS.items():
          engine.append(job(f"engine/{task}_{mode}/{kind}", "experiments.eval", (f"--workdir={run}",) + extra,
                            os.path.join(work, "engine", f"{task}_{mode}", kind), (run,)))
  later = [j for s in later12 for j in later12[s]] + [j for s in later1417 for j in later1417[s]]
  # The engine evaluations right after issue 12's first seed: they need only its SST-2 students, take seconds of
  # GPU, and are issue 10's check (a run at 15194b6 with them after 14/17's first seed reached them at its deadline).
  return teachers + p12 + engine + p1417 + later, views


def make_views(views: Sequence[tuple[str, str]]) -> None:
  """The symlinks of plan(): relative, so that a tarball of the work folder keeps them valid."""
  for link, target in views:
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link):
      os.remove(link)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


# ----------------------------------------------------------------------------------------------
# Reports


def _eval_line(path: str) -> dict | None:
  """The JSON object experiments.eval prints (the last one, if a log holds several attempts; a progress bar on
  stderr may share its line)."""
  if not os.path.isfile(path):
    return None
  found = None
  for line in open(path):
    start = line.find('{"')
    if start >= 0:
      try:
        found = json.loads(line[start:])
      except ValueError:
        pass
  return found


def engine_report(work: str, meta: dict) -> dict:
  """Issue 10's check from the engine/ folder: per student, its primary dev metric through the integer engine (bf16
  and fp32 compute) next to fake quantization, and whether each engine number is within ENGINE_TARGET points."""
  from int4jax import metrics  # pylint: disable=g-import-not-at-top  (sklearn/scipy, only when reporting)
  root = os.path.join(work, "engine")
  rows = []
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    found = {k: _eval_line(os.path.join(root, name, k, "stdout.log")) for k in ENGINE_EVALS}
    some = next((v for v in found.values() if v), None)
    task, mode = name.rsplit("_", 1)
    row = {"name": name, "task": task, "quant_mode": mode,
           "run": os.path.relpath(some["workdir"], work) if some else None,
           "missing": sorted(k for k, v in found.items() if v is None)}
    if some:
      metric = metrics.primary_metric(task)
      row.update(metric=metric, step=some["step"], split=some["split"])
      fake = found["fake"]["metrics"][metric] if found["fake"] else None
      row.update(fake_quant=fake, logged_at_training=(some.get("logged") or some.get("logged_fake_quant"))[metric])
      for k in ("int_bf16", "int_fp32"):
        value = found[k]["metrics"][metric] if found[k] else None
        diff = None if value is None or fake is None else value - fake
        row.update({k: value, f"{k}_minus_fake": diff,
                    f"{k}_within_target": None if diff is None else abs(diff) <= ENGINE_TARGET})
    rows.append(row)
  return {"what": "Integer engine vs fake quantization, dev accuracy of the first-seed all-MiniLM-L6-v2 W4A4 "
                  f"students (issue 10 item 3; target: within {ENGINE_TARGET} points)",
          "gpu": meta.get("gpu"), "commit": meta.get("commit"), "date": meta.get("started_utc"),
          "command": "python -m experiments.eval --workdir=<run> --engine=int [--engine_dtype=float32]; "
                     "python -m experiments.eval --workdir=<run>  (fake quant)",
          "target_points": ENGINE_TARGET, "runs": rows}


def walls(records: Sequence[dict]) -> str:
  """One line per job: how it ended, its wall time and when it started (seconds after the queue began)."""
  return "".join(f"{r['name']} {r['status']}" + (f" rc={r['rc']} wall={r['wall_s']:.0f}s start={r['start_s']:.0f}s"
                                                   if "rc" in r else f" ({r.get('reason', '')})") + "\n"
                 for r in records)


def startup_summary(work: str, jobs: Sequence[run_queue.Job]) -> dict:
  """Start-up of the trainings (process start -> first finished step, from startup.json): runs that compiled
  (no leader) against runs that read their leader's programs from the persistent compilation cache."""
  out = {}
  for label, group in (("compiled (no leader)", [j for j in jobs if j.leader is None]),
                       ("compile cache (after a leader)", [j for j in jobs if j.leader is not None])):
    values = []
    for j in group:
      path = os.path.join(j.workdir, "startup.json")
      if os.path.isfile(path):
        with open(path) as f:
          values.append(json.load(f))
    if values:
      proc = sorted(v["process_to_first_step_s"] for v in values)
      loop = sorted(v["loop_to_first_step_s"] for v in values)
      out[label] = (f"median {proc[len(proc) // 2]:.1f} s from process start to the first finished step, "
                    f"{loop[len(loop) // 2]:.1f} s of it in the training loop (compilation or cache read); "
                    f"{len(values)} runs, range {proc[0]:.0f}-{proc[-1]:.0f} s")
  return out
