"""QDense's fake-quant forward sums integer codes exactly (what the integer engine computes) in every compute dtype,
and its gradient is still the straight-through one of the plain matmul of the fake-quantized operands."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.nn.dense import QDense
from int4jax.quant import numerics
from int4jax.quant.policy import make_policy

SEED = 0


def _layer(preset, symmetric, dtype, group=None):
  policy = make_policy(preset, symmetric=symmetric, weight_group_size=group)
  return QDense(48, policy=policy, gemm="ffn_in", dtype=dtype), policy.resolve("ffn_in", "ffn_in")


def _inputs():
  x = jax.random.normal(jax.random.PRNGKey(SEED), (3, 5, 64)) * 2.0
  return x


def _reference(x, kernel, bias, w_spec, a_spec):
  """float64 (codes_x S_x) @ (codes_w S_w) + bias from the quantizers' own codes and scales: exact, and the same
  value as fake_quant(x) @ fake_quant(W) (codes * S is what fake_quant returns, up to its one float32 rounding).
  Returns (product, bias) separately for the tolerances."""
  cx, sx = (np.asarray(a, np.float64) for a in numerics.integer_codes(x, a_spec, axis=-1))
  cw, sw = (np.asarray(a, np.float64) for a in numerics.integer_codes(kernel, w_spec, axis=0))
  return (cx @ cw) * sx * sw, np.asarray(bias, np.float64)


@pytest.mark.parametrize("preset,symmetric", [("w4a4", True), ("w4a4", False), ("w8a8", True), ("w4a8", False)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_is_the_exact_integer_product(preset, symmetric, dtype):
  layer, (w_spec, a_spec) = _layer(preset, symmetric, dtype)
  x = _inputs()
  params = layer.init(jax.random.PRNGKey(1), x)
  p = params["params"]
  p["bias"] = jax.random.normal(jax.random.PRNGKey(2), p["bias"].shape) * 0.1
  y = np.asarray(layer.apply({"params": p}, x), np.float64)
  prod, bias = _reference(x, p["kernel"], p["bias"], w_spec, a_spec)
  # The codes sum exactly (|sum| < 2^24); the two scale products round once each in float32 and the bias add once
  # more: <= 3 roundings of 2^-24 relative. In bf16 the product is cast, the bias is cast and their sum rounds:
  # three roundings of 2^-9 on top of the float32 ones, so 4 units of 2^-9.
  u, n = (2.0 ** -24, 3) if dtype == jnp.float32 else (2.0 ** -9, 4)
  bound = n * u * (np.abs(prod) + np.abs(bias)) + 1e-30
  assert np.all(np.abs(y - (prod + bias)) <= bound), np.max(np.abs(y - (prod + bias)) / bound)


def test_bf16_forward_does_not_round_the_dequantized_operands():
  """The old bf16 forward (dequantized operands cast to bf16, then multiplied) carries bf16's rounding of every
  operand; the exact one returns the bf16 rounding of the exact product (bias zero, so nothing else rounds)."""
  layer, (w_spec, a_spec) = _layer("w4a4", True, jnp.bfloat16)
  x = _inputs()
  p = layer.init(jax.random.PRNGKey(1), x)["params"]
  assert float(jnp.abs(p["bias"]).max()) == 0.0
  prod, _ = _reference(x, p["kernel"], p["bias"], w_spec, a_spec)
  ref = jnp.asarray(prod, jnp.float32).astype(jnp.bfloat16)
  xq = numerics.fake_quant(x, a_spec, axis=-1).astype(jnp.bfloat16)
  wq = numerics.fake_quant(p["kernel"], w_spec, axis=0).astype(jnp.bfloat16)
  old = jnp.dot(xq, wq)
  new = layer.apply({"params": p}, x)
  frac = lambda y: float(jnp.mean(y == ref))
  # Exact product: only a float32 rounding sitting on a bf16 tie could differ. The old path rounds each operand
  # to 8 bits first (S_x, S_w are arbitrary floats), so most outputs land on another bf16 value.
  assert frac(new) > 0.99 and frac(old) < 0.9, (frac(new), frac(old))


def test_gradient_is_the_straight_through_matmul_gradient():
  layer, (w_spec, a_spec) = _layer("w4a4", False, jnp.float32)
  x = _inputs()
  p = layer.init(jax.random.PRNGKey(1), x)["params"]

  def loss_layer(p, x):
    return jnp.sum(jnp.sin(layer.apply({"params": p}, x)))

  def loss_plain(p, x):  # the straight-through formulation: a float matmul of the fake-quantized operands
    xq = numerics.fake_quant(x, a_spec, axis=-1)
    wq = numerics.fake_quant(p["kernel"], w_spec, axis=0)
    return jnp.sum(jnp.sin(jnp.dot(xq, wq, precision=jax.lax.Precision.HIGHEST) + p["bias"]))

  g_layer = jax.grad(loss_layer, argnums=(0, 1))(p, x)
  g_plain = jax.grad(loss_plain, argnums=(0, 1))(p, x)
  for a, b in zip(jax.tree.leaves(g_layer), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(g_layer[1]).max()) > 0 and float(jnp.abs(g_layer[0]["kernel"]).max()) > 0


def test_grouped_weights_keep_the_float_path():
  """Per-group weight scales vary along K: no exact factorisation; the layer still computes the fake-quant product."""
  layer, (w_spec, a_spec) = _layer("w4a4", True, jnp.float32, group=16)
  x = _inputs()
  p = layer.init(jax.random.PRNGKey(1), x)["params"]
  y = np.asarray(layer.apply({"params": p}, x), np.float64)
  xq = np.asarray(numerics.fake_quant(x, a_spec, axis=-1), np.float64)
  wq = np.asarray(numerics.fake_quant(p["kernel"], w_spec, axis=0), np.float64)
  np.testing.assert_allclose(y, xq @ wq + np.asarray(p["bias"]), rtol=1e-4, atol=1e-5)
