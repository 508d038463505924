"""The 4-bit format zoo (issue 17): one FP32 teacher per task, then INT4 sym / INT4 asym / MXFP4 / NVFP4 / ternary
W + INT8 A students, all QAT+KD from that teacher with the same steps, batch, learning rate, clip, KD terms and
seeds; writes one table + plot (`results/formats.{md,json,png}`).

Every training is a `python -m experiments.glue` process (the project's GLUE task), so a run directory here is an
ordinary GLUE run (resumable, `experiments.eval`-able). `--jobs` runs that many at once (on one GPU the processes
share it; XLA preallocation is switched off for them). Finished runs (summary.json present) are not rerun.

CPU, seconds per run (synthetic task, tiny BERT):

    python -m experiments.formats --num_train_steps=24 --teacher_steps=48 --results=/tmp/formats

A GPU setting (all-MiniLM-L6-v2, SST-2 subsample + MRPC; results/formats.md comes from results/scripts/minilm_gpu.sh):

    python -m experiments.formats --tasks=sst2,mrpc --model=$MINILM --glue_dir=$DATA/glue --seeds=0,1 \
        --max_train_examples=8000 --teacher_steps=750 --num_train_steps=600 --jobs=12 --workdir=/tmp/formats \
        --results= --runs_json=$OUT/formats_runs.json
    python -m experiments.formats --from_runs=formats_runs.json --results=results/formats   # table + plot

`--from_runs` only writes the table from a runs JSON written by `--runs_json` (e.g. on a machine without matplotlib).
`--collect_only` writes that JSON from run directories trained elsewhere under the same names (results/scripts/
minilm_gpu.sh trains them in one queue with the other MiniLM studies).

The decoder side (GPT-2 on PTB; results/scripts/formats_lm_gpu.sh trains it with `python -m experiments.lm`):
`--lm_collect=<folder of LM run directories>` writes that setting's LM runs JSON (`--runs_json`, nothing else), and
`--lm_runs=<that JSON>` puts its rows beside the GLUE ones. Without `--from_runs` the GLUE part is read from
`<--results>.json` itself, so the LM rows are added to the committed results in place; LM settings already there
and not in `--lm_runs` are kept (a later SmolLM2 run adds its column beside GPT-2's):

    python -m experiments.formats --lm_runs=formats_lm_runs.json --results=results/formats
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from int4jax.analysis import format_zoo
from int4jax.quant import policy as policy_lib

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", ["synthetic"], "GLUE tasks (e.g. sst2,mrpc) or synthetic.")
flags.DEFINE_string("model", "bert_tiny", "Model preset or HF checkpoint dir (e.g. all-MiniLM-L6-v2).")
flags.DEFINE_string("glue_dir", None, "Folder holding the GLUE TSV folders (SST-2/, MRPC/, ...).")
flags.DEFINE_string("tokenizer", None, "Tokenizer dir (default: the model dir, else bert-base-uncased).")
flags.DEFINE_list("formats", [f"{s.bits}:{s.quant_mode}" for s in format_zoo.STUDENTS],
                  "Students as preset:quant_mode (quant_mode asym only for integer presets).")
flags.DEFINE_list("seeds", ["42"], "Student seeds (data order, dropout); the teacher uses the first.")
flags.DEFINE_integer("teacher_steps", None, "Teacher training steps (default: the GLUE defaults' epochs).")
flags.DEFINE_integer("num_train_steps", None, "Student training steps, the same for every format.")
flags.DEFINE_integer("max_train_examples", None, "Use only the first N training examples (teacher and students).")
flags.DEFINE_integer("batch_size", None, "Batch size of every student (default: the GLUE QAT default).")
flags.DEFINE_float("learning_rate", None, "Student learning rate (default: the GLUE QAT default).")
flags.DEFINE_integer("max_seq_length", None, "Max tokens (default 64 for SST-2, 128 otherwise).")
flags.DEFINE_integer("eval_every_steps", None, "Evaluate every N steps (default: three times per run).")
flags.DEFINE_integer("jobs", 1, "Trainings run at once (students; teachers of different tasks also run together).")
flags.DEFINE_integer("run_timeout_s", None, "Kill a training after this many seconds (reported partial/missing).")
flags.DEFINE_integer("deadline_s", None, "Stop everything this many seconds after the start, then still collect "
                     "and write: killed runs report their last evaluation as partial.")
flags.DEFINE_string("workdir", "runs/formats", "Parent of the run directories and logs/.")
flags.DEFINE_string("results", "results/formats", "Output prefix of .md/.json/.png; empty: do not write them.")
flags.DEFINE_string("runs_json", None, "Also write the collected run records here (input of --from_runs).")
flags.DEFINE_string("from_runs", None, "Only write the results from this runs JSON (no training).")
flags.DEFINE_list("lm_runs", [], "LM runs JSONs (written by --lm_collect) to tabulate beside the GLUE runs (no "
                  "training); without --from_runs the GLUE part comes from <--results>.json.")
flags.DEFINE_string("lm_collect", None, "No training: read the experiments.lm run directories under this folder "
                    "(one --lm_setting: an FP32 teacher and its --formats x --seeds students) and write --runs_json.")
flags.DEFINE_string("lm_setting", "ptb_gpt2", "Name of the LM setting --lm_collect reads (its table column).")
flags.DEFINE_bool("collect_only", False, "No training: read the run directories under --workdir (named as this "
                  "command would name them) and write --runs_json / --results.")
flags.DEFINE_string("git_commit", None, "Commit to record when the tree has no .git.")
flags.DEFINE_string("setup", None, "Setup paragraph for the results file (default: generated from the flags).")
flags.DEFINE_string("gpu", None, "Device description for the results file.")


def parse_students(values: list[str]) -> list[format_zoo.Student]:
  out = []
  for v in values:
    bits, _, mode = v.partition(":")
    mode = mode or "sym"
    if bits not in policy_lib.PRESETS or bits == "fp32":
      raise app.UsageError(f"--formats: {bits!r} is not a quantized preset of {list(policy_lib.PRESETS[1:])}")
    try:
      policy_lib.make_policy(bits, symmetric=mode == "sym")
    except ValueError as e:
      raise app.UsageError(f"--formats={v}: {e}") from None
    if mode not in ("sym", "asym"):
      raise app.UsageError(f"--formats={v}: quant_mode must be sym or asym")
    out.append(format_zoo.Student(bits, mode, format_zoo.label_of(bits, mode)))
  return out


def _data_dir(task: str) -> str | None:
  if FLAGS.glue_dir is None or task == "synthetic":
    return None
  from int4jax.data import glue as glue_data  # pylint: disable=g-import-not-at-top
  path = os.path.join(FLAGS.glue_dir, glue_data.task_spec(task).tsv_dir)
  if not os.path.isdir(path):
    raise app.UsageError(f"--glue_dir={FLAGS.glue_dir!r} has no {os.path.basename(path)}/ folder for task {task}")
  return path


def glue_command(task: str, student: format_zoo.Student, seed: int, workdir: str, teacher: str | None) -> list[str]:
  """argv of the experiments.glue run for one (task, format, seed)."""
  steps = FLAGS.teacher_steps if teacher is None else FLAGS.num_train_steps
  args = [sys.executable, "-m", "experiments.glue", f"--task={task}", f"--model={FLAGS.model}",
          f"--bits={student.bits}", f"--quant_mode={student.quant_mode}", f"--seed={seed}", f"--workdir={workdir}"]
  optional = {"data_dir": _data_dir(task), "tokenizer": FLAGS.tokenizer, "teacher": teacher,
              "num_train_steps": steps, "max_train_examples": FLAGS.max_train_examples,
              "max_seq_length": FLAGS.max_seq_length, "git_commit": FLAGS.git_commit}
  if teacher is not None:
    optional.update(batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate)
  if steps:
    optional["eval_every_steps"] = FLAGS.eval_every_steps or max(1, steps // 3)
    optional["log_every_steps"] = max(1, steps // 6)
    optional["checkpoint_every_steps"] = steps  # latest/ once at the end (best/ still at every improvement)
  return args + [f"--{k}={v}" for k, v in optional.items() if v is not None]


def run_pool(commands: dict[str, list[str]], jobs: int, log_dir: str) -> dict[str, dict]:
  """Runs {name: argv} with at most `jobs` at once; returns {name: {"rc", "wall_s"}}; logs to log_dir/<name>.log."""
  os.makedirs(log_dir, exist_ok=True)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  if jobs > 1:
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  pending, running, done = list(commands.items()), {}, {}
  while pending or running:
    if _past_deadline():
      for name, _ in pending:
        done[name] = {"rc": None, "wall_s": 0.0, "timed_out": True}
      pending = []
    while pending and len(running) < jobs:
      name, argv = pending.pop(0)
      log = open(os.path.join(log_dir, f"{name}.log"), "w")
      running[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), log, time.time())
      print(f"started {name}", flush=True)
    time.sleep(0.5)
    for name, (proc, log, t0) in list(running.items()):
      timed_out = (FLAGS.run_timeout_s is not None and time.time() - t0 > FLAGS.run_timeout_s) or _past_deadline()
      if timed_out and proc.poll() is None:
        proc.kill()
      if proc.poll() is not None:
        log.close()
        done[name] = {"rc": proc.returncode, "wall_s": round(time.time() - t0, 1), "timed_out": timed_out}
        print(f"finished {name}: rc={proc.returncode} {done[name]['wall_s']} s", flush=True)
        del running[name]
  return done


_START = time.time()


def _past_deadline() -> bool:
  return FLAGS.deadline_s is not None and time.time() - _START > FLAGS.deadline_s


def train_all(students: list[format_zoo.Student], seeds: list[int]) -> dict[str, dict]:
  """Teachers (one per task), then every student; skips runs that already have summary.json."""
  root = os.path.abspath(FLAGS.workdir)
  finished = lambda name: os.path.isfile(os.path.join(root, name, "summary.json"))
  teachers = {format_zoo.run_name(t, format_zoo.TEACHER, None): t for t in FLAGS.tasks}
  status = run_pool({n: glue_command(t, format_zoo.TEACHER, seeds[0], os.path.join(root, n), None)
                     for n, t in teachers.items() if not finished(n)}, FLAGS.jobs, os.path.join(root, "logs"))
  for name in teachers:
    if not finished(name):
      print(f"teacher {name} did not finish (see {root}/logs/{name}.log); skipping its students", flush=True)
  commands = {}
  for seed in seeds:  # seed-major, so that with --jobs below the total every format of the first seed runs first
    for name, task in teachers.items():
      for st in students:
        n = format_zoo.run_name(task, st, seed)
        if finished(name) and not finished(n):
          commands[n] = glue_command(task, st, seed, os.path.join(root, n), os.path.join(root, name))
  status.update(run_pool(commands, FLAGS.jobs, os.path.join(root, "logs")))
  return status


def default_setup(seeds: list[int]) -> str:
  return (f"Model `{os.path.basename(os.path.normpath(FLAGS.model))}`; tasks {', '.join(FLAGS.tasks)}; one FP32 "
          f"teacher per task ({FLAGS.teacher_steps or 'default'} steps), students initialised from it and distilled "
          f"from it (GLUE QAT defaults: Logit + Att* + Rep, clip [-5, 5]) for {FLAGS.num_train_steps or 'default'} "
          f"steps each; seeds {seeds}; train examples: {FLAGS.max_train_examples or 'all'}.")


def _load_json(path: str, flag: str) -> dict:
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise app.UsageError(f"--{flag}={path}: no such file") from None
  except json.JSONDecodeError as e:
    raise app.UsageError(f"--{flag}={path} is not JSON: {e}") from None
  if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
    raise app.UsageError(f"--{flag}={path} has no \"runs\" list: not a runs JSON of experiments.formats")
  return data


def _flag_meta() -> dict:
  """--gpu / --setup, where given: they describe the runs this command reads."""
  return {k: v for k, v in (("gpu", FLAGS.gpu), ("setup", FLAGS.setup)) if v}


def read_lm_runs(paths: list[str]) -> dict | None:
  """--lm_runs files -> the LM part of the results ({"meta": {setting: meta}, "runs": records}), or None."""
  lm = None
  for path in paths:
    data = _load_json(path, "lm_runs")
    if any("setting" not in r for r in data["runs"]):
      raise app.UsageError(f"--lm_runs={path} holds records without a \"setting\": not an LM runs JSON "
                           "(--lm_collect writes those; GLUE runs JSONs go to --from_runs)")
    settings = list(dict.fromkeys(r["setting"] for r in data["runs"]))
    lm = format_zoo.merge_lm(lm, {"meta": {s: data.get("meta", {}) for s in settings}, "runs": data["runs"]})
  return lm


def _existing_results(prefix: str) -> dict:
  """The results JSON about to be rewritten ({} if none): the part this command does not replace is kept."""
  if not os.path.isfile(prefix + ".json"):
    return {}
  with open(prefix + ".json") as f:
    return json.load(f)


def write_tables(prefix: str, runs: list[dict], meta: dict, lm_new: dict | None, existing: dict) -> None:
  """<prefix>.json/.md/.png from the GLUE records and the LM part: `lm_new`'s settings over the existing file's."""
  try:
    paths = format_zoo.write_results(runs, prefix, meta, lm=format_zoo.merge_lm(existing.get("lm"), lm_new))
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  for p in paths:
    print(f"wrote {p}")


def tables_from_runs() -> None:
  """--from_runs / --lm_runs, no training. The GLUE part: --from_runs, else the existing <--results>.json's."""
  prefix = FLAGS.results or "results/formats"
  existing = _existing_results(prefix)
  if FLAGS.from_runs:
    data = _load_json(FLAGS.from_runs, "from_runs")
    if any("setting" in r for r in data["runs"]):
      raise app.UsageError(f"--from_runs={FLAGS.from_runs} is an LM runs JSON: pass it as --lm_runs")
    runs, meta = data["runs"], {**data.get("meta", {}), **_flag_meta()}
  else:
    runs, meta = existing.get("runs", []), existing.get("meta", {})
  write_tables(prefix, runs, meta, read_lm_runs(FLAGS.lm_runs), existing)


