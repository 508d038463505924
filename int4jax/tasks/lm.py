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

The run pipeline behind `python -m experiments.lm` lives here too (`LMRunConfig`, `validate`, `run`): validate a run,
train the FP teacher or a QAT+KD student through `train.train_and_evaluate`, re-evaluate the best checkpoint in
float32 (valid and test, with per-position sums for the failure analysis) and write results.json.
Two decoder families run through it: GPT-2 and Llama (SmolLM2 from a GGUF file or its qblocks copy, `--model`);
`model_config["model_type"]` in a run's metadata says which (runs stored before it was recorded are GPT-2).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from int4jax import metrics
from int4jax import tokenizers
from int4jax.data import lm as lm_data
from int4jax.models import gguf
from int4jax.models import gpt2
from int4jax.models import llama
from int4jax.models import registry
from int4jax.models.outputs import Taps
from int4jax.quant import policy as policy_lib
from int4jax.tasks import base
from int4jax.quant.policy import QuantPolicy
from int4jax.train import checkpoint
from int4jax.train import distill
from int4jax.train import loop as train
from int4jax.train import rundir

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
    terms = distill.validate_loss_terms(loss_terms, has_teacher=teacher_model is not None, known=LM_LOSS_TERMS)
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
# Run directories: what the run pipeline below stores in checkpoint metadata, and how analysis/generation rebuild a
# model.

_NOT_SERIALIZED = ("policy", "dtype", "int_mode")
# model_type -> (config class, model class) of the decoder families the pipeline trains.
LM_FAMILIES = {"gpt2": (gpt2.GPT2Config, gpt2.GPT2LMHeadModel), "llama": (llama.LlamaConfig, llama.LlamaForCausalLM)}
# Dropout fields of either family; --dropout sets those the config has.
_DROPOUT_FIELDS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout")


def model_type_of(config) -> str:
  for name, (config_cls, _) in LM_FAMILIES.items():
    if isinstance(config, config_cls):
      return name
  raise ValueError(f"{type(config).__name__} is not a language-model config ({sorted(LM_FAMILIES)})")


def lm_model(config) -> nn.Module:
  """The causal LM module of a GPT2Config or LlamaConfig."""
  return LM_FAMILIES[model_type_of(config)][1](config)


def with_dropout(config, dropout: float):
  """The config with every dropout field it has set to `dropout`."""
  return dataclasses.replace(config, **{f: dropout for f in _DROPOUT_FIELDS if hasattr(config, f)})


def model_config_to_dict(config) -> dict[str, Any]:
  """A model config's JSON-able fields plus its "model_type" (policy and dtype are stored separately)."""
  fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _NOT_SERIALIZED}
  return {"model_type": model_type_of(config), **fields}


def build_model(model_config: dict[str, Any], policy=None, dtype=jnp.float32, **overrides):
  """(model, config) from a stored model_config dict (GPT-2 when it names no model_type)."""
  fields = dict(model_config, **overrides)
  config_cls, model_cls = LM_FAMILIES[fields.pop("model_type", "gpt2")]
  config = config_cls(**fields, policy=policy, dtype=dtype)
  return model_cls(config), config


def abstract_params(model: nn.Module, seq_len: int = 1):
  """ShapeDtypeStructs of the model's params (no memory, no compute)."""
  ids = jnp.zeros((1, seq_len), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids))["params"]


def read_run_metadata(workdir: str, which: str = "best") -> dict[str, Any]:
  """Metadata of a run's best/ (or latest/) checkpoint; ValueError if it is not a lm run."""
  return checkpoint.read_run_metadata(workdir, "lm", "experiments.lm", which)


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


# ------------------------------------------------------------------------------------------------ the run

