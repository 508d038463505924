"""BERT (Post-LN encoder) with policy-quantized GEMMs, KD taps and Hugging Face checkpoint mapping.

Module paths mirror the HF layout so that policy regexes read naturally:

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings,layer_norm}   float
    encoder/layer_{i}/attention/{query,key,value}      QDense gemm "qkv"
    encoder/layer_{i}/attention/output                 QDense gemm "attn_out"
    encoder/layer_{i}/attention_norm                   LayerNorm (HF attention.output.LayerNorm)
    encoder/layer_{i}/intermediate                     QDense gemm "ffn_in"
    encoder/layer_{i}/output                           QDense gemm "ffn_out"
    encoder/layer_{i}/output_norm                      LayerNorm (HF output.LayerNorm)
    pooler/dense, classifier                           QDense gemm None: always float

    model = BertForSequenceClassification(bert_tiny(num_labels=3))
    out = model.apply({"params": params}, input_ids, attention_mask, taps=Taps(hidden_states=True))

Integer mode (`int_mode` set; params from `int4jax.inference.export`): quantized GEMMs run the integer kernels
(QDense), one fused QKV GEMM per layer when `int_mode.fuse_qkv` (path encoder/layer_{i}/attention/qkv), the
LayerNorms before QKV and FFN-in are fused into the activation quantizer (each LayerNorm hands its pre-norm input
and params to the next GEMMs), GELU is fused into the FFN-in epilogue, and a padding mask is taken as key lengths
(right padding, what the tokenizers produce) so that attention stays on cuDNN's flash kernel.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from int4jax.models import hf
from int4jax.models.family import Family, check_fields, fusion
from int4jax.nn.common import activated, check_activation, layer_norm, normed
from int4jax.nn.attention import MultiHeadAttention, attention_masks
from int4jax.models.outputs import ModelOutput, Taps
from int4jax.nn.dense import QDense
from int4jax.quant.policy import QuantPolicy

_INIT = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  hidden_act: str = "gelu"                     # HF names: gelu (erf), gelu_new / gelu_pytorch_tanh (tanh), relu
  num_labels: int = 2                          # 1 -> regression (STS-B)
  problem_type: Literal["classification", "regression"] = "classification"
  policy: QuantPolicy | None = None            # None: float everywhere
  dtype: Any = jnp.float32                     # compute dtype; params stay float32
  int_mode: Any = None                         # int_gemm.IntMode: integer inference (see the module docstring)

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"{self.hidden_size=} must be a multiple of {self.num_heads=}")
    if self.problem_type not in ("classification", "regression"):
      raise ValueError(f"problem_type must be 'classification' or 'regression', got {self.problem_type!r}")
    if self.problem_type == "regression" and self.num_labels != 1:
      raise ValueError(f"regression needs num_labels == 1, got {self.num_labels=}")
    check_activation(self.hidden_act, "hidden_act")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads


def _preset(**kw):
  def make(**overrides) -> BertConfig:
    cfg = dict(kw, **overrides)
    if cfg.get("num_labels") == 1 and "problem_type" not in overrides:
      cfg["problem_type"] = "regression"
    return BertConfig(**cfg)
  return make


bert_base = _preset()
bert_large = _preset(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)
bert_tiny = _preset(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                    max_position_embeddings=128)
PRESETS = {"bert_base": bert_base, "bert_large": bert_large, "bert_tiny": bert_tiny}


@flax.struct.dataclass
class BertModelOutput(ModelOutput):
  """Bare encoder output: `logits` holds the sequence output [batch, seq, hidden]; `pooler_output` [batch, hidden]."""
  pooler_output: jax.Array | None = None


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  return layer_norm(config.layer_norm_eps, config.dtype, name)


def _norm(config: BertConfig, name: str, y):
  """(LayerNorm(y), pre_ln): pre_ln = (y, gamma, beta, eps) for the integer-mode quantizer of the next GEMMs."""
  return normed(_layer_norm(config, name), y, config.int_mode)


class BertEmbeddings(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, *, deterministic: bool):
    cfg = self.config
    seq_len = input_ids.shape[-1]
    if seq_len > cfg.max_position_embeddings:
      raise ValueError(f"{seq_len=} exceeds {cfg.max_position_embeddings=}")
    embed = lambda n, name: nn.Embed(n, cfg.hidden_size, embedding_init=_INIT, name=name)
    x = (embed(cfg.vocab_size, "word_embeddings")(input_ids)
         + embed(cfg.max_position_embeddings, "position_embeddings")(jnp.arange(seq_len)[None])
         + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids))
    x, pre_ln = _norm(cfg, "layer_norm", x)
    return nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic), pre_ln


class BertLayer(nn.Module):
  """Post-LN block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool, taps: Taps, pre_ln=None, kv_seq_lengths=None):
    cfg = self.config
    im = cfg.int_mode
    proj = ("qkv", "output") if im is not None and im.fuse_qkv else ("query", "key", "value", "output")
    attn, scores, probs = MultiHeadAttention(
        num_heads=cfg.num_heads, head_dim=cfg.head_dim, policy=cfg.policy, dropout_rate=cfg.attention_dropout,
        dtype=cfg.dtype, proj_names=proj, int_mode=im, name="attention")(
            x, mask=mask, deterministic=deterministic, want_scores=taps.attention_scores,
            want_probs=taps.attention_probs, pre_ln=pre_ln, kv_seq_lengths=kv_seq_lengths)
    attn = nn.Dropout(cfg.hidden_dropout)(attn, deterministic=deterministic)
    x, pre_ln = _norm(cfg, "attention_norm", x + attn)
    dense = lambda n, gemm, name: QDense(n, policy=cfg.policy, gemm=gemm, dtype=cfg.dtype, kernel_init=_INIT,
                                        int_mode=im, name=name)
    h = activated(dense(cfg.intermediate_size, "ffn_in", "intermediate"), x, cfg.hidden_act, pre_ln)
    h = dense(cfg.hidden_size, "ffn_out", "output")(h)
    h = nn.Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
    x, pre_ln = _norm(cfg, "output_norm", x + h)
    return x, scores, probs, pre_ln


