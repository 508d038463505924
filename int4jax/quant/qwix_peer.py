"""Qwix (Google's JAX quantization library, successor of AQT) as a peer QAT: same model, task and budget.

    model = wrap(float_model, bits="w4a4", quant_mode="sym")   # a linen module; params are the float model's

Qwix intercepts `jax.lax.dot_general` / `jnp.einsum` inside the linen modules whose path matches a rule and
fake-quantizes their operands (straight-through gradient). The rule below covers the same four GEMM types as
int4jax's policy (QKV, attention output, FFN in, FFN out: `QDense` calls `jax.lax.dot_general`); the attention
BMMs, embeddings, pooler and classifier stay float, as in the paper. Settings are Qwix's own, as a JAX user would
pick them: int4 weights with one scale per output channel (Qwix's channelwise default = the non-contracting
axis), int4 activations with dynamic per-token scales (channelwise over batch and sequence), calibration
`absmax` (sym) or `minmax` (asym), no clipping (int4jax's students clip to [-5, 5], Table C.1). The training loss
is whatever the run selects (the GLUE default is the paper's KD, so the row isolates the quantizer).
"""

from __future__ import annotations

import re

GEMM_PATHS = {"qkv": r"attention/(query|key|value)", "attn_out": r"attention/output", "ffn_in": r"intermediate",
              "ffn_out": r"output"}
BITS = {"w4a4": ("int4", "int4"), "w8a8": ("int8", "int8"), "w4a8": ("int4", "int8"), "w4a16": ("int4", None)}


def rule_path(gemms) -> str:
  unknown = sorted(set(gemms) - set(GEMM_PATHS))
  if unknown:
    raise ValueError(f"qwix peer: unknown GEMM types {unknown}; known {sorted(GEMM_PATHS)}")
  return r".*layer_\d+/(" + "|".join(GEMM_PATHS[g] for g in gemms) + ")"


def wrap(model, *, bits: str, quant_mode: str, gemms=tuple(GEMM_PATHS)):
  """The linen `model` (built with a float policy) with Qwix QAT on the selected GEMMs."""
  if bits not in BITS:
    raise ValueError(f"--qat=qwix supports --bits in {sorted(BITS)}, not {bits!r}")
  try:
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import qwix  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--qat=qwix needs the qwix package: pip install qwix==0.1.8 (pure python)") from e
  w, a = BITS[bits]
  method = "absmax" if quant_mode == "sym" else "minmax"
  re.compile(rule_path(gemms))
  rule = qwix.QtRule(module_path=rule_path(gemms), weight_qtype=getattr(jnp, w),
                     act_qtype=None if a is None else getattr(jnp, a), weight_calibration_method=method,
                     act_calibration_method=method)
  return qwix.quantize_model(model, qwix.QtProvider([rule]))