BITS = policy_lib.PRESETS
TASK_KIND = "lm"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMRunConfig(base.RunConfig):
  """An LM run: the shared RunConfig fields (with the GPT-2 recipe's defaults) plus the task's own.

  `model` is a GPT-2 / Llama preset (random init), a Hugging Face GPT-2 / Llama directory, a Llama .gguf file or its
  qblocks copy (pretrained init).
  """
  workdir: str
  model: str = "gpt2_base"
  n_layer: int | None = None
  n_embd: int | None = None
  n_head: int | None = None
  n_positions: int | None = None
  post_ln: bool = False
  dataset: str = "ptb"
  tokenizer: str | None = "gpt2"
  block_size: int = 1024
  eval_stride: int | None = None
  weight_clip: tuple[float, float] | None = (-1.0, 1.0)
  dropout: float | None = 0.05
  learning_rate: float = 1e-4
  batch_size: int = 8
  num_epochs: float = 90.0
  warmup_ratio: float | None = 0.05
  weight_decay: float = 0.01
  grad_clip_norm: float = 1.0
  eval_batch_size: int = 8
  time_budget_s: float | None = None
  max_steps_this_run: int | None = None
  cache_dir: str | None = None
  extra_eval: tuple[str, ...] = ()           # "dataset=data_dir" pairs: valid + test of more corpora (WikiText-2)

  RUNTIME_KEYS = ("workdir", "time_budget_s", "max_steps_this_run", "cache_dir")
  PATH_FIELDS = ("model", "teacher", "tokenizer", "data_dir", "workdir", "cache_dir")

  @property
  def pretrained(self) -> bool:
    return os.path.isdir(self.model) or gguf.is_gguf(self.model)


@dataclasses.dataclass
class Plan:
  """The validated run: model, policy, tokenizer and where parameters come from."""
  config: Any                 # GPT2Config for training (policy, dropout, compute dtype)
  policy: policy_lib.QuantPolicy
  tokenizer: Any
  teacher_meta: dict | None
  loss_terms: tuple[str, ...]


_LLAMA_FIELD_NAMES = {"n_layer": "num_hidden_layers", "n_embd": "hidden_size", "n_head": "num_attention_heads",
                      "n_positions": "max_position_embeddings"}


def _model_overrides(cfg: LMRunConfig, model_type: str = "gpt2") -> dict:
  names = ("n_layer", "n_embd", "n_head", "n_positions")
  rename = _LLAMA_FIELD_NAMES if model_type == "llama" else {}
  return {rename.get(n, n): getattr(cfg, n) for n in names if getattr(cfg, n) is not None}


def parse_extra_eval(entries: Sequence[str]) -> list[tuple[str, str]]:
  """["wikitext2=/data/wikitext-2"] -> [("wikitext2", "/data/wikitext-2")], checking the valid/test files."""
  out = []
  for entry in entries:
    dataset, sep, data_dir = entry.partition("=")
    if not sep or not data_dir:
      raise ValueError(f"--extra_eval entry {entry!r} must be dataset=data_dir (e.g. wikitext2=/data/wikitext-2)")
    lm_data.check_sources(dataset, data_dir, splits=("valid", "test"))
    out.append((dataset, data_dir))
  return out


