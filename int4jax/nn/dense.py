"""The quantized Dense layer that every model in int4jax uses.

`QDense` asks the model's `QuantPolicy` which quantizers apply to its weight and to its input activation, by its
module path (e.g. ``encoder/layer_3/attention/query``) and its GEMM type (one of `policy.GEMM_TYPES`, or None for
heads and poolers, which stay float). Training uses fake quantization (quantize -> dequantize with a straight-through
gradient), so the forward computes exactly what a real integer kernel with the same scales computes.

Weights are stored Flax-style as ``kernel[K, N]`` (in_features, out_features): the reduction axis is 0, so weight
groups run along K and the per-channel scale is one per output column. Activations quantize per token over the
last axis.

Integer mode (`int_mode` set, an `int_gemm.IntMode`): a layer whose policy quantizes its weight holds the packed
integer params of `int_gemm` instead of a float kernel (written by `int4jax.inference.export`) and runs the integer
kernels; its activation is quantized per token by the kernels, straight from the pre-LayerNorm input when the model
passes `pre_ln`. Layers the policy keeps float run the float path on whatever kernel dtype they hold (bf16 in a
packed checkpoint). `int_mode=None` (the default) is the fake-quant mode above, unchanged.

N:M sparsity (quant/sparsity.py): when the policy gives this layer a `SparsitySpec`, QDense holds its mask (and a
movement score) as params `nm_mask` / `nm_score` beside the kernel (initialised dense here; `sparsity.init_state`
sets them) and computes the effective weight Q(M*W) or M*Q(W) per the spec's order.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from int4jax.nn import int_gemm
from int4jax.quant import numerics as quant
from int4jax.quant import sparsity
from int4jax.quant.policy import QuantPolicy


def exact_factorizable(spec) -> bool:
  """Whether a quantizer's scale is constant along the GEMM's reduction axis (see `exact_quantized_matmul`)."""
  return spec is not None and spec.format == "int" and spec.granularity != "group"


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def exact_quantized_matmul(xq, wq, x_codes, x_scale, w_codes, w_scale, dtype):
  """xq @ wq for fake-quantized operands xq = x_codes * x_scale [..., K] and wq = w_codes * w_scale [K, N], with
  the forward summed over the integer codes (exact: every product and partial sum is an integer below 2^24 for
  4-bit codes) and the scales applied once, as an integer kernel does. A float matmul of the dequantized operands
  would round them first: to 10 mantissa bits under the GPU's default float32 precision (TF32) or to 8 in bf16,
  which flips 4-bit codes downstream and made fake-quant evaluation and the integer engine disagree by up to
  1.6 points on a trained W4A4 student (results/latency/engine_minilm.json). The backward is the plain matmul's
  (what the straight-through estimator expects), in `dtype` as before."""
  del xq, wq
  # Codes are integers of at most 2^bits <= 256 in magnitude: exact in bf16, so the GPU runs them on its bf16
  # tensor cores with float32 accumulation; the CPU sums them in float32 (its default precision is full f32).
  cdt = jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32
  acc = jax.lax.dot_general(x_codes.astype(cdt), w_codes.astype(cdt),
                            (((x_codes.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32,
                            precision=jax.lax.Precision.HIGHEST)
  return (acc * x_scale * w_scale).astype(dtype)


def _exact_fwd(xq, wq, x_codes, x_scale, w_codes, w_scale, dtype):
  return exact_quantized_matmul(xq, wq, x_codes, x_scale, w_codes, w_scale, dtype), (xq, wq, x_scale, w_scale,
                                                                                    x_codes, w_codes)


def _exact_bwd(dtype, res, g):
  xq, wq, x_scale, w_scale, x_codes, w_codes = res
  g2 = g.reshape(-1, g.shape[-1]).astype(dtype)
  dx = (g2 @ wq.astype(dtype).T).reshape(xq.shape).astype(xq.dtype)
  dw = (xq.reshape(-1, xq.shape[-1]).astype(dtype).T @ g2).astype(wq.dtype)
  zeros = lambda a: jnp.zeros_like(a)
  return dx, dw, zeros(x_codes), zeros(x_scale), zeros(w_codes), zeros(w_scale)


exact_quantized_matmul.defvjp(_exact_fwd, _exact_bwd)


# Collection that QDense sows the effective (fake-quantized) operands into when a caller makes it mutable.
# Tests and the failure analysis read it; when the collection is not mutable, `sow` is a no-op (no cost).
QUANT_TAPS = "quant_taps"


class QDense(nn.Module):
  """`y = fq_a(x) @ fq_w(kernel) + bias`, with `fq_*` chosen by the policy (identity when float).

  Attributes:
    features: N, the output width.
    policy: the model's quantization policy; None means float.
    gemm: which of the paper's four GEMM types this layer is ("qkv", "attn_out", "ffn_in", "ffn_out"), or None
      for layers the paper keeps in float (pooler, classifier, LM head).
    dtype: compute dtype of the matmul (params stay float32: fp32 master weights).
    int_mode: None for fake quantization (training, evaluation); an `int_gemm.IntMode` for integer inference.
  """
  features: int
  policy: QuantPolicy | None = None
  gemm: str | None = None
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.normal(stddev=0.02)
  bias_init: Callable = nn.initializers.zeros
  int_mode: int_gemm.IntMode | None = None

  @property
  def module_path(self) -> str:
    return "/".join(str(p) for p in self.scope.path)

  def quant_specs(self):
    """(weight_spec, act_spec) for this layer; (None, None) when it stays float."""
    if self.policy is None:
      return None, None
    return self.policy.resolve(self.module_path, self.gemm)

  def sparsity_spec(self):
    """The N:M sparsity of this layer's weight (None: dense)."""
    if self.policy is None or not hasattr(self.policy, "resolve_sparsity"):
      return None
    return self.policy.resolve_sparsity(self.module_path, self.gemm)

  @nn.compact
  def __call__(self, x: jax.Array, *, pre_ln=None, gelu: bool = False) -> jax.Array:
    """x: [..., K] -> [..., features]; `gelu=True` applies the exact (erf) GELU to the output.

    pre_ln: optional (y, gamma, beta, eps) with x = LayerNorm(y); integer mode quantizes from y with the LayerNorm
    fused into the quantizer. Fake mode ignores it.
    """
    if self.int_mode is not None:
      w_spec, a_spec = self.quant_specs()
      if w_spec is not None:
        return self._int_call(x, w_spec, a_spec, pre_ln, gelu)
    y = self._fake_call(x)
    return jax.nn.gelu(y, approximate=False) if gelu else y

  def _int_call(self, x, w_spec, a_spec, pre_ln, gelu):
    int_gemm.check_specs(w_spec, a_spec, self.module_path)
    k = x.shape[-1]
    p = {name: self.param(name, nn.initializers.zeros, shape, dtype)
         for name, (shape, dtype) in int_gemm.param_shapes(k, self.features, w_spec, a_spec).items()}
    if self.use_bias:
      p["bias"] = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    y = int_gemm.int_dense(x.reshape(-1, k), p, w_spec, a_spec, self.int_mode, gelu=gelu, out_dtype=self.dtype,
                           pre_ln=pre_ln)
    return y.reshape(x.shape[:-1] + (self.features,))

  def _fake_call(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    w_spec, a_spec = self.quant_specs()
    x_in, w_in = x, kernel
    if a_spec is not None:
      # Per-token dynamic quantization of the GEMM input, computed in float32 whatever the compute dtype.
      x = quant.fake_quant(x.astype(jnp.float32), a_spec, axis=-1)
      self.sow(QUANT_TAPS, "input", x)
    sparse = self.sparsity_spec()
    if sparse is not None:
      sparsity.check_divisible(kernel.shape[0], sparse, self.module_path)
      mask = self.param(sparsity.MASK, nn.initializers.ones, kernel.shape, jnp.float32)
      if sparse.method == "movement":
        self.param(sparsity.SCORE, nn.initializers.zeros, kernel.shape, jnp.float32)
      kernel = sparsity.sparse_weight(kernel, mask, sparse, w_spec)
      self.sow(QUANT_TAPS, "kernel", kernel)
    elif w_spec is not None:
      kernel = quant.fake_quant(kernel, w_spec, axis=0)
      self.sow(QUANT_TAPS, "kernel", kernel)
    if sparse is None and exact_factorizable(a_spec) and exact_factorizable(w_spec):
      # Integer operands on both sides: sum the codes exactly, like the integer engine (exact_quantized_matmul).
      x_codes, x_scale = (jax.lax.stop_gradient(a) for a in quant.integer_codes(x_in, a_spec, axis=-1))
      w_codes, w_scale = (jax.lax.stop_gradient(a) for a in quant.integer_codes(w_in, w_spec, axis=0))
      y = exact_quantized_matmul(x, kernel, x_codes, x_scale, w_codes, w_scale, self.dtype)
    else:
      # jax.lax.dot_general looked up at call time (not jnp.dot): the same product, and visible to libraries that
      # intercept it, e.g. Qwix's QAT (int4jax/quant/qwix_peer.py).
      y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (((x.ndim - 1,), (0,)), ((), ())))
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y
