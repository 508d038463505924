"""BART encoder-decoder (`BartForConditionalGeneration`) with quantized GEMMs, KD taps and a decoder KV cache.

Layout (Hugging Face `modeling_bart`, Post-LN throughout):
    embed(ids)  = shared[ids] * embed_scale + embed_positions[pos + 2]      (BART's learned positions are offset by 2)
    x0          = layernorm_embedding(embed(ids))
    encoder layer: x = self_attn_layer_norm(x + self_attn(x));  x = final_layer_norm(x + fc2(act(fc1(x))))
    decoder layer: x = self_attn_layer_norm(x + causal_self_attn(x))
                   x = encoder_attn_layer_norm(x + encoder_attn(x, encoder_out))
                   x = final_layer_norm(x + fc2(act(fc1(x))))
    logits      = x @ shared^T + final_logits_bias
`shared` is one embedding for encoder, decoder and LM head. Quantized GEMMs (paper_spec.md §1.4, DQ-BART modules):
q_proj/k_proj/v_proj -> "qkv", out_proj -> "attn_out", fc1 -> "ffn_in", fc2 -> "ffn_out" in encoder self-attention,
decoder self-attention and cross-attention (`encoder_attn`). Embeddings, LayerNorms and the LM head stay float.

Param tree (HF names): shared, final_logits_bias, {encoder,decoder}/{embed_positions, layernorm_embedding,
layers_{i}/{self_attn, self_attn_layer_norm, [encoder_attn, encoder_attn_layer_norm,] fc1, fc2, final_layer_norm}}.
`final_logits_bias` is a (non-trainable) buffer in HF; here it is a param of shape [vocab] -- mask it out of the
optimizer to keep HF semantics.

Taps follow HF: encoder_hidden_states = (x0, layer_1, ..., layer_L), likewise for the decoder; attention scores are
pre-softmax QK^T/sqrt(d_head) without the mask, probs post-softmax, per layer for encoder self, decoder self and cross
attention.

Integer mode (`int_mode` set, an `int_gemm.IntMode`; params from `int4jax.inference.export`): quantized GEMMs run
the integer kernels (QDense). Fused: one QKV GEMM per self-attention and one K/V GEMM per cross-attention (with
`int_mode.fuse_qkv`; paths self_attn/qkv, encoder_attn/kv_proj); each LayerNorm into the activation quantizer of the
GEMMs that read it (layernorm_embedding and final_layer_norm -> the next self-attention QKV, self_attn_layer_norm ->
the cross-attention q_proj (decoder) or fc1 (encoder), encoder_attn_layer_norm -> fc1); the erf GELU into fc1's
epilogue (activation_function "gelu"; others follow fc1 in jnp); padding and causal masks given as key lengths (right
padding) to the flash attention kernel. Not fused: the cross-attention K/V GEMM quantizes the encoder output itself.

Calling:
    out = model.apply({"params": p}, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, taps=...)
    enc = model.apply({"params": p}, input_ids, attention_mask, method=model.encode)          # BartEncoderOutput
    cache = init_cache(model, batch, max_len)
    out, mut = model.apply({"params": p, "cache": cache}, decoder_input_ids, enc.last_hidden_state, attention_mask,
                           decode=True, mutable=["cache"], method=model.decode)
In decode mode each call appends its tokens to the self-attention cache (positions continue from the cache index;
`decoder_attention_mask` covers only this call's tokens and is remembered). Cross-attention projects the encoder
output to K/V once, in the first decode call on a fresh cache, and stores them in the cache ("cached_cross_key",
"cached_cross_value" under each layer's encoder_attn); later calls reuse them (attention.py's docstring). Pass the
same encoder output (and source mask) to every call: a cache belongs to one source batch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from int4jax.nn.dense import QDense
from int4jax.models import hf
from int4jax.models.family import Family, fusion, replace_config
from int4jax.nn.common import activated, check_activation, layer_norm, normed
from int4jax.nn.attention import MultiHeadAttention, attention_masks, update_decode_state
from int4jax.models.outputs import Seq2SeqOutput, Taps
from int4jax.quant.policy import QuantPolicy

POSITION_OFFSET = 2   # HF BartLearnedPositionalEmbedding: rows 0 and 1 are never used by positions

@dataclasses.dataclass(frozen=True)
class BartConfig:
  vocab_size: int = 50265
  max_position_embeddings: int = 1024   # the position table has max_position_embeddings + 2 rows
  d_model: int = 768
  encoder_layers: int = 6
  decoder_layers: int = 6
  encoder_attention_heads: int = 12
  decoder_attention_heads: int = 12
  encoder_ffn_dim: int = 3072
  decoder_ffn_dim: int = 3072
  activation_function: str = "gelu"
  dropout: float = 0.1
  attention_dropout: float = 0.1
  activation_dropout: float = 0.1
  scale_embedding: bool = False          # embeddings * sqrt(d_model) when True
  layer_norm_epsilon: float = 1e-5
  pad_token_id: int = 1
  bos_token_id: int = 0
  eos_token_id: int = 2
  decoder_start_token_id: int = 2
  policy: QuantPolicy | None = None      # None = float
  dtype: Any = jnp.float32               # compute dtype; params stay float32
  int_mode: Any = None                   # int_gemm.IntMode: integer inference (see the module docstring)

  def __post_init__(self):
    for heads in ("encoder_attention_heads", "decoder_attention_heads"):
      if self.d_model % getattr(self, heads):
        raise ValueError(f"d_model={self.d_model} must be a multiple of {heads}={getattr(self, heads)}")
    check_activation(self.activation_function, "activation_function")

  @property
  def embed_scale(self) -> float:
    return math.sqrt(self.d_model) if self.scale_embedding else 1.0


def bart_base() -> BartConfig:
  """facebook/bart-base (140M)."""
  return BartConfig()


def bart_large() -> BartConfig:
  """facebook/bart-large (406M)."""
  return BartConfig(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                    decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096)


def bart_tiny() -> BartConfig:
  """For tests: 2 + 2 layers, width 32."""
  return BartConfig(vocab_size=99, max_position_embeddings=64, d_model=32, encoder_layers=2, decoder_layers=2,
                    encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37)


PRESETS = {"bart_base": bart_base, "bart_large": bart_large, "bart_tiny": bart_tiny}


def shift_tokens_right(input_ids: jax.Array, pad_token_id: int, decoder_start_token_id: int) -> jax.Array:
  """Decoder inputs from labels: prepend decoder_start, drop the last token, replace -100 (ignored labels) by pad."""
  shifted = jnp.concatenate(
      [jnp.full_like(input_ids[:, :1], decoder_start_token_id), input_ids[:, :-1]], axis=1)
  return jnp.where(shifted == -100, pad_token_id, shifted)


@flax.struct.dataclass
class BartEncoderOutput:
  last_hidden_state: jax.Array             # [batch, src_len, d_model]
  hidden_states: tuple | None = None
  attention_scores: tuple | None = None
  attention_probs: tuple | None = None


def _layer_norm(config: BartConfig, name: str) -> nn.LayerNorm:
  return layer_norm(config.layer_norm_epsilon, config.dtype, name)


_PROJ = ("q_proj", "k_proj", "v_proj")
_FUSED = {"self_attn": ("qkv", _PROJ), "encoder_attn": ("kv_proj", _PROJ[1:])}   # integer mode's fused projections


def _attention(config: BartConfig, heads: int, causal: bool, name: str) -> MultiHeadAttention:
  proj = _PROJ
  if config.int_mode is not None and config.int_mode.fuse_qkv:   # self: (qkv,), cross: (q_proj, kv_proj)
    fused, parts = _FUSED[name]
    proj = _PROJ[: len(_PROJ) - len(parts)] + (fused,)
  return MultiHeadAttention(num_heads=heads, head_dim=config.d_model // heads, policy=config.policy,
                            proj_names=proj + ("out_proj",), causal=causal, dropout_rate=config.attention_dropout,
                            dtype=config.dtype, int_mode=config.int_mode, name=name)


class BartLayer(nn.Module):
  """One encoder layer, or a decoder layer (`is_decoder`: causal self-attention + cross-attention)."""
  config: BartConfig
  is_decoder: bool = False

  @nn.compact
  def __call__(self, x, self_mask, enc=None, cross_mask=None, *, deterministic: bool, taps: Taps,
               decode: bool = False, pre_ln=None, self_lengths=None, cross_lengths=None):
    """-> (x, (self scores, probs), (cross scores, probs), pre_ln); pre_ln / *_lengths: integer mode (module doc)."""
    c = self.config
    heads = c.decoder_attention_heads if self.is_decoder else c.encoder_attention_heads
    ffn_dim = c.decoder_ffn_dim if self.is_decoder else c.encoder_ffn_dim
    drop = lambda h, rate=c.dropout: nn.Dropout(rate)(h, deterministic=deterministic)
    want = dict(deterministic=deterministic, want_scores=taps.attention_scores, want_probs=taps.attention_probs)

    norm = lambda name, y: normed(_layer_norm(c, name), y, c.int_mode)
    dense = lambda n, gemm, name: QDense(n, policy=c.policy, gemm=gemm, dtype=c.dtype, int_mode=c.int_mode, name=name)

    a, self_scores, self_probs = _attention(c, heads, self.is_decoder, "self_attn")(
        x, mask=self_mask, decode=decode, pre_ln=pre_ln, kv_seq_lengths=self_lengths, **want)
    x, pre_ln = norm("self_attn_layer_norm", x + drop(a))
    cross_scores = cross_probs = None
    if self.is_decoder:
      a, cross_scores, cross_probs = _attention(c, heads, False, "encoder_attn")(
          x, enc, mask=cross_mask, decode=decode, pre_ln=pre_ln, kv_seq_lengths=cross_lengths, **want)
      x, pre_ln = norm("encoder_attn_layer_norm", x + drop(a))
    h = activated(dense(ffn_dim, "ffn_in", "fc1"), x, c.activation_function, pre_ln)
    h = drop(h, c.activation_dropout)
    self.sow("intermediates", "ffn_out_input", h)
    h = dense(c.d_model, "ffn_out", "fc2")(h)
    x, pre_ln = norm("final_layer_norm", x + drop(h))
    return x, (self_scores, self_probs), (cross_scores, cross_probs), pre_ln


def _by_lengths(config: BartConfig, taps: Taps, decode: bool) -> bool:
  """Integer mode gives attention key lengths instead of dense masks (attention_masks) unless it decodes or taps."""
  return config.int_mode is not None and not decode and not (taps.attention_scores or taps.attention_probs)


def _embed_positions(config: BartConfig, positions: jax.Array) -> jax.Array:
  table = nn.Embed(config.max_position_embeddings + POSITION_OFFSET, config.d_model,
                   embedding_init=nn.initializers.normal(0.02), name="embed_positions")
  return table(positions + POSITION_OFFSET)


class BartEncoder(nn.Module):
  config: BartConfig

  @nn.compact
  def __call__(self, inputs_embeds, attention_mask, *, deterministic: bool, taps: Taps) -> BartEncoderOutput:
    """inputs_embeds: scaled token embeddings [batch, src_len, d_model]; attention_mask: [batch, src_len] or None."""
    c = self.config
    src_len = inputs_embeds.shape[1]
    if src_len > c.max_position_embeddings:
      raise ValueError(f"source length {src_len} exceeds max_position_embeddings={c.max_position_embeddings}")
    x = inputs_embeds + _embed_positions(c, jnp.arange(src_len)[None, :])
    x, pre_ln = normed(_layer_norm(c, "layernorm_embedding"), x, c.int_mode)
    x = nn.Dropout(c.dropout)(x, deterministic=deterministic).astype(c.dtype)
    mask, lengths = attention_masks(attention_mask, inputs_embeds.shape[0], src_len, causal=False,
                                    by_lengths=_by_lengths(c, taps, decode=False))
    hidden, scores, probs = [x], [], []
    for i in range(c.encoder_layers):
      x, (s, p), _, pre_ln = BartLayer(c, name=f"layers_{i}")(x, mask, deterministic=deterministic, taps=taps,
                                                              pre_ln=pre_ln, self_lengths=lengths)
      hidden.append(x)
      scores.append(s)
      probs.append(p)
    return BartEncoderOutput(
        last_hidden_state=x,
        hidden_states=tuple(hidden) if taps.hidden_states else None,
        attention_scores=tuple(scores) if taps.attention_scores else None,
        attention_probs=tuple(probs) if taps.attention_probs else None)


class BartDecoder(nn.Module):
  config: BartConfig

  @nn.compact
  def __call__(self, inputs_embeds, attention_mask, encoder_hidden_states, encoder_attention_mask, *,
               deterministic: bool, taps: Taps, decode: bool = False):
    """Returns (last hidden [batch, tgt_len, d_model], hidden_states, (self scores, probs), (cross scores, probs))."""
    c = self.config
    batch, tgt_len = inputs_embeds.shape[:2]
    offset, key_mask = 0, attention_mask
    if decode:
      offset, key_mask = update_decode_state(self, batch, tgt_len, attention_mask,
                                             max_len=c.max_position_embeddings, limit="max_position_embeddings")
    elif tgt_len > c.max_position_embeddings:
      raise ValueError(f"target length {tgt_len} exceeds max_position_embeddings={c.max_position_embeddings}")
    x = inputs_embeds + _embed_positions(c, offset + jnp.arange(tgt_len)[None, :])
    x, pre_ln = normed(_layer_norm(c, "layernorm_embedding"), x, c.int_mode)
    x = nn.Dropout(c.dropout)(x, deterministic=deterministic).astype(c.dtype)
    by_lengths = _by_lengths(c, taps, decode)
    self_mask, self_lengths = attention_masks(key_mask, batch, tgt_len, causal=True, by_lengths=by_lengths)
    cross_mask, cross_lengths = attention_masks(encoder_attention_mask, batch, encoder_hidden_states.shape[1],
                                                causal=False, by_lengths=by_lengths)
    hidden, self_attn, cross_attn = [x], [], []
    for i in range(c.decoder_layers):
      x, sa, ca, pre_ln = BartLayer(c, is_decoder=True, name=f"layers_{i}")(
          x, self_mask, encoder_hidden_states, cross_mask, deterministic=deterministic, taps=taps, decode=decode,
          pre_ln=pre_ln, self_lengths=self_lengths, cross_lengths=cross_lengths)
      hidden.append(x)
      self_attn.append(sa)
      cross_attn.append(ca)
    return x, tuple(hidden), self_attn, cross_attn



def _per_layer(pairs, which: int, wanted: bool):
  return tuple(p[which] for p in pairs) if wanted else None


class BartForConditionalGeneration(nn.Module):
  """BART with the tied LM head. See the module docstring for layout, taps and decoding."""
  config: BartConfig

  def setup(self):
    c = self.config
    self.shared = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(0.02))
    self.encoder = BartEncoder(c)
    self.decoder = BartDecoder(c)
    self.final_logits_bias = self.param("final_logits_bias", nn.initializers.zeros, (c.vocab_size,), jnp.float32)

  def _embed(self, ids):
    return self.shared(ids) * self.config.embed_scale

  def encode(self, input_ids, attention_mask=None, *, deterministic: bool = True,
             taps: Taps = Taps()) -> BartEncoderOutput:
    """input_ids, attention_mask (1 = token, 0 = padding): [batch, src_len]."""
    return self.encoder(self._embed(input_ids), attention_mask, deterministic=deterministic, taps=taps)

  def decode(self, decoder_input_ids, encoder_hidden_states, attention_mask=None, decoder_attention_mask=None, *,
             deterministic: bool = True, taps: Taps = Taps(), decode: bool = False) -> Seq2SeqOutput:
    """Decoder + LM head. attention_mask is the source padding mask; returns a Seq2SeqOutput without encoder fields."""
    c = self.config
    x, hidden, self_attn, cross_attn = self.decoder(
        self._embed(decoder_input_ids), decoder_attention_mask, encoder_hidden_states, attention_mask,
        deterministic=deterministic, taps=taps, decode=decode)
    # Tied LM head, float under every policy; logits accumulate in float32.
    logits = jnp.dot(x.astype(c.dtype), self.shared.embedding.astype(c.dtype).T, preferred_element_type=jnp.float32)
    logits = logits + self.final_logits_bias
    return Seq2SeqOutput(
        logits=logits,
        decoder_hidden_states=hidden if taps.hidden_states else None,
        decoder_attention_scores=_per_layer(self_attn, 0, taps.attention_scores),
        decoder_attention_probs=_per_layer(self_attn, 1, taps.attention_probs),
        cross_attention_scores=_per_layer(cross_attn, 0, taps.attention_scores),
        cross_attention_probs=_per_layer(cross_attn, 1, taps.attention_probs))

  def __call__(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None, *,
               deterministic: bool = True, taps: Taps = Taps()) -> Seq2SeqOutput:
    """Full forward. decoder_input_ids default to shift_tokens_right(input_ids), as in HF's BartModel."""
    c = self.config
    if decoder_input_ids is None:
      decoder_input_ids = shift_tokens_right(input_ids, c.pad_token_id, c.decoder_start_token_id)
    enc = self.encode(input_ids, attention_mask, deterministic=deterministic, taps=taps)
    out = self.decode(decoder_input_ids, enc.last_hidden_state, attention_mask, decoder_attention_mask,
                      deterministic=deterministic, taps=taps)
    return out.replace(encoder_hidden_states=enc.hidden_states, encoder_attention_scores=enc.attention_scores,
                       encoder_attention_probs=enc.attention_probs)