def validate(cfg: LMRunConfig) -> Plan:
  """All checks before work starts (base.RunConfig.validate, then the LM ones); errors name the flag."""
  cfg.validate()
  if cfg.bits not in BITS:
    raise ValueError(f"--bits={cfg.bits!r} is not one of {BITS}")
  if cfg.block_size < 2:
    raise ValueError(f"--block_size={cfg.block_size} must be >= 2")
  if cfg.eval_stride is not None and not 1 <= cfg.eval_stride <= cfg.block_size:
    raise ValueError(f"--eval_stride={cfg.eval_stride} must be in [1, --block_size={cfg.block_size}]")
  if cfg.dropout is None:
    raise ValueError("--dropout must be set for LM runs (the GPT-2 recipe uses 0.05)")
  if cfg.quantized and cfg.teacher is None and cfg.kd_losses not in (None, ("gt",)):
    raise ValueError(f"--bits={cfg.bits} with KD loss terms needs --teacher=<workdir of the FP teacher>")
  quant_policy = cfg.make_policy()
  lm_data.check_sources(cfg.dataset, cfg.data_dir)
  parse_extra_eval(cfg.extra_eval)
  tokenizer = tokenizers.load_tokenizer(cfg.tokenizer)
  vocab = len(tokenizer)
  dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
  teacher_meta = None
  if cfg.teacher is not None:
    teacher_meta = read_run_metadata(cfg.teacher)
    stored = teacher_meta["model_config"]
    if teacher_meta.get("tokenizer") not in (None, cfg.tokenizer):
      raise ValueError(f"--teacher={cfg.teacher!r} was trained with tokenizer {teacher_meta.get('tokenizer')!r}; "
                       f"this run has --tokenizer={cfg.tokenizer!r}")
    if cfg.post_ln and not stored.get("post_ln"):
      raise ValueError(f"--post_ln was given but the teacher {cfg.teacher!r} is Pre-LN; the student copies the "
                       "teacher's architecture")
    if teacher_meta.get("tokenizer_vocab_size") not in (None, vocab) or stored["vocab_size"] < vocab:
      raise ValueError(f"--tokenizer={cfg.tokenizer!r} has {vocab} tokens but the teacher {cfg.teacher!r} was "
                       f"trained with {teacher_meta.get('tokenizer_vocab_size')} (vocab_size {stored['vocab_size']})")
    _, config = build_model(stored, quant_policy, dtype)
    where = f"the teacher's n_positions ({cfg.teacher})"
  elif cfg.pretrained:
    if cfg.post_ln:
      raise ValueError("--post_ln needs a preset --model (random init): released GPT-2 checkpoints are Pre-LN")
    config = registry.get_config(cfg.model, policy=quant_policy, dtype=dtype)
    model_type_of(config)   # a language model
    if config.vocab_size != vocab:
      raise ValueError(f"--tokenizer={cfg.tokenizer!r} has {vocab} tokens but the checkpoint --model={cfg.model!r} "
                       f"has vocab_size {config.vocab_size}")
    where = f"n_positions of --model={cfg.model}"
  else:
    base = registry.get_config(cfg.model)
    if not hasattr(base, "n_positions"):
      raise ValueError(f"--model={cfg.model!r} is not a GPT-2 or Llama preset")
    if isinstance(base, llama.LlamaConfig):
      if cfg.post_ln:
        raise ValueError(f"--post_ln is for GPT-2; --model={cfg.model!r} is a Llama (Pre-RMSNorm) preset")
      config = registry.get_config(cfg.model, policy=quant_policy, dtype=dtype, vocab_size=vocab,
                                   **_model_overrides(cfg, "llama"))
    else:
      config = registry.get_config(cfg.model, policy=quant_policy, dtype=dtype, post_ln=cfg.post_ln,
                                   vocab_size=vocab, **_model_overrides(cfg))
    where = f"n_positions of --model={cfg.model}"
  config = with_dropout(config, cfg.dropout)
  if cfg.block_size > config.n_positions:
    raise ValueError(f"--block_size={cfg.block_size} is larger than the {where}: {config.n_positions}")

  terms = cfg.kd_losses or (PAPER_GPT2_LOSS_TERMS if cfg.teacher else ("gt",))
  if cfg.teacher is None and set(terms) != {"gt"}:
    raise ValueError(f"--kd_losses={','.join(terms)} need --teacher")
  return Plan(config=config, policy=quant_policy, tokenizer=tokenizer, teacher_meta=teacher_meta,
              loss_terms=tuple(terms))


def _initial_params(cfg: LMRunConfig, plan: Plan, model):
  if cfg.teacher is not None:  # paper: the student starts from the FP teacher
    # A second copy, not the teacher's arrays: the train step donates the student's buffers.
    _, params, _ = restore_run(cfg.teacher, policy=None)
    return params
  if cfg.pretrained:
    _, params = registry.load_pretrained(cfg.model, policy=plan.policy, task="lm", dtype=plan.config.dtype)
    return params
  ids = jnp.zeros((1, cfg.block_size), jnp.int32)
  return jax.jit(model.init)(jax.random.PRNGKey(cfg.seed), ids)["params"]


def _evaluate_positions(model, params, split: lm_data.LMSplit, batch_size: int) -> dict:
  pos = positional_nll(model, params, split.batches(batch_size))
  total = summarize_nll([{"nll_sum": pos["nll_sum"].sum(), "num_tokens": pos["num_tokens"].sum()}])
  return dict(total, nll_sum_by_position=pos["nll_sum"].tolist(), num_tokens_by_position=pos["num_tokens"].tolist())


def _read_results(workdir: str) -> dict | None:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run_config_section(cfg: LMRunConfig) -> dict:
  """The part of config.json this task owns: a run directory is locked to it (train.rundir)."""
  return cfg.run_section(TASK_KIND)


def prepare(cfg: LMRunConfig, *, overwrite: bool = False) -> tuple[LMRunConfig, Plan]:
  """Validation and the run-directory check, before any data or weights are read: every input error is a
  ValueError / FileNotFoundError here (launchers turn them into one-line usage errors). Returns the config with
  absolute paths and its Plan."""
  return base.prepare_run(cfg, validate, TASK_KIND, overwrite=overwrite)


