"""What the model families return, and which knowledge-distillation taps a caller asks for."""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.struct
import jax

Array = jax.Array
Layers = Optional[tuple]  # one array per layer, or None when not requested


@dataclasses.dataclass(frozen=True)
class Taps:
  """Which intermediate tensors the forward returns (static: part of the traced program).

  hidden_states: every layer's output, the embedding output first ([batch, seq, d_model] each).
  attention_scores: pre-softmax QK^T / sqrt(d_head), the paper's "Att*" ([batch, heads, q, k], no mask added).
  attention_probs: post-softmax attention ([batch, heads, q, k]).
  """
  hidden_states: bool = False
  attention_scores: bool = False
  attention_probs: bool = False

  @property
  def any_attention(self) -> bool:
    return self.attention_scores or self.attention_probs

  @classmethod
  def all(cls) -> "Taps":
    return cls(True, True, True)


@flax.struct.dataclass
class ModelOutput:
  """Encoder-only and decoder-only models (BERT, GPT-2)."""
  logits: Array
  hidden_states: Layers = None
  attention_scores: Layers = None
  attention_probs: Layers = None


def layered_output(logits: Array, taps: Taps, hidden: list, scores: list, probs: list) -> ModelOutput:
  """A decoder-only model's output (GPT-2, Llama): the per-layer lists kept only where `taps` asks for them."""
  return ModelOutput(logits=logits, hidden_states=tuple(hidden) if taps.hidden_states else None,
                     attention_scores=tuple(scores) if taps.attention_scores else None,
                     attention_probs=tuple(probs) if taps.attention_probs else None)


@flax.struct.dataclass
class Seq2SeqOutput:
  """Encoder-decoder models (BART)."""
  logits: Array
  encoder_hidden_states: Layers = None
  decoder_hidden_states: Layers = None
  encoder_attention_scores: Layers = None
  encoder_attention_probs: Layers = None
  decoder_attention_scores: Layers = None
  decoder_attention_probs: Layers = None
  cross_attention_scores: Layers = None
  cross_attention_probs: Layers = None
