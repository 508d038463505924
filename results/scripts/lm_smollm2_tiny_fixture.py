"""SMOKE=1 stand-in for the SmolLM2 qblocks directory: a tiny random Llama written as a Q4_1/Q8_0 GGUF (as llama.cpp
lays it out), converted to qblocks parts exactly like the real file, with the GPT-2 tokenizer files copied in.

    python results/scripts/lm_smollm2_tiny_fixture.py OUT_DIR GPT2_TOKENIZER_DIR
"""
import dataclasses
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np

from int4jax import tokenizers
from int4jax.models import gguf, hf, llama


def main(out_dir: str, tokenizer_dir: str) -> None:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  vocab = len(tokenizers.load_tokenizer(tokenizer_dir))
  config = dataclasses.replace(llama.llama_tiny(), vocab_size=vocab, tie_word_embeddings=True,
                               max_position_embeddings=512)
  model = llama.LlamaForCausalLM(config)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  flat = hf.flatten(jax.tree.map(np.asarray, params))
  tensors = {}
  for path, ref in llama.hf_mapping(config).items():
    w = flat[path]
    tensors[ref.names[0]] = w.T if ref.transform is hf.linear_kernel else w
  gguf.write_gguf(out / "tiny.gguf", llama.config_to_hf(config), tensors)
  gguf.convert_gguf(out / "tiny.gguf", out / "qblocks", max_part_bytes=1 << 20, tokenizer=False)
  for name in ("encoder.json", "vocab.bpe"):
    shutil.copy(pathlib.Path(tokenizer_dir) / name, out / "qblocks" / name)
  print(f"tiny qblocks checkpoint in {out / 'qblocks'} (vocab {vocab})")


if __name__ == "__main__":
  main(*sys.argv[1:])
