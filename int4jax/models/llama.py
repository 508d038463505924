"""Llama-family causal language models (Llama 2/3, SmolLM2, ...) with quantized GEMMs.

Block (Hugging Face `LlamaForCausalLM`), Pre-RMSNorm throughout:
    x = x + o_proj(attn(rope(q_proj(n1(x))), rope(k_proj(n1(x))), v_proj(n1(x))))      n1 = input_layernorm
    x = x + down_proj(silu(gate_proj(n2(x))) * up_proj(n2(x)))                         n2 = post_attention_layernorm
    logits = norm(x) @ lm_head       (lm_head = embed_tokens^T when tie_word_embeddings)
RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight (float32 statistics); rotary positions in HF's rotate_half
convention with base `rope_theta`; grouped-query attention with `num_key_value_heads` K/V heads (attention.py).

The seven GEMMs go through `QDense` with the paper's GEMM labels (paper_spec.md §1.4):
    q_proj, k_proj, v_proj -> "qkv";  o_proj -> "attn_out";  gate_proj, up_proj -> "ffn_in";  down_proj -> "ffn_out".
Embeddings, RMSNorms and the LM head stay float under every policy.

Param tree (mirrors the HF names): embed_tokens, layers_{i}/{input_layernorm, self_attn/{q,k,v,o}_proj,
post_attention_layernorm, mlp/{gate,up,down}_proj}, norm, lm_head (only when the embeddings are not tied).

Taps (`outputs.Taps`), HF's `output_hidden_states` convention: hidden_states[0] = embedding output,
hidden_states[i] = output of block i for i < num_hidden_layers, the last entry = norm(output of the last block);
attention_scores (pre-softmax, per query head) and attention_probs per layer. The MLP sows its down_proj input (the
paper's "FC2 input") as `intermediates/layers_{i}/mlp/ffn_out_input` when "intermediates" is mutable.

Incremental decoding as GPT-2 (attention.update_decode_state; `init_cache`); the cache holds K/V at
num_key_value_heads heads, K after the rotary embedding. position_ids default to arange(seq) (+ the cache index), as
HF's forward does, so left padding shifts the positions of real tokens unless position_ids are passed.

Dropout: HF Llama has attention dropout only (`attention_dropout`); `hidden_dropout` (ours, default 0) drops the
embedding output and each residual branch, for QAT runs that want GPT-2-style regularisation.

Integer mode (`int_mode` set, an `int_gemm.IntMode`; params from `int4jax.inference.export`): quantized GEMMs run
the integer kernels (QDense). Fused (with `int_mode.fuse_qkv`): q/k/v as one QKV GEMM (self_attn/qkv, [q | k | v]
along N, grouped-query sizes) and gate/up as one FFN-in GEMM (mlp/gate_up, [gate | up]); dequantize + bias into the
GEMM epilogue; the causal mask with right padding given as key lengths to the flash attention kernel. Not fused: the
RMSNorms (the activation quantizer's fused norm is a LayerNorm; the normed activations are computed in jnp and then
quantized per token) and SwiGLU's silu(gate) * up (computed in jnp on the fused GEMM's output, then quantized for
down_proj).

Checkpoints: HF safetensors (`model.` prefixed names, nn.Linear weights (out, in) -> transposed), and GGUF files or
their block-packed conversion through `int4jax.models.gguf`, which hand over the same HF-named tensors.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from int4jax.models import hf
from int4jax.models.family import Family, fusion, replace_config
from int4jax.models.outputs import ModelOutput, Taps, layered_output
from int4jax.nn.attention import MultiHeadAttention, attention_masks, init_decode_cache, update_decode_state
from int4jax.nn.common import ACTIVATIONS, check_activation
from int4jax.nn.dense import QDense
from int4jax.quant.policy import QuantPolicy


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """HF `LlamaConfig` field names (the subset this implementation computes), plus policy and dtype."""
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int | None = None   # None = num_attention_heads (multi-head attention)
  head_dim: int | None = None              # None = hidden_size // num_attention_heads
  max_position_embeddings: int = 2048
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  hidden_act: str = "silu"                 # the gate's activation (SwiGLU with silu)
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  attention_dropout: float = 0.0
  hidden_dropout: float = 0.0              # ours (see module docstring); HF Llama has none
  policy: QuantPolicy | None = None        # None = float
  dtype: Any = jnp.float32                 # compute dtype; params stay float32
  int_mode: Any = None                     # int_gemm.IntMode: integer inference (see the module docstring)

  def __post_init__(self):
    check_activation(self.hidden_act, "hidden_act")
    if self.head_dim is None and self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of "
                       f"num_attention_heads={self.num_attention_heads} (or set head_dim)")
    if self.num_attention_heads % self.kv_heads:
      raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                       f"num_key_value_heads={self.kv_heads}")

  @property
  def kv_heads(self) -> int:
    return self.num_key_value_heads or self.num_attention_heads

  @property
  def head_size(self) -> int:
    return self.head_dim or self.hidden_size // self.num_attention_heads

  # Family-neutral names the LM pipeline reads (GPT-2 spells its fields this way).
  @property
  def n_positions(self) -> int:
    return self.max_position_embeddings

  @property
  def n_layer(self) -> int:
    return self.num_hidden_layers

  @property
  def n_embd(self) -> int:
    return self.hidden_size

  @property
  def n_head(self) -> int:
    return self.num_attention_heads

  @property
  def post_ln(self) -> bool:
    return False


def smollm2_135m() -> LlamaConfig:
  """SmolLM2-135M (HuggingFaceTB): 30 layers, width 576, 9 query / 3 K/V heads, SwiGLU 1536, tied, 8k context."""
  return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                     rope_theta=100000.0, tie_word_embeddings=True)


def llama_tiny() -> LlamaConfig:
  """For tests: 2 layers, width 32, 4 query / 2 K/V heads, untied head."""
  return LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5)


PRESETS = {"smollm2_135m": smollm2_135m, "llama_tiny": llama_tiny}


# Integer mode's fused GEMMs (IntMode.fuse_qkv; Family.int_fusions): fused module name, the modules it replaces.
_QKV = ("qkv", ("q_proj", "k_proj", "v_proj"))
_GATE_UP = ("gate_up", ("gate_proj", "up_proj"))


def _rms_norm(config: LlamaConfig, name: str) -> nn.RMSNorm:
  return nn.RMSNorm(epsilon=config.rms_norm_eps, dtype=config.dtype, name=name)


def _fused(config: LlamaConfig) -> bool:
  return config.int_mode is not None and config.int_mode.fuse_qkv


class LlamaMLP(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    dense = lambda n, gemm, name: QDense(n, policy=c.policy, gemm=gemm, use_bias=c.mlp_bias, dtype=c.dtype,
                                        int_mode=c.int_mode, name=name)
    if _fused(c):   # integer mode: gate and up as one [K, 2 * intermediate] GEMM
      gate, up = jnp.split(dense(2 * c.intermediate_size, "ffn_in", _GATE_UP[0])(x), 2, axis=-1)
    else:
      gate, up = (dense(c.intermediate_size, "ffn_in", name)(x) for name in _GATE_UP[1])
    h = ACTIVATIONS[c.hidden_act](gate) * up
    self.sow("intermediates", "ffn_out_input", h)
    return dense(c.hidden_size, "ffn_out", "down_proj")(h)


class LlamaDecoderLayer(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x, mask, positions, *, deterministic: bool, taps: Taps, decode: bool, kv_seq_lengths=None):
    c = self.config
    attn = MultiHeadAttention(num_heads=c.num_attention_heads, head_dim=c.head_size, policy=c.policy,
                              proj_names=((_QKV[0],) if _fused(c) else _QKV[1]) + ("o_proj",), causal=True,
                              dropout_rate=c.attention_dropout, use_bias=c.attention_bias,
                              out_features=c.hidden_size, dtype=c.dtype, num_kv_heads=c.kv_heads,
                              rope_theta=c.rope_theta, int_mode=c.int_mode, name="self_attn")
    drop = nn.Dropout(c.hidden_dropout)
    a, scores, probs = attn(_rms_norm(c, "input_layernorm")(x), mask=mask, deterministic=deterministic,
                            want_scores=taps.attention_scores, want_probs=taps.attention_probs, decode=decode,
                            positions=positions, kv_seq_lengths=kv_seq_lengths)
    x = x + drop(a, deterministic=deterministic)
    m = LlamaMLP(c, name="mlp")(_rms_norm(c, "post_attention_layernorm")(x))
    return x + drop(m, deterministic=deterministic), scores, probs


class LlamaForCausalLM(nn.Module):
  """Llama with a causal LM head. See the module docstring for the block layout, taps and decoding."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
               position_ids: jax.Array | None = None, deterministic: bool = True, taps: Taps = Taps(),
               decode: bool = False) -> ModelOutput:
    """input_ids, attention_mask (1 = token, 0 = padding), position_ids: [batch, seq] -> logits [batch, seq, vocab]."""
    c = self.config
    batch, seq = input_ids.shape
    key_mask = attention_mask
    offset = 0
    if decode:
      offset, key_mask = update_decode_state(self, batch, seq, attention_mask, max_len=c.max_position_embeddings,
                                             limit="max_position_embeddings")
    elif seq > c.max_position_embeddings:
      raise ValueError(f"sequence length {seq} exceeds max_position_embeddings={c.max_position_embeddings}")
    if position_ids is None:
      position_ids = jnp.broadcast_to(offset + jnp.arange(seq)[None, :], (batch, seq))

    embed = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=nn.initializers.normal(0.02), name="embed_tokens")
    x = nn.Dropout(c.hidden_dropout)(embed(input_ids), deterministic=deterministic).astype(c.dtype)
    mask, kv_seq_lengths = attention_masks(
        key_mask, batch, seq, causal=True,
        by_lengths=c.int_mode is not None and not decode and not (taps.attention_scores or taps.attention_probs))

    hidden, scores, probs = [x], [], []
    for i in range(c.num_hidden_layers):
      x, s, p = LlamaDecoderLayer(c, name=f"layers_{i}")(x, mask, position_ids, deterministic=deterministic,
                                                         taps=taps, decode=decode, kv_seq_lengths=kv_seq_lengths)
      hidden.append(x)
      scores.append(s)
      probs.append(p)
    x = _rms_norm(c, "norm")(x)
    hidden[-1] = x   # HF convention: the last hidden state is after the final norm
    if c.tie_word_embeddings:   # float under every policy; logits accumulate in float32
      logits = jnp.dot(x.astype(c.dtype), embed.embedding.astype(c.dtype).T, preferred_element_type=jnp.float32)
    else:
      head = self.param("lm_head", nn.initializers.normal(0.02), (c.hidden_size, c.vocab_size), jnp.float32)
      logits = jnp.dot(x.astype(c.dtype), head.astype(c.dtype), preferred_element_type=jnp.float32)
    return layered_output(logits, taps, hidden, scores, probs)


