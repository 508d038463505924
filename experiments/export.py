"""Export a model for inference (library: int4jax.inference.export).

    python -m experiments.export --workdir=runs/glue/sst2_bert_base/w4a4_sym --out=packed/sst2_w4a4
    python -m experiments.export --hf_dir=/path/to/bert-checkpoint --bits=w4a4 --quant_mode=sym --out=packed/ptq

--format=packed (the default): the integer engine's packed INT4/INT8 checkpoint of a quantized run (QAT) or of an
HF checkpoint quantized post-training with --bits. Prints packed.json's byte report (bytes on disk vs fp32/bf16).
"""
from __future__ import annotations

import json

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory (must not exist; written atomically).", required=True)
flags.DEFINE_enum("format", "packed", ["packed"], "Checkpoint format: packed = integer engine (INT4/INT8 + bf16).")
flags.DEFINE_string("workdir", None, "A quantized experiments.glue run directory (its checkpoints/best).")
flags.DEFINE_string("hf_dir", None, "An HF checkpoint directory (post-training quantization with --bits).")
flags.DEFINE_string("bits", None, "Policy preset for --hf_dir: w4a4, w8a8, w4a8, w4a16, w8a16.")
flags.DEFINE_enum("quant_mode", "sym", ["sym", "asym"], "Symmetric or asymmetric quantizers (--hf_dir).")
flags.DEFINE_list("gemms", ["qkv", "attn_out", "ffn_in", "ffn_out"], "GEMM types to quantize (--hf_dir).")
flags.DEFINE_string("task", None, "Model task for --hf_dir (default: from its config.json).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if (FLAGS.workdir is None) == (FLAGS.hf_dir is None):
    raise app.UsageError("pass exactly one of --workdir (a quantized run) or --hf_dir (with --bits)")
  if FLAGS.hf_dir is not None and FLAGS.bits is None:
    raise app.UsageError("--hf_dir needs --bits (the post-training policy, e.g. w4a4)")
  if FLAGS.workdir is not None and FLAGS.bits is not None:
    raise app.UsageError("--bits is for --hf_dir; a run's policy comes from its config.json")
  from int4jax.inference import export  # pylint: disable=g-import-not-at-top
  from int4jax.quant.policy import make_policy  # pylint: disable=g-import-not-at-top
  try:
    if FLAGS.workdir is not None:
      params, config, task, family, tok, _ = export.from_glue_run(FLAGS.workdir)
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


if __name__ == "__main__":
  app.run(main)
