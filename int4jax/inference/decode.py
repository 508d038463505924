"""Greedy, sampling and beam-search decoding over a step function on the KV cache, shared by every decoder.

A decoder is described by a `Prefilled` start state: the decoder prompt (BART: the decoder-start token; GPT-2: the
prompt ids), the logits that the prompt predicts for the next token, and the "cache" collection after the prompt,
plus `tokens_to_logits(tokens [n, 1], cache) -> (logits [n, vocab] float32, cache)` that appends one token per row.
The prompt runs outside the loop because it changes the cache's structure (BART's cross-attention K/V appear on the
first decode call); afterwards every step has the same shapes, so the whole generation is one `lax.while_loop`
inside one jitted program. `bart_prefill` and `gpt2_prefill` build the start state for the two model families.

Semantics follow Hugging Face `generate` (transformers 5.x, `_sample` and the vectorised `_beam_search`), so that
the same settings give the same tokens (tests/inference/test_decode.py checks it token for token):
- lengths count the decoder prompt: `max_length` is the total sequence length, `min_length` bans EOS while the
  sequence (prompt included) is shorter than it;
- logits processors, in HF's order: no_repeat_ngram_size, min_length, forced BOS (at length 1), forced EOS (at
  length max_length - 1; forced tokens get log-prob 0); sampling then applies temperature and top-k;
- beam search keeps 2 * num_beams candidates per step, moves those ending in EOS (or reaching max_length) among the
  top num_beams into the finished set with score sum_logprobs / generated_len ** length_penalty, and stops by
  HF's early_stopping rules (True, False = the cur_len heuristic, "never").
Finished rows are padded with `pad_token_id` after their end.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Union

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

NEG = -1.0e9          # HF's "impossible" score for placeholder beams
StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """Decoding settings (HF GenerationConfig names). Static: part of the compiled program."""
  max_length: int
  min_length: int = 0
  num_beams: int = 1
  length_penalty: float = 1.0
  early_stopping: Union[bool, str] = False     # True, False or "never", as in HF
  no_repeat_ngram_size: int = 0
  do_sample: bool = False
  temperature: float = 1.0
  top_k: int = 0
  eos_token_id: int | None = None
  pad_token_id: int = 0
  forced_bos_token_id: int | None = None
  forced_eos_token_id: int | None = None

  def validate(self, prompt_len: int = 1) -> "DecodeConfig":
    if self.num_beams < 1:
      raise ValueError(f"num_beams={self.num_beams} must be >= 1")
    if self.max_length <= prompt_len:
      raise ValueError(f"max_length={self.max_length} must exceed the decoder prompt length {prompt_len}")
    if self.min_length < 0 or self.no_repeat_ngram_size < 0 or self.top_k < 0:
      raise ValueError("min_length, no_repeat_ngram_size and top_k must be >= 0")
    if self.do_sample and self.temperature <= 0:
      raise ValueError(f"temperature={self.temperature} must be > 0 when sampling")
    if self.do_sample and self.num_beams > 1:
      raise ValueError("beam sampling is not implemented; use num_beams=1 with do_sample")
    if self.early_stopping not in (True, False, "never"):
      raise ValueError(f"early_stopping={self.early_stopping!r} must be True, False or 'never'")
    return self


@flax.struct.dataclass
class Prefilled:
  """A decoder after its prompt: see the module docstring."""
  prompt: jax.Array        # int32 [batch, prompt_len]
  logits: jax.Array        # float32 [batch, vocab]: next-token logits after the prompt
  cache: Any               # the "cache" collection after the prompt


@flax.struct.dataclass
class Generated:
  sequences: jax.Array     # int32 [batch, max_length]: prompt + generated tokens, pad after `lengths`
  lengths: jax.Array       # int32 [batch]: tokens in each sequence, prompt included
  scores: jax.Array        # float32 [batch]: beam score (length-penalised sum of log-probs); 0 for greedy/sampling


def process_scores(scores: jax.Array, sequences: jax.Array, cur_len: jax.Array, config: DecodeConfig) -> jax.Array:
  """HF's logits processors on [n, vocab] scores given the [n, L] token buffer of which `cur_len` are written."""
  n, vocab = scores.shape
  ngram = config.no_repeat_ngram_size
  if ngram > 0:
    length = sequences.shape[1]
    start = jnp.arange(length)                                         # window start i covers i .. i + ngram - 1
    prefix_at = cur_len + 1 - ngram                                    # the last ngram - 1 written tokens
    match = start[None, :] <= cur_len - ngram                          # windows fully inside what is written
    for j in range(ngram - 1):
      window = jnp.take(sequences, jnp.clip(start + j, 0, length - 1), axis=1)
      prefix = lax.dynamic_slice_in_dim(sequences, jnp.maximum(prefix_at + j, 0), 1, axis=1)
      match &= window == prefix
    banned_tok = jnp.take(sequences, jnp.clip(start + ngram - 1, 0, length - 1), axis=1)
    banned = jnp.zeros((n, vocab), bool).at[jnp.arange(n)[:, None], banned_tok].max(match)
    banned &= cur_len >= ngram
    scores = jnp.where(banned, -jnp.inf, scores)
  vocab_ids = jnp.arange(vocab)[None, :]
  if config.min_length > 0 and config.eos_token_id is not None:
    scores = jnp.where((vocab_ids == config.eos_token_id) & (cur_len < config.min_length), -jnp.inf, scores)
  for token, at in ((config.forced_bos_token_id, 1), (config.forced_eos_token_id, config.max_length - 1)):
    if token is not None:
      forced = jnp.where(vocab_ids == token, 0.0, -jnp.inf).astype(scores.dtype)
      scores = jnp.where(cur_len == at, forced, scores)
  return scores