def run(cfg: LMRunConfig, argv: Sequence[str] | None = None, *, overwrite: bool = False,
        prepared: tuple[LMRunConfig, Plan] | None = None) -> dict:
  """Validates (unless `prepared` is the result of `prepare`), trains (or resumes), re-loads the best checkpoint,
  evaluates valid + test; returns results.json."""
  t0 = time.time()
  cfg, plan = prepared or prepare(cfg, overwrite=overwrite)
  model = lm_model(plan.config)
  teacher_model = teacher_params = None
  if cfg.teacher is not None:
    teacher_model, _ = build_model(plan.teacher_meta["model_config"], None, plan.config.dtype)
    _, teacher_params, _ = restore_run(cfg.teacher, policy=None)

  corpus = lm_data.load_corpus(cfg.dataset, plan.tokenizer, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir,
                               log=lambda m: print(m, flush=True))
  train_blocks = lm_data.chunk_blocks(corpus.ids["train"], cfg.block_size)
  source = lm_data.train_source(train_blocks, cfg.batch_size, cfg.seed)
  valid = lm_data.eval_split(corpus.ids["valid"], cfg.block_size, cfg.eval_stride)
  test = lm_data.eval_split(corpus.ids["test"], cfg.block_size, cfg.eval_stride)
  steps = cfg.num_train_steps or max(1, int(round(cfg.num_epochs * source.steps_per_epoch)))
  tcfg = train.TrainConfig(num_train_steps=steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                           warmup_steps=cfg.warmup_steps_for(steps), weight_decay=cfg.weight_decay,
                           grad_clip_norm=cfg.grad_clip_norm, eval_every_steps=min(cfg.eval_every_steps, steps),
                           seed=cfg.seed, compute_dtype=cfg.compute_dtype,
                           log_every_steps=min(cfg.log_every_steps, steps))
  tcfg.validate()
  model_config = model_config_to_dict(plan.config)
  print(f"model: {model_config['model_type']} {plan.config.n_layer} layers x {plan.config.n_embd} "
        f"(heads {plan.config.n_head}), "
        f"{'Post' if plan.config.post_ln else 'Pre'}-LN, policy {plan.policy.name}; {corpus.num_tokens()} tokens; "
        f"{len(train_blocks)} train blocks of {cfg.block_size}; {steps} steps "
        f"({steps / source.steps_per_epoch:.1f} epochs); loss {'+'.join(plan.loss_terms)}", flush=True)

  params = _initial_params(cfg, plan, model)
  task = LMTask(model, teacher_model, plan.loss_terms)
  meta = {"task": "lm", "model_config": model_config, "dataset": cfg.dataset, "block_size": cfg.block_size,
          "tokenizer": cfg.tokenizer, "tokenizer_vocab_size": len(plan.tokenizer), "bits": cfg.bits,
          "symmetric": cfg.symmetric, "quant_mode": cfg.quant_mode, "teacher": cfg.teacher}
  run_info = {"config": dict(run_config_section(cfg), model_config=model_config, kd_losses=list(plan.loss_terms)),
              "metadata": meta, "policy_json": plan.policy.to_json(), "argv": list(argv or sys.argv),
              "runtime_keys": cfg.RUNTIME_KEYS}
  # The budget stops training only once an evaluation has saved best/ (as summarization's does), so a budget
  # shorter than start-up + compilation still ends with a checkpoint to evaluate.
  train_src = source if cfg.time_budget_s is None else train.Deadline(source, t0 + cfg.time_budget_s,
                                                                      rundir.RunDir(cfg.workdir).best_dir)
  stopped_at = None
  try:
    summary = train.train_and_evaluate(task, params, teacher_params, train_src, lambda: valid.batches(
        cfg.eval_batch_size), tcfg, cfg.workdir, run_info, max_steps_this_run=cfg.max_steps_this_run)
  except train.TimeBudgetExceeded as e:
    stopped_at = int(e.args[0])
    print(f"--time_budget_s={cfg.time_budget_s} reached: stopped at step {stopped_at} of {steps}; "
          "evaluating the best checkpoint so far", flush=True)
    summary = {"step": stopped_at, "interrupted": True}
  if summary.get("interrupted") and stopped_at is None:
    return summary  # --max_steps_this_run: resume later
  # Eval-reload: the best checkpoint, float32 compute, valid + test with per-position sums.
  eval_model, best_params, best_meta = restore_run(cfg.workdir)
  results = {
      "workdir": os.path.abspath(cfg.workdir), "dataset": cfg.dataset, "bits": cfg.bits,
      "symmetric": cfg.symmetric, "policy": plan.policy.name, "post_ln": plan.config.post_ln,
      "model_config": model_config, "block_size": cfg.block_size, "eval_stride": cfg.eval_stride or cfg.block_size,
      "loss_terms": list(plan.loss_terms), "teacher": cfg.teacher, "best_step": best_meta["step"],
      "num_train_steps": steps, "steps_run": stopped_at or steps, "stopped_by_time_budget": stopped_at is not None,
      "epochs": (stopped_at or steps) / source.steps_per_epoch, "batch_size": cfg.batch_size,
      "learning_rate": cfg.learning_rate, "dropout": cfg.dropout,
      "num_params": int(sum(np.size(x) for x in jax.tree.leaves(best_params))),
      "train_wall_time_s": summary.get("wall_time_s"), "examples_per_s": summary.get("examples_per_s"),
      "device_kind": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
      "command": " ".join(argv or sys.argv), "git_commit": rundir.git_commit(),
      "valid": _evaluate_positions(eval_model, best_params, valid, cfg.eval_batch_size),
      "test": _evaluate_positions(eval_model, best_params, test, cfg.eval_batch_size),
  }
  for dataset, data_dir in parse_extra_eval(cfg.extra_eval):   # e.g. WikiText-2 valid/test with the same tokenizer
    extra = lm_data.load_corpus(dataset, plan.tokenizer, data_dir=data_dir, splits=("valid", "test"),
                                cache_dir=cfg.cache_dir)
    results.setdefault("extra_eval", {})[dataset] = {
        s: _evaluate_positions(eval_model, best_params, lm_data.eval_split(extra.ids[s], cfg.block_size,
                                                                           cfg.eval_stride), cfg.eval_batch_size)
        for s in ("valid", "test")}
  teacher_results = _read_results(cfg.teacher) if cfg.teacher else None
  if teacher_results:
    results["teacher_perplexity"] = {s: teacher_results[s]["perplexity"] for s in ("valid", "test")}
    results["gap"] = {s: results[s]["perplexity"] - teacher_results[s]["perplexity"] for s in ("valid", "test")}
    for dataset, splits in results.get("extra_eval", {}).items():
      if dataset in teacher_results.get("extra_eval", {}):
        for s, r in splits.items():
          r["gap"] = r["perplexity"] - teacher_results["extra_eval"][dataset][s]["perplexity"]
  results["wall_time_s"] = time.time() - t0
  rundir.write_json_atomic(os.path.join(cfg.workdir, "results.json"), results)
  gap = "" if "gap" not in results else f" (gap valid {results['gap']['valid']:+.2f}, test {results['gap']['test']:+.2f})"
  print(f"RESULT {plan.policy.name}: best step {results['best_step']}, valid ppl {results['valid']['perplexity']:.3f}, "
        f"test ppl {results['test']['perplexity']:.3f}{gap}, wall {results['wall_time_s']:.0f}s", flush=True)
  return results


