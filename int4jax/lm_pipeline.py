"""The GPT-2 language-modelling pipeline behind `python -m experiments.lm`: validate a run, train the FP teacher or a
QAT+KD student through `train.train_and_evaluate`, re-evaluate the best checkpoint in float32 (valid and test, with
per-position sums for the failure analysis) and write results.json. The launcher only parses flags.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from int4jax import lm_task
from int4jax.quant import policy as policy_lib
from int4jax import train
from int4jax.data import lm as lm_data
from int4jax.models import gpt2
from int4jax.models import registry
from int4jax import tokenizers

BITS = ("fp32", "w4a16", "w4a8", "w4a4", "w8a8", "w8a16")


@dataclasses.dataclass(frozen=True)
class LMRunConfig:
  """Everything a run needs; `validate` checks it before any work."""
  workdir: str
  model: str = "gpt2_base"
  n_layer: int | None = None
  n_embd: int | None = None
  n_head: int | None = None
  n_positions: int | None = None
  init: str = "scratch"
  post_ln: bool = False
  dataset: str = "ptb"
  data_dir: str | None = None
  tokenizer: str = "gpt2"
  block_size: int = 1024
  eval_stride: int | None = None
  bits: str = "fp32"
  symmetric: bool = True
  weight_group_size: int | None = None
  weight_clip: tuple[float, float] | None = (-1.0, 1.0)
  act_clip: tuple[float, float] | None = None
  teacher: str | None = None
  loss_terms: tuple[str, ...] | None = None  # None: ("gt",) without a teacher, the paper's four with one
  dropout: float = 0.05
  learning_rate: float = 1e-4
  batch_size: int = 8
  num_train_steps: int | None = None
  num_epochs: float = 90.0
  warmup_steps: int | None = None            # None: 5% of the steps
  weight_decay: float = 0.01
  grad_clip_norm: float = 1.0
  eval_every_steps: int = 1000
  log_every_steps: int = 50
  eval_batch_size: int = 8
  compute_dtype: str = "float32"
  seed: int = 42
  time_budget_s: float | None = None
  max_steps_this_run: int | None = None
  cache_dir: str | None = None


class TimeBudgetExceeded(Exception):
  pass


class _Deadline:
  """BatchSource wrapper that stops training once --time_budget_s has passed (best/ stays as the result)."""

  def __init__(self, source, deadline: float):
    self.source, self.deadline = source, deadline
    self.num_examples = source.num_examples
    self.stopped_at: int | None = None

  def position(self, step):
    return self.source.position(step)

  def batch_at(self, step):
    if time.time() > self.deadline:
      self.stopped_at = step
      raise TimeBudgetExceeded(step)
    return self.source.batch_at(step)


@dataclasses.dataclass
class Plan:
  """The validated run: model, policy, tokenizer and where parameters come from."""
  config: Any                 # GPT2Config for training (policy, dropout, compute dtype)
  policy: policy_lib.QuantPolicy
  tokenizer: Any
  teacher_meta: dict | None
  loss_terms: tuple[str, ...]


def _model_overrides(cfg: LMRunConfig) -> dict:
  names = ("n_layer", "n_embd", "n_head", "n_positions")
  return {n: getattr(cfg, n) for n in names if getattr(cfg, n) is not None}


def validate(cfg: LMRunConfig) -> Plan:
  """All checks before work starts; errors name the flag."""
  if cfg.bits not in BITS:
    raise ValueError(f"--bits={cfg.bits!r} is not one of {BITS}")
  if cfg.block_size < 2:
    raise ValueError(f"--block_size={cfg.block_size} must be >= 2")
  if cfg.eval_stride is not None and not 1 <= cfg.eval_stride <= cfg.block_size:
    raise ValueError(f"--eval_stride={cfg.eval_stride} must be in [1, --block_size={cfg.block_size}]")
  if not 0.0 <= cfg.dropout < 1.0:
    raise ValueError(f"--dropout={cfg.dropout} must be in [0, 1)")
  if cfg.compute_dtype not in ("float32", "bfloat16"):
    raise ValueError(f"--compute_dtype={cfg.compute_dtype!r} must be float32 or bfloat16")
  for name in ("weight_clip", "act_clip"):
    clip = getattr(cfg, name)
    if clip is not None and not clip[0] < clip[1]:
      raise ValueError(f"--{name}={clip} must be lo,hi with lo < hi")
  if cfg.bits != "fp32" and cfg.teacher is None and cfg.loss_terms not in (None, ("gt",)):
    raise ValueError(f"--bits={cfg.bits} with KD loss terms needs --teacher=<workdir of the FP teacher>")
  lm_data.check_sources(cfg.dataset, cfg.data_dir)
  tokenizer = tokenizers.load_tokenizer(cfg.tokenizer)
  vocab = len(tokenizer)

  quant_policy = policy_lib.make_policy(cfg.bits, symmetric=cfg.symmetric, weight_group_size=cfg.weight_group_size,
                                        weight_clip=cfg.weight_clip if cfg.bits != "fp32" else None,
                                        act_clip=cfg.act_clip if cfg.bits != "fp32" else None)
  drop = {"resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout}
  dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
  teacher_meta = None
  if cfg.teacher is not None:
    teacher_meta = lm_task.read_run_metadata(cfg.teacher)
    stored = teacher_meta["model_config"]
    if cfg.post_ln and not stored.get("post_ln"):
      raise ValueError(f"--post_ln was given but the teacher {cfg.teacher!r} is Pre-LN; the student copies the "
                       "teacher's architecture")
    if teacher_meta.get("tokenizer_vocab_size") not in (None, vocab) or stored["vocab_size"] < vocab:
      raise ValueError(f"--tokenizer={cfg.tokenizer!r} has {vocab} tokens but the teacher {cfg.teacher!r} was "
                       f"trained with {teacher_meta.get('tokenizer_vocab_size')} (vocab_size {stored['vocab_size']})")
    _, config = lm_task.build_model(stored, quant_policy, dtype, **drop)
    where = f"the teacher's n_positions ({cfg.teacher})"
  elif cfg.init != "scratch":
    if not os.path.isdir(cfg.init):
      raise FileNotFoundError(f"--init={cfg.init!r} is neither 'scratch' nor a Hugging Face GPT-2 directory")
    if cfg.post_ln:
      raise ValueError("--post_ln needs --init=scratch: released GPT-2 checkpoints are Pre-LN")
    config = registry.get_config(cfg.init, policy=quant_policy, dtype=dtype, **drop)
    if config.vocab_size != vocab:
      raise ValueError(f"--tokenizer={cfg.tokenizer!r} has {vocab} tokens but the checkpoint --init={cfg.init!r} "
                       f"has vocab_size {config.vocab_size}")
    where = f"n_positions of --init={cfg.init}"
  else:
    config = registry.get_config(cfg.model, policy=quant_policy, dtype=dtype, post_ln=cfg.post_ln,
                                 vocab_size=vocab, **_model_overrides(cfg), **drop)
    if not hasattr(config, "n_positions"):
      raise ValueError(f"--model={cfg.model!r} is not a GPT-2 preset")
    where = f"n_positions of --model={cfg.model}"
  if cfg.block_size > config.n_positions:
    raise ValueError(f"--block_size={cfg.block_size} is larger than the {where}: {config.n_positions}")

  terms = cfg.loss_terms or (lm_task.PAPER_GPT2_LOSS_TERMS if cfg.teacher else ("gt",))
  if cfg.teacher is None and set(terms) != {"gt"}:
    raise ValueError(f"--loss_terms={','.join(terms)} need --teacher")
  return Plan(config=config, policy=quant_policy, tokenizer=tokenizer, teacher_meta=teacher_meta,
              loss_terms=tuple(terms))


def _initial_params(cfg: LMRunConfig, plan: Plan, model):
  if cfg.teacher is not None:  # paper: the student starts from the FP teacher
    # A second copy, not the teacher's arrays: the train step donates the student's buffers.
    _, params, _ = lm_task.restore_run(cfg.teacher, policy=None)
    return params
  if cfg.init != "scratch":
    _, params = registry.load_pretrained(cfg.init, policy=plan.policy, task="lm", dtype=plan.config.dtype)
    return params
  ids = jnp.zeros((1, cfg.block_size), jnp.int32)
  return jax.jit(model.init)(jax.random.PRNGKey(cfg.seed), ids)["params"]


def _evaluate_positions(model, params, split: lm_data.LMSplit, batch_size: int) -> dict:
  pos = lm_task.positional_nll(model, params, split.batches(batch_size))
  total = lm_task.summarize_nll([{"nll_sum": pos["nll_sum"].sum(), "num_tokens": pos["num_tokens"].sum()}])
  return dict(total, nll_sum_by_position=pos["nll_sum"].tolist(), num_tokens_by_position=pos["num_tokens"].tolist())


def _read_results(workdir: str) -> dict | None:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run(cfg: LMRunConfig, argv: Sequence[str] | None = None) -> dict:
  """Validates, trains (or resumes), re-loads the best checkpoint, evaluates valid + test; returns results.json."""
  t0 = time.time()
  plan = validate(cfg)
  model = gpt2.GPT2LMHeadModel(plan.config)
  teacher_model = teacher_params = None
  if cfg.teacher is not None:
    teacher_model, _ = lm_task.build_model(plan.teacher_meta["model_config"], None, plan.config.dtype)
    _, teacher_params, _ = lm_task.restore_run(cfg.teacher, policy=None)

  corpus = lm_data.load_corpus(cfg.dataset, plan.tokenizer, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir,
                               log=lambda m: print(m, flush=True))
  train_blocks = lm_data.chunk_blocks(corpus.ids["train"], cfg.block_size)
  source = lm_data.train_source(train_blocks, cfg.batch_size, cfg.seed)
  valid = lm_data.eval_split(corpus.ids["valid"], cfg.block_size, cfg.eval_stride)
  test = lm_data.eval_split(corpus.ids["test"], cfg.block_size, cfg.eval_stride)
  steps = cfg.num_train_steps or max(1, int(round(cfg.num_epochs * source.steps_per_epoch)))
  warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.05 * steps)
  tcfg = train.TrainConfig(num_train_steps=steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                           warmup_steps=min(warmup, steps), weight_decay=cfg.weight_decay,
                           grad_clip_norm=cfg.grad_clip_norm, eval_every_steps=min(cfg.eval_every_steps, steps),
                           seed=cfg.seed, compute_dtype=cfg.compute_dtype,
                           log_every_steps=min(cfg.log_every_steps, steps))
  tcfg.validate()
  model_config = lm_task.model_config_to_dict(plan.config)
  print(f"model: {model_config['n_layer']} layers x {model_config['n_embd']} (heads {model_config['n_head']}), "
        f"{'Post' if plan.config.post_ln else 'Pre'}-LN, policy {plan.policy.name}; {corpus.num_tokens()} tokens; "
        f"{len(train_blocks)} train blocks of {cfg.block_size}; {steps} steps "
        f"({steps / source.steps_per_epoch:.1f} epochs); loss {'+'.join(plan.loss_terms)}", flush=True)

  params = _initial_params(cfg, plan, model)
  task = lm_task.LMTask(model, teacher_model, plan.loss_terms)
  meta = {"task": "lm", "model_config": model_config, "dataset": cfg.dataset, "block_size": cfg.block_size,
          "tokenizer": cfg.tokenizer, "tokenizer_vocab_size": len(plan.tokenizer), "bits": cfg.bits,
          "symmetric": cfg.symmetric, "teacher": cfg.teacher}
  cfg_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
  run_info = {"config": {"lm": cfg_dict, "model_config": model_config, "loss_terms": list(plan.loss_terms)},
              "metadata": meta, "policy_json": plan.policy.to_json(), "argv": list(argv or sys.argv)}
  train_src = source if cfg.time_budget_s is None else _Deadline(source, t0 + cfg.time_budget_s)
  stopped_at = None
  try:
    summary = train.train_and_evaluate(task, params, teacher_params, train_src, lambda: valid.batches(
        cfg.eval_batch_size), tcfg, cfg.workdir, run_info, max_steps_this_run=cfg.max_steps_this_run)
  except TimeBudgetExceeded as e:
    stopped_at = int(e.args[0])
    print(f"--time_budget_s={cfg.time_budget_s} reached: stopped at step {stopped_at} of {steps}; "
          "evaluating the best checkpoint so far", flush=True)
    summary = {"step": stopped_at, "interrupted": True}
  if summary.get("interrupted") and stopped_at is None:
    return summary  # --max_steps_this_run: resume later

  # Eval-reload: the best checkpoint, float32 compute, valid + test with per-position sums.
  eval_model, best_params, best_meta = lm_task.restore_run(cfg.workdir)
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
      "command": " ".join(argv or sys.argv), "git_commit": train.git_commit(),
      "valid": _evaluate_positions(eval_model, best_params, valid, cfg.eval_batch_size),
      "test": _evaluate_positions(eval_model, best_params, test, cfg.eval_batch_size),
  }
  teacher_results = _read_results(cfg.teacher) if cfg.teacher else None
  if teacher_results:
    results["teacher_perplexity"] = {s: teacher_results[s]["perplexity"] for s in ("valid", "test")}
    results["gap"] = {s: results[s]["perplexity"] - teacher_results[s]["perplexity"] for s in ("valid", "test")}
  results["wall_time_s"] = time.time() - t0
  with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  gap = "" if "gap" not in results else f" (gap valid {results['gap']['valid']:+.2f}, test {results['gap']['test']:+.2f})"
  print(f"RESULT {plan.policy.name}: best step {results['best_step']}, valid ppl {results['valid']['perplexity']:.3f}, "
        f"test ppl {results['test']['perplexity']:.3f}{gap}, wall {results['wall_time_s']:.0f}s", flush=True)
  return results
