"""Layer norm and the activation table: one definition each, used by every model family."""
from __future__ import annotations

import flax.linen as nn
import jax

# HF activation names -> functions. "gelu" is the exact erf GELU; "gelu_new" and "gelu_pytorch_tanh" are the same
# tanh approximation (HF names it twice).
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def check_activation(name: str, field: str) -> None:
  """ValueError naming the config field when `name` is not in ACTIVATIONS."""
  if name not in ACTIVATIONS:
    raise ValueError(f"{field}={name!r} is not one of {sorted(ACTIVATIONS)}")


def layer_norm(epsilon: float, dtype, name: str) -> nn.LayerNorm:
  """LayerNorm with two-pass variance, as torch computes it: the fast E[x^2]-E[x]^2 form costs ~1e-5 of parity."""
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, use_fast_variance=False, name=name)


def normed(ln: nn.LayerNorm, y, int_mode):
  """(ln(y), pre_ln): in integer mode pre_ln = (y, gamma, beta, eps) hands the LayerNorm to the activation quantizer
  of the GEMMs that read its output (QDense(pre_ln=...) fuses it into quantize_rows); None in fake mode."""
  x = ln(y)
  if int_mode is None:
    return x, None
  p = ln.variables["params"]
  return x, (y, p["scale"], p["bias"], ln.epsilon)


def activated(dense, x, activation: str, pre_ln=None):
  """ACTIVATIONS[activation](dense(x)) for a QDense `dense`; in integer mode the erf GELU ("gelu") runs in the GEMM's
  epilogue (QDense(gelu=True)); other activations (tanh GELU, SiLU, ReLU) follow the GEMM in jnp."""
  if dense.int_mode is not None and activation == "gelu":
    return dense(x, pre_ln=pre_ln, gelu=True)
  return ACTIVATIONS[activation](dense(x, pre_ln=pre_ln))
