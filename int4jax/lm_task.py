"""The language-modelling `train.TrainTask`: causal LM cross-entropy, plus knowledge distillation for QAT students.

Loss (paper_spec.md §2.6, the paper's best GPT-2 combination "ClsLoss + Logit + Att* + Rep", all weights 1):
  gt     mean next-token cross-entropy over the scored tokens of the batch (`target_mask`, see data/lm.py);
  logit  per-token soft cross-entropy against the teacher's next-token distribution, averaged over positions;
         distill.soft_cross_entropy averages over the vocabulary too (the BERT recipe divides by the 2-3 classes),
         which for 50257 tokens would shrink the term ~5e4-fold, so we scale it back to a per-token sum;
  att    distill.attention_score_mse on the pre-softmax scores (Att*), restricted to the causal (query, key) pairs:
         scores above the diagonal never reach the output, so matching them would only add noise;
  rep    distill.hidden_state_mse over all n_layer + 1 hidden states (embedding output first).
The FP teacher trains with `gt` alone (teacher_params None). The teacher is a frozen argument: its forward is under
stop_gradient and deterministic, and it is never checkpointed with the student.

Evaluation sums the token negative log-likelihood and the number of scored tokens; perplexity = exp(sum / count),
which is run_clm's number for non-overlapping blocks (every block scores the same number of tokens).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from int4jax import checkpoint
from int4jax import distill
from int4jax import metrics
from int4jax.models import gpt2
from int4jax.models.outputs import Taps
from int4jax.quant.policy import QuantPolicy

LM_LOSS_TERMS = ("gt", "logit", "att", "rep")
PAPER_GPT2_LOSS_TERMS = ("gt", "logit", "att", "rep")   # Table C.1 bold: ClsLoss + Logit + Att* + Rep


def token_nll(logits: jax.Array, input_ids: jax.Array) -> jax.Array:
  """Next-token negative log-likelihood, float32 [batch, seq]; column j scores token j from logits j-1, column 0 is 0.

  The layout matches `target_mask` (data/lm.py), so `(token_nll * target_mask).sum()` is the loss of the scored
  tokens.
  """
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, input_ids[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]
  return jnp.pad(nll, ((0, 0), (1, 0)))


def lm_cross_entropy(logits: jax.Array, input_ids: jax.Array, target_mask: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy over the tokens that target_mask scores."""
  mask = target_mask.astype(jnp.float32)
  return jnp.sum(token_nll(logits, input_ids) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def causal_attention_score_mse(student_scores: Sequence[jax.Array], teacher_scores: Sequence[jax.Array]) -> jax.Array:
  """Att* over the causal pairs only: distill.attention_score_mse on scores zeroed above the diagonal, rescaled from
  a mean over all q*k pairs to a mean over the q(q+1)/2 causal ones."""
  q_len, k_len = student_scores[0].shape[-2:]
  causal = jnp.tril(jnp.ones((q_len, k_len), bool))
  zero_future = lambda xs: [jnp.where(causal, x.astype(jnp.float32), 0.0) for x in xs]
  full_mean = distill.attention_score_mse(zero_future(student_scores), zero_future(teacher_scores))
  return full_mean * (q_len * k_len) / jnp.sum(causal)


@dataclasses.dataclass(frozen=True)
class LMLossWeights:
  gt: float = 1.0
  logit: float = 1.0
  att: float = 1.0
  rep: float = 1.0


class LMTask:
  """train.TrainTask for causal LMs (GPT2LMHeadModel or anything with the same call convention).

  Args:
    model: the trained model (its config carries the quantization policy; dropout per the config).
    teacher_model: the FP teacher's module (same depth and heads as the student), or None for the teacher's own
      training (then only "gt" is allowed).
    loss_terms: a subset of LM_LOSS_TERMS.
    weights: per-term weights (paper: all 1).
  """
  metric_name = "perplexity"
  higher_is_better = False

  def __init__(self, model: nn.Module, teacher_model: nn.Module | None = None,
               loss_terms: Sequence[str] = PAPER_GPT2_LOSS_TERMS, weights: LMLossWeights = LMLossWeights()):
    terms = tuple(loss_terms)
    unknown = [t for t in terms if t not in LM_LOSS_TERMS]
    if unknown or not terms:
      raise ValueError(f"LM loss terms {list(terms)}: unknown {unknown}; choose from {LM_LOSS_TERMS}")
    if teacher_model is None and set(terms) != {"gt"}:
      raise ValueError(f"loss terms {list(terms)} need a teacher (--teacher); without one only 'gt' applies")
    self.model, self.teacher_model = model, teacher_model
    self.loss_terms, self.weights = terms, weights
    self.taps = Taps(hidden_states="rep" in terms, attention_scores="att" in terms)

  def loss_fn(self, params, teacher_params, batch: dict[str, jax.Array], rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    ids, mask = batch["input_ids"], batch["target_mask"]
    out = self.model.apply({"params": params}, ids, deterministic=False, taps=self.taps, rngs={"dropout": rng})
    parts = {}
    if "gt" in self.loss_terms:
      parts["gt"] = lm_cross_entropy(out.logits, ids, mask)
    if set(self.loss_terms) - {"gt"}:
      teacher = self.teacher_model.apply({"params": jax.lax.stop_gradient(teacher_params)}, ids,
                                         deterministic=True, taps=self.taps)
      teacher = jax.tree.map(jax.lax.stop_gradient, teacher)
      if "logit" in self.loss_terms:
        vocab = out.logits.shape[-1]
        parts["logit"] = vocab * distill.soft_cross_entropy(out.logits.reshape(-1, vocab),
                                                            teacher.logits.reshape(-1, vocab))
      if "att" in self.loss_terms:
        parts["att"] = causal_attention_score_mse(out.attention_scores, teacher.attention_scores)
      if "rep" in self.loss_terms:
        parts["rep"] = distill.hidden_state_mse(out.hidden_states, teacher.hidden_states)
    loss = sum(getattr(self.weights, k) * v for k, v in parts.items())
    return loss, parts

  def eval_batch(self, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    ids, mask = batch["input_ids"], batch["target_mask"].astype(jnp.float32)
    logits = self.model.apply({"params": params}, ids, deterministic=True).logits
    return {"nll_sum": jnp.sum(token_nll(logits, ids) * mask), "num_tokens": jnp.sum(mask)}

  def summarize(self, accumulated: list[dict[str, Any]]) -> dict[str, float]:
    return summarize_nll(accumulated)


def summarize_nll(accumulated: list[dict[str, Any]]) -> dict[str, float]:
  """{"perplexity", "loss" (mean nll), "num_tokens"} from eval_batch outputs."""
  nll = float(sum(np.asarray(a["nll_sum"], np.float64) for a in accumulated))
  count = int(round(float(sum(np.asarray(a["num_tokens"], np.float64) for a in accumulated))))
  try:
    ppl = metrics.perplexity(nll, count)
  except OverflowError:  # a diverged model: report inf rather than crash the loop
    ppl = float("inf")
  return {"perplexity": ppl, "loss": nll / count, "num_tokens": count}


def positional_nll(model: nn.Module, params, batches) -> dict[str, np.ndarray]:
  """Per-position sums over `batches`: {"nll_sum": [seq], "num_tokens": [seq]} (position j = the j-th token of a
  block, predicted from the j tokens before it; position 0 is never scored)."""
  @jax.jit
  def step(params, ids, mask):
    nll = token_nll(model.apply({"params": params}, ids, deterministic=True).logits, ids)
    return jnp.sum(nll * mask, axis=0), jnp.sum(mask, axis=0)

  nll_sum = count = None
  for batch in batches:
    s, c = jax.device_get(step(params, batch["input_ids"], batch["target_mask"].astype(np.float32)))
    nll_sum = s.astype(np.float64) if nll_sum is None else nll_sum + s
    count = c.astype(np.float64) if count is None else count + c
  return {"nll_sum": nll_sum, "num_tokens": count}


# ------------------------------------------------------------------------------------------------------------------
# Run directories: what int4jax/lm_pipeline.py stores in checkpoint metadata, and how analysis/generation rebuild a
# model.

_NOT_SERIALIZED = ("policy", "dtype")


def model_config_to_dict(config) -> dict[str, Any]:
  """A GPT2Config's JSON-able fields (policy and dtype are stored separately)."""
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _NOT_SERIALIZED}


def build_model(model_config: dict[str, Any], policy=None, dtype=jnp.float32, **overrides):
  """(GPT2LMHeadModel, GPT2Config) from a stored model_config dict."""
  config = gpt2.GPT2Config(**dict(model_config, **overrides), policy=policy, dtype=dtype)
  return gpt2.GPT2LMHeadModel(config), config


def abstract_params(model: nn.Module, seq_len: int = 1):
  """ShapeDtypeStructs of the model's params (no memory, no compute)."""
  ids = jnp.zeros((1, seq_len), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids))["params"]


def read_run_metadata(workdir: str, which: str = "best") -> dict[str, Any]:
  """Metadata of a run's best/ (or latest/) checkpoint; ValueError if it is not an LM run."""
  directory = os.path.join(workdir, "checkpoints", which)
  try:
    meta = checkpoint.read_metadata(directory)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{workdir!r} has no {which} checkpoint (expected {directory}); train it with "
                            "experiments.lm first") from e
  if meta.get("task") != "lm" or "model_config" not in meta:
    raise ValueError(f"{workdir!r} is a {meta.get('task')!r} run, not a language-model run of experiments.lm")
  return meta


def restore_run(workdir: str, *, policy="stored", dtype=jnp.float32, which: str = "best", **overrides):
  """(model, params, metadata) of a trained LM run; policy "stored" = the run's own (QuantPolicy JSON in metadata),
  or pass a QuantPolicy / None (float) to evaluate the same weights under another policy."""
  meta = read_run_metadata(workdir, which)
  if policy == "stored":
    policy = QuantPolicy.from_json(meta["policy_json"]) if meta.get("policy_json") else None
  model, _ = build_model(meta["model_config"], policy, dtype, **overrides)
  target = abstract_params(model)
  restored, _ = checkpoint.restore(os.path.join(workdir, "checkpoints", which), {"params": target})
  return model, restored["params"], meta
