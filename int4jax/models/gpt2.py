"""GPT-2 language model (Pre-LN as released, or Post-LN for the paper's §4 experiment) with quantized GEMMs.

Block, Pre-LN (Hugging Face `GPT2LMHeadModel`, `post_ln=False`):
    x = x + attn(ln_1(x));  x = x + mlp(ln_2(x));   ...;  logits = ln_f(x) @ wte^T
Block, Post-LN (`post_ln=True`, the original Transformer placement that the paper swaps in, paper_spec.md §4):
    x = ln_1(x + attn(x));  x = ln_2(x + mlp(x));   ...;  logits = x @ wte^T      (no ln_f: the last block ends in LN)
Both use the embedding output x_0 = wte[ids] + wpe[positions] unnormalised, as GPT-2 does.

The four GEMMs go through `QDense` with the paper's GEMM labels (paper_spec.md §1.4):
    attn/c_attn -> "qkv" (one fused [d, 3d] projection), attn/c_proj -> "attn_out",
    mlp/c_fc -> "ffn_in", mlp/c_proj -> "ffn_out".
Embeddings, LayerNorms and the LM head (tied to wte) stay float under every policy.

Param tree (mirrors the HF names): wte, wpe, h_{i}/{ln_1, attn/c_attn, attn/c_proj, ln_2, mlp/c_fc, mlp/c_proj}, ln_f.

Taps (`outputs.Taps`), following HF's `output_hidden_states` convention exactly:
    hidden_states[0] = embedding output, hidden_states[i] = output of block i for i < n_layer, and the last entry
    is ln_f(output of the last block) (Pre-LN) -- the un-normalised output of the last block is not returned.
    With Post-LN the last entry is the last block's output. len = n_layer + 1.
    attention_scores: pre-softmax QK^T/sqrt(d_head) (no mask), attention_probs: post-softmax, per layer.
The MLP also sows its `c_proj` input (the paper's "FC2 input", Fig. 5) as `intermediates/h_{i}/mlp/ffn_out_input`
when the caller makes "intermediates" mutable; otherwise the sow costs nothing.

Incremental decoding (Linen "cache" collection, flax lm1b convention):
    cache = init_cache(model, batch, max_len)
    out, mut = model.apply({"params": params, "cache": cache}, ids, mask, decode=True, mutable=["cache"])
    cache = mut["cache"]     # each call appends its tokens; positions continue from the cache index
`attention_mask` in decode mode covers only the tokens of this call ([batch, new_len]); the model keeps the mask of
everything written so far in the cache, so padding given earlier stays masked.

Integer mode (`int_mode` set, an `int_gemm.IntMode`; params from `int4jax.inference.export`): quantized GEMMs run
the integer kernels (QDense); c_attn is one QKV GEMM already. Fused: each LayerNorm into the activation quantizer of
the GEMM that reads it (Pre-LN: ln_1 -> c_attn, ln_2 -> c_fc; Post-LN: ln_1 -> c_fc, ln_2 -> the next block's c_attn,
while the first block's c_attn quantizes the embedding output itself), dequantize + bias into the GEMM epilogue, and
the causal mask with right padding given as key lengths to the flash attention kernel. Not fused: GPT-2's tanh GELU
follows c_fc in jnp (the kernels' epilogue has the erf GELU only).

HF checkpoints: GPT-2 uses `Conv1D`, whose weight is stored (in, out) -- already the Flax kernel layout, so no
transpose. `attn.bias`/`attn.masked_bias` causal buffers (old checkpoints) are ignored, a `lm_head.weight` must equal
`wte.weight` (tied) or be absent, and keys may or may not carry the `transformer.` prefix.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from int4jax.nn.dense import QDense
from int4jax.models import hf
from int4jax.models.family import Family, replace_config
from int4jax.nn.common import activated, layer_norm, normed
from int4jax.nn.attention import MultiHeadAttention, attention_masks, init_decode_cache, update_decode_state
from int4jax.models.outputs import ModelOutput, Taps, layered_output
from int4jax.quant.policy import QuantPolicy


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  vocab_size: int = 50257
  n_positions: int = 1024
  n_embd: int = 768
  n_layer: int = 12
  n_head: int = 12
  n_inner: int | None = None          # MLP width; None = 4 * n_embd
  layer_norm_epsilon: float = 1e-5
  resid_pdrop: float = 0.1
  embd_pdrop: float = 0.1
  attn_pdrop: float = 0.1
  post_ln: bool = False               # True: Post-LN blocks and no ln_f (see module docstring)
  policy: QuantPolicy | None = None   # None = float
  dtype: Any = jnp.float32            # compute dtype; params stay float32
  int_mode: Any = None                # int_gemm.IntMode: integer inference (see the module docstring)

  def __post_init__(self):
    if self.n_embd % self.n_head:
      raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")

  @property
  def inner_dim(self) -> int:
    return self.n_inner or 4 * self.n_embd

  @property
  def head_dim(self) -> int:
    return self.n_embd // self.n_head


def gpt2_base() -> GPT2Config:
  """GPT-2 small (124M; the paper's "GPT2-base", 117M in its own count)."""
  return GPT2Config()


def gpt2_medium() -> GPT2Config:
  """GPT-2 medium (355M)."""
  return GPT2Config(n_embd=1024, n_layer=24, n_head=16)


def gpt2_tiny() -> GPT2Config:
  """For tests: 2 layers, width 32."""
  return GPT2Config(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4)


PRESETS = {"gpt2_base": gpt2_base, "gpt2_medium": gpt2_medium, "gpt2_tiny": gpt2_tiny}


def _layer_norm(config: GPT2Config, name: str) -> nn.LayerNorm:
  return layer_norm(config.layer_norm_epsilon, config.dtype, name)


class GPT2MLP(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x, *, deterministic: bool, pre_ln=None):
    c = self.config
    dense = lambda n, gemm, name: QDense(n, policy=c.policy, gemm=gemm, dtype=c.dtype, int_mode=c.int_mode, name=name)
    h = activated(dense(c.inner_dim, "ffn_in", "c_fc"), x, "gelu_new", pre_ln)  # HF "gelu_new": tanh approximation
    self.sow("intermediates", "ffn_out_input", h)
    h = dense(c.n_embd, "ffn_out", "c_proj")(h)
    return nn.Dropout(c.resid_pdrop)(h, deterministic=deterministic)


class GPT2Block(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool, taps: Taps, decode: bool, pre_ln=None, kv_seq_lengths=None):
    """-> (x, scores, probs, pre_ln); pre_ln (integer mode, Post-LN): x's LayerNorm for the next block's QKV."""
    c = self.config
    attn = MultiHeadAttention(num_heads=c.n_head, head_dim=c.head_dim, policy=c.policy,
                              proj_names=("c_attn", "c_proj"), causal=True, dropout_rate=c.attn_pdrop,
                              dtype=c.dtype, int_mode=c.int_mode, name="attn")
    mlp = GPT2MLP(c, name="mlp")
    ln_1, ln_2 = _layer_norm(c, "ln_1"), _layer_norm(c, "ln_2")
    norm = lambda ln, y: normed(ln, y, c.int_mode)
    resid_drop = nn.Dropout(c.resid_pdrop)

    def attend(h, pre):
      out, scores, probs = attn(h, mask=mask, deterministic=deterministic, want_scores=taps.attention_scores,
                                want_probs=taps.attention_probs, decode=decode, pre_ln=pre,
                                kv_seq_lengths=kv_seq_lengths)
      return resid_drop(out, deterministic=deterministic), scores, probs

    if c.post_ln:
      a, scores, probs = attend(x, pre_ln)
      x, pre = norm(ln_1, x + a)
      x, pre = norm(ln_2, x + mlp(x, deterministic=deterministic, pre_ln=pre))
    else:
      h, pre = norm(ln_1, x)
      a, scores, probs = attend(h, pre)
      x = x + a
      h, pre = norm(ln_2, x)
      x, pre = x + mlp(h, deterministic=deterministic, pre_ln=pre), None
    return x, scores, probs, pre


class GPT2LMHeadModel(nn.Module):
  """GPT-2 with the tied LM head. See the module docstring for the block layout, taps and decoding."""
  config: GPT2Config

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
               position_ids: jax.Array | None = None, deterministic: bool = True, taps: Taps = Taps(),
               decode: bool = False) -> ModelOutput:
    """input_ids, attention_mask (1 = token, 0 = padding), position_ids: [batch, seq] -> logits [batch, seq, vocab].

    position_ids default to arange(seq) (+ the cache index when decoding), as HF's forward does: left padding
    therefore shifts the positions of real tokens (pass position_ids to avoid that).
    """
    c = self.config
    batch, seq = input_ids.shape
    key_mask = attention_mask
    offset = 0
    if decode:
      offset, key_mask = update_decode_state(self, batch, seq, attention_mask, max_len=c.n_positions,
                                             limit="n_positions")
    elif seq > c.n_positions:
      raise ValueError(f"sequence length {seq} exceeds n_positions={c.n_positions}")
    if position_ids is None:
      position_ids = offset + jnp.arange(seq)[None, :]

    init = nn.initializers.normal(0.02)
    wte = nn.Embed(c.vocab_size, c.n_embd, embedding_init=init, name="wte")
    wpe = nn.Embed(c.n_positions, c.n_embd, embedding_init=init, name="wpe")
    x = wte(input_ids) + wpe(position_ids)
    x = nn.Dropout(c.embd_pdrop)(x, deterministic=deterministic).astype(c.dtype)
    mask, kv_seq_lengths = attention_masks(
        key_mask, batch, seq, causal=True,
        by_lengths=c.int_mode is not None and not decode and not (taps.attention_scores or taps.attention_probs))

    hidden, scores, probs, pre_ln = [x], [], [], None
    for i in range(c.n_layer):
      x, s, p, pre_ln = GPT2Block(c, name=f"h_{i}")(x, mask, deterministic=deterministic, taps=taps, decode=decode,
                                                   pre_ln=pre_ln, kv_seq_lengths=kv_seq_lengths)
      hidden.append(x)
      scores.append(s)
      probs.append(p)
    if not c.post_ln:
      x = _layer_norm(c, "ln_f")(x)
      hidden[-1] = x   # HF convention: the last hidden state is after ln_f
    # Tied LM head, float under every policy; logits accumulate in float32.
    logits = jnp.dot(x.astype(c.dtype), wte.embedding.astype(c.dtype).T, preferred_element_type=jnp.float32)
    return layered_output(logits, taps, hidden, scores, probs)