# The causal LMs share one decode cache (nn.attention.init_decode_cache); the name stays this module's API.
init_cache = init_decode_cache


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face checkpoints

def _rope_theta(hf_config: Mapping[str, Any]) -> float:
  """rope_theta from `rope_parameters` (transformers >= 5) or the top-level field; scaled RoPE variants raise."""
  rope = hf_config.get("rope_parameters") or {}
  scaling = hf_config.get("rope_scaling") or {}
  kind = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
  if kind != "default":
    raise ValueError(f"Llama rope_type={kind!r} is not supported (only the default, unscaled rotary embedding)")
  return float(rope.get("rope_theta", hf_config.get("rope_theta", 10000.0)))


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> LlamaConfig:
  """LlamaConfig from a HF config.json dict; options this implementation does not compute raise ValueError."""
  if hf_config.get("pretraining_tp", 1) != 1:
    raise ValueError(f"Llama pretraining_tp={hf_config['pretraining_tp']} is not supported (expected 1)")
  config = LlamaConfig(
      vocab_size=hf_config["vocab_size"], hidden_size=hf_config["hidden_size"],
      intermediate_size=hf_config["intermediate_size"], num_hidden_layers=hf_config["num_hidden_layers"],
      num_attention_heads=hf_config["num_attention_heads"],
      num_key_value_heads=hf_config.get("num_key_value_heads"), head_dim=hf_config.get("head_dim"),
      max_position_embeddings=hf_config.get("max_position_embeddings", 2048),
      rms_norm_eps=hf_config.get("rms_norm_eps", 1e-6), rope_theta=_rope_theta(hf_config),
      hidden_act=hf_config.get("hidden_act", "silu"),
      tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
      attention_bias=bool(hf_config.get("attention_bias", False)), mlp_bias=bool(hf_config.get("mlp_bias", False)),
      attention_dropout=float(hf_config.get("attention_dropout", 0.0)))
  if config.head_dim is not None and config.head_dim == config.hidden_size // config.num_attention_heads:
    config = dataclasses.replace(config, head_dim=None)
  return replace_config(config, overrides, "Llama config.json")


