"""The Qwix peer: its rule covers exactly int4jax's four GEMM types, and it changes the forward (STE backward)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.models import registry
from int4jax.quant import qwix_peer
from int4jax.quant.policy import make_policy

qwix = pytest.importorskip("qwix")
SEED = 3


def _model_and_params():
  cfg = registry.get_config("bert_tiny", policy=make_policy("fp32"), num_labels=2)
  model = registry.family("bert").build(cfg, "sequence_classification")
  ids = jnp.asarray(np.random.default_rng(SEED).integers(0, 1000, (2, 16)), jnp.int32)
  params = model.init(jax.random.PRNGKey(SEED), ids, jnp.ones_like(ids))["params"]
  return model, params, ids


def test_rule_matches_exactly_the_four_gemm_types():
  cfg = registry.get_config("bert_tiny", policy=make_policy("fp32"), num_labels=2)
  model = registry.family("bert").build(cfg, "sequence_classification")
  ids = jnp.zeros((1, 8), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids))["params"]
  paths = {"/".join(str(k.key) for k in path[:-1]) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
  rule = re.compile(qwix_peer.rule_path(tuple(qwix_peer.GEMM_PATHS)))
  matched = sorted(p for p in paths if rule.fullmatch(p))
  expected = sorted(f"encoder/layer_{i}/{m}" for i in range(2) for m in (
      "attention/query", "attention/key", "attention/value", "attention/output", "intermediate", "output"))
  assert matched == expected
  only_ffn = re.compile(qwix_peer.rule_path(("ffn_in",)))
  assert sorted(p for p in paths if only_ffn.fullmatch(p)) == ["encoder/layer_0/intermediate",
                                                                "encoder/layer_1/intermediate"]
  with pytest.raises(ValueError, match="unknown GEMM"):
    qwix_peer.rule_path(("lm_head",))
  with pytest.raises(ValueError, match="supports --bits"):
    qwix_peer.wrap(None, bits="w3a3", quant_mode="sym")


def test_wrapped_model_quantizes_forward_and_passes_gradients():
  model, params, ids = _model_and_params()
  mask = jnp.ones_like(ids)
  wrapped = qwix_peer.wrap(model, bits="w4a4", quant_mode="sym")
  f = model.apply({"params": params}, ids, mask).logits
  q = wrapped.apply({"params": params}, ids, mask).logits
  assert not np.allclose(f, q, atol=1e-7), SEED          # int4 changes the logits ...
  assert np.allclose(f, q, atol=0.05 * float(jnp.abs(f).max()) + 1e-3), SEED   # ... by a quantization error
  grads = jax.grad(lambda p: wrapped.apply({"params": p}, ids, mask).logits.sum())(params)
  for name in ("query", "key", "value", "output"):
    assert float(jnp.abs(grads["encoder"]["layer_0"]["attention"][name]["kernel"]).max()) > 0
