"""GLUE QAT + KD (paper Table 1 / C.5 rows for BERT): FP32 teacher, then a quantized student distilled from it.

Embedded default (CPU, no downloads, ~3 min on 2 cores): a 2-layer bert_tiny on the project's synthetic task,
FP32 teacher then a W4A4 symmetric student, printing both accuracies:

    python -m experiments.glue                      # == --model=bert_tiny --task=synthetic

Paper setting (BERT-base W4A4 on MNLI; the paper reports 84.20/84.67 -> 84.31/84.48 sym; paper_spec §3.1):

    python -m experiments.glue --task=mnli --model=<HF BERT-base dir> --bits=fp32 --workdir=runs/mnli_fp32
    python -m experiments.glue --task=mnli --model=<HF BERT-base dir> --bits=w4a4 --teacher=runs/mnli_fp32 \
        --workdir=runs/mnli_w4a4

Our real run (results/glue_sst2_minilm.md): all-MiniLM-L6-v2 on SST-2 from TSV files:

    python -m experiments.glue --task=sst2 --model=$MINILM --data_dir=../shared/data/glue/SST-2 --bits=fp32 \
        --workdir=runs/sst2_fp32
    python -m experiments.glue --task=sst2 --model=$MINILM --data_dir=../shared/data/glue/SST-2 --bits=w4a4 \
        --quant_mode=asym --teacher=runs/sst2_fp32 --workdir=runs/sst2_w4a4_asym

Composability (issue 14, results/composability.md): W4A4 + 2:4 sparsity (N kept of M along K; --prune=static
from the teacher's |W| or movement, --order=pq prune-then-quantize or qp), 75% as --sparsity=1:4, FFN only as
--sparsity=2:4@ffn, and a 3-layer student of a 6-layer teacher (teacher layers 1, 3, 5, or --layer_map):

    python -m experiments.glue --task=sst2 --model=$MINILM --bits=w4a4 --teacher=runs/sst2_fp32 \
        --sparsity=2:4 --prune=static --order=pq --workdir=runs/sst2_w4a4_2of4
    python -m experiments.glue --task=sst2 --model=$MINILM --bits=w4a4 --teacher=runs/sst2_fp32 --num_layers=3 \
        --workdir=runs/sst2_w4a4_l3

The design card's command, `python -m experiments.glue --model=bert_base --bits=w4a4`, runs as written: a quantized
run without --teacher first trains (or reuses, when it is already done) its FP32 teacher in <workdir>/teacher and
says so. Without --bits the launcher runs both stages (fp32 teacher into <workdir>/fp32, then w4a4 into
<workdir>/w4a4_<mode>).
The paper's recipe for small tasks (Table C.4 Budget-A with TinyBERT-style augmentation; int4jax/data/augment.py),
three seeds reported as mean ± std (each in <workdir>/seed<s>):

    python -m experiments.glue --task=mrpc --model=$MINILM --data_dir=../shared/data/glue/MRPC --bits=w4a4 \
        --teacher=runs/mrpc_fp32 --budget=A --augment=20 --seeds=1,2,3 --workdir=runs/mrpc_w4a4_aug

Every run uses JAX's persistent compilation cache (--jax_cache_dir, default ~/.cache/int4jax/jax), so a second
run of the same shapes skips compilation; start-up (process start to the first finished step) goes to
<workdir>/startup.json. The whole table: experiments/glue_suite.py.

Defaults per model and task come from the paper's Table C.1 (see int4jax/tasks/glue.py); every flag overrides.
Running the same command again resumes from <workdir>/checkpoints/latest; a different command in the same workdir
is refused (naming the differing keys) unless --overwrite. Reload the best checkpoint with
`python -m experiments.eval --workdir=<workdir>` (add --data_dir/--split to evaluate another labelled file).
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags, logging

PROCESS_START = time.time()

from experiments import flags as common

FLAGS = flags.FLAGS
QUANTIZED_DEFAULT = "w4a4"


def define_flags() -> None:
  from int4jax.quant.policy import PRESETS  # pylint: disable=g-import-not-at-top
  common.define_common(model_help="Model preset (bert_tiny, bert_base, bert_large) or HF checkpoint dir.",
                       bits_choices=list(PRESETS), default_model="bert_tiny")
  flags.DEFINE_string("task", "synthetic", "GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) or "
                      "synthetic.")
  flags.DEFINE_integer("max_seq_length", None, "Max tokens (default 64 for CoLA/SST-2, 128 otherwise).")
  flags.DEFINE_integer("max_train_examples", None, "Use only the first N training examples.")
  flags.DEFINE_enum("budget", None, ["A", "B", "C", "a", "b", "c"], "Students: epochs of Table C.4's "
                    "Budget-A/B/C for the task (instead of --num_epochs).")
  flags.DEFINE_integer("augment", None, "Students: N TinyBERT-style augmented copies per train example, labelled "
                       "by the teacher (int4jax/data/augment.py); 0 = off.")
  flags.DEFINE_string("augment_cache", None, "Augmentation cache folder or .jsonl.gz file (default "
                      "$INT4JAX_CACHE/augment or ~/.cache/int4jax/augment).")
  flags.DEFINE_enum("qat", None, ["int4jax", "qwix"], "Quantizer of the student: int4jax's policy (default) or "
                    "Qwix's QAT on the same GEMMs (int4 per-channel weights, per-token activations; needs qwix).")
  flags.DEFINE_list("seeds", None, "Run once per seed into <workdir>/seed<s>; report mean and std (e.g. 1,2,3).")
  common.define_jax_cache_dir()
  flags.DEFINE_string("sparsity", None, "N:M sparsity of the student's quantized weights along K, N kept of M: "
                      "2:4 (50%), 1:4 (75%); optionally scoped, e.g. 2:4@ffn (scopes: all, ffn, attn, a GEMM type).")
  flags.DEFINE_enum("prune", None, ["static", "movement"], "Masks from the teacher's |W| (fixed) or movement "
                    "pruning (starts from the same magnitude mask, scores W^2/2 that follow the optimizer's steps, "
                    "mask recomputed every --mask_update_every steps; int4jax/quant/sparsity.py).")
  flags.DEFINE_enum("order", None, ["pq", "qp"], "pq: prune then quantize (scales of the pruned weight); qp: "
                    "quantize then prune.")
  flags.DEFINE_integer("mask_update_every", None, "Movement pruning: steps between mask recomputations "
                       "(default 100).")
  flags.DEFINE_integer("num_layers", None, "Encoder layers of a layer-reduced student (default: the teacher's).")
  flags.DEFINE_list("layer_map", None, "Teacher layer of each student layer, 0-based, e.g. 1,3,5 (default: "
                    "uniform, ending on the teacher's last layer).")
  flags.DEFINE_bool("prepare_only", False, "Students: build the run (data, teacher, the --augment cache) and exit "
                    "before training, so that runs started later find the augmentation cache built.")


STUDENT_ONLY = ("sparsity", "prune", "order", "mask_update_every", "num_layers", "layer_map")


def task_overrides() -> dict:
  o = common.common_overrides()
  o.update(max_seq_length=FLAGS.max_seq_length, max_train_examples=FLAGS.max_train_examples, budget=FLAGS.budget,
           augment=FLAGS.augment, augment_cache=FLAGS.augment_cache, qat=FLAGS.qat)
  o.update({n: getattr(FLAGS, n) for n in STUDENT_ONLY if n != "layer_map"})
  if FLAGS.layer_map:
    try:
      o["layer_map"] = tuple(int(i) for i in FLAGS.layer_map)
    except ValueError:
      raise app.UsageError(f"--layer_map={','.join(FLAGS.layer_map)} must be comma-separated integers") from None
  return o


def resolve(bits: str, teacher: str | None):
  from int4jax.tasks import glue as glue_task  # pylint: disable=g-import-not-at-top  (flags parse before jax starts)
  o = task_overrides()
  if bits == "fp32" and FLAGS.bits != "fp32":  # the two-stage default's teacher: dense and full depth
    o = {k: v for k, v in o.items() if k not in STUDENT_ONLY}
  o.pop("bits"), o.pop("teacher")
  quant_mode = o.pop("quant_mode") or "sym"
  data_dir = o.pop("data_dir")
  return glue_task.resolve_config(FLAGS.task, FLAGS.model, bits, quant_mode=quant_mode, teacher=teacher,
                                  data_dir=data_dir, **o)


def run_one(cfg, workdir: str, *, overwrite: bool = False, keep: tuple[str, ...] = (),
            max_steps_this_run: int | None = None) -> dict:
  from int4jax.tasks import glue as glue_task  # pylint: disable=g-import-not-at-top
  from int4jax.train import rundir  # pylint: disable=g-import-not-at-top
  with common.usage_errors():
    rundir.RunDir(workdir).prepare(glue_task.run_config_section(cfg), overwrite=overwrite,
                                   runtime_keys=cfg.RUNTIME_KEYS, keep=keep)
    exp = glue_task.build_experiment(cfg)
  if FLAGS.prepare_only:
    print(f"prepared {workdir} ({exp.train_source.num_examples} train examples); not trained", flush=True)
    return {}
  result = glue_task.run(exp, workdir, argv=sys.argv, git_commit=FLAGS.git_commit,
                         max_steps_this_run=max_steps_this_run)
  _write_startup(workdir, result)
  return result


_CACHE_DIR = [None]


def _write_startup(workdir: str, result: dict) -> None:
  """<workdir>/startup.json: process start -> first finished train step (imports, data, model, compilation)."""
  if not result.get("first_step_at") or os.path.isfile(os.path.join(workdir, "startup.json")):
    return
  startup = {"process_to_first_step_s": result["first_step_at"] - PROCESS_START,
             "loop_to_first_step_s": result.get("first_step_s"), "jax_cache_dir": _CACHE_DIR[0]}
  with open(os.path.join(workdir, "startup.json"), "w") as f:
    json.dump(startup, f, indent=2)
  print(f"start-up: {startup['process_to_first_step_s']:.1f}s from process start to the first finished train step, "
        f"{startup['loop_to_first_step_s']:.1f}s of it in the training loop (compile cache: {_CACHE_DIR[0]})",
        flush=True)


def run_seeds(bits: str, workdir: str, teacher: str | None) -> None:
  """One run per --seeds value into <workdir>/seed<s>; prints mean and std of the best-on-dev metrics."""
  from int4jax.tasks import glue_suite  # pylint: disable=g-import-not-at-top
  with common.usage_errors():
    seeds = glue_suite.parse_seeds(FLAGS.seeds)
  if FLAGS.seed is not None:
    raise app.UsageError("give either --seed or --seeds")
  results = []
  for seed in seeds:
    FLAGS.seed = seed
    with common.usage_errors():
      cfg = resolve(bits, teacher)
    results.append(run_one(cfg, os.path.join(workdir, f"seed{seed}"), overwrite=FLAGS.overwrite))
  FLAGS.seed = None
  if FLAGS.prepare_only:
    return
  stats = {n: glue_suite.mean_std([r["best"][n] for r in results]) for n in results[0]["best"]}
  print(f"\n{FLAGS.task} {bits} ({FLAGS.quant_mode or 'sym'}) over seeds {list(seeds)}, best dev checkpoint per "
        "seed: " + ", ".join(f"{n} {s['mean']:.2f} ± {s['std']:.2f}" for n, s in stats.items()), flush=True)


def _finished(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, "summary.json"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every file it writes at INFO
    logging.set_verbosity(logging.WARNING)
  common.init_distributed()
  common.apply_deprecated()
  from int4jax.train import compile_cache  # pylint: disable=g-import-not-at-top
  _CACHE_DIR[0] = compile_cache.enable(FLAGS.jax_cache_dir)
  mode = FLAGS.quant_mode or "sym"
  model_tag = os.path.basename(os.path.normpath(FLAGS.model))
  base = FLAGS.workdir or os.path.join("runs", "glue", f"{FLAGS.task.lower()}_{model_tag}")
  if FLAGS.bits is not None and (FLAGS.bits == "fp32" or FLAGS.teacher):
    workdir = FLAGS.workdir or f"{base}_{FLAGS.bits}_{mode}"
    if FLAGS.seeds:
      run_seeds(FLAGS.bits, workdir, FLAGS.teacher)
      return
    with common.usage_errors():
      cfg = resolve(FLAGS.bits, FLAGS.teacher)
    run_one(cfg, workdir, overwrite=FLAGS.overwrite, max_steps_this_run=FLAGS.max_steps_this_run)
    return
  if FLAGS.prepare_only:
    raise app.UsageError("--prepare_only needs --bits and --teacher (the student whose data to prepare)")
  if FLAGS.max_steps_this_run is not None:
    raise app.UsageError("--max_steps_this_run needs a single stage (--bits=fp32, or --bits with --teacher)")
  if FLAGS.seeds:
    raise app.UsageError("--seeds needs --bits and --teacher (one configuration, several seeds)")
  if FLAGS.teacher:
    raise app.UsageError("--teacher needs --bits (the two-stage default trains its own teacher)")
  # Two stages: an FP32 teacher (trained here, or reused when its run directory is complete), then the student.
  bits = FLAGS.bits or QUANTIZED_DEFAULT
  if FLAGS.bits:  # the design card's `--bits=w4a4` without --teacher: the teacher lives in the run directory
    student_dir = FLAGS.workdir or f"{base}_{bits}_{mode}"
    teacher_dir = os.path.join(student_dir, "teacher")
  else:
    teacher_dir, student_dir = os.path.join(base, "fp32"), os.path.join(base, f"{bits}_{mode}")
  with common.usage_errors():
    teacher_cfg = resolve("fp32", None)
    resolve(bits, teacher_dir)   # the student's flag errors surface before the teacher trains
  if _finished(teacher_dir) and not FLAGS.overwrite:
    print(f"FP32 teacher: reusing the finished run in {teacher_dir}", flush=True)
    with open(os.path.join(teacher_dir, "summary.json")) as f:
      teacher = json.load(f)
  else:
    print(f"FP32 teacher: no --teacher given, training one in {teacher_dir} first", flush=True)
    teacher = run_one(teacher_cfg, teacher_dir, overwrite=FLAGS.overwrite)
  with common.usage_errors():
    student_cfg = resolve(bits, teacher_dir)
  student = run_one(student_cfg, student_dir, overwrite=FLAGS.overwrite, keep=("teacher",))
  name = teacher["metric_name"]
  gap = student["best"][name] - teacher["best"][name]
  print(f"\n{FLAGS.task}: FP32 teacher {name} {teacher['best'][name]:.2f} | {bits.upper()} {mode} student "
        f"{student['best'][name]:.2f} ({gap:+.2f}) | runs in {base if not FLAGS.bits else student_dir}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