class BertEncoder(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool, taps: Taps, pre_ln=None, kv_seq_lengths=None):
    hidden, scores, probs = [x], [], []
    for i in range(self.config.num_layers):
      x, s, p, pre_ln = BertLayer(self.config, name=f"layer_{i}")(
          x, mask, deterministic=deterministic, taps=taps, pre_ln=pre_ln, kv_seq_lengths=kv_seq_lengths)
      hidden.append(x)
      scores.append(s)
      probs.append(p)
    return x, (tuple(hidden) if taps.hidden_states else None), (tuple(scores) if taps.attention_scores else None), (
        tuple(probs) if taps.attention_probs else None)


class BertPooler(nn.Module):
  """tanh(Dense(h[:, 0])): float, the policy never quantizes it (gemm None)."""
  config: BertConfig

  @nn.compact
  def __call__(self, sequence_output):
    cfg = self.config
    dense = QDense(cfg.hidden_size, policy=cfg.policy, gemm=None, dtype=cfg.dtype, kernel_init=_INIT, name="dense")
    return jnp.tanh(dense(sequence_output[:, 0]))


class BertModel(nn.Module):
  """Bare encoder + pooler (HF BertModel)."""
  config: BertConfig

  def setup(self):
    self.embeddings = BertEmbeddings(self.config)
    self.encoder = BertEncoder(self.config)
    self.pooler = BertPooler(self.config)

  def encode(self, input_ids, attention_mask, token_type_ids, deterministic: bool, taps: Taps | None):
    """-> (sequence_output [batch, seq, hidden], pooled [batch, hidden], hidden_states, scores, probs)."""
    taps = taps or Taps()
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    mask, kv_seq_lengths = attention_masks(
        attention_mask, *input_ids.shape, causal=False,
        by_lengths=self.config.int_mode is not None and not (taps.attention_scores or taps.attention_probs))
    x, pre_ln = self.embeddings(input_ids, token_type_ids, deterministic=deterministic)
    x, hidden, scores, probs = self.encoder(x, mask, deterministic=deterministic, taps=taps, pre_ln=pre_ln,
                                            kv_seq_lengths=kv_seq_lengths)
    return x, self.pooler(x), hidden, scores, probs

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool = True,
               taps: Taps | None = None) -> BertModelOutput:
    """input_ids, attention_mask (1 = token, 0 = padding), token_type_ids: int [batch, seq]."""
    x, pooled, hidden, scores, probs = self.encode(input_ids, attention_mask, token_type_ids, deterministic, taps)
    return BertModelOutput(logits=x, hidden_states=hidden, attention_scores=scores, attention_probs=probs,
                           pooler_output=pooled)


