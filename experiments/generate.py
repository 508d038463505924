"""Read what quantization does to text: decode from an experiments.lm checkpoint with the KV cache.

    python -m experiments.generate --workdir=runs/ptb_w4a4 --prompt="the company said" --max_new_tokens=40
    python -m experiments.generate --workdir=runs/ptb_w4a4 --quant=float      # same weights, float GEMMs
    python -m experiments.generate --workdir=runs/ptb_fp --temperature=0.8 --top_k=40 --num_samples=3

Greedy by default (--temperature=0); sampling with --temperature > 0 and optional --top_k; beam search with
--num_beams > 1. Decoding is int4jax.inference.decode (the prompt fills the KV cache in one call, then one token per
step inside one lax.while_loop), the same loop that decodes BART summaries.
"""
from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from absl import logging

import jax
import jax.numpy as jnp
import numpy as np

from int4jax.tasks import lm as lm_task
from int4jax import tokenizers
from int4jax.inference import decode

def define_flags() -> None:
  """Flags are defined only when run as a command, so tests can import several launchers."""
  flags.DEFINE_string("workdir", None, "Run directory of experiments.lm (its best checkpoint is used).")
  flags.DEFINE_string("prompt", "the company said", "Text to continue.")
  flags.DEFINE_integer("max_new_tokens", 40, "Tokens to generate.")
  flags.DEFINE_float("temperature", 0.0, "0 = greedy; > 0 samples from softmax(logits / temperature).")
  flags.DEFINE_integer("top_k", 0, "Sample only among the k most likely tokens (0 = all).")
  flags.DEFINE_integer("num_samples", 1, "Sequences to decode (a batch).")
  flags.DEFINE_integer("num_beams", 1, "Beam search with this many beams (> 1; greedy only, no sampling).")
  flags.DEFINE_enum("quant", "stored", ("stored", "float"), "The run's own quantization policy, or float GEMMs.")
  flags.DEFINE_string("tokenizer", None, "Override the tokenizer the run stored.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")


def generate(model, params, prompt_ids: np.ndarray, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int = 0, num_beams: int = 1, rng: jax.Array | None = None) -> np.ndarray:
  """prompt_ids int32 [batch, prompt_len] -> generated ids [batch, max_new_tokens] (inference.decode on the KV
  cache: greedy, sampling when temperature > 0, beam search when num_beams > 1; no EOS, so every row is full)."""
  prompt_len = prompt_ids.shape[1]
  total = prompt_len + max_new_tokens
  if total > model.config.n_positions:
    raise ValueError(f"prompt ({prompt_len} tokens) + --max_new_tokens={max_new_tokens} = {total} exceeds the "
                     f"model's n_positions={model.config.n_positions}")
  config = decode.DecodeConfig(max_length=total, num_beams=num_beams, do_sample=temperature > 0,
                               temperature=temperature if temperature > 0 else 1.0, top_k=top_k)
  run = jax.jit(lambda p, ids, key: decode.generate_gpt2(model, p, ids, config, key))
  out = run(params, jnp.asarray(prompt_ids, jnp.int32), jax.random.PRNGKey(0) if rng is None else rng)
  return np.asarray(jax.device_get(out.sequences))[:, prompt_len:]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  if not f.workdir:
    raise ValueError("--workdir is required")
  if f.max_new_tokens < 1 or f.num_samples < 1 or f.num_beams < 1:
    raise ValueError("--max_new_tokens, --num_samples and --num_beams must be >= 1")
  if f.num_beams > 1 and f.temperature > 0:
    raise ValueError("--num_beams > 1 decodes by beam search; it cannot be combined with --temperature > 0")
  meta = lm_task.read_run_metadata(f.workdir)
  tok = tokenizers.load_tokenizer(f.tokenizer or meta["tokenizer"])
  if len(tok) > meta["model_config"]["vocab_size"] or meta.get("tokenizer_vocab_size") not in (None, len(tok)):
    raise ValueError(f"tokenizer has {len(tok)} tokens but the checkpoint in {f.workdir!r} was trained with "
                     f"{meta.get('tokenizer_vocab_size')} (vocab_size {meta['model_config']['vocab_size']})")
  prompt = tok(f.prompt, add_special_tokens=False)["input_ids"]
  if not prompt:
    raise ValueError(f"--prompt={f.prompt!r} encodes to no tokens")
  model, params, meta = lm_task.restore_run(f.workdir, policy="stored" if f.quant == "stored" else None)
  ids = np.tile(np.asarray(prompt, np.int32)[None], (f.num_samples, 1))
  new = generate(model, params, ids, f.max_new_tokens, temperature=f.temperature, top_k=f.top_k,
                 num_beams=f.num_beams, rng=jax.random.PRNGKey(f.seed))
  policy = json.loads(meta["policy_json"])["name"] if meta.get("policy_json") and f.quant == "stored" else "float"
  mode = f"beam search ({f.num_beams} beams)" if f.num_beams > 1 else "greedy" if f.temperature <= 0 else f"sampled (T={f.temperature}, top_k={f.top_k or 'all'})"
  print(f"# {os.path.abspath(f.workdir)}, policy {policy}, {mode}")
  for row in new:
    print(f.prompt + tok.decode(row.tolist()))
    print("-" * 40)


if __name__ == "__main__":
  define_flags()
  app.run(main)
