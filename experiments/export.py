"""Export a trained run: --format=hf writes a Hugging Face checkpoint directory.

    python -m experiments.export --format=hf --workdir=runs/sst2_w4a4_asym --out=exported/sst2_w4a4_asym
    python -m experiments.export --format=hf --workdir=runs/ptb_w4a4 --out=exported/ptb_w4a4 --overwrite

hf: config.json + model.safetensors + tokenizer files (transformers loads them with the run's *For* class), plus
int4jax_policy.json (the quantization policy) and int4jax_export.json (provenance); see
int4jax/inference/hf_export.py (run reading: int4jax/tasks/runs.py). A non-empty --out is refused unless --overwrite.
packed: the integer engine's packed checkpoint (int4jax/inference/export.py, added with the engine).
"""
from __future__ import annotations

from absl import app, flags, logging

FORMATS = ("hf", "packed")

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined when run as a program (not at import: launchers share absl's one flag namespace)."""
  flags.DEFINE_enum("format", None, FORMATS, "What to write.", required=True)
  flags.DEFINE_string("workdir", None, "Run directory of experiments.glue or experiments.lm.", required=True)
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_bool("overwrite", False, "Replace the contents of a non-empty --out (listing what it removes).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if FLAGS.format == "packed":
    raise app.UsageError("--format=packed needs the integer engine (int4jax/inference/export.py), not on this "
                         "branch yet")
  from int4jax.tasks import runs  # pylint: disable=g-import-not-at-top
  try:
    out = runs.export_hf(FLAGS.workdir, FLAGS.out, overwrite=FLAGS.overwrite)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
