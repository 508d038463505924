"""Copies an HF BERT checkpoint folder with its weights in fp16 (or bf16), small enough to carry to the GPU.

    python results/scripts/minilm_compact.py <src model dir> <dst dir> [--dtype=float16|bfloat16]

all-MiniLM-L6-v2's fp32 model.safetensors is 91 MB, over the 64 MiB a GPU call carries; fp16 is 45 MB. The
tokenizer and config files are copied unchanged; int4jax's loader (models/hf.read_safetensors) reads F16/BF16
tensors and the runs hold fp32 params, so the only change is the rounding of the pretrained weights (fp16:
relative error <= 2^-11 for |w| >= 6.1e-5; the script refuses a tensor that overflows fp16 and prints the
largest relative error per dtype).
"""

import argparse
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from int4jax.models import hf  # noqa: E402  (the repository's reader, which handles every dtype)

FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("src")
  p.add_argument("dst")
  p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"))
  args = p.parse_args()
  tensors = hf.read_state_dict(args.src)
  os.makedirs(args.dst, exist_ok=True)
  import torch  # pylint: disable=g-import-not-at-top  (safetensors.numpy has no bf16)
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  tdtype = getattr(torch, args.dtype)
  out, worst = {}, 0.0
  for name, x in tensors.items():
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating) and x.dtype != np.float16:
      x32 = x.astype(np.float32)
      if args.dtype == "float16" and np.abs(x32).max() > np.finfo(np.float16).max:
        raise SystemExit(f"{name}: |w| max {np.abs(x32).max()} overflows fp16; use --dtype=bfloat16")
      t = torch.from_numpy(x32).to(tdtype)
      back = t.to(torch.float32).numpy()
      big = np.abs(x32) >= 1e-3
      if big.any():
        worst = max(worst, float((np.abs(back - x32)[big] / np.abs(x32)[big]).max()))
      out[name] = t.contiguous()
    else:
      out[name] = torch.from_numpy(np.ascontiguousarray(x))
  save_file(out, os.path.join(args.dst, "model.safetensors"), metadata={"format": "pt"})
  for f in FILES:
    if os.path.isfile(os.path.join(args.src, f)):
      shutil.copy(os.path.join(args.src, f), os.path.join(args.dst, f))
  size = os.path.getsize(os.path.join(args.dst, "model.safetensors")) / 2**20
  print(f"{args.dst}: {len(out)} tensors as {args.dtype}, {size:.1f} MiB; max relative rounding error "
        f"(|w| >= 1e-3) {worst:.2e}")


if __name__ == "__main__":
  main()