def init_cache(model: BartForConditionalGeneration, batch: int, max_len: int) -> dict:
  """Zeroed decoder "cache" collection for up to `max_len` target tokens (shapes only: no forward pass is run).

  It holds the self-attention caches only: the cross-attention K/V are added by the first decode call (their length
  is the source length), so a jitted step compiles once for that call and once for the later ones.
  """
  c = model.config
  ids = jnp.zeros((batch, max_len), jnp.int32)
  enc = jnp.zeros((batch, 1, c.d_model), c.dtype)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, enc, decode=True, method=model.decode))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def greedy_decode(model: BartForConditionalGeneration, params, input_ids, attention_mask, max_len: int):
  """Greedy decoding with the KV cache (a test helper, not the generation pipeline).

  Returns (tokens [batch, max_len] starting with decoder_start, logits [batch, max_len - 1, vocab] per step).
  """
  c = model.config
  enc = model.apply({"params": params}, input_ids, attention_mask, method=model.encode).last_hidden_state
  cache = init_cache(model, input_ids.shape[0], max_len)
  step = jax.jit(lambda cache, tok: model.apply({"params": params, "cache": cache}, tok, enc, attention_mask,
                                                 decode=True, mutable=["cache"], method=model.decode))
  tok = jnp.full((input_ids.shape[0], 1), c.decoder_start_token_id, jnp.int32)
  tokens, logits = [tok], []
  for _ in range(max_len - 1):
    out, mut = step(cache, tok)
    cache = mut["cache"]
    logits.append(out.logits[:, -1])
    tok = jnp.argmax(out.logits[:, -1], axis=-1)[:, None].astype(jnp.int32)
    tokens.append(tok)
  return jnp.concatenate(tokens, axis=1), jnp.stack(logits, axis=1)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face checkpoints