class BertForSequenceClassification(BertModel):
  """BertModel + dropout + float classifier on the pooled [CLS]; logits [batch, num_labels] (num_labels 1: regression)."""

  def setup(self):
    super().setup()
    self.dropout = nn.Dropout(self.config.hidden_dropout)
    self.classifier = QDense(self.config.num_labels, policy=self.config.policy, gemm=None, dtype=self.config.dtype,
                             kernel_init=_INIT)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool = True,
               taps: Taps | None = None) -> ModelOutput:
    _, pooled, hidden, scores, probs = self.encode(input_ids, attention_mask, token_type_ids, deterministic, taps)
    logits = self.classifier(self.dropout(pooled, deterministic=deterministic)).astype(jnp.float32)
    return ModelOutput(logits=logits, hidden_states=hidden, attention_scores=scores, attention_probs=probs)


# ----------------------------------------------------------------------------------------------
# Hugging Face checkpoints

TASKS = ("base", "sequence_classification")
_ARCH_TASKS = {"BertModel": "base", "BertForSequenceClassification": "sequence_classification"}


def build(config: BertConfig, task: str = "sequence_classification") -> nn.Module:
  if task not in TASKS:
    raise ValueError(f"BERT task {task!r} is not one of {TASKS}")
  return BertModel(config) if task == "base" else BertForSequenceClassification(config)


def default_task(hf_config: Mapping[str, Any]) -> str:
  """Task of the checkpoint's own architecture; encoders saved from pretraining heads default to classification."""
  archs = hf_config.get("architectures") or []
  return _ARCH_TASKS.get(archs[0], "sequence_classification") if archs else "sequence_classification"


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> BertConfig:
  """BertConfig from a transformers config.json dict; `overrides` replace fields (num_labels, policy, ...)."""
  if hf_config.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"position_embedding_type {hf_config['position_embedding_type']!r} is not supported")
  num_labels = hf_config.get("num_labels") or len(hf_config.get("id2label") or {}) or 2
  kw = dict(
      vocab_size=hf_config["vocab_size"], hidden_size=hf_config["hidden_size"],
      num_layers=hf_config["num_hidden_layers"], num_heads=hf_config["num_attention_heads"],
      intermediate_size=hf_config["intermediate_size"],
      max_position_embeddings=hf_config["max_position_embeddings"],
      type_vocab_size=hf_config.get("type_vocab_size", 2), layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
      hidden_dropout=hf_config.get("hidden_dropout_prob", 0.1),
      attention_dropout=hf_config.get("attention_probs_dropout_prob", 0.1),
      hidden_act=hf_config.get("hidden_act", "gelu"), num_labels=num_labels)
  check_fields(BertConfig(**kw), overrides, "BERT config.json")   # the same unknown-field check as GPT-2 and BART
  kw.update(overrides)
  if "problem_type" not in overrides:
    kw["problem_type"] = "regression" if kw["num_labels"] == 1 else "classification"
  return BertConfig(**kw)


