"""KD losses against hand-written numpy."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.train import distill


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_soft_cross_entropy_is_mean_over_batch_and_classes():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  expected = np.mean(-np.exp(np_log_softmax(t)) * np_log_softmax(s))   # DSE: / (batch * classes)
  np.testing.assert_allclose(distill.soft_cross_entropy(s, t), expected, rtol=1e-5)
  # A hand case: uniform teacher over 2 classes, student logits (0, 0): -0.5*log(0.5) per element.
  np.testing.assert_allclose(distill.soft_cross_entropy(np.zeros((1, 2)), np.zeros((1, 2))), -0.5 * np.log(0.5),
                             rtol=1e-6)


def test_attention_score_mse_excludes_padding():
  rng = np.random.default_rng(1)
  b, h, n = 2, 3, 4
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
  s = [rng.normal(size=(b, h, n, n)) for _ in range(2)]
  t = [rng.normal(size=(b, h, n, n)) for _ in range(2)]
  t[0][:, :, :, -1] += 1e4   # padded key columns of batch 0 / 1 carry junk that must not count
  expected = 0.0
  for sl, tl in zip(s, t):
    num, den = 0.0, 0.0
    for i in range(b):
      L = mask[i].sum()
      d = (sl[i, :, :L, :L] - tl[i, :, :L, :L]) ** 2
      num, den = num + d.sum(), den + d.size
    expected += num / den
  np.testing.assert_allclose(distill.attention_score_mse(s, t, mask), expected, rtol=1e-5)
  np.testing.assert_allclose(distill.attention_score_mse(s[1:], t[1:]), np.mean((s[1] - t[1]) ** 2), rtol=1e-5)


def test_hidden_state_mse_sums_layers_incl_embeddings_over_real_tokens():
  rng = np.random.default_rng(2)
  mask = np.array([[1, 1, 0], [1, 1, 1]])
  s = [rng.normal(size=(2, 3, 5)) for _ in range(3)]   # embeddings + 2 layers
  t = [rng.normal(size=(2, 3, 5)) for _ in range(3)]
  keep = mask.astype(bool)
  expected = sum(((a - b)[keep] ** 2).mean() for a, b in zip(s, t))
  np.testing.assert_allclose(distill.hidden_state_mse(s, t, mask), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="hidden states"):
    distill.hidden_state_mse(s, t[:2])


def test_kd_loss_combines_terms_and_regression_uses_mse():
  rng = np.random.default_rng(3)
  out = lambda: types.SimpleNamespace(logits=rng.normal(size=(2, 1)), hidden_states=[rng.normal(size=(2, 3, 4))],
                                      attention_scores=[rng.normal(size=(2, 1, 3, 3))])
  s, t = out(), out()
  labels = np.array([0.5, 2.0], np.float32)
  mask = np.ones((2, 3))
  loss, parts = distill.kd_loss(s, t, labels, mask, ("logit", "att", "rep", "gt"), is_regression=True)
  np.testing.assert_allclose(parts["logit"], np.mean((s.logits - t.logits) ** 2), rtol=1e-5)
  np.testing.assert_allclose(parts["gt"], np.mean((s.logits[:, 0] - labels) ** 2), rtol=1e-5)
  np.testing.assert_allclose(loss, sum(parts.values()), rtol=1e-6)


def test_ground_truth_cross_entropy():
  logits = np.array([[2.0, 0.0], [0.0, 1.0]])
  labels = jnp.array([0, 0])
  expected = -np.mean(np_log_softmax(logits)[[0, 1], [0, 0]])
  np.testing.assert_allclose(distill.ground_truth_loss(logits, labels, is_regression=False), expected, rtol=1e-6)


def test_loss_term_validation():
  assert distill.validate_loss_terms(["logit", "rep"], has_teacher=True) == ("logit", "rep")
  with pytest.raises(ValueError, match="unknown"):
    distill.validate_loss_terms(["logits"], has_teacher=True)
  with pytest.raises(ValueError, match="need a teacher"):
    distill.validate_loss_terms(["logit"], has_teacher=False)