_HF_FIELDS = ("vocab_size", "max_position_embeddings", "d_model", "encoder_layers", "decoder_layers",
              "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
              "activation_function", "dropout", "attention_dropout", "activation_dropout", "scale_embedding",
              "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> BartConfig:
  """BartConfig from a HF config.json dict; variants this implementation does not compute raise ValueError."""
  for key in ("add_final_layer_norm", "normalize_before"):   # mBART-style Pre-LN variants
    if hf_config.get(key):
      raise ValueError(f"BART config {key}=True is not supported (BART is Post-LN)")
  defaults = BartConfig()
  kwargs = {k: hf_config.get(k, getattr(defaults, k)) for k in _HF_FIELDS}
  config = BartConfig(**kwargs)
  return replace_config(config, overrides, "BART config.json")


def hf_mapping(config: BartConfig, prefix: str = "model.") -> dict[str, hf.Ref]:
  """Flax param path -> HF tensor. nn.Linear weights (out, in) are transposed; embeddings alias `shared`."""
  p = prefix
  m = {"shared/embedding": hf.Ref(_shared_names(p)),
       "final_logits_bias": hf.Ref("final_logits_bias", hf.row_to_vector)}
  lin = lambda flax, name: {f"{flax}/kernel": hf.Ref(name + ".weight", hf.linear_kernel),
                            f"{flax}/bias": hf.Ref(name + ".bias")}
  ln = lambda flax, name: {f"{flax}/scale": hf.Ref(name + ".weight"), f"{flax}/bias": hf.Ref(name + ".bias")}
  for side, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
    m[f"{side}/embed_positions/embedding"] = hf.Ref(f"{p}{side}.embed_positions.weight")
    m.update(ln(f"{side}/layernorm_embedding", f"{p}{side}.layernorm_embedding"))
    attns = ("self_attn", "encoder_attn") if side == "decoder" else ("self_attn",)
    for i in range(layers):
      f, h = f"{side}/layers_{i}", f"{p}{side}.layers.{i}"
      for attn in attns:
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
          m.update(lin(f"{f}/{attn}/{proj}", f"{h}.{attn}.{proj}"))
        m.update(ln(f"{f}/{attn}_layer_norm", f"{h}.{attn}_layer_norm"))
      m.update(lin(f"{f}/fc1", f"{h}.fc1"))
      m.update(lin(f"{f}/fc2", f"{h}.fc2"))
      m.update(ln(f"{f}/final_layer_norm", f"{h}.final_layer_norm"))
  return m


def _shared_names(p: str) -> tuple[str, ...]:
  return (p + "shared.weight", p + "encoder.embed_tokens.weight", p + "decoder.embed_tokens.weight", "lm_head.weight")


# Fairseq-era version buffers (HF ignores them too).
HF_IGNORE = (r"(^|\.)(encoder|decoder)\.version$",)



def params_from_hf(config: BartConfig, tensors: Mapping[str, np.ndarray], source: str = "checkpoint") -> dict:
  """Strictly maps HF BART tensors (BartForConditionalGeneration or BartModel layout) onto this model's params.

  A missing `final_logits_bias` is zero-initialised (HF allows it to be absent); the token embeddings stored
  under several names must all be equal (they are one tied tensor).
  """
  prefix = "model." if any(k.startswith("model.") for k in tensors) else ""
  hf.check_tied(tensors, _shared_names(prefix), source)
  model = BartForConditionalGeneration(config)
  ids = jnp.zeros((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, None, ids))["params"]
  shapes = dict(shapes)
  shapes["final_logits_bias"] = np.zeros(shapes["final_logits_bias"].shape, np.float32)   # its init if absent
  return hf.assign_params(shapes, hf_mapping(config, prefix), tensors, new_ok=(r"^final_logits_bias$",),
                          ignore=HF_IGNORE, source=source)


def _load_params(config, task, hf_config, tensors, rng, source):
  del task, hf_config, rng   # one task; only final_logits_bias may be new, and it is zeros
  return params_from_hf(config, tensors, source)


def config_to_hf(config: BartConfig, task: str = "conditional_generation") -> dict[str, Any]:
  """The transformers BartForConditionalGeneration config.json (inverse of config_from_hf), for export."""
  del task
  if config.layer_norm_epsilon != 1e-5:
    raise ValueError(f"transformers' BART has a fixed LayerNorm eps 1e-5; this model uses {config.layer_norm_epsilon}")
  return dict({k: getattr(config, k) for k in _HF_FIELDS}, model_type="bart",
              architectures=["BartForConditionalGeneration"], normalize_before=False, add_final_layer_norm=False,
              is_encoder_decoder=True, tie_word_embeddings=True)


def int_fusions(config: BartConfig) -> dict[str, tuple[str, ...]]:
  """Integer mode's fused GEMMs (Family.int_fusions): one QKV GEMM per self-attention, one K/V GEMM per
  cross-attention (its query reads the decoder stream, its keys and values the encoder output)."""
  out = {}
  for side, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
    attns = ("self_attn", "encoder_attn") if side == "decoder" else ("self_attn",)
    for i in range(layers):
      for attn in attns:
        out.update(fusion(f"{side}/layers_{i}/{attn}/", *_FUSED[attn]))
  return out


FAMILY = Family(
    name="bart", presets=PRESETS, config_from_hf=config_from_hf,
    build=lambda config, task: BartForConditionalGeneration(config), load_params=_load_params,
    tasks=("conditional_generation",), default_task=lambda hf_config: "conditional_generation",
    config_to_hf=config_to_hf, export_mapping=lambda config, task: hf_mapping(config, "model."),
    int_fusions=int_fusions)
