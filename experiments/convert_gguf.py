"""Re-encode a Llama GGUF file (Q4_0 / Q4_1 / Q8_0 / F16 / F32) as a qblocks checkpoint directory split into parts.

    python -m experiments.convert_gguf --gguf=SmolLM2-135M-Instruct.Q4_1.gguf --out_dir=.carry_smol/smollm2 \\
        --max_part_mib=50

The directory (config.json, qblocks.json, qblocks-*.npz, tokenizer files) loads with `--init=<dir>` /
`--tokenizer=<dir>` and `models.load_pretrained(<dir>)` without the `gguf` package; the blocks are re-encoded, not
dequantized, so it is as large and as precise as the GGUF (int4jax.models.gguf). Prints each part's size and sha256.
"""
from __future__ import annotations

from absl import app
from absl import flags

from int4jax.models import gguf


def define_flags() -> None:
  flags.DEFINE_string("gguf", None, "The .gguf file (Llama architecture).")
  flags.DEFINE_string("out_dir", None, "Directory to write (created).")
  flags.DEFINE_float("max_part_mib", 50.0, "Largest part in MiB (a single larger tensor gets a part of its own).")
  flags.DEFINE_bool("tokenizer", True, "Also save the tokenizer transformers builds from the GGUF metadata.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.gguf or not gguf.is_gguf(f.gguf):
    raise app.UsageError(f"--gguf={f.gguf!r} is not a .gguf file")
  if not f.out_dir:
    raise app.UsageError("--out_dir is required")
  if f.max_part_mib <= 0:
    raise app.UsageError(f"--max_part_mib={f.max_part_mib} must be positive")
  index = gguf.convert_gguf(f.gguf, f.out_dir, max_part_bytes=int(f.max_part_mib * (1 << 20)),
                            tokenizer=f.tokenizer)
  for part, info in index["parts"].items():
    print(f"{part}: {info['bytes'] / (1 << 20):.1f} MiB sha256 {info['sha256']}")
  print(f"{len(index['tensors'])} tensors from {index['source']} (sha256 {index['source_sha256']}) in {f.out_dir}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
