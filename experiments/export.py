"""Export a trained model: the integer engine's packed checkpoint (default) or a Hugging Face checkpoint.

    python -m experiments.export --workdir=runs/glue/sst2_bert_base/w4a4_sym --out=packed/sst2_w4a4
    python -m experiments.export --workdir=runs/lm/ptb_gpt2/w4a4_asym --out=packed/ptb_w4a4   # GPT-2 / Llama LM run
    python -m experiments.export --hf_dir=/path/to/bert-checkpoint --bits=w4a4 --quant_mode=sym --out=packed/ptq
    python -m experiments.export --format=hf --workdir=runs/sst2_w4a4_asym --out=exported/sst2_w4a4_asym

--format=packed (library: int4jax/inference/export.py): packed INT4/INT8 GEMM weights + scales, bf16 for the rest,
of a quantized run (QAT: experiments.glue BERT runs, experiments.lm GPT-2 and Llama runs, experiments.summarize BART
runs) or of an HF checkpoint (BERT, GPT-2, BART, Llama) quantized post-training with --bits. Prints the byte report (bytes on
disk vs fp32/bf16).
--format=hf (library: int4jax/inference/hf_export.py, run reading: int4jax/tasks/runs.py): config.json +
model.safetensors + tokenizer files (transformers loads them with the run's *For* class), plus int4jax_policy.json
(the quantization policy) and int4jax_export.json (provenance). A non-empty --out is refused unless --overwrite.
"""
from __future__ import annotations

import json

from absl import app, flags, logging

FORMATS = ("packed", "hf")
FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined when run as a program (not at import: launchers share absl's one flag namespace)."""
  flags.DEFINE_enum("format", "packed", FORMATS, "packed = integer engine (INT4/INT8 + bf16); hf = Hugging Face.")
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_string("workdir", None, "A run directory (experiments.glue, experiments.lm or experiments.summarize).")
  flags.DEFINE_string("hf_dir", None, "packed only: an HF checkpoint directory (post-training quantization, --bits).")
  flags.DEFINE_string("bits", None, "packed + --hf_dir: policy preset (w4a4, w8a8, w4a8, w4a16, w8a16).")
  flags.DEFINE_enum("quant_mode", "sym", ["sym", "asym"], "packed + --hf_dir: symmetric or asymmetric quantizers.")
  flags.DEFINE_list("gemms", ["qkv", "attn_out", "ffn_in", "ffn_out"], "packed + --hf_dir: GEMM types to quantize.")
  flags.DEFINE_string("task", None, "packed + --hf_dir: model task (default: from its config.json).")
  flags.DEFINE_bool("overwrite", False, "hf: replace the contents of a non-empty --out (listing what it removes).")


def export_hf() -> None:
  if FLAGS.workdir is None or FLAGS.hf_dir is not None:
    raise app.UsageError("--format=hf exports a run: pass --workdir (not --hf_dir)")
  from int4jax.tasks import runs  # pylint: disable=g-import-not-at-top
  try:
    out = runs.export_hf(FLAGS.workdir, FLAGS.out, overwrite=FLAGS.overwrite)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})", flush=True)


def export_packed() -> None:
  if (FLAGS.workdir is None) == (FLAGS.hf_dir is None):
    raise app.UsageError("pass exactly one of --workdir (a quantized run) or --hf_dir (with --bits)")
  if FLAGS.hf_dir is not None and FLAGS.bits is None:
    raise app.UsageError("--hf_dir needs --bits (the post-training policy, e.g. w4a4)")
  if FLAGS.workdir is not None and FLAGS.bits is not None:
    raise app.UsageError("--bits is for --hf_dir; a run's policy comes from its config.json")
  from int4jax.inference import export  # pylint: disable=g-import-not-at-top
  from int4jax.quant.policy import make_policy  # pylint: disable=g-import-not-at-top
  from int4jax.tasks import runs  # pylint: disable=g-import-not-at-top
  try:
    if FLAGS.workdir is not None:
      params, config, task, family, tok, _ = runs.packed_source(FLAGS.workdir)
      source = FLAGS.workdir
    else:
      policy = make_policy(FLAGS.bits, symmetric=FLAGS.quant_mode == "sym", gemms=FLAGS.gemms)
      params, config, task, family, tok = export.from_hf(FLAGS.hf_dir, policy, FLAGS.task)
      source = FLAGS.hf_dir
    meta = export.export(FLAGS.out, params, config, task, family, tokenizer=tok, source=source)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  b = meta["bytes"]
  print(json.dumps(b, indent=2, sort_keys=True))
  print(f"wrote {FLAGS.out}: {b['file_bytes'] / 2**20:.2f} MiB on disk vs {b['fp32_bytes'] / 2**20:.2f} MiB fp32, "
        f"{b['bf16_bytes'] / 2**20:.2f} MiB bf16; quantized GEMM weights "
        f"{b['quantized_gemm_bytes_per_param']:.4f} bytes/param incl. scales")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  export_hf() if FLAGS.format == "hf" else export_packed()


if __name__ == "__main__":
  define_flags()
  app.run(main)
