"""Multi-head attention shared by BERT, GPT-2 and BART.

The four projections are `QDense` layers, so the policy quantizes them (GEMM types "qkv" and "attn_out"); the
attention core (QK^T, softmax, PV) stays in float, as in the paper's pipeline (paper_spec.md §1.4, §7.5).

Two paths compute the core:
- fast: `jax.nn.dot_product_attention` (cuDNN flash attention on the GPU for bf16/fp16) when no taps are wanted and
  no attention dropout is active;
- explicit: scores -> mask -> softmax -> dropout -> PV, which can return the pre-softmax scores (the paper's Att*)
  and the probabilities for knowledge distillation.
Both agree within float tolerance (tests/models).

Incremental decoding uses Linen's "cache" collection (the convention of flax's lm1b example): initialise the model
with `decode=True` on an input of shape [batch, max_len] to allocate zero caches, then call with `decode=True` and
`mutable=["cache"]` on one or more new tokens at a time.

Cross-attention in decode mode (`kv` given, `decode=True`) projects the encoder output to K/V once per sequence: the
first decode call after the init projects them and stores them as "cached_cross_key"/"cached_cross_value" in the
"cache" collection; later calls read them and skip the k/v projections (saving 2 * src_len * d^2 MACs per layer per
step). The choice is static, made in Python from whether those variables exist, so there is no traced cond: a jitted
step traces twice, once for the filling call and once for the reading calls. The init call never allocates them (its
`kv` is a placeholder whose length need not be the source length), so a fresh cache always refills them; a cache
belongs to one encoder output, and `kv` is ignored once they are filled (a different [batch, src_len] raises).

Masks are boolean, True = may attend, broadcastable to [batch, heads, q_len, k_len].

Llama-family options (both off by default): `num_kv_heads` < `num_heads` is grouped-query attention (K/V projected
to fewer heads, cached at that size, each K/V head serving `num_heads // num_kv_heads` consecutive query heads, as
HF's `repeat_kv`); `rope_theta` applies rotary position embeddings to q and k (`apply_rotary`, HF's rotate_half
convention) at the `positions` the caller passes, before K is cached.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from int4jax.nn.dense import QDense
from int4jax.quant.policy import QuantPolicy


def padding_mask(attention_mask: jax.Array) -> jax.Array:
  """[batch, k_len] of 1/0 (HF convention) -> bool [batch, 1, 1, k_len]."""
  return attention_mask.astype(bool)[:, None, None, :]


def causal_mask(q_len: int, k_len: int, offset: jax.Array | int = 0) -> jax.Array:
  """bool [1, 1, q_len, k_len]: query i (at absolute position offset + i) sees keys at positions <= its own."""
  q_pos = jnp.arange(q_len)[:, None] + offset
  k_pos = jnp.arange(k_len)[None, :]
  return (k_pos <= q_pos)[None, None]


def attention_masks(attention_mask: jax.Array | None, batch: int, seq: int, *, by_lengths: bool, causal: bool
                    ) -> tuple[jax.Array | None, jax.Array | None]:
  """(dense padding mask | None, kv_seq_lengths | None) of a model's [batch, seq] 1/0 attention mask.

  by_lengths (integer mode, no decoding, no attention taps): key lengths [batch] int32 instead of the dense mask,
  taking the padding to be at the end (what the tokenizers produce), so that attention stays on cuDNN's flash kernel
  (MultiHeadAttention's `kv_seq_lengths`); a causal model gets full lengths when there is no padding mask, since the
  causal flag then is the whole mask. Otherwise the dense mask of `padding_mask` (None without a mask)."""
  if not by_lengths or (attention_mask is None and not causal):
    return (None if attention_mask is None else padding_mask(attention_mask)), None
  if attention_mask is None:
    return None, jnp.full((batch,), seq, jnp.int32)
  return None, jnp.sum(attention_mask.astype(jnp.int32), axis=-1)


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
  """Logical AND of the masks that are not None (None when all are None)."""
  present = [m for m in masks if m is not None]
  if not present:
    return None
  out = present[0]
  for m in present[1:]:
    out = jnp.logical_and(out, m)
  return out


def init_decode_cache(model: nn.Module, batch: int, max_len: int) -> dict:
  """Zeroed "cache" collection of a causal LM (GPT-2, Llama: `model(ids, decode=True)` creates it) for decoding up
  to `max_len` tokens; shapes only, no forward pass is run."""
  ids = jnp.zeros((batch, max_len), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, decode=True))["cache"]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def update_decode_state(module: nn.Module, batch: int, seq: int, attention_mask, *, max_len: int, limit: str):
  """Model-level decode bookkeeping kept in `module`'s "cache" collection (GPT-2, BART decoder).

  Returns (offset, key_mask): the position of this call's first token, and the padding mask over the whole cache
  ([batch, max_len] bool; the tokens written so far, as their attention masks said). The init call (whose input
  length is the cache length, checked against `max_len`, named `limit` in the error) returns (0, None).
  """
  initialised = module.has_variable("cache", "index")
  index = module.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
  key_mask = module.variable("cache", "attention_mask", jnp.zeros, (batch, seq), jnp.bool_)
  if not initialised:
    if seq > max_len:
      raise ValueError(f"cache length {seq} exceeds {limit}={max_len}")
    return 0, None
  start = index.value
  new = jnp.ones((batch, seq), jnp.bool_) if attention_mask is None else attention_mask.astype(jnp.bool_)
  key_mask.value = lax.dynamic_update_slice(key_mask.value, new, (0, start))
  index.value = start + seq
  return start, key_mask.value


def flash_implementation(q, mask=None) -> str | None:
  """"cudnn" (flash attention) on a GPU for bf16/fp16 heads it takes and no dense mask; None (XLA) otherwise.

  jax.nn.dot_product_attention's own default is XLA everywhere, which materialises the scores (46% slower for
  BERT-large at 32 x 512 on the H200)."""
  ok = (jax.devices()[0].platform == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16) and mask is None
        and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128)
  return "cudnn" if ok else None


def rotary_angles(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """(cos, sin), float32 [batch, seq, 1, head_dim], for positions [batch, seq]: frequency i (< head_dim / 2) is
  theta^(-2i / head_dim), and the two halves of the head dimension share them (HF's cat(freqs, freqs))."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding of x [batch, seq, heads, head_dim] (HF Llama): x * cos + rotate_half(x) * sin, where
  rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]); computed in float32, returned in x's dtype."""
  cos, sin = rotary_angles(positions, x.shape[-1], theta)
  xf = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  return (xf * cos + rotated * sin).astype(x.dtype)