def config_to_hf(config: LlamaConfig) -> dict[str, Any]:
  """The config.json dict of a LlamaConfig (what config_from_hf reads back)."""
  return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": config.vocab_size,
          "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
          "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
          "num_key_value_heads": config.kv_heads, "head_dim": config.head_size,
          "max_position_embeddings": config.max_position_embeddings, "rms_norm_eps": config.rms_norm_eps,
          "rope_theta": config.rope_theta, "tie_word_embeddings": config.tie_word_embeddings,
          "attention_bias": config.attention_bias, "mlp_bias": config.mlp_bias, "hidden_act": config.hidden_act,
          "attention_dropout": config.attention_dropout}


def hf_mapping(config: LlamaConfig) -> dict[str, hf.Ref]:
  """Flax param path -> HF tensor (nn.Linear weights are (out, in): transposed to Flax kernels)."""
  m = {"embed_tokens/embedding": hf.Ref("model.embed_tokens.weight"), "norm/scale": hf.Ref("model.norm.weight")}
  if not config.tie_word_embeddings:
    m["lm_head"] = hf.Ref("lm_head.weight", hf.linear_kernel)
  denses = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}
  for i in range(config.num_hidden_layers):
    p = f"model.layers.{i}"
    for ln in ("input_layernorm", "post_attention_layernorm"):
      m[f"layers_{i}/{ln}/scale"] = hf.Ref(f"{p}.{ln}.weight")
    for block, names in denses.items():
      bias = config.attention_bias if block == "self_attn" else config.mlp_bias
      for d in names:
        m[f"layers_{i}/{block}/{d}/kernel"] = hf.Ref(f"{p}.{block}.{d}.weight", hf.linear_kernel)
        if bias:
          m[f"layers_{i}/{block}/{d}/bias"] = hf.Ref(f"{p}.{block}.{d}.bias")
  return m