def load_run_config(workdir: str) -> LMRunConfig:
  run = rundir.RunDir(workdir).read_run_section(TASK_KIND, "experiments.lm")
  return LMRunConfig.from_dict(dict(run, workdir=os.path.abspath(workdir)))


def evaluate_run(workdir: str, *, data_dir: str | None = None, split: str | None = None
                 ) -> tuple[dict[str, float], dict]:
  """Reloads checkpoints/best of an LM run and evaluates it the way training did (its policy, compute dtype and
  blocks): on the run's validation split, or on `split` (train / valid / test) of `data_dir`.
  Returns (metrics now, checkpoint metadata)."""
  cfg = load_run_config(workdir)
  batches = eval_batches(cfg, data_dir, split)
  dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
  model, params, meta = restore_run(workdir, dtype=dtype)
  task = LMTask(model, None, ("gt",))
  return train.evaluate_once(task, params, batches, cfg.compute_dtype), meta


def eval_batches(cfg: LMRunConfig, data_dir: str | None = None, split: str | None = None):
  """A callable yielding the evaluation batches of a run's corpus as training evaluates it (its blocks, stride and
  batch size): `split` (train / valid / test; default valid) of the run's data or of `data_dir`."""
  if data_dir is not None:
    cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(data_dir))
  split = split or "valid"
  if split not in lm_data.SPLITS:
    raise ValueError(f"--split={split!r} is not one of {lm_data.SPLITS} for an LM run")
  tokenizer = tokenizers.load_tokenizer(cfg.tokenizer)
  corpus = lm_data.load_corpus(cfg.dataset, tokenizer, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir)
  ids = lm_data.eval_split(corpus.ids[split], cfg.block_size, cfg.eval_stride)
  return lambda: ids.batches(cfg.eval_batch_size)
