"""BART summarization: FP fine-tune, W4A4 QAT+KD students, layer-reduced students, BART denoising pretraining.

Paper (Table 1, Table 3): BART-base/large W4A4 on XSum / CNN-DailyMail within about one ROUGE point of FP; layer
reduction (6+3, 6+2, 6+1, 3+3 encoder+decoder layers) composes with W4A4. The logic is int4jax/tasks/summarization.py.

    # FP fine-tune from a Hugging Face BART (or a preset from scratch, or --init=<denoising run>):
    python -m experiments.summarize --model=/ckpt/bart-base --dataset=xsum --workdir=runs/xsum_fp
    # W4A4 QAT + KD (logits + Att* on encoder self/decoder self/cross attention + Rep on both stacks):
    python -m experiments.summarize --teacher=runs/xsum_fp --bits=w4a4 --workdir=runs/xsum_w4a4
    # layer reduction 6+3 with W4A4: decoder layers 0, 2, 5 of the teacher (DQ-BART's map, also the default)
    python -m experiments.summarize --teacher=runs/xsum_fp --bits=w4a4 --decoder_layer_map=0,2,5 --workdir=...
    # BART denoising pretraining (text infilling + sentence permutation) on text files + the XSum train part:
    python -m experiments.summarize --objective=denoise --model=bart_base --arch=d_model=256,encoder_layers=6 \\
        --text_files=ptb.train.txt --data_dir=xsum/test_subset1000.jsonl --workdir=runs/denoise

`--data_dir` is a JSON-lines file or folder (document/summary fields; a single file is split deterministically by
--heldout_fraction/--split_seed); without it `datasets` is used. The evaluation after training reloads the best
checkpoint (lowest held-out loss) and beam-decodes the held-out part (--num_beams, --length_penalty,
--no_repeat_ngram_size, --min_length, --max_gen_length), scoring ROUGE-1/2/L/Lsum; results.json also holds the
per-position loss that `python -m experiments.lm_analysis --analysis=positional --runs=fp=...,w4a4=...` plots.
Re-running a command resumes from checkpoints/latest.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from int4jax.data import summarization as sum_data
from int4jax.tasks import summarization as task_lib


def define_flags() -> None:
  """Flags are defined only when run as a command, so tests can import several launchers."""
  flags.DEFINE_string("workdir", None, "Run directory (created; re-running resumes from its latest checkpoint).")
  flags.DEFINE_string("model", "bart_base", "BART preset (random init) or a Hugging Face BART directory.")
  flags.DEFINE_string("init", None, "An experiments.summarize run to start from (e.g. a denoising pretraining).")
  flags.DEFINE_list("arch", [], "Preset overrides name=int, e.g. d_model=256,encoder_layers=6,decoder_ffn_dim=1024.")
  flags.DEFINE_enum("objective", "summarize", task_lib.OBJECTIVES, "summarize, or BART's denoising pretraining.")
  flags.DEFINE_enum("dataset", "xsum", sorted(sum_data.DATASETS), "Summarization dataset.")
  flags.DEFINE_string("data_dir", None, "JSON-lines file or folder (see the module docstring).")
  flags.DEFINE_list("text_files", [], "Denoising: text files, one sentence per line.")
  flags.DEFINE_float("heldout_fraction", 0.1, "Held-out part of a single-split --data_dir.")
  flags.DEFINE_integer("split_seed", 0, "Seed of that split.")
  flags.DEFINE_string("tokenizer", "gpt2", "Tokenizer (the GPT-2 BPE gets BART's <s> <pad> </s> <mask>).")
  flags.DEFINE_integer("source_max_len", None, "Source tokens (default: 1024).")
  flags.DEFINE_integer("target_max_len", None, "Summary tokens (default: 128 XSum, 142 CNN/DM).")
  flags.DEFINE_enum("bits", "fp32", task_lib.BITS, "Quantization preset.")
  flags.DEFINE_bool("symmetric", True, "Symmetric quantization (--nosymmetric: asymmetric).")
  flags.DEFINE_string("weight_clip", "-1,1", "Clamp weights to lo,hi before quantization ('none' to disable).")
  flags.DEFINE_string("act_clip", "none", "Clamp GEMM inputs to lo,hi before quantization ('none' to disable).")
  flags.DEFINE_string("teacher", None, "FP teacher run (students start from it and distill from it).")
  flags.DEFINE_list("loss_terms", None, f"Subset of {task_lib.LOSS_TERMS}; default gt, or logit,att,rep with a "
                    "teacher.")
  flags.DEFINE_list("encoder_layer_map", None, "Student encoder layer i <- teacher layer map[i] (layer reduction).")
  flags.DEFINE_list("decoder_layer_map", None, "Student decoder layer i <- teacher layer map[i] (layer reduction).")
  flags.DEFINE_float("dropout", 0.1, "Dropout (hidden, attention, activation).")
  flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate (linear warmup and decay; Table C.1 BART-base).")
  flags.DEFINE_integer("batch_size", 16, "Global batch size (Table C.1 BART-base).")
  flags.DEFINE_integer("num_train_steps", None, "Steps (default: --num_epochs).")
  flags.DEFINE_float("num_epochs", 20.0, "Epochs when --num_train_steps is not given (Table C.1 BART-base).")
  flags.DEFINE_integer("warmup_steps", None, "Warmup steps (default 5%, DQ-BART's warmup ratio).")
  flags.DEFINE_float("weight_decay", 0.0, "AdamW weight decay (DQ-BART: 0).")
  flags.DEFINE_integer("eval_every_steps", 500, "Held-out loss every N steps (picks the best checkpoint).")
  flags.DEFINE_integer("checkpoint_every_steps", None, "Save latest/ every N steps (default: at every evaluation).")
  flags.DEFINE_integer("log_every_steps", 50, "Training metrics every N steps.")
  flags.DEFINE_integer("eval_batch_size", 32, "Evaluation and decoding batch size.")
  flags.DEFINE_enum("compute_dtype", "float32", ("float32", "bfloat16"), "Training compute dtype.")
  flags.DEFINE_integer("seed", 42, "Seed.")
  flags.DEFINE_integer("num_beams", None, "Beams for the evaluation decode (1 = greedy). Defaults of this and the "
                       "next three: DQ-BART's, XSum 6 beams, penalty 1.0, max 62, min 11; CNN/DM 4, 2.0, 142, 56.")
  flags.DEFINE_float("length_penalty", None, "Beam score = sum log p / length ** length_penalty.")
  flags.DEFINE_integer("min_length", None, "Minimum summary length in tokens (decoder start included, as HF).")
  flags.DEFINE_integer("max_gen_length", None, "Maximum generated length in tokens (decoder start included).")
  flags.DEFINE_integer("no_repeat_ngram_size", 3, "Ban repeated n-grams (0 = off).")
  flags.DEFINE_integer("eval_examples", None, "Beam-decode only the first N held-out examples.")
  flags.DEFINE_float("time_budget_s", None, "Stop training after this many seconds (best checkpoint evaluated).")
  flags.DEFINE_integer("max_steps_this_run", None, "Stop after N steps with a checkpoint (resume later).")


def _ints(values, flag):
  if not values:
    return None
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ValueError(f"--{flag}={','.join(values)} must be comma-separated integers") from None


def _arch(values):
  out = []
  for item in values:
    name, _, value = item.partition("=")
    if name not in task_lib._ARCH_FIELDS or not value.strip().isdigit():  # pylint: disable=protected-access
      raise ValueError(f"--arch item {item!r} must be name=int with name in "
                       f"{task_lib._ARCH_FIELDS}")  # pylint: disable=protected-access
    out.append((name, int(value)))
  return tuple(out)


def parse_clip(value: str | None, flag: str) -> tuple[float, float] | None:
  if value is None or value.strip().lower() in ("", "none"):
    return None
  try:
    lo, hi = (float(v) for v in value.split(","))
  except ValueError:
    raise ValueError(f"--{flag}={value!r} must be 'lo,hi' (e.g. -1,1) or 'none'") from None
  return lo, hi


def config_from_flags(f=flags.FLAGS) -> task_lib.SummarizationRunConfig:
  if not f.workdir:
    raise ValueError("--workdir is required")
  return task_lib.SummarizationRunConfig(
      workdir=f.workdir, model=f.model, init=f.init, arch=_arch(f.arch), objective=f.objective, dataset=f.dataset,
      data_dir=f.data_dir, text_files=tuple(f.text_files), heldout_fraction=f.heldout_fraction,
      split_seed=f.split_seed, tokenizer=f.tokenizer, source_max_len=f.source_max_len,
      target_max_len=f.target_max_len, bits=f.bits, symmetric=f.symmetric,
      weight_clip=parse_clip(f.weight_clip, "weight_clip"), act_clip=parse_clip(f.act_clip, "act_clip"),
      teacher=f.teacher, loss_terms=tuple(f.loss_terms) if f.loss_terms else None,
      encoder_layer_map=_ints(f.encoder_layer_map, "encoder_layer_map"),
      decoder_layer_map=_ints(f.decoder_layer_map, "decoder_layer_map"), dropout=f.dropout,
      learning_rate=f.learning_rate, batch_size=f.batch_size, num_train_steps=f.num_train_steps,
      num_epochs=f.num_epochs, warmup_steps=f.warmup_steps, weight_decay=f.weight_decay,
      eval_every_steps=f.eval_every_steps, checkpoint_every_steps=f.checkpoint_every_steps,
      log_every_steps=f.log_every_steps, eval_batch_size=f.eval_batch_size,
      compute_dtype=f.compute_dtype, seed=f.seed, num_beams=f.num_beams, length_penalty=f.length_penalty,
      no_repeat_ngram_size=f.no_repeat_ngram_size, min_length=f.min_length, max_gen_length=f.max_gen_length,
      eval_examples=f.eval_examples, time_budget_s=f.time_budget_s, max_steps_this_run=f.max_steps_this_run)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  task_lib.run(config_from_flags(), ["python -m experiments.summarize"] + sys.argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
