"""The integer inference engine: a packed checkpoint -> the model in integer mode -> one jitted forward.

    eng = engine.load("packed/sst2_w4a4")                  # IntMode() on the GPU; interpret mode on the CPU
    logits = eng(input_ids, attention_mask)                 # BERT: [batch, num_labels] float32
    logits = eng(input_ids, attention_mask)                 # GPT-2, Llama: causal LM logits [batch, seq, vocab]
    logits = eng(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)   # BART: [batch, tgt, vocab]

The engine calls the family's module with the arguments given (its own call convention, models/): BERT also takes
token_type_ids, BART's decoder inputs default to shift_tokens_right(input_ids) as in training. Padding is taken to be
at the end of each row (what the tokenizers produce): attention gets key lengths, not a dense mask.

Quantized GEMMs run `kernels_pallas.ops` (the dispatcher picks the fastest measured path per shape, XLA's own dots
included, and logs the choice once); LayerNorm+quantize, dequantize+bias(+GELU) are fused as `int4jax.nn.int_gemm`
describes; attention runs `jax.nn.dot_product_attention` (cuDNN flash attention on the GPU). On the GPU the weights
get the dispatcher's offline layouts once at load (`ops.prepare_weight`), never per call.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from int4jax.inference import export
from int4jax.models import hf
from int4jax.nn.int_gemm import IntMode
from int4jax.quant.formats import unpack_int4
from kernels_pallas import ops


def default_mode(**overrides) -> IntMode:
  """IntMode for this platform: Pallas kernels in interpret mode on the CPU, compiled on the GPU."""
  kw = dict(interpret=jax.devices()[0].platform == "cpu")
  kw.update(overrides)
  return IntMode(**kw)


@dataclasses.dataclass
class Engine:
  model: Any
  config: Any
  params: Any
  meta: dict

  def __post_init__(self):
    self._forward = jax.jit(lambda p, *args, **kwargs: self.model.apply({"params": p}, *args, **kwargs).logits)

  def __call__(self, *args, **kwargs):
    """The model's logits for its inputs (the family's call convention; see the module docstring)."""
    return self._forward(self.params, *args, **kwargs)


def prepare(params, policy, layers: dict[str, export.GemmLayer], gpu: bool):
  """Offline layouts of the 4-bit weights for the path each layer runs (GPU only; canonical bytes are kept)."""
  if not gpu:
    return params
  flat = hf.flatten(params)
  for path in [p for p in flat if p.endswith("/w_q")]:
    w = flat[path]
    if w.dtype != jnp.uint8:
      continue
    module = path[: -len("/w_q")]
    _, a_spec = policy.resolve(module, layers[module].gemm)
    if a_spec is None:
      flat[path] = ops.prepare_weight(jnp.asarray(w), "w4a16")
    elif a_spec.bits == 4:
      flat[path] = ops.prepare_weight(jnp.asarray(w), "w4a4")
    else:
      flat[path] = ops.PreparedWeight(jnp.asarray(w), int8=unpack_int4(jnp.asarray(w)))
  return hf.unflatten(flat)


def from_params(meta: dict, params, *, int_mode: IntMode | None = None, dtype=jnp.bfloat16,
                prepare_weights: bool | None = None) -> Engine:
  """An Engine from packed.json contents and packed params (in memory or loaded)."""
  mode = dataclasses.replace(int_mode or default_mode(), fuse_qkv=bool(meta["fuse_qkv"]))
  model, config = export.int_model(meta["family"], meta["config"], export.as_policy(meta), meta["task"], mode,
                                   dtype=dtype)
  shapes, layers = export.trace_int_model(meta["family"], config, meta["task"])
  _check_tree(shapes, params, meta)
  gpu = jax.devices()[0].platform == "gpu" if prepare_weights is None else prepare_weights
  params = jax.device_put(params)
  return Engine(model, config, prepare(params, config.policy, layers, gpu), meta)


def _check_tree(shapes, params, meta):
  want = hf.flatten(shapes)
  have = hf.flatten(params)
  if set(want) != set(have):
    extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
    raise ValueError(f"packed params do not match the {meta['family']} model of packed.json: missing {missing[:3]}, "
                     f"unexpected {extra[:3]}")
  for k, v in want.items():
    if tuple(v.shape) != tuple(have[k].shape):
      raise ValueError(f"packed param {k} has shape {tuple(have[k].shape)}, the model wants {tuple(v.shape)}")


def from_float(params, config, task: str, *, int_mode: IntMode | None = None, dtype=jnp.bfloat16,
               float_dtype=jnp.bfloat16, fuse_qkv: bool = True, source: str = "") -> Engine:
  """The Engine of a fake-quant model's float params (its config carries the policy), packed in memory: what
  `export.export` would write, without the files."""
  flat = export.pack_params(params, config, task, fuse_qkv=fuse_qkv, float_dtype=float_dtype)
  meta = export.describe(config, task, fuse_qkv=fuse_qkv, source=source)
  return from_params(meta, hf.unflatten(flat), int_mode=int_mode, dtype=dtype)


def load(path: str, *, family: str | None = None, int_mode: IntMode | None = None, dtype=jnp.bfloat16,
         prepare_weights: bool | None = None) -> Engine:
  """Engine of a packed checkpoint directory (ValueError for another format version or model family)."""
  meta, params = export.load_packed(path, family=family)
  return from_params(meta, params, int_mode=int_mode, dtype=dtype, prepare_weights=prepare_weights)