# The causal LMs share one decode cache (nn.attention.init_decode_cache); the name stays this module's API.
init_cache = init_decode_cache


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face checkpoints

_SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")   # the same tanh formula


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> GPT2Config:
  """GPT2Config from a HF config.json dict; options this implementation does not compute raise ValueError."""
  act = hf_config.get("activation_function", "gelu_new")
  if act not in _SUPPORTED_ACTIVATIONS:
    raise ValueError(f"GPT-2 activation_function={act!r} is not supported (only {_SUPPORTED_ACTIVATIONS})")
  for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                  ("add_cross_attention", False)):
    if hf_config.get(key, ok) != ok:
      raise ValueError(f"GPT-2 config {key}={hf_config[key]!r} is not supported (expected {ok})")
  config = GPT2Config(
      vocab_size=hf_config["vocab_size"], n_positions=hf_config["n_positions"], n_embd=hf_config["n_embd"],
      n_layer=hf_config["n_layer"], n_head=hf_config["n_head"], n_inner=hf_config.get("n_inner"),
      layer_norm_epsilon=hf_config.get("layer_norm_epsilon", 1e-5), resid_pdrop=hf_config.get("resid_pdrop", 0.1),
      embd_pdrop=hf_config.get("embd_pdrop", 0.1), attn_pdrop=hf_config.get("attn_pdrop", 0.1))
  return replace_config(config, overrides, "GPT-2 config.json")