def attention_core(q, k, v, mask, *, dropout_rate: float, deterministic: bool, want_scores: bool,
                   want_probs: bool, dropout_rng=None, dtype=jnp.float32):
  """Scaled dot-product attention on [batch, len, heads, head_dim] inputs.

  Returns (out [batch, q_len, heads, head_dim], scores | None, probs | None); scores are QK^T/sqrt(d) before the
  mask, in float32.
  """
  dropout_active = dropout_rate > 0.0 and not deterministic
  if not (want_scores or want_probs or dropout_active):
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=flash_implementation(q, mask))
    return out, None, None
  scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32))
  scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
  masked = scores if mask is None else jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(masked, axis=-1)
  attn = probs
  if dropout_active:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    attn = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", attn.astype(dtype), v.astype(dtype))
  return out, (scores if want_scores else None), (probs if want_probs else None)


class MultiHeadAttention(nn.Module):
  """Self- or cross-attention with policy-quantized projections.

  Attributes:
    num_heads, head_dim: d_model = num_heads * head_dim.
    policy: quantization policy passed to every projection.
    proj_names: (q, k, v, out) names for separate projections (BERT, BART, Llama), (qkv, out) for one fused
      projection of x (GPT-2's c_attn; integer mode's fused QKV, grouped-query included: [q | k | v] along N), or
      (q, kv, out) for a query projection and one fused K/V projection of the keys' source (integer mode's
      cross-attention), so parameter paths mirror the Hugging Face layout (or the packed checkpoint's).
    causal: add a causal mask (decoder self-attention).
    dropout_rate: attention-probability dropout.
    out_features: width of the output projection (defaults to num_heads * head_dim).
  """
  num_heads: int
  head_dim: int
  policy: QuantPolicy | None = None
  proj_names: tuple[str, ...] = ("query", "key", "value", "output")
  causal: bool = False
  dropout_rate: float = 0.0
  use_bias: bool = True
  out_features: int | None = None
  dtype: Any = jnp.float32
  int_mode: Any = None  # int_gemm.IntMode for integer inference (QDense), None for fake quantization
  num_kv_heads: int | None = None     # grouped-query attention (separate q/k/v only); None = num_heads
  rope_theta: float | None = None     # rotary positions on q, k (self-attention); needs `positions`

  @property
  def kv_heads(self) -> int:
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  def _dense(self, features: int, name: str, gemm: str) -> QDense:
    return QDense(features, policy=self.policy, gemm=gemm, use_bias=self.use_bias, dtype=self.dtype, name=name,
                  int_mode=self.int_mode)

  def _split_heads(self, t, heads: int | None = None):
    return t.reshape(t.shape[:-1] + (heads or self.num_heads, self.head_dim))

  def _project(self, x, kv, cross_cache: bool = False, pre_ln=None):
    """q, k, v as [batch, len, heads, head_dim]; `cross_cache` (decode mode) routes cross-attention K/V through
    `_cached_cross_kv`; `pre_ln` (x's pre-LayerNorm input, see QDense) goes to the projections of x."""
    d, kv_d = self.num_heads * self.head_dim, self.kv_heads * self.head_dim
    if len(self.proj_names) == 2:
      if kv is not None:
        raise ValueError("a fused qkv projection cannot do cross-attention; use separate q/k/v names")
      q, k, v = jnp.split(self._dense(d + 2 * kv_d, self.proj_names[0], "qkv")(x, pre_ln=pre_ln), [d, d + kv_d],
                          axis=-1)
      return self._split_heads(q), self._split_heads(k, self.kv_heads), self._split_heads(v, self.kv_heads)
    if len(self.proj_names) not in (3, 4):
      raise ValueError(f"proj_names must have 2 (fused qkv), 3 (q, fused kv) or 4 entries, got {self.proj_names!r}")
    q = self._split_heads(self._dense(d, self.proj_names[0], "qkv")(x, pre_ln=pre_ln))
    if cross_cache and kv is not None and not self.is_initializing():
      return (q,) + self._cached_cross_kv(kv)
    return (q,) + (self._project_kv(x, pre_ln) if kv is None else self._project_kv(kv))

  def _project_kv(self, src, pre_ln=None):
    d = self.kv_heads * self.head_dim
    if len(self.proj_names) == 3:  # one fused [k | v] projection
      k, v = jnp.split(self._dense(2 * d, self.proj_names[1], "qkv")(src, pre_ln=pre_ln), 2, axis=-1)
    else:
      k = self._dense(d, self.proj_names[1], "qkv")(src, pre_ln=pre_ln)
      v = self._dense(d, self.proj_names[2], "qkv")(src, pre_ln=pre_ln)
    return self._split_heads(k, self.kv_heads), self._split_heads(v, self.kv_heads)

  def _cached_cross_kv(self, kv):
    """Decode-mode cross-attention K/V: the first call projects `kv` and stores the result in the "cache"
    collection; later calls return the stored K/V without running the k/v projections (`kv` only checked)."""
    if self.has_variable("cache", "cached_cross_key"):
      k = self.get_variable("cache", "cached_cross_key")
      v = self.get_variable("cache", "cached_cross_value")
      if tuple(kv.shape[:2]) != tuple(k.shape[:2]):
        raise ValueError(f"cross-attention K/V were cached for [batch, src_len]={tuple(k.shape[:2])}, but this "
                         f"call's encoder output is {tuple(kv.shape[:2])}; start a new cache for a new source")
      return k, v
    k, v = self._project_kv(kv)
    self.put_variable("cache", "cached_cross_key", k)
    self.put_variable("cache", "cached_cross_value", v)
    return k, v

  def _append_to_cache(self, k, v):
    """Writes the new keys/values at the cache index; returns full-length k, v and the index before the write."""
    initialised = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not initialised:  # the init call only allocates the cache (its input length is max_len)
      return k, v, jnp.array(0, jnp.int32)
    index = cache_index.value
    max_len = cached_key.value.shape[1]
    if k.shape[1] > max_len:
      raise ValueError(f"{k.shape[1]=} new tokens exceed the cache length {max_len=}")
    k_all = lax.dynamic_update_slice(cached_key.value, k.astype(cached_key.value.dtype), (0, index, 0, 0))
    v_all = lax.dynamic_update_slice(cached_value.value, v.astype(cached_value.value.dtype), (0, index, 0, 0))
    cached_key.value, cached_value.value = k_all, v_all
    cache_index.value = index + k.shape[1]
    return k_all, v_all, index

  @nn.compact
  def __call__(self, x: jax.Array, kv: jax.Array | None = None, mask: jax.Array | None = None, *,
               deterministic: bool = True, want_scores: bool = False, want_probs: bool = False,
               decode: bool = False, pre_ln=None, kv_seq_lengths=None, positions: jax.Array | None = None):
    """x: [batch, q_len, d_model]; kv: [batch, k_len, d_kv] for cross-attention (None = self-attention).

    mask: bool, broadcastable to [batch, heads, q_len, k_len]; in self-attention decode mode k_len is the cache
    length (max_len). In cross-attention decode mode K/V are projected once, then read from the cache (see the
    module docstring). pre_ln: x's pre-LayerNorm input for integer mode (QDense). kv_seq_lengths: [batch] int32,
    valid keys per row when padding is at the end (a mask cuDNN attention takes; used instead of `mask`, with the
    causal flag for causal self-attention, when no dense mask, taps or decoding are asked for).
    positions [batch, q_len]: absolute token positions for rotary embeddings (`rope_theta`).
    Returns (out [batch, q_len, out_features], scores | None, probs | None).
    """
    if self.num_heads % self.kv_heads:
      raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}")
    q, k, v = self._project(x, kv, cross_cache=decode, pre_ln=pre_ln)
    if self.rope_theta is not None:
      if kv is not None or positions is None:
        raise ValueError("rotary embeddings (rope_theta) need self-attention and `positions`")
      q, k = apply_rotary(q, positions, self.rope_theta), apply_rotary(k, positions, self.rope_theta)
    # Key lengths (right padding) and the causal flag instead of a dense mask: what cuDNN's flash attention takes.
    by_lengths = kv_seq_lengths is not None and mask is None and not decode and not (want_scores or want_probs)
    causal = None
    if decode and kv is None:
      k, v, index = self._append_to_cache(k, v)
      if self.causal:
        causal = causal_mask(q.shape[1], k.shape[1], offset=index)
      else:  # keys beyond what has been written are empty cache slots
        causal = (jnp.arange(k.shape[1]) < index + q.shape[1])[None, None, None, :]
    elif self.causal:
      causal = causal_mask(q.shape[1], k.shape[1])
    mask = combine_masks(mask, causal)
    if self.kv_heads != self.num_heads:  # K/V head j serves query heads j * n_rep ... (j + 1) * n_rep - 1
      n_rep = self.num_heads // self.kv_heads
      k, v = jnp.repeat(k, n_rep, axis=2), jnp.repeat(v, n_rep, axis=2)
    dropout_rng = None
    if self.dropout_rate > 0.0 and not deterministic:
      dropout_rng = self.make_rng("dropout")
    if by_lengths:
      out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_seq_lengths, is_causal=self.causal,
                                         implementation=flash_implementation(q))
      scores = probs = None
    else:
      out, scores, probs = attention_core(q, k, v, mask, dropout_rate=self.dropout_rate,
                                          deterministic=deterministic, want_scores=want_scores,
                                          want_probs=want_probs, dropout_rng=dropout_rng, dtype=self.dtype)
    out = out.reshape(out.shape[:2] + (self.num_heads * self.head_dim,))
    out_features = self.out_features or self.num_heads * self.head_dim
    out = self._dense(out_features, self.proj_names[-1], "attn_out")(out)
    return out, scores, probs
