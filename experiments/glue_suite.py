"""The whole GLUE table (paper Table C.5) in one command: teachers, W4A4 students over the LR grid and seeds.

    python -m experiments.glue_suite --model=$MINILM --data_root=../shared/data/glue --bits=w4a4 \
        --runs_root=runs/glue_suite --seeds=1,2,3 --parallel=4 --out=results/glue_suite

runs every GLUE task found under --data_root (folders SST-2, MRPC, ... with train.tsv / dev.tsv): the FP32
teacher of each task, then its students (`--quant_modes` x Table C.5's LR grid x `--seeds`) at Table C.4's
Budget-A with TinyBERT-style augmentation on the tasks the paper augments (`--augment=N` forces N everywhere).
Finished runs (summary.json) are skipped and interrupted ones resume, so the same command continues a suite.
It ends by writing <out>.md (Table C.5 layout: our rows, then the paper's BERT-base rows) and <out>.json.

    python -m experiments.glue_suite --collect --runs_root=runs/glue_suite --out=results/glue_suite

only collects (e.g. runs made elsewhere by the same layout). Selection rule: int4jax/tasks/glue_suite.py.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Model preset or HF checkpoint dir (teacher and students).")
flags.DEFINE_string("data_root", None, "Folder holding GLUE task folders (SST-2/, MRPC/, ...).")
flags.DEFINE_string("bits", "w4a4", "Student policy preset.")
flags.DEFINE_list("quant_modes", ["sym"], "Student quantization modes (sym, asym).")
flags.DEFINE_list("seeds", ["42"], "Student seeds; mean and std are reported.")
flags.DEFINE_list("learning_rates", None, "Student LR grid (default: Table C.5's grid for the model).")
flags.DEFINE_enum("budget", "A", ["A", "B", "C", "none"], "Table C.4 budget of the students (Table C.5 is "
                  "Budget-A); none: give --num_epochs/--num_train_steps in --student_flags.")
flags.DEFINE_enum("qat", "int4jax", ["int4jax", "qwix"], "Students' quantizer (qwix: the Qwix peer row).")
flags.DEFINE_enum("stage", "all", ["all", "teachers", "students"], "Run only the teachers or only the students.")
flags.DEFINE_float("deadline_s", None, "Kill runs still going this many seconds after the start (they are "
                   "collected as partial).")
flags.DEFINE_integer("augment", None, "Augmented copies per example; default 20 (TinyBERT) on the tasks "
                     "Table C.4 augments, 0 on MNLI/QQP.")
flags.DEFINE_list("tasks", None, "Only these tasks (default: every GLUE task found).")
flags.DEFINE_string("runs_root", "runs/glue_suite", "Where the run directories go.")
flags.DEFINE_integer("parallel", 1, "Runs at a time (processes; small models share one GPU well).")
flags.DEFINE_string("out", None, "Report prefix: <out>.md and <out>.json (default <runs_root>/report).")
flags.DEFINE_bool("collect", False, "Only collect finished runs under --runs_root into the report.")
flags.DEFINE_bool("dry_run", False, "Print the planned commands and exit.")
flags.DEFINE_string("pmon", None, "--collect: an `nvidia-smi pmon -s u -d 1` log of the runs (per-run GPU seconds).")
flags.DEFINE_string("meta", None, "--collect: a JSON of run facts (gpu, commit, commands, times) for the report.")
flags.DEFINE_string("title", "GLUE: FP32 teachers and W4A4 students (paper Table C.5 layout)", "Report title.")
flags.DEFINE_list("teacher_flags", [], "Extra experiments.glue flags for teachers, e.g. --teacher_flags=--num_epochs=1")
flags.DEFINE_list("student_flags", [], "Extra experiments.glue flags for students.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from int4jax.tasks import glue_suite  # pylint: disable=g-import-not-at-top
  out = FLAGS.out or f"{FLAGS.runs_root}/report"
  if not FLAGS.collect:
    if not FLAGS.model or not FLAGS.data_root:
      raise app.UsageError("--model and --data_root are required (or --collect)")
    try:
      cfg = glue_suite.SuiteConfig(
          model=FLAGS.model, data_root=FLAGS.data_root, runs_root=FLAGS.runs_root, bits=FLAGS.bits,
          quant_modes=tuple(FLAGS.quant_modes), seeds=glue_suite.parse_seeds(FLAGS.seeds),
          learning_rates=tuple(float(x) for x in FLAGS.learning_rates) if FLAGS.learning_rates else None,
          budget=None if FLAGS.budget == "none" else FLAGS.budget, qat=FLAGS.qat, augment=FLAGS.augment, tasks=tuple(FLAGS.tasks) if FLAGS.tasks else None,
          teacher_flags=tuple(FLAGS.teacher_flags), student_flags=tuple(FLAGS.student_flags))
      runs = glue_suite.plan(cfg)
    except (ValueError, FileNotFoundError) as e:
      raise app.UsageError(str(e)) from None
    if FLAGS.dry_run:
      for r in runs:
        print(("done  " if r.done() else "todo  ") + "python -m experiments.glue " + " ".join(r.argv))
      return
    deadline = None if FLAGS.deadline_s is None else time.time() + FLAGS.deadline_s
    glue_suite.execute(runs, parallel=FLAGS.parallel, stage=FLAGS.stage, deadline=deadline)
    if FLAGS.stage != "all" and not FLAGS.out:
      return
  report = glue_suite.collect(FLAGS.runs_root, pmon_log=FLAGS.pmon)
  meta = {}
  if FLAGS.meta:
    with open(FLAGS.meta) as f:
      meta = json.load(f)
  header = f"# {FLAGS.title}\n\n" + "".join(f"- {k}: {v}\n" for k, v in meta.items() if not isinstance(v, (dict, list)))
  if meta.get("commands"):
    header += "\n```\n" + "\n".join(meta["commands"]) + "\n```\n"
  md, js = glue_suite.write_report(report, out, header=header, extra={"meta": meta})
  print(open(md).read())
  print(f"wrote {md} and {js}")


if __name__ == "__main__":
  app.run(main)