def hf_mapping(config: GPT2Config, prefix: str = "transformer.") -> dict[str, hf.Ref]:
  """Flax param path -> HF tensor (Conv1D weights are already (in, out): identity transforms throughout)."""
  p = prefix
  m = {"wte/embedding": hf.Ref((p + "wte.weight", "lm_head.weight")), "wpe/embedding": hf.Ref(p + "wpe.weight")}
  lns = ("ln_1", "ln_2")
  denses = ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")
  for i in range(config.n_layer):
    for ln in lns:
      m[f"h_{i}/{ln}/scale"] = hf.Ref(f"{p}h.{i}.{ln}.weight")
      m[f"h_{i}/{ln}/bias"] = hf.Ref(f"{p}h.{i}.{ln}.bias")
    for d in denses:
      hf_name = f"{p}h.{i}.{d.replace('/', '.')}"
      m[f"h_{i}/{d}/kernel"] = hf.Ref(hf_name + ".weight")
      m[f"h_{i}/{d}/bias"] = hf.Ref(hf_name + ".bias")
  if not config.post_ln:
    m["ln_f/scale"] = hf.Ref(p + "ln_f.weight")
    m["ln_f/bias"] = hf.Ref(p + "ln_f.bias")
  return m


# Causal-mask buffers of old checkpoints (not parameters).
HF_IGNORE = (r"(^|\.)h\.\d+\.attn\.bias$", r"(^|\.)h\.\d+\.attn\.masked_bias$")



