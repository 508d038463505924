"""GPT-2 language modelling: FP teacher, then W4 / W4A8 / W4A4 QAT+KD students (paper Table 1 GPT-2 rows, Fig. C.2).

Paper (paper_spec.md §3.1): GPT2-base on PTB, FP32 teacher 19.31 ppl -> W4A4 sym 22.17 / asym 21.72, from a
pretrained GPT-2 fine-tuned on PTB, block 1024, 90 epochs, batch 8 x 4 GPUs. Offline we have no pretrained GPT-2, so
`--init=scratch` trains the teacher from random weights; real users pass `--init=<HF GPT-2 dir>`.

    # FP teacher (scratch) and a W4A4 student distilled from it:
    python -m experiments.lm --model=gpt2_base --init=scratch --bits=fp32 --dataset=ptb --workdir=runs/ptb_fp
    python -m experiments.lm --bits=w4a4 --teacher=runs/ptb_fp --dataset=ptb --workdir=runs/ptb_w4a4
    # the other students: --bits=w4a16 (W4-only), --bits=w4a8, --bits=w4a4 --nosymmetric (asym)

Defaults follow the paper's best GPT-2 setting (Table C.1): LM CE + Logit + Att* + Rep, dropout 0.05, clip [-1, 1],
LR 1e-4, batch 8, 90 epochs. `--weight_clip` clamps weights before quantization; the paper does not say which tensors
its clip applies to (paper_spec.md §1.5), and clamping LayerNorm outputs (unit variance) to [-1, 1] would change the
teacher's function, so activations are only clamped when `--act_clip` says so.

Every run directory holds train.py's files (config.json, command.txt, metrics.jsonl, checkpoints/{latest,best},
summary.json) plus results.json: the best checkpoint re-loaded and evaluated on valid and test in float32, with the
per-position negative log-likelihood sums that `experiments.lm_analysis --analysis=positional` plots. Re-running the
same command resumes from checkpoints/latest.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from int4jax.tasks import lm as lm_task
from int4jax.data import lm as lm_data
from int4jax.tasks.lm import BITS, LMRunConfig, run

# ------------------------------------------------------------------------------------------------------------------
# Flags

def define_flags() -> None:
  """Flags are defined only when run as a command, so tests can import several launchers."""
  flags.DEFINE_string("workdir", None, "Run directory (created; re-running resumes from its latest checkpoint).")
  flags.DEFINE_string("model", "gpt2_base", "GPT-2 preset for --init=scratch (gpt2_base, gpt2_medium, gpt2_tiny).")
  flags.DEFINE_integer("n_layer", None, "Override the preset's number of layers.")
  flags.DEFINE_integer("n_embd", None, "Override the preset's width.")
  flags.DEFINE_integer("n_head", None, "Override the preset's number of heads.")
  flags.DEFINE_integer("n_positions", None, "Override the preset's number of positions.")
  flags.DEFINE_string("init", "scratch", "'scratch' (random init) or a Hugging Face GPT-2 checkpoint directory.")
  flags.DEFINE_bool("post_ln", False, "Post-LN blocks instead of GPT-2's Pre-LN (paper §4).")
  flags.DEFINE_enum("dataset", "ptb", lm_data.DATASETS, "Corpus.")
  flags.DEFINE_string("data_dir", None, "Folder with ptb.{train,valid,test}.txt or wiki.{train,valid,test}.tokens; "
                      "without it the `datasets` hub copy is used.")
  flags.DEFINE_string("tokenizer", "gpt2", "Tokenizer directory or name (int4jax.tokenizers.load_tokenizer).")
  flags.DEFINE_integer("block_size", 1024, "Tokens per block (training and evaluation).")
  flags.DEFINE_integer("eval_stride", None, "Sliding-window evaluation stride (default: non-overlapping blocks).")
  flags.DEFINE_enum("bits", "fp32", BITS, "Quantization preset: fp32 teacher; w4a16 = W4-only; w4a8; w4a4; ...")
  flags.DEFINE_bool("symmetric", True, "Symmetric quantization (--nosymmetric: asymmetric).")
  flags.DEFINE_integer("weight_group_size", None, "Weight groups along K (default: one scale per output channel).")
  flags.DEFINE_string("weight_clip", "-1,1", "Clamp weights to lo,hi before quantization ('none' to disable).")
  flags.DEFINE_string("act_clip", "none", "Clamp GEMM inputs to lo,hi before quantization ('none' to disable).")
  flags.DEFINE_string("teacher", None, "Workdir of the FP teacher run (students start from and distill from it).")
  flags.DEFINE_list("loss_terms", None, f"Subset of {lm_task.LM_LOSS_TERMS}; default gt (teacher) or all four.")
  flags.DEFINE_float("dropout", 0.05, "Residual, embedding and attention dropout.")
  flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate (AdamW, linear warmup and decay).")
  flags.DEFINE_integer("batch_size", 8, "Global batch size in blocks.")
  flags.DEFINE_integer("num_train_steps", None, "Training steps (overrides --num_epochs).")
  flags.DEFINE_float("num_epochs", 90.0, "Epochs over the training blocks.")
  flags.DEFINE_integer("warmup_steps", None, "Warmup steps (default 5% of the steps).")
  flags.DEFINE_float("weight_decay", 0.01, "AdamW weight decay (matrices only).")
  flags.DEFINE_integer("eval_every_steps", 1000, "Validate (and checkpoint) every this many steps.")
  flags.DEFINE_integer("log_every_steps", 50, "Log training metrics every this many steps.")
  flags.DEFINE_integer("eval_batch_size", 8, "Evaluation batch size.")
  flags.DEFINE_enum("compute_dtype", "float32", ("float32", "bfloat16"), "Training compute dtype.")
  flags.DEFINE_integer("seed", 42, "Seed for init, data order and dropout.")
  flags.DEFINE_float("time_budget_s", None, "Stop training after this many seconds and evaluate the best checkpoint.")
  flags.DEFINE_integer("max_steps_this_run", None, "Stop after this many steps (checkpointed; rerun to resume).")
  flags.DEFINE_string("cache_dir", None, "Folder for tokenized corpora (.npy), reused across runs.")


def parse_clip(value: str | None, flag: str) -> tuple[float, float] | None:
  if value is None or value.strip().lower() in ("", "none"):
    return None
  try:
    lo, hi = (float(v) for v in value.split(","))
  except ValueError:
    raise ValueError(f"--{flag}={value!r} must be 'lo,hi' (e.g. -1,1) or 'none'") from None
  return lo, hi


def config_from_flags(f=flags.FLAGS) -> LMRunConfig:
  if not f.workdir:
    raise ValueError("--workdir is required")
  return LMRunConfig(
      workdir=f.workdir, model=f.model, n_layer=f.n_layer, n_embd=f.n_embd, n_head=f.n_head,
      n_positions=f.n_positions, init=f.init, post_ln=f.post_ln, dataset=f.dataset, data_dir=f.data_dir,
      tokenizer=f.tokenizer, block_size=f.block_size, eval_stride=f.eval_stride, bits=f.bits,
      symmetric=f.symmetric, weight_group_size=f.weight_group_size,
      weight_clip=parse_clip(f.weight_clip, "weight_clip"), act_clip=parse_clip(f.act_clip, "act_clip"),
      teacher=f.teacher, loss_terms=tuple(f.loss_terms) if f.loss_terms else None, dropout=f.dropout,
      learning_rate=f.learning_rate, batch_size=f.batch_size, num_train_steps=f.num_train_steps,
      num_epochs=f.num_epochs, warmup_steps=f.warmup_steps, weight_decay=f.weight_decay,
      eval_every_steps=f.eval_every_steps, log_every_steps=f.log_every_steps, eval_batch_size=f.eval_batch_size,
      compute_dtype=f.compute_dtype, seed=f.seed, time_budget_s=f.time_budget_s,
      max_steps_this_run=f.max_steps_this_run, cache_dir=f.cache_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  run(config_from_flags(), sys.argv)


if __name__ == "__main__":
  define_flags()
  app.run(main)