def run_meta(setup: str) -> dict:
  """What the results say about the command that collected the runs."""
  return {"setup": setup, "command": " ".join(["python -m experiments.formats"] + sys.argv[1:]), "gpu": FLAGS.gpu,
          "commit": FLAGS.git_commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write_runs_json(meta: dict, records: list[dict]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.runs_json)), exist_ok=True)
  with open(FLAGS.runs_json, "w") as f:
    json.dump({"meta": meta, "runs": records}, f, indent=1)
  print(f"wrote {FLAGS.runs_json}: {sum(r['status'] == 'ok' for r in records)} of {len(records)} runs finished")


def collect_lm(students: list[format_zoo.Student], seeds: list[int]) -> None:
  """--lm_collect: one LM setting's run directories -> its runs JSON (--runs_json), the input of --lm_runs."""
  if not FLAGS.runs_json:
    raise app.UsageError("--lm_collect writes --runs_json: pass --runs_json=<path>")
  if FLAGS.from_runs or FLAGS.lm_runs:
    raise app.UsageError("--lm_collect only writes --runs_json; tabulate it in a second call with --lm_runs")
  if not os.path.isdir(FLAGS.lm_collect):
    raise app.UsageError(f"--lm_collect={FLAGS.lm_collect}: no such folder")
  records = format_zoo.collect_lm(FLAGS.lm_collect, FLAGS.lm_setting, students, seeds)
  write_runs_json(run_meta(FLAGS.setup or format_zoo.lm_setup(records)), records)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  students = parse_students(FLAGS.formats)
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise app.UsageError(f"--seeds={FLAGS.seeds} must be integers") from None
  if FLAGS.lm_collect:
    return collect_lm(students, seeds)
  if FLAGS.from_runs or FLAGS.lm_runs:
    return tables_from_runs()
  if FLAGS.jobs < 1:
    raise app.UsageError(f"--jobs={FLAGS.jobs} must be >= 1")
  for task in FLAGS.tasks:
    _data_dir(task)
  t0 = time.time()
  status = {} if FLAGS.collect_only else train_all(students, seeds)
  names = [format_zoo.run_name(t, format_zoo.TEACHER, None) for t in FLAGS.tasks]
  names += [format_zoo.run_name(t, st, s) for t in FLAGS.tasks for st in students for s in seeds]
  records = [{**format_zoo.read_run(os.path.join(os.path.abspath(FLAGS.workdir), n)), "name": n,
              "process": status.get(n)} for n in names]
  meta = {**run_meta(FLAGS.setup or default_setup(seeds)), "wall_s": round(time.time() - t0, 1)}
  if FLAGS.runs_json:
    write_runs_json(meta, records)
  if FLAGS.results:
    write_tables(FLAGS.results, records, meta, None, _existing_results(FLAGS.results))


if __name__ == "__main__":
  app.run(main)
