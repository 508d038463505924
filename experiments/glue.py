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

Without --bits the launcher runs both stages (fp32 teacher into <workdir>/fp32, then w4a4 into <workdir>/w4a4).
Defaults per model and task come from the paper's Table C.1 (see int4jax/glue_task.py); every flag overrides.
Running the same command again resumes from <workdir>/checkpoints/latest. Reload the best checkpoint with
`python -m experiments.eval --workdir=<workdir>`.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("task", "synthetic", "GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) or synthetic.")
flags.DEFINE_string("model", "bert_tiny", "Model preset (bert_tiny, bert_base, bert_large) or HF checkpoint dir.")
flags.DEFINE_string("bits", None, "Policy preset: fp32 (teacher), w8a8, w4a8, w4a4, w4a16, w8a16. Unset: fp32 "
                    "teacher then w4a4 student.")
flags.DEFINE_enum("quant_mode", "sym", ["sym", "asym"], "Symmetric or asymmetric quantization.")
flags.DEFINE_string("teacher", None, "Workdir of the fp32 run of the same task (required when --bits is quantized).")
flags.DEFINE_string("data_dir", None, "GLUE TSV folder or a `datasets.save_to_disk` folder; unset: "
                    "datasets.load_dataset('glue', task).")
flags.DEFINE_string("workdir", None, "Run directory (default runs/glue/<task>_<model>[_<bits>]).")
flags.DEFINE_string("tokenizer", None, "Tokenizer dir/name (default: the model dir, else bert-base-uncased).")
flags.DEFINE_list("kd_losses", None, "KD loss terms: logit, att (pre-softmax Att*), rep (hidden states incl. "
                  "embeddings), gt (ground truth). Default: fp32 gt; quantized logit,att,rep.")
flags.DEFINE_string("clip", None, "Pre-quantization clip 'lo,hi' for weights and activations, or 'none' "
                    "(default for quantized runs: -5,5, Table C.1).")
flags.DEFINE_integer("weight_group_size", None, "Weight groups along K (default: one scale per output channel).")
flags.DEFINE_list("gemms", None, "GEMM types to quantize (qkv, attn_out, ffn_in, ffn_out); default all.")
flags.DEFINE_float("num_epochs", None, "Training epochs (Table C.1 / C.4 default per task).")
flags.DEFINE_integer("num_train_steps", None, "Training steps; overrides --num_epochs.")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_integer("eval_batch_size", None, "Eval batch size.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate.")
flags.DEFINE_float("warmup_ratio", None, "Fraction of steps of linear warmup.")
flags.DEFINE_integer("max_seq_length", None, "Max tokens (default 64 for CoLA/SST-2, 128 otherwise).")
flags.DEFINE_integer("eval_every_steps", None, "Evaluate (and checkpoint) every N steps.")
flags.DEFINE_integer("log_every_steps", None, "Log train metrics every N steps.")
flags.DEFINE_integer("checkpoint_every_steps", None, "Save latest/ every N steps (default: at each evaluation).")
flags.DEFINE_enum("compute_dtype", None, ["float32", "bfloat16"], "Compute dtype (master weights stay fp32).")
flags.DEFINE_float("dropout", None, "Dropout for hidden and attention (default: the model's).")
flags.DEFINE_integer("max_train_examples", None, "Use only the first N training examples.")
flags.DEFINE_integer("seed", None, "Seed (default 42, as the paper).")
flags.DEFINE_string("git_commit", None, "Commit to record in command.txt when the tree has no .git.")


def _clip(value: str | None):
  if value is None:
    return {}
  if value.lower() == "none":
    return {"weight_clip": "none", "act_clip": "none"}
  try:
    lo, hi = (float(v) for v in value.split(","))
  except ValueError:
    raise app.UsageError(f"--clip={value!r} must be 'lo,hi' or 'none'") from None
  if lo >= hi:
    raise app.UsageError(f"--clip={value!r}: lo must be below hi")
  return {"weight_clip": (lo, hi), "act_clip": (lo, hi)}


def _overrides() -> dict:
  names = ("tokenizer", "weight_group_size", "num_epochs", "num_train_steps", "batch_size", "eval_batch_size",
           "learning_rate", "warmup_ratio", "max_seq_length", "eval_every_steps", "log_every_steps",
           "checkpoint_every_steps", "compute_dtype", "dropout", "max_train_examples", "seed")
  o = {n: getattr(FLAGS, n) for n in names}
  if FLAGS.kd_losses:
    o["loss_terms"] = tuple(FLAGS.kd_losses)
  if FLAGS.gemms:
    o["gemms"] = tuple(FLAGS.gemms)
  o.update(_clip(FLAGS.clip))
  return o


def run_one(bits: str, workdir: str, teacher: str | None) -> dict:
  from int4jax.tasks import glue as glue_task  # pylint: disable=g-import-not-at-top  (flags parse before jax starts)
  cfg = glue_task.resolve_config(FLAGS.task, FLAGS.model, bits, quant_mode=FLAGS.quant_mode, teacher=teacher,
                                 data_dir=FLAGS.data_dir, **_overrides())
  exp = glue_task.build_experiment(cfg)
  return glue_task.run(exp, workdir, argv=sys.argv, git_commit=FLAGS.git_commit)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every file it writes at INFO
    logging.set_verbosity(logging.WARNING)
  model_tag = os.path.basename(os.path.normpath(FLAGS.model))
  base = FLAGS.workdir or os.path.join("runs", "glue", f"{FLAGS.task.lower()}_{model_tag}")
  if FLAGS.bits is not None:
    workdir = FLAGS.workdir or f"{base}_{FLAGS.bits}_{FLAGS.quant_mode}"
    run_one(FLAGS.bits, workdir, FLAGS.teacher)
    return
  if FLAGS.teacher:
    raise app.UsageError("--teacher needs --bits (the two-stage default trains its own teacher)")
  teacher_dir, student_dir = os.path.join(base, "fp32"), os.path.join(base, f"w4a4_{FLAGS.quant_mode}")
  teacher = run_one("fp32", teacher_dir, None)
  student = run_one("w4a4", student_dir, teacher_dir)
  name = teacher["metric_name"]
  gap = student["best"][name] - teacher["best"][name]
  print(f"\n{FLAGS.task}: FP32 teacher {name} {teacher['best'][name]:.2f} | W4A4 {FLAGS.quant_mode} student "
        f"{student['best'][name]:.2f} ({gap:+.2f}) | runs in {base}", flush=True)


if __name__ == "__main__":
  app.run(main)