# Rotary inv_freq buffers of old checkpoints (not parameters).
HF_IGNORE = (r"(^|\.)rotary_emb\.inv_freq$",)


def params_from_hf(config: LlamaConfig, tensors: Mapping[str, np.ndarray], source: str = "checkpoint") -> dict:
  """Strictly maps HF Llama tensors (LlamaForCausalLM layout) onto this model's params."""
  if config.tie_word_embeddings:
    hf.check_tied(tensors, ("model.embed_tokens.weight", "lm_head.weight"), source)
    mapping = hf_mapping(config)
    mapping["embed_tokens/embedding"] = hf.Ref(("model.embed_tokens.weight", "lm_head.weight"))
  else:
    mapping = hf_mapping(config)
  model = LlamaForCausalLM(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
  return hf.assign_params(shapes, mapping, tensors, ignore=HF_IGNORE, source=source)


def _load_params(config, task, hf_config, tensors, rng, source):
  del task, hf_config, rng   # one task; nothing is newly initialised
  return params_from_hf(config, tensors, source)


def int_fusions(config: LlamaConfig) -> dict[str, tuple[str, ...]]:
  """Integer mode's fused GEMMs (Family.int_fusions): one QKV GEMM (grouped-query: [q | k | v] along N) and one
  gate/up GEMM per layer."""
  out = {}
  for i in range(config.num_hidden_layers):
    out.update(fusion(f"layers_{i}/self_attn/", *_QKV))
    out.update(fusion(f"layers_{i}/mlp/", *_GATE_UP))
  return out


FAMILY = Family(
    name="llama", presets=PRESETS, config_from_hf=config_from_hf,
    build=lambda config, task: LlamaForCausalLM(config), load_params=_load_params, tasks=("lm",),
    default_task=lambda hf_config: "lm", config_to_hf=lambda config, task: config_to_hf(config),
    export_mapping=lambda config, task: hf_mapping(config), int_fusions=int_fusions)