def params_from_hf(config: GPT2Config, tensors: Mapping[str, np.ndarray], source: str = "checkpoint") -> dict:
  """Strictly maps HF GPT-2 tensors (GPT2LMHeadModel or GPT2Model layout) onto this model's params."""
  prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
  hf.check_tied(tensors, (prefix + "wte.weight", "lm_head.weight"), source)
  model = GPT2LMHeadModel(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
  return hf.assign_params(shapes, hf_mapping(config, prefix), tensors, ignore=HF_IGNORE, source=source)


def _load_params(config, task, hf_config, tensors, rng, source):
  del task, hf_config, rng   # one task; nothing is newly initialised
  return params_from_hf(config, tensors, source)


def config_to_hf(config: GPT2Config, task: str = "lm") -> dict[str, Any]:
  """The transformers GPT2LMHeadModel config.json (inverse of config_from_hf), for export. Post-LN has no HF class."""
  del task
  if config.post_ln:
    raise ValueError("a Post-LN GPT-2 (post_ln=True) has no transformers class; only Pre-LN runs export to HF")
  return dict(
      model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=config.vocab_size,
      n_positions=config.n_positions, n_ctx=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
      n_head=config.n_head, n_inner=config.n_inner, activation_function="gelu_new",
      layer_norm_epsilon=config.layer_norm_epsilon, resid_pdrop=config.resid_pdrop, embd_pdrop=config.embd_pdrop,
      attn_pdrop=config.attn_pdrop, scale_attn_weights=True, tie_word_embeddings=True)


FAMILY = Family(
    name="gpt2", presets=PRESETS, config_from_hf=config_from_hf, build=lambda config, task: GPT2LMHeadModel(config),
    load_params=_load_params, tasks=("lm",), default_task=lambda hf_config: "lm", config_to_hf=config_to_hf,
    export_mapping=lambda config, task: hf_mapping(config, "transformer."),
    int_fusions=lambda config: {})   # c_attn is one QKV GEMM already