def hf_mapping(config: BertConfig, task: str, prefix: str) -> dict[str, hf.Ref]:
  """Flax param path -> HF tensor for every BERT param; `prefix` is "bert." or "" (bare BertModel checkpoints)."""
  p, lin = prefix, hf.linear_kernel
  m = {
      "embeddings/word_embeddings/embedding": hf.Ref(p + "embeddings.word_embeddings.weight"),
      "embeddings/position_embeddings/embedding": hf.Ref(p + "embeddings.position_embeddings.weight"),
      "embeddings/token_type_embeddings/embedding": hf.Ref(p + "embeddings.token_type_embeddings.weight"),
      "embeddings/layer_norm/scale": hf.Ref(p + "embeddings.LayerNorm.weight"),
      "embeddings/layer_norm/bias": hf.Ref(p + "embeddings.LayerNorm.bias"),
      "pooler/dense/kernel": hf.Ref(p + "pooler.dense.weight", lin),
      "pooler/dense/bias": hf.Ref(p + "pooler.dense.bias"),
  }
  dense = {"attention/query": "attention.self.query", "attention/key": "attention.self.key",
           "attention/value": "attention.self.value", "attention/output": "attention.output.dense",
           "intermediate": "intermediate.dense", "output": "output.dense"}
  norms = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
  for i in range(config.num_layers):
    ours, theirs = f"encoder/layer_{i}", f"{p}encoder.layer.{i}"
    for a, b in dense.items():
      m[f"{ours}/{a}/kernel"] = hf.Ref(f"{theirs}.{b}.weight", lin)
      m[f"{ours}/{a}/bias"] = hf.Ref(f"{theirs}.{b}.bias")
    for a, b in norms.items():
      m[f"{ours}/{a}/scale"] = hf.Ref(f"{theirs}.{b}.weight")
      m[f"{ours}/{a}/bias"] = hf.Ref(f"{theirs}.{b}.bias")
  if task == "sequence_classification":
    m["classifier/kernel"] = hf.Ref("classifier.weight", lin)
    m["classifier/bias"] = hf.Ref("classifier.bias")
  return m


# Present in checkpoints but not part of our model: position/token-type id buffers, pretraining heads
# (BertForPreTraining / MaskedLM "cls.*"). Listed in a log line when skipped.
_IGNORE = (r"(^|\.)embeddings\.(position_ids|token_type_ids)$", r"^cls\.")


def load_params(config: BertConfig, task: str, hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                rng: jax.Array | None = None, source: str = "checkpoint") -> dict:
  """Params for `build(config, task)` from HF tensors (BertModel or BertFor* checkpoints, "bert." prefix optional)."""
  del hf_config
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
  model = build(config, task)
  dummy = jnp.zeros((1, 1), jnp.int32)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  init = lambda: model.init(rng, dummy)["params"]
  ignore = list(_IGNORE)
  if task == "base":
    ignore.append(r"^classifier\.")  # a fine-tuned head dropped when only the encoder is wanted
  return hf.assign_params(jax.eval_shape(init), hf_mapping(config, task, prefix), tensors, init_fn=jax.jit(init),
                          new_ok=(r"^pooler/", r"^classifier/"), ignore=ignore, source=source)


def config_to_hf(config: BertConfig, task: str) -> dict[str, Any]:
  """The transformers config.json of `build(config, task)` (inverse of config_from_hf), for export."""
  arch = {v: k for k, v in _ARCH_TASKS.items()}[task]
  labels = {i: f"LABEL_{i}" for i in range(config.num_labels)}
  return dict(
      model_type="bert", architectures=[arch], vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
      type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
      hidden_dropout_prob=config.hidden_dropout, attention_probs_dropout_prob=config.attention_dropout,
      hidden_act=config.hidden_act, position_embedding_type="absolute", id2label=labels,
      label2id={v: k for k, v in labels.items()},
      problem_type="regression" if config.problem_type == "regression" else "single_label_classification")


def int_fusions(config: BertConfig) -> dict[str, tuple[str, ...]]:
  """Integer mode's fused GEMMs (Family.int_fusions): one QKV GEMM per layer."""
  out = {}
  for i in range(config.num_layers):
    out.update(fusion(f"encoder/layer_{i}/attention/", "qkv", ("query", "key", "value")))
  return out


FAMILY = Family(
    name="bert", presets=PRESETS, config_from_hf=config_from_hf, build=build, load_params=load_params, tasks=TASKS,
    default_task=default_task, config_to_hf=config_to_hf,
    export_mapping=lambda config, task: hf_mapping(config, task, "bert." if task == "sequence_classification" else ""),
    int_fusions=int_fusions)
