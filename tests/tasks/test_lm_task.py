"""int4jax.lm_task: LM loss, KD terms, perplexity against a hand computation."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.tasks import lm as lm_task
from int4jax.data import lm
from int4jax.models import gpt2
from int4jax.quant.policy import FORMAT_PRESETS, make_policy


def tiny(policy=None, drop=0.05, n_layer=2):
  config = dataclasses.replace(gpt2.gpt2_tiny(), n_positions=16, resid_pdrop=drop, embd_pdrop=drop,
                               attn_pdrop=drop, policy=policy, n_layer=n_layer)
  model = gpt2.GPT2LMHeadModel(config)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"]
  return model, params


def hand_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_perplexity_matches_hand_computation():
  model, params = tiny()
  ids = np.random.default_rng(0).integers(0, 99, 16 * 5 + 3).astype(np.int32)
  split = lm.eval_split(ids, 16)
  task = lm_task.LMTask(model, loss_terms=("gt",))
  acc = [jax.device_get(task.eval_batch(params, b)) for b in split.batches(2)]  # 3 batches, last one padded
  got = task.summarize(acc)
  # By hand: every block, tokens 1..15 predicted from the logits one position before, mean nll over all, exp.
  nlls = []
  for block in split.input_ids:
    logits = np.asarray(model.apply({"params": params}, block[None]).logits[0])
    logp = hand_log_softmax(logits)
    nlls += [-logp[j - 1, block[j]] for j in range(1, 16)]
  assert got["num_tokens"] == 5 * 15
  np.testing.assert_allclose(got["loss"], np.mean(nlls), rtol=1e-5)
  np.testing.assert_allclose(got["perplexity"], math.exp(np.mean(nlls)), rtol=1e-5)
  pos = lm_task.positional_nll(model, params, split.batches(2))
  assert pos["num_tokens"][0] == 0 and np.all(pos["num_tokens"][1:] == 5)
  np.testing.assert_allclose(pos["nll_sum"].sum(), np.sum(nlls), rtol=1e-5)


def test_uniform_logits_give_vocab_perplexity():
  logits = jnp.zeros((2, 8, 37))
  ids = jnp.ones((2, 8), jnp.int32)
  mask = jnp.asarray(lm.block_target_mask(2, 8))
  assert math.isclose(math.exp(float(lm_task.lm_cross_entropy(logits, ids, mask))), 37, rel_tol=1e-5)


def test_causal_attention_mse_ignores_future_pairs():
  s = [jnp.zeros((1, 2, 4, 4))]
  t = [jnp.triu(jnp.full((1, 2, 4, 4), 5.0), k=1)]   # differs only above the diagonal
  assert float(lm_task.causal_attention_score_mse(s, t)) == 0.0
  t2 = [jnp.tril(jnp.full((1, 2, 4, 4), 2.0))]        # every causal pair off by 2
  np.testing.assert_allclose(float(lm_task.causal_attention_score_mse(s, t2)), 4.0, rtol=1e-6)


def test_kd_loss_terms_and_gradients():
  teacher, t_params = tiny()
  student, _ = tiny(make_policy("w4a4", weight_clip=(-1.0, 1.0)))
  task = lm_task.LMTask(student, teacher)
  batch = {"input_ids": jnp.asarray(np.random.default_rng(1).integers(0, 99, (2, 16)), jnp.int32),
           "target_mask": jnp.asarray(lm.block_target_mask(2, 16))}
  (loss, parts), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(t_params, t_params, batch,
                                                                        jax.random.PRNGKey(3))
  assert set(parts) == {"gt", "logit", "att", "rep"}
  np.testing.assert_allclose(float(loss), float(sum(parts.values())), rtol=1e-6)
  assert all(np.isfinite(float(v)) for v in parts.values())
  assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))
  # A float student without dropout distilling from itself: Att*/Rep are 0 and Logit is the teacher's entropy.
  same, _ = tiny(drop=0.0)
  _, parts = lm_task.LMTask(same, same).loss_fn(t_params, t_params, batch, jax.random.PRNGKey(3))
  assert float(parts["att"]) == 0.0 and float(parts["rep"]) == 0.0
  logp = jax.nn.log_softmax(same.apply({"params": t_params}, batch["input_ids"]).logits)
  entropy = float(jnp.mean(jnp.sum(-jnp.exp(logp) * logp, -1)))
  np.testing.assert_allclose(float(parts["logit"]), entropy, rtol=1e-4)


def test_task_validates_loss_terms():
  model, _ = tiny()
  with pytest.raises(ValueError, match="need a teacher"):
    lm_task.LMTask(model, None)
  with pytest.raises(ValueError, match="unknown"):
    lm_task.LMTask(model, model, loss_terms=("gt", "cls"))


@pytest.mark.parametrize("preset", FORMAT_PRESETS)
def test_qat_kd_step_in_each_format(preset):
  """One QAT+KD step (LM CE + Logit + Att* + Rep) of a 1-layer tiny GPT-2 student initialised from its teacher,
  under the LM recipe's weight clip, in each format preset of the zoo (W4A4 INT sym / asym: the test above and
  tests/experiments/test_lm_cli.py): finite loss, Att* and Rep > 0 (without dropout only the quantizers make the
  student differ from the teacher), finite gradients and a non-zero straight-through gradient on every quantized
  kernel."""
  teacher, t_params = tiny(drop=0.0, n_layer=1)
  student, _ = tiny(make_policy(preset, weight_clip=(-1.0, 1.0)), drop=0.0, n_layer=1)
  task = lm_task.LMTask(student, teacher)
  batch = {"input_ids": jnp.asarray(np.random.default_rng(2).integers(0, 99, (2, 16)), jnp.int32),
           "target_mask": jnp.asarray(lm.block_target_mask(2, 16))}
  (loss, parts), grads = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True))(t_params, t_params, batch,
                                                                                  jax.random.PRNGKey(0))
  assert np.isfinite(float(loss)), float(loss)
  assert float(parts["att"]) > 0 and float(parts["rep"]) > 0, {k: float(v) for k, v in parts.items()}
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  kernels = [grads["h_0"]["attn"][n]["kernel"] for n in ("c_attn", "c_proj")]
  kernels += [grads["h_0"]["mlp"][n]["kernel"] for n in ("c_fc", "c_proj")]
  assert all(np.abs(np.asarray(k)).sum() > 0 for k in kernels)
