"""BART summarization: FP fine-tune, W4A4 QAT+KD students, layer-reduced students, BART denoising pretraining.

Paper (Table 1, Table 3): BART-base/large W4A4 on XSum / CNN-DailyMail within about one ROUGE point of FP; layer
reduction (6+3, 6+2, 6+1, 3+3 encoder+decoder layers) composes with W4A4. The logic is int4jax/tasks/summarization.py.

    # FP fine-tune from a Hugging Face BART (or a preset from scratch, or --model=<denoising run>):
    python -m experiments.summarize --model=/ckpt/bart-base --dataset=xsum --workdir=runs/xsum_fp
    # W4A4 QAT + KD (logits + Att* on encoder self/decoder self/cross attention + Rep on both stacks):
    python -m experiments.summarize --teacher=runs/xsum_fp --bits=w4a4 --workdir=runs/xsum_w4a4
    # layer reduction 6+3 with W4A4: decoder layers 0, 2, 5 of the teacher (DQ-BART's map, also the default)
    python -m experiments.summarize --teacher=runs/xsum_fp --bits=w4a4 --decoder_layer_map=0,2,5 --workdir=...
    # BART denoising pretraining (text infilling + sentence permutation) on text files + the XSum train part:
    python -m experiments.summarize --objective=denoise --model=bart_base --arch=d_model=256,encoder_layers=6 \\
        --text_files=ptb.train.txt --data_dir=xsum/test_subset1000.jsonl --workdir=runs/denoise

The flags are the shared vocabulary of experiments/flags.py (--model --bits --quant_mode --clip/--weight_clip/
--act_clip --teacher --kd_losses --learning_rate --num_train_steps|--num_epochs --warmup_ratio|--warmup_steps
--batch_size --seed --workdir --compute_dtype --overwrite ...) plus the task's own below; the old spellings
--init=<run> (now --model=<run>), --symmetric/--nosymmetric (--quant_mode=sym|asym) and --loss_terms (--kd_losses)
still work and print the new one. Defaults are BART-base's Table C.1 row (int4jax/tasks/summarization.py).
`--data_dir` is a JSON-lines file or folder (document/summary fields; a single file is split deterministically by
--heldout_fraction/--split_seed); without it `datasets` is used. The evaluation after training reloads the best
checkpoint (lowest held-out loss) and beam-decodes the held-out part (--num_beams, --length_penalty,
--no_repeat_ngram_size, --min_length, --max_gen_length), scoring ROUGE-1/2/L/Lsum; results.json also holds the
per-position loss that `python -m experiments.lm_analysis --analysis=positional --runs=fp=...,w4a4=...` plots.
Every run uses JAX's persistent compilation cache (--jax_cache_dir, default ~/.cache/int4jax/jax): a second run of
the same shapes and settings skips XLA's compilation. Re-running a command resumes from checkpoints/latest; a
different command in the same --workdir is refused (naming the keys that differ) unless --overwrite.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from experiments import flags as common
from int4jax.data import summarization as sum_data
from int4jax.tasks import summarization as task_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags are defined only when run as a command, so tests can import several launchers."""
  common.define_common(model_help="BART preset (bart_base, bart_large, bart_tiny; random init), a Hugging Face BART "
                       "directory, or an experiments.summarize run directory to start from (e.g. a denoising "
                       "pretraining).", bits_choices=list(task_lib.BITS), default_model="bart_base")
  flags.DEFINE_list("arch", [], "Preset overrides name=int, e.g. d_model=256,encoder_layers=6,decoder_ffn_dim=1024.")
  flags.DEFINE_enum("objective", None, task_lib.OBJECTIVES, "summarize (default), or BART's denoising pretraining.")
  flags.DEFINE_enum("dataset", None, sorted(sum_data.DATASETS), "Summarization dataset (default xsum).")
  flags.DEFINE_list("text_files", [], "Denoising: text files, one sentence per line.")
  flags.DEFINE_float("heldout_fraction", None, "Held-out part of a single-split --data_dir (default 0.1).")
  flags.DEFINE_integer("split_seed", None, "Seed of that split (default 0).")
  flags.DEFINE_integer("source_max_len", None, "Source tokens (default: 1024).")
  flags.DEFINE_integer("target_max_len", None, "Summary tokens (default: 128 XSum, 142 CNN/DM).")
  flags.DEFINE_list("encoder_layer_map", None, "Student encoder layer i <- teacher layer map[i] (layer reduction).")
  flags.DEFINE_list("decoder_layer_map", None, "Student decoder layer i <- teacher layer map[i] (layer reduction).")
  flags.DEFINE_integer("num_beams", None, "Beams for the evaluation decode (1 = greedy). Defaults of this and the "
                       "next three: DQ-BART's, XSum 6 beams, penalty 1.0, max 62, min 11; CNN/DM 4, 2.0, 142, 56.")
  flags.DEFINE_float("length_penalty", None, "Beam score = sum log p / length ** length_penalty.")
  flags.DEFINE_integer("min_length", None, "Minimum summary length in tokens (decoder start included, as HF).")
  flags.DEFINE_integer("max_gen_length", None, "Maximum generated length in tokens (decoder start included).")
  flags.DEFINE_integer("no_repeat_ngram_size", None, "Ban repeated n-grams (default 3; 0 = off).")
  flags.DEFINE_integer("eval_examples", None, "Beam-decode only the first N held-out examples.")
  common.define_jax_cache_dir()
  common.define_budget_flags()


def _ints(values, flag):
  if not values:
    return None
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f"--{flag}={','.join(values)} must be comma-separated integers") from None


def _arch(values):
  out = []
  for item in values:
    name, _, value = item.partition("=")
    if not value.strip().isdigit():
      raise app.UsageError(f"--arch item {item!r} must be name=int, e.g. d_model=256")
    out.append((name, int(value)))
  return tuple(out)


def config_from_flags(f=FLAGS) -> task_lib.SummarizationRunConfig:
  if not f.workdir:
    raise app.UsageError("--workdir is required")
  return task_lib.SummarizationRunConfig(**common.run_config_values(dict(
      workdir=f.workdir, model=f.model, arch=_arch(f.arch), objective=f.objective, dataset=f.dataset,
      text_files=tuple(f.text_files), heldout_fraction=f.heldout_fraction, split_seed=f.split_seed,
      source_max_len=f.source_max_len, target_max_len=f.target_max_len,
      encoder_layer_map=_ints(f.encoder_layer_map, "encoder_layer_map"),
      decoder_layer_map=_ints(f.decoder_layer_map, "decoder_layer_map"), weight_decay=f.weight_decay,
      num_beams=f.num_beams, length_penalty=f.length_penalty, min_length=f.min_length,
      max_gen_length=f.max_gen_length, no_repeat_ngram_size=f.no_repeat_ngram_size, eval_examples=f.eval_examples,
      time_budget_s=f.time_budget_s, max_steps_this_run=f.max_steps_this_run), f))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  common.init_distributed()
  common.apply_deprecated()
  from int4jax.train import compile_cache  # pylint: disable=g-import-not-at-top
  compile_cache.enable(FLAGS.jax_cache_dir)
  with common.usage_errors():
    prepared = task_lib.prepare(config_from_flags(), overwrite=FLAGS.overwrite)
  task_lib.run(prepared[0], ["python -m experiments.summarize"] + sys.argv[1:], prepared=prepared,
               git_commit=FLAGS.git_commit)


if __name__ == "__main__":
  define_flags()
  app.run(main)
