"""GPT-2 language modelling: FP teacher, then W4 / W4A8 / W4A4 QAT+KD students (paper Table 1 GPT-2 rows, Fig. C.2).

Paper (paper_spec.md §3.1): GPT2-base on PTB, FP32 teacher 19.31 ppl -> W4A4 sym 22.17 / asym 21.72, from a
pretrained GPT-2 fine-tuned on PTB, block 1024, 90 epochs, batch 8 x 4 GPUs. Offline we have no pretrained GPT-2, so
a preset `--model=gpt2_base` trains the teacher from random weights; real users pass `--model=<HF GPT-2 dir>`.

    # FP teacher (scratch) and a W4A4 student distilled from it:
    python -m experiments.lm --model=gpt2_base --bits=fp32 --dataset=ptb --workdir=runs/ptb_fp
    python -m experiments.lm --bits=w4a4 --teacher=runs/ptb_fp --dataset=ptb --workdir=runs/ptb_w4a4
    # the other students: --bits=w4a16 (W4-only), --bits=w4a8, --bits=w4a4 --quant_mode=asym
    # A pretrained Llama (SmolLM2-135M GGUF, or its qblocks copy) with its own tokenizer, WikiText-2 evaluated too:
    python -m experiments.lm --model=SmolLM2-135M-Instruct.Q4_1.gguf --tokenizer=SmolLM2-135M-Instruct.Q4_1.gguf \
        --bits=fp32 --weight_clip=none --extra_eval=wikitext2=<dir> --workdir=runs/smol_fp
    python -m experiments.lm --bits=w4a4 --teacher=runs/smol_fp --tokenizer=<same> --workdir=runs/smol_w4a4

Defaults follow the paper's best GPT-2 setting (Table C.1): LM CE + Logit + Att* + Rep, dropout 0.05, clip [-1, 1],
LR 1e-4, batch 8, 90 epochs. The flags are the shared vocabulary of experiments/flags.py. `--weight_clip` clamps weights before quantization; the paper does not say which tensors
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

from experiments import flags as common
from int4jax.data import lm as lm_data
from int4jax.tasks.lm import BITS, LMRunConfig, prepare, run

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags are defined only when run as a command, so tests can import several launchers."""
  common.define_common(model_help="GPT-2 / Llama preset (gpt2_base, gpt2_medium, gpt2_tiny, smollm2_135m, "
                       "llama_tiny; random init), a Hugging Face GPT-2 / Llama checkpoint directory, a Llama .gguf "
                       "file or its qblocks copy (pretrained init).", bits_choices=list(BITS),
                       default_model="gpt2_base")
  flags.DEFINE_integer("n_layer", None, "Override the preset's number of layers.")
  flags.DEFINE_integer("n_embd", None, "Override the preset's width.")
  flags.DEFINE_integer("n_head", None, "Override the preset's number of heads.")
  flags.DEFINE_integer("n_positions", None, "Override the preset's number of positions.")
  flags.DEFINE_bool("post_ln", False, "Post-LN blocks instead of GPT-2's Pre-LN (paper section 4).")
  flags.DEFINE_enum("dataset", "ptb", lm_data.DATASETS, "Corpus (local files in --data_dir: "
                    "ptb.{train,valid,test}.txt or wiki.{train,valid,test}.tokens).")
  flags.DEFINE_integer("block_size", None, "Tokens per block, training and evaluation (default 1024).")
  flags.DEFINE_integer("eval_stride", None, "Sliding-window evaluation stride (default: non-overlapping blocks).")
  common.define_budget_flags()
  flags.DEFINE_string("cache_dir", None, "Folder for tokenized corpora (.npy), reused across runs.")
  flags.DEFINE_list("extra_eval", [], "More corpora to evaluate the best checkpoint on (valid + test), as "
                    "dataset=data_dir, e.g. wikitext2=/data/wikitext-2.")


def config_from_flags(f=FLAGS) -> LMRunConfig:
  if not f.workdir:
    raise app.UsageError("--workdir is required")
  return LMRunConfig(**common.run_config_values(dict(
      model=f.model, n_layer=f.n_layer, n_embd=f.n_embd, n_head=f.n_head, n_positions=f.n_positions,
      post_ln=f.post_ln, dataset=f.dataset, block_size=f.block_size, eval_stride=f.eval_stride,
      weight_decay=f.weight_decay, time_budget_s=f.time_budget_s, max_steps_this_run=f.max_steps_this_run,
      cache_dir=f.cache_dir, workdir=f.workdir, extra_eval=tuple(f.extra_eval) or None), f))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  common.init_distributed()
  common.apply_deprecated()
  with common.usage_errors():
    prepared = prepare(config_from_flags(), overwrite=FLAGS.overwrite)
  run(prepared[0], sys.argv, prepared=prepared)


if __name__ == "__main__":
  define_flags()
  app.run(main)
