"""GLUE fidelity (issue 12), composability (14), the format zoo (17) and the engine check (10) in one process queue.

    python -m experiments.glue_studies --model=$MINILM --data_root=$DATA/glue --work=/tmp/minilm --max_par=10 \
        --deadline_s=500 --student_flags=--num_train_steps=300 --teacher_flags=mrpc:--num_epochs=3,... 

trains one FP32 teacher per task, then every study's students from it in one priority queue of at most --max_par
processes (int4jax/tasks/glue_studies.py has the plan and the layout, tasks/run_queue.py the queue), and writes
into --work: queue.json (every job's record), meta.json (for `experiments.glue_suite --collect --meta`),
composability/{gpu,walls}.txt (for collect_composability.py --gather) and engine_minilm.json (issue 10's check).
The GPU driver is results/scripts/minilm_gpu.sh; its header has the collect commands.

    python -m experiments.glue_studies --collect --work=<extracted work folder>

writes the engine JSON (and walls) again from a finished work folder; --dry_run prints the queue and exits.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "HF checkpoint dir of teachers and students (all-MiniLM-L6-v2).")
flags.DEFINE_string("data_root", None, "Folder holding the GLUE task folders (MRPC/, SST-2/).")
flags.DEFINE_string("work", None, "Work folder: run directories, the study views, logs and reports.", required=True)
flags.DEFINE_list("tasks", ["mrpc", "sst2"], "GLUE tasks.")
flags.DEFINE_list("seeds", ["1", "2", "3"], "Student seeds; the first has priority in every study.")
flags.DEFINE_list("augment", ["mrpc:10", "sst2:1"], "Issue 12's augmented copies per example, task:N.")
flags.DEFINE_float("learning_rate", 1e-4, "Student learning rate (every study).")
flags.DEFINE_list("teacher_flags", [], "experiments.glue flags of the teachers: --flag (every task) or task:--flag.")
flags.DEFINE_list("student_flags", [], "experiments.glue flags of every student: --flag or task:--flag.")
flags.DEFINE_integer("mask_update_every", 25, "Movement pruning: steps between mask recomputations.")
flags.DEFINE_integer("student_layers", 3, "Encoder layers of issue 14's layer-reduced student.")
flags.DEFINE_string("engine_task", "sst2", "Task whose first-seed W4A4 students go through the integer engine.")
flags.DEFINE_integer("max_par", 10, "Processes at a time, teachers included.")
flags.DEFINE_float("deadline_s", None, "Kill what still runs this many seconds after the start; skip what has not "
                   "started (killed runs are collected as partial).")
flags.DEFINE_string("git_commit", None, "Commit recorded in every run (the GPU tree has no .git).")
flags.DEFINE_string("gpu", None, "Device description for the reports (default: nvidia-smi, else 'none (CPU)').")
flags.DEFINE_string("driver", None, "The command that ran this (a GPU driver script), recorded in the reports.")
flags.DEFINE_list("select", None, "Only the jobs whose names match these shell patterns, and the jobs they need "
                  "(e.g. 'engine/*,composability/sst2_s24_movement_*'; --dry_run lists the names).")
flags.DEFINE_bool("dry_run", False, "Print the queue and exit.")
flags.DEFINE_bool("collect", False, "Only write the reports of a finished --work folder.")


def _device() -> str:
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    out = ""
  return out or "none (CPU)"


def _versions() -> str:
  def v(name):
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      return "-"
  return ", ".join(f"{n} {v(n)}" for n in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "qwix"))


def _gpu_busy_s(path: str) -> float | None:
  """Seconds of GPU activity from `nvidia-smi --query-gpu=timestamp,utilization.gpu,... -lms 1000` lines."""
  if not os.path.isfile(path):
    return None
  busy = [float(p[1].strip().rstrip(" %")) for p in (line.split(",") for line in open(path))
          if len(p) > 2 and p[1].strip().rstrip(" %").isdigit()]
  return round(sum(busy) / 100.0, 1) if busy else None


def write_reports(work: str, meta: dict, records: list[dict] | None) -> None:
  from int4jax.tasks import glue_studies  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(work, "composability"), exist_ok=True)
  with open(os.path.join(work, "composability", "gpu.txt"), "w") as f:
    f.write(f"{meta['gpu']}\n{meta['versions']}\n")
  if meta.get("driver"):
    with open(os.path.join(work, "composability", "driver.txt"), "w") as f:
      f.write(meta["driver"] + "\n")
  if records is not None:
    with open(os.path.join(work, "composability", "walls.txt"), "w") as f:
      f.write(glue_studies.walls([r for r in records if r["name"].startswith("composability/")]))
  with open(os.path.join(work, "engine_minilm.json"), "w") as f:
    json.dump(glue_studies.engine_report(work, meta), f, indent=1, sort_keys=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from int4jax.tasks import glue_studies, glue_suite, run_queue  # pylint: disable=g-import-not-at-top
  work = os.path.abspath(FLAGS.work)
  if FLAGS.collect:
    with open(os.path.join(work, "meta.json")) as f:
      meta = json.load(f)
    write_reports(work, meta, None)
    print(f"wrote {work}/engine_minilm.json and composability/gpu.txt")
    return
  if not FLAGS.model or not FLAGS.data_root:
    raise app.UsageError("--model and --data_root are required (or --collect)")
  commit = (f"--git_commit={FLAGS.git_commit}",) if FLAGS.git_commit else ()
  try:
    augment = tuple((t, int(n)) for t, n in (a.split(":") for a in FLAGS.augment))
  except ValueError:
    raise app.UsageError(f"--augment={','.join(FLAGS.augment)} must be task:N entries") from None
  try:
    cfg = glue_studies.StudiesConfig(
        model=FLAGS.model, data_root=FLAGS.data_root, work=work, tasks=tuple(FLAGS.tasks),
        seeds=glue_suite.parse_seeds(FLAGS.seeds), augment=augment, learning_rate=FLAGS.learning_rate,
        teacher_flags=tuple(FLAGS.teacher_flags) + commit, student_flags=tuple(FLAGS.student_flags) + commit,
        mask_update_every=FLAGS.mask_update_every, student_layers=FLAGS.student_layers,
        engine_task=FLAGS.engine_task)
    jobs, views = glue_studies.plan(cfg)
    if FLAGS.select:
      jobs = run_queue.select(jobs, FLAGS.select)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  if FLAGS.dry_run:
    for j in jobs:
      lead = f"  leader={os.path.relpath(j.leader, work)}" if j.leader else ""
      print(f"{j.name}{'  (optional)' if j.optional else ''}{lead}\n  {' '.join(j.cmd)}")
    return
  t0 = time.time()
  glue_studies.make_views(views)
  deadline = None if FLAGS.deadline_s is None else t0 + FLAGS.deadline_s
  print(f"[studies] {len(jobs)} jobs, at most {FLAGS.max_par} at a time, deadline "
        f"{'none' if deadline is None else f'{FLAGS.deadline_s:.0f} s'}", flush=True)
  records = run_queue.run(jobs, FLAGS.max_par, deadline)
  t1 = time.time()
  with open(os.path.join(work, "queue.json"), "w") as f:
    json.dump([dict(r, workdir=os.path.relpath(j.workdir, work), leader=j.leader and os.path.relpath(j.leader, work),
                    optional=j.optional) for r, j in zip(records, jobs)], f, indent=1)
  counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "timeout", "skipped", "done before")}
  meta = {"gpu": FLAGS.gpu or _device(), "versions": _versions(), "commit": FLAGS.git_commit or "unknown",
          "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0)), "queue_wall_s": round(t1 - t0),
          "max_par": FLAGS.max_par, "deadline_s": FLAGS.deadline_s,
          "jobs": ", ".join(f"{n} {s}" for s, n in counts.items() if n),
          "gpu_busy_s (nvidia-smi utilization.gpu, 1 s samples)": _gpu_busy_s(os.path.join(work, "util.log")),
          "startup": glue_studies.startup_summary(work, [j for j in jobs if "/augmentation" not in j.name
                                                         and not j.name.startswith("engine/")]),
          "driver": FLAGS.driver,
          "commands": ([FLAGS.driver] if FLAGS.driver else []) + ["python -m experiments.glue_studies " +
                                                                  " ".join(sys.argv[1:])]}
  meta.update({f"start-up, {k}": v for k, v in meta["startup"].items()})
  with open(os.path.join(work, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  write_reports(work, meta, records)
  print(f"[studies] done in {t1 - t0:.0f} s: {meta['jobs']}", flush=True)


if __name__ == "__main__":
  app.run(main)
