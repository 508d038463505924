"""The engine computes the model fake quantization evaluates: logits of integer mode vs fake-quant mode.

`compare` builds one random BERT, evaluates it in fake-quant mode (float32, matmuls at HIGHEST precision, so the
reference is not TF32 on a GPU) and through the integer engine on the same weights (packed in memory), and reports
the largest logit difference against the size of the logits and against the quantization noise itself (fake-quant
vs float logits). Used by tests/inference (CPU, interpret mode) and by results/scripts/latency_gpu.sh (GPU kernels).

Tolerance (float32 engine, float32 packed floats): both modes use identical integer codes and scales, so they differ
only by float rounding: the fake path sums K rounded f32 products per output (error <= K u sum|x^ w^|, u = 2^-24),
the integer path sums exactly and rounds the two scale products (<= 3u). Through L layers of 4 GEMMs, each followed
by a LayerNorm that rescales but does not amplify relative error beyond ~1, the logits differ by at most about
4 L K_max u relative to their scale: `float_tolerance`. A code flips only when a value lands within that rounding
distance of a rounding boundary (x/S at a half-integer), rare and then visible as a step of one quantum.
"""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from int4jax.inference import engine, export
from int4jax.models import bert, hf

U32 = 2.0 ** -24


def float_tolerance(config: bert.BertConfig) -> float:
  """Relative logit tolerance of the float32 engine vs float32 fake quantization (see the module docstring)."""
  k_max = max(config.hidden_size, config.intermediate_size)
  return 4 * config.num_layers * k_max * U32 * 4  # x4 margin for the LayerNorm/softmax/GELU roundings


def compare(config: bert.BertConfig, *, seed: int = 0, batch: int = 2, seq: int = 16, dtype=jnp.float32,
            float_dtype=jnp.float32, int_mode=None, init_std: float | None = None) -> dict:
  """Integer vs fake-quant logits of `config` (its policy), random weights; returns the differences."""
  rng = np.random.default_rng(seed)
  ids = jnp.asarray(rng.integers(0, config.vocab_size, (batch, seq)), jnp.int32)
  mask = np.ones((batch, seq), np.int32)
  mask[-1, seq - seq // 4:] = 0  # right padding in the last row
  mask = jnp.asarray(mask)
  model = bert.build(config)
  params = model.init(jax.random.PRNGKey(seed), ids, mask)["params"]
  if init_std is not None:  # wider weights than BERT's 0.02 give logits well away from zero
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    params = jax.tree.unflatten(tree, [jax.random.normal(k, a.shape) * init_std if a.ndim == 2 else a
                                       for k, a in zip(keys, leaves)])
  with jax.default_matmul_precision("highest"):
    fake = np.asarray(jax.jit(lambda p: model.apply({"params": p}, ids, mask).logits)(params), np.float64)
    flt = bert.build(dataclasses.replace(config, policy=None))
    ref = np.asarray(jax.jit(lambda p: flt.apply({"params": p}, ids, mask).logits)(params), np.float64)
  flat = export.pack_params(params, config, "sequence_classification", float_dtype=float_dtype)
  meta = {"family": "bert", "task": "sequence_classification", "config": export.config_to_dict(config),
          "policy": json.loads(config.policy.to_json()), "fuse_qkv": True}
  eng = engine.from_params(meta, hf.unflatten(flat), int_mode=int_mode or engine.default_mode(), dtype=dtype)
  with jax.default_matmul_precision("highest"):  # the engine's float matmuls (attention, heads) not TF32 either
    out = np.asarray(eng(ids, mask), np.float64)
  scale = float(np.max(np.abs(fake)))
  return {"policy": config.policy.name, "gemms": sorted(config.policy.gemms), "dtype": jnp.dtype(dtype).name,
          "max_abs_diff": float(np.max(np.abs(out - fake))), "max_abs_logit": scale,
          "rel_diff": float(np.max(np.abs(out - fake)) / scale),
          "quant_noise_rel": float(np.max(np.abs(fake - ref)) / scale),
          "argmax_agree": float(np.mean(np.argmax(out, -1) == np.argmax(fake, -1))),
          "float_tolerance_rel": float_tolerance(config),
          # the stated tolerance applies to the float32 engine; a bf16 engine differs by bf16 rounding (reported)
          "within_tolerance": (bool(np.max(np.abs(out - fake)) / scale <= float_tolerance(config))
                               if jnp.dtype(dtype) == jnp.float32 else None)}