def _sample_scores(scores: jax.Array, config: DecodeConfig) -> jax.Array:
  """Temperature then top-k, as HF's warpers."""
  if config.temperature != 1.0:
    scores = scores / config.temperature
  if config.top_k > 0:
    kth = lax.top_k(scores, min(config.top_k, scores.shape[-1]))[0][..., -1:]
    scores = jnp.where(scores < kth, -jnp.inf, scores)
  return scores


def _buffer(prompt: jax.Array, rows: int, config: DecodeConfig) -> jax.Array:
  seq = jnp.full((rows, config.max_length), config.pad_token_id, jnp.int32)
  return seq.at[:, :prompt.shape[1]].set(jnp.repeat(prompt.astype(jnp.int32), rows // prompt.shape[0], axis=0))


def _map_batch(fn, cache, *, skip_cross: bool = False):
  """Applies `fn` to every cache array with a batch axis (scalars such as the cache index are shared).
  skip_cross leaves the cross-attention K/V alone: every beam of a row has the same source, so reordering beams
  within a row cannot change them (and they are the cache's largest arrays)."""
  def one(path, x):
    if jnp.ndim(x) < 1 or (skip_cross and "cached_cross" in jax.tree_util.keystr(path)):
      return x
    return fn(x)
  return jax.tree_util.tree_map_with_path(one, cache)


def greedy_or_sample(step: StepFn, start: Prefilled, config: DecodeConfig, rng: jax.Array | None = None) -> Generated:
  """HF `_sample`: argmax (or a sample) of the processed logits; rows that emitted EOS continue with padding."""
  batch, prompt_len = start.prompt.shape
  rng = jax.random.PRNGKey(0) if rng is None else rng
  state = dict(seq=_buffer(start.prompt, batch, config), cur_len=jnp.array(prompt_len, jnp.int32),
               logits=start.logits.astype(jnp.float32), cache=start.cache, rng=rng,
               unfinished=jnp.ones((batch,), bool), lengths=jnp.full((batch,), config.max_length, jnp.int32))

  def cond(s):
    return (s["cur_len"] < config.max_length) & jnp.any(s["unfinished"])

  def body(s):
    scores = process_scores(s["logits"], s["seq"], s["cur_len"], config)
    rng, key = jax.random.split(s["rng"])
    if config.do_sample:
      token = jax.random.categorical(key, _sample_scores(scores, config)).astype(jnp.int32)
    else:
      token = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    token = jnp.where(s["unfinished"], token, config.pad_token_id)
    seq = lax.dynamic_update_slice_in_dim(s["seq"], token[:, None], s["cur_len"], axis=1)
    unfinished, lengths = s["unfinished"], s["lengths"]
    if config.eos_token_id is not None:
      ended = unfinished & (token == config.eos_token_id)
      lengths = jnp.where(ended, s["cur_len"] + 1, lengths)
      unfinished = unfinished & ~ended
    logits, cache = step(token[:, None], s["cache"])
    return dict(seq=seq, cur_len=s["cur_len"] + 1, logits=logits.astype(jnp.float32), cache=cache, rng=rng,
                unfinished=unfinished, lengths=lengths)

  s = lax.while_loop(cond, body, state)
  lengths = jnp.minimum(s["lengths"], s["cur_len"])
  return Generated(sequences=s["seq"], lengths=lengths, scores=jnp.zeros((batch,), jnp.float32))


def beam_search(step: StepFn, start: Prefilled, config: DecodeConfig) -> Generated:
  """HF's vectorised beam search; returns the best finished hypothesis of each batch row."""
  batch, prompt_len = start.prompt.shape
  beams = config.num_beams
  keep = 2 * beams
  vocab = start.logits.shape[-1]
  if keep > vocab * beams:
    raise ValueError(f"num_beams={beams} needs a vocabulary of at least 2 tokens")
  length = config.max_length
  gather = lambda x, idx: jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)
  tile = lambda x: jnp.repeat(x, beams, axis=0)
  running = _buffer(start.prompt, batch * beams, config).reshape(batch, beams, length)
  running_scores = jnp.zeros((batch, beams), jnp.float32).at[:, 1:].set(NEG)
  state = dict(
      cur_len=jnp.array(prompt_len, jnp.int32), logits=tile(start.logits.astype(jnp.float32)),
      cache=_map_batch(tile, start.cache), running=running, running_scores=running_scores,
      finished=running, finished_scores=jnp.full((batch, beams), NEG, jnp.float32),
      finished_len=jnp.full((batch, beams), length, jnp.int32),
      is_finished=jnp.zeros((batch, beams), bool), improvable=jnp.ones((batch, 1), bool),
      stop_all=jnp.zeros((batch, keep), bool), started=jnp.array(False))
  top_mask = jnp.arange(keep) < beams

  def cond(s):
    going = jnp.any(s["improvable"]) & ~jnp.all(s["stop_all"])
    if config.early_stopping is True:
      going &= ~jnp.all(s["is_finished"])
    return ~s["started"] | ((s["cur_len"] < length) & going)

  def body(s):
    cur_len = s["cur_len"]
    log_probs = jax.nn.log_softmax(s["logits"], axis=-1)
    log_probs = process_scores(log_probs, s["running"].reshape(batch * beams, length), cur_len, config)
    log_probs = log_probs.reshape(batch, beams, vocab) + s["running_scores"][:, :, None]
    top_scores, top_idx = lax.top_k(log_probs.reshape(batch, beams * vocab), keep)
    from_beam, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    cand = gather(s["running"], from_beam)
    cand = lax.dynamic_update_slice_in_dim(cand, token[:, :, None], cur_len, axis=2)
    stop = jnp.broadcast_to(cur_len + 1 >= length, token.shape)
    if config.eos_token_id is not None:
      stop = stop | (token == config.eos_token_id)

    # Running beams for the next step: the best candidates that did not stop.
    alive_scores = top_scores + stop.astype(jnp.float32) * NEG
    _, next_idx = lax.top_k(alive_scores, beams)
    running = gather(cand, next_idx)
    running_scores = gather(alive_scores, next_idx)
    parent = gather(from_beam, next_idx)

    # Finished hypotheses: merge the candidates among the top num_beams that stopped.
    just_done = stop & top_mask[None, :]
    done_scores = top_scores / ((cur_len + 1 - prompt_len).astype(jnp.float32) ** config.length_penalty)
    if config.early_stopping is True:
      done_scores += jnp.all(s["is_finished"], axis=-1, keepdims=True).astype(jnp.float32) * NEG
    done_scores += (~s["improvable"]).astype(jnp.float32) * NEG
    done_scores += (~just_done).astype(jnp.float32) * NEG
    merged_scores = jnp.concatenate([s["finished_scores"], done_scores], axis=1)
    _, best = lax.top_k(merged_scores, beams)
    finished = gather(jnp.concatenate([s["finished"], cand], axis=1), best)
    finished_scores = gather(merged_scores, best)
    finished_len = gather(jnp.concatenate([s["finished_len"], jnp.broadcast_to(cur_len + 1, cand.shape[:2])],
                                          axis=1), best)
    is_finished = gather(jnp.concatenate([s["is_finished"], just_done], axis=1), best)

    # Reorder the cache to the surviving beams, feed their new tokens.
    flat_parent = (parent + jnp.arange(batch)[:, None] * beams).reshape(-1)
    cache = _map_batch(lambda x: jnp.take(x, flat_parent, axis=0), s["cache"], skip_cross=True)
    new_tokens = lax.dynamic_slice_in_dim(running, cur_len, 1, axis=2).reshape(batch * beams, 1)
    logits, cache = step(new_tokens, cache)

    cur_len = cur_len + 1
    if config.early_stopping == "never" and config.length_penalty > 0:
      best_len = jnp.float32(length - prompt_len)
    else:
      best_len = (cur_len - prompt_len).astype(jnp.float32)
    best_possible = running_scores[:, :1] / best_len ** config.length_penalty
    worst_done = jnp.where(is_finished, jnp.min(finished_scores, axis=1, keepdims=True), NEG)
    improvable = s["improvable"] & jnp.any(best_possible > worst_done, axis=-1, keepdims=True)
    return dict(cur_len=cur_len, logits=logits.astype(jnp.float32), cache=cache, running=running,
                running_scores=running_scores, finished=finished, finished_scores=finished_scores,
                finished_len=finished_len, is_finished=is_finished, improvable=improvable, stop_all=stop,
                started=jnp.array(True))

  s = lax.while_loop(cond, body, state)
  return Generated(sequences=s["finished"][:, 0], lengths=s["finished_len"][:, 0],
                   scores=s["finished_scores"][:, 0])


def generate(step: StepFn, start: Prefilled, config: DecodeConfig, rng: jax.Array | None = None) -> Generated:
  """Beam search when num_beams > 1, else greedy or sampling. Jit the caller (config is static)."""
  config.validate(start.prompt.shape[1])
  if config.num_beams > 1:
    return beam_search(step, start, config)
  return greedy_or_sample(step, start, config, rng)


def trim(out: Generated) -> list[list[int]]:
  """Host-side token lists, each cut at its length (prompt included)."""
  seqs, lengths = jax.device_get((out.sequences, out.lengths))
  return [row[:n].tolist() for row, n in zip(seqs, lengths)]


# ---------------------------------------------------------------------------------------------------------------
# Start states of the model families


def bart_prefill(model, params, input_ids: jax.Array, attention_mask: jax.Array | None, max_length: int
                 ) -> tuple[StepFn, Prefilled]:
  """Encoder once, decoder-start token through the decoder (which projects and caches cross-attention K/V)."""
  from int4jax.models import bart
  c = model.config
  if max_length > c.max_position_embeddings:
    raise ValueError(f"max_length={max_length} exceeds the decoder's max_position_embeddings="
                     f"{c.max_position_embeddings}")
  enc = model.apply({"params": params}, input_ids, attention_mask, method=model.encode).last_hidden_state
  batch = input_ids.shape[0]
  cache = bart.init_cache(model, batch, max_length)

  def run(tokens, cache, enc, mask):
    out, mut = model.apply({"params": params, "cache": cache}, tokens, enc, mask, decode=True, mutable=["cache"],
                           method=model.decode)
    return out.logits[:, -1].astype(jnp.float32), mut["cache"]

  prompt = jnp.full((batch, 1), c.decoder_start_token_id, jnp.int32)
  logits, cache = run(prompt, cache, enc, attention_mask)

  # Later steps read the cached cross K/V; enc (and mask) only fix shapes and the source padding, tiled per beam.
  def step(tokens, cache):
    rows = tokens.shape[0]
    mask = None if attention_mask is None else jnp.repeat(attention_mask, rows // batch, axis=0)
    return run(tokens, cache, jnp.repeat(enc, rows // batch, axis=0), mask)

  return step, Prefilled(prompt=prompt, logits=logits, cache=cache)


def gpt2_prefill(model, params, prompt_ids: jax.Array, max_length: int) -> tuple[StepFn, Prefilled]:
  """The prompt (equal-length rows, no padding) in one call that fills the cache."""
  from int4jax.models import gpt2
  if max_length > model.config.n_positions:
    raise ValueError(f"max_length={max_length} exceeds the model's n_positions={model.config.n_positions}")
  cache = gpt2.init_cache(model, prompt_ids.shape[0], max_length)

  def step(tokens, cache):
    out, mut = model.apply({"params": params, "cache": cache}, tokens, decode=True, mutable=["cache"])
    return out.logits[:, -1].astype(jnp.float32), mut["cache"]

  prompt = jnp.asarray(prompt_ids, jnp.int32)
  logits, cache = step(prompt, cache)
  return step, Prefilled(prompt=prompt, logits=logits, cache=cache)


def generate_bart(model, params, input_ids, attention_mask, config: DecodeConfig, rng=None) -> Generated:
  step, start = bart_prefill(model, params, input_ids, attention_mask, config.max_length)
  return generate(step, start, config, rng)


def generate_gpt2(model, params, prompt_ids, config: DecodeConfig, rng=None) -> Generated:
  step, start = gpt2_prefill(model, params, prompt_ids, config.max_length)
  return generate(step, start, config, rng)
