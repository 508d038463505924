"""The engine computes the model fake quantization evaluates: logits of integer mode vs fake-quant mode.

`compare` builds one random model of any engine family (BERT, GPT-2, BART, Llama), evaluates it in fake-quant mode
(float32, matmuls at HIGHEST precision, so the reference is not TF32 on a GPU) and through the integer engine on the
same weights (packed in memory), and reports the largest logit difference against the size of the logits and against
the quantization noise itself (fake-quant vs float logits). Used by tests/inference (CPU, interpret mode) and by
results/scripts/latency_gpu.sh (GPU kernels).

Tolerance (float32 engine, float32 packed floats): both modes use identical integer codes and scales, so they differ
only by float rounding: the fake path sums K rounded f32 products per output (error <= K u sum|x^ w^|, u = 2^-24),
the integer path sums exactly and rounds the two scale products (<= 3u). Through the G GEMMs of the model, each
followed by a normalisation (or added to a residual stream that one normalises later) that rescales but does not
amplify relative error beyond ~1, the logits differ by at most about G K_max u relative to their scale:
`float_tolerance` (G counts every GEMM of the integer-mode model, fused ones once: 4 per BERT/GPT-2/Llama layer,
4 per BART encoder layer, 7 per BART decoder layer). A code flips only when a value lands within that rounding
distance of a rounding boundary (x/S at a half-integer), rare and then visible as a step of one quantum.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from int4jax.inference import engine, export
from int4jax.models import registry

U32 = 2.0 ** -24


def float_tolerance(layers: dict[str, export.GemmLayer]) -> float:
  """Relative logit tolerance of the float32 engine vs float32 fake quantization for a model whose QDense layers
  are `layers` (export.trace_int_model; see the module docstring)."""
  gemms = [l.k for l in layers.values() if l.gemm is not None]
  return len(gemms) * max(gemms) * U32 * 4  # x4 margin for the LayerNorm/softmax/activation roundings


def example_inputs(family: str, config, *, seed: int = 0, batch: int = 2, seq: int = 16) -> dict:
  """Random inputs of a family's call convention, right padding in the last row (BART: decoder inputs of seq // 2
  tokens too)."""
  rng = np.random.default_rng(seed)

  def tokens(length):
    ids = jnp.asarray(rng.integers(0, config.vocab_size, (batch, length)), jnp.int32)
    mask = np.ones((batch, length), np.int32)
    mask[-1, length - length // 4:] = 0
    return ids, jnp.asarray(mask)

  ids, mask = tokens(seq)
  inputs = {"input_ids": ids, "attention_mask": mask}
  if family == "bart":
    inputs["decoder_input_ids"], inputs["decoder_attention_mask"] = tokens(seq // 2)
  return inputs


def model_params(model, inputs: dict, *, seed: int = 0, init_std: float | None = None):
  """float32 params of `model`: its initialisers' (init_std None), or every param drawn from N(0, init_std^2) (norm
  scales from N(1, init_std^2)), so that logits lie well away from zero and the LayerNorm gamma/beta that integer
  mode fuses into its quantizer are not trivial (no forward pass is compiled for that)."""
  key = jax.random.PRNGKey(seed)
  if init_std is None:
    return jax.jit(model.init)(key, **inputs)["params"]
  rng = np.random.default_rng(seed)
  draw = lambda path, s: jnp.asarray((path[-1].key == "scale") + init_std * rng.standard_normal(s.shape),
                                     jnp.float32)
  return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, key, **inputs)["params"])


def compare(config, *, task: str | None = None, params=None, seed: int = 0, batch: int = 2, seq: int = 16,
            dtype=jnp.float32, float_dtype=jnp.float32, int_mode=None, init_std: float | None = None) -> dict:
  """Integer vs fake-quant logits of `config` (its policy) on `params` (default: random weights, `model_params`) and
  random inputs; returns the differences."""
  fam = registry.family_of(config)
  task = task or fam.default_task({})
  inputs = example_inputs(fam.name, config, seed=seed, batch=batch, seq=seq)
  model = fam.build(config, task)
  if params is None:
    params = model_params(model, inputs, seed=seed, init_std=init_std)
  logits = lambda m: np.asarray(jax.jit(lambda p: m.apply({"params": p}, **inputs).logits)(params), np.float64)
  with jax.default_matmul_precision("highest"):
    fake = logits(model)
    ref = logits(fam.build(dataclasses.replace(config, policy=None), task))
  eng = engine.from_float(params, config, task, int_mode=int_mode or engine.default_mode(), dtype=dtype,
                          float_dtype=float_dtype)
  with jax.default_matmul_precision("highest"):  # the engine's float matmuls (attention, heads) not TF32 either
    out = np.asarray(eng(**inputs), np.float64)
  tol = float_tolerance(export.trace_int_model(fam.name, eng.config, task)[1])
  scale = float(np.max(np.abs(fake)))
  diff = float(np.max(np.abs(out - fake)))
  return {"family": fam.name, "policy": config.policy.name, "gemms": sorted(config.policy.gemms),
          "dtype": jnp.dtype(dtype).name, "max_abs_diff": diff, "max_abs_logit": scale, "rel_diff": diff / scale,
          "quant_noise_rel": float(np.max(np.abs(fake - ref)) / scale),
          "argmax_agree": float(np.mean(np.argmax(out, -1) == np.argmax(fake, -1))),
          "float_tolerance_rel": tol,
          # the stated tolerance applies to the float32 engine; a bf16 engine differs by bf16 rounding (reported)
          "within_tolerance": bool(diff / scale <= tol) if jnp.dtype(dtype) == jnp.float32 else None}
