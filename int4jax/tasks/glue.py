"""GLUE fine-tuning and QAT+KD as a `train.TrainTask`, with the paper's per-model defaults (Table C.1).

    cfg = resolve_config(task="sst2", model="bert_base", bits="w4a4", teacher="runs/sst2_fp32", overrides={})
    exp = build_experiment(cfg)           # validates everything and loads data, teacher, params
    result = run(exp, workdir)            # train_and_evaluate + run dir

A run with bits="fp32" fine-tunes the teacher with the ground-truth loss. A quantized run needs `teacher`: the
workdir (or its checkpoints/best) of an fp32 run of the same task; the student starts from the teacher's best
params and learns from it with the selected KD terms (paper default for BERT: logit + att + rep; paper_spec §2.3).

Defaults (each overridable by a flag):
  QAT (Table C.1, BERT columns, bold = best): BERT-base lr 1e-4, batch 64; BERT-large lr 5e-5, batch 32; clip
    [-5, 5] on weights and activations; loss Logit + Att* + Rep; epochs: 9 (base) / 5 (large) for MNLI and QQP,
    3 for the other tasks (Table C.4 Budget-B). Other models (MiniLM, tiny) use the BERT-base row.
  Teacher fine-tuning (not in the paper, which starts from fine-tuned checkpoints): lr 2e-5 (5e-5 for models
    of hidden size <= 512), batch 32, 3 epochs, the usual BERT recipe.
  Both: warmup 10% of the steps (DSE uses 1 of 9 epochs), max sequence length 64 for CoLA / SST-2 and 128
    otherwise (Table C.4), eval every 1000 steps, seed 42.
  The synthetic task: 2-layer bert_tiny, 6 epochs teacher at lr 1e-3, 6 epochs student at lr 5e-4.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from int4jax import metrics
from int4jax.train import checkpoint, distill
from int4jax.train import loop as train
from int4jax.data import ArrayBatchSource, eval_batches, glue as glue_data, synthetic
from int4jax.models import registry
from int4jax.models.outputs import Taps
from int4jax.quant.policy import PRESETS, make_policy

SYNTHETIC = "synthetic"


@dataclasses.dataclass(frozen=True)
class GlueRunConfig:
  """Everything that defines a GLUE run; stored in config.json so experiments/eval.py can rebuild it."""
  task: str
  model: str
  bits: str = "fp32"
  quant_mode: str = "sym"
  teacher: str | None = None
  data_dir: str | None = None
  tokenizer: str | None = None             # default: the model directory, else bert-base-uncased
  max_seq_length: int = 128
  loss_terms: tuple[str, ...] = ("gt",)
  weight_clip: tuple[float, float] | None = None
  act_clip: tuple[float, float] | None = None
  weight_group_size: int | None = None
  gemms: tuple[str, ...] = ("qkv", "attn_out", "ffn_in", "ffn_out")
  num_epochs: float = 3.0
  num_train_steps: int | None = None       # overrides num_epochs
  batch_size: int = 32
  eval_batch_size: int = 128
  learning_rate: float = 2e-5
  warmup_ratio: float = 0.1
  eval_every_steps: int = 1000
  log_every_steps: int = 50
  checkpoint_every_steps: int | None = None
  compute_dtype: str = "float32"
  seed: int = 42
  dropout: float | None = None             # None: the model's own (0.1 for BERT)
  max_train_examples: int | None = None    # a prefix of the train split, for quick runs

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "GlueRunConfig":
    d = dict(d)
    for k in ("loss_terms", "gemms", "weight_clip", "act_clip"):
      if d.get(k) is not None:
        d[k] = tuple(d[k])
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


# ----------------------------------------------------------------------------------------------
# Defaults


def canonical_task(name: str) -> str:
  return SYNTHETIC if name.lower() == SYNTHETIC else glue_data.task_spec(name).name


def _hidden_size(model: str) -> int | None:
  try:
    return registry.get_config(model).hidden_size
  except (ValueError, AttributeError, TypeError):
    return None


def defaults(task: str, model: str, bits: str) -> dict[str, Any]:
  """The defaults listed in the module docstring, for (task, model, bits)."""
  quantized = bits != "fp32"
  d: dict[str, Any] = dict(max_seq_length=64 if task in ("cola", "sst2") else 128, warmup_ratio=0.1,
                           eval_every_steps=1000, seed=42)
  if task == SYNTHETIC:
    d.update(max_seq_length=32, batch_size=32, num_epochs=6, eval_every_steps=128, eval_batch_size=256,
             learning_rate=5e-4 if quantized else 1e-3)
  elif not quantized:
    hidden = _hidden_size(model)
    d.update(batch_size=32, num_epochs=3, learning_rate=5e-5 if hidden is not None and hidden <= 512 else 2e-5)
  else:
    large = model == "bert_large"
    d.update(batch_size=32 if large else 64, learning_rate=5e-5 if large else 1e-4,
             num_epochs=(5 if large else 9) if task in ("mnli", "qqp") else 3)
  if quantized:
    d.update(loss_terms=distill.PAPER_BERT_LOSS_TERMS, weight_clip=(-5.0, 5.0), act_clip=(-5.0, 5.0))
  else:
    d.update(loss_terms=("gt",))
  return d


def resolve_config(task: str, model: str, bits: str = "fp32", *, quant_mode: str = "sym",
                   teacher: str | None = None, data_dir: str | None = None, **overrides) -> GlueRunConfig:
  """Defaults for (task, model, bits), then `overrides` (None values ignored; clip "none" = no clip)."""
  task = canonical_task(task)
  if bits not in PRESETS:
    raise ValueError(f"--bits={bits!r} is not one of {list(PRESETS)}")
  if quant_mode not in ("sym", "asym"):
    raise ValueError(f"--quant_mode={quant_mode!r} must be 'sym' or 'asym'")
  model = str(model)
  if model not in registry.presets() and not os.path.isdir(model):
    raise ValueError(f"--model={model!r} is neither a preset ({sorted(registry.presets())}) nor a directory")
  values = defaults(task, model, bits)
  values.update({k: v for k, v in overrides.items() if v is not None})
  values.update({k: None for k in ("weight_clip", "act_clip") if values.get(k) == "none"})
  unknown = sorted(set(values) - {f.name for f in dataclasses.fields(GlueRunConfig)})
  if unknown:
    raise ValueError(f"unknown GLUE config field(s) {unknown}")
  cfg = GlueRunConfig(task=task, model=model, bits=bits, quant_mode=quant_mode, teacher=teacher,
                      data_dir=data_dir, **values)
  distill.validate_loss_terms(cfg.loss_terms, has_teacher=bits != "fp32")
  if bits != "fp32" and not teacher:
    raise ValueError(
        f"--bits={bits} trains a quantized student and needs --teacher=<workdir of an fp32 run>; first run "
        f"`python -m experiments.glue --task={task} --model={model} --bits=fp32 --workdir=<teacher dir>`")
  for name in ("max_seq_length", "batch_size", "eval_batch_size", "eval_every_steps"):
    if getattr(cfg, name) <= 0:
      raise ValueError(f"--{name}={getattr(cfg, name)} must be positive")
  if not 0 <= cfg.warmup_ratio < 1:
    raise ValueError(f"--warmup_ratio={cfg.warmup_ratio} must be in [0, 1)")
  return cfg


# ----------------------------------------------------------------------------------------------
# The task


class GlueTask:
  """TrainTask for sequence classification / regression with optional KD from a frozen teacher."""
  higher_is_better = True

  def __init__(self, task: str, model, teacher_model, loss_terms: tuple[str, ...], is_regression: bool):
    self.task, self.model, self.teacher_model = task, model, teacher_model
    self.loss_terms, self.is_regression = tuple(loss_terms), is_regression
    self.metric_name = metrics.primary_metric(task)
    self.taps = Taps(hidden_states="rep" in loss_terms, attention_scores="att" in loss_terms)

  def _forward(self, model, params, batch, *, deterministic, taps, rng=None):
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                       deterministic=deterministic, taps=taps, rngs=None if rng is None else {"dropout": rng})

  def loss_fn(self, params, teacher_params, batch, rng):
    student = self._forward(self.model, params, batch, deterministic=False, taps=self.taps, rng=rng)
    teacher = None
    if teacher_params is not None and self.loss_terms != ("gt",):
      teacher = self._forward(self.teacher_model, teacher_params, batch, deterministic=True, taps=self.taps)
    loss, parts = distill.kd_loss(student, teacher, batch["labels"], batch["attention_mask"], self.loss_terms,
                                  is_regression=self.is_regression)
    return loss, {f"loss_{k}": v for k, v in parts.items()}

  def eval_batch(self, params, batch):
    logits = self._forward(self.model, params, batch, deterministic=True, taps=None).logits
    preds = logits[:, 0] if self.is_regression else jnp.argmax(logits, axis=-1)
    split_ids = batch.get("split_ids", jnp.zeros_like(batch["labels"], jnp.int32))
    return {"preds": preds, "labels": batch["labels"], "weight": batch["weight"], "split_ids": split_ids}

  def summarize(self, accumulated):
    cat = {k: np.concatenate([np.asarray(a[k]) for a in accumulated]) for k in accumulated[0]}
    keep = cat["weight"] > 0
    return metrics.glue_metrics(self.task, cat["preds"][keep], cat["labels"][keep], cat["split_ids"][keep])


# ----------------------------------------------------------------------------------------------
# Building an experiment


@dataclasses.dataclass
class Experiment:
  cfg: GlueRunConfig
  task: GlueTask
  params: Any
  teacher_params: Any
  train_source: ArrayBatchSource
  eval_arrays: dict[str, np.ndarray]
  train_config: train.TrainConfig
  policy_json: str
  metadata: dict

  def eval_batches(self):
    return eval_batches(self.eval_arrays, self.cfg.eval_batch_size)


def _num_labels(task: str) -> int:
  return synthetic.NUM_LABELS if task == SYNTHETIC else glue_data.task_spec(task).num_labels


def load_arrays(cfg: GlueRunConfig) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(train arrays, eval arrays), tokenized and padded to max_seq_length."""
  if cfg.task == SYNTHETIC:
    n = cfg.max_train_examples
    return (synthetic.make_split("train", n, cfg.max_seq_length),
            synthetic.make_split("validation", None, cfg.max_seq_length))
  train_ex = glue_data.load_split(cfg.task, "train", cfg.data_dir)
  eval_ex = glue_data.load_split(cfg.task, "validation", cfg.data_dir)
  if cfg.max_train_examples:
    n = cfg.max_train_examples
    train_ex = glue_data.GlueExamples(train_ex.text_a[:n], None if train_ex.text_b is None else train_ex.text_b[:n],
                                      train_ex.labels[:n], train_ex.split_ids[:n], train_ex.source)
  tokenizer = _tokenizer(cfg)
  return (glue_data.encode(train_ex, tokenizer, cfg.max_seq_length),
          glue_data.encode(eval_ex, tokenizer, cfg.max_seq_length))


def make_policy_for(cfg: GlueRunConfig):
  if cfg.bits == "fp32":
    return make_policy("fp32")
  return make_policy(cfg.bits, symmetric=cfg.quant_mode == "sym", gemms=cfg.gemms,
                     weight_group_size=cfg.weight_group_size, weight_clip=cfg.weight_clip, act_clip=cfg.act_clip)


def _model_overrides(cfg: GlueRunConfig, policy) -> dict:
  o = dict(policy=policy, num_labels=_num_labels(cfg.task))
  if cfg.compute_dtype == "bfloat16":
    o["dtype"] = jnp.bfloat16
  if cfg.dropout is not None:
    o.update(hidden_dropout=cfg.dropout, attention_dropout=cfg.dropout)
  return o


def build_model(cfg: GlueRunConfig, policy, *, load_weights: bool):
  """(module, params or None). HF directories load their weights (new classifier heads are initialised)."""
  overrides = _model_overrides(cfg, policy)
  rng = jax.random.PRNGKey(cfg.seed)
  if os.path.isdir(cfg.model) and load_weights:
    return registry.load_pretrained(cfg.model, task="sequence_classification", rng=rng, **overrides)
  config = registry.get_config(cfg.model, **overrides)
  model = registry.family(_family_name(cfg.model)).build(config, "sequence_classification")
  if not load_weights:
    return model, None
  dummy = jnp.zeros((1, cfg.max_seq_length), jnp.int32)
  return model, jax.jit(lambda r: model.init(r, dummy, dummy)["params"])(rng)


def _family_name(model: str) -> str:
  presets = registry.presets()
  return presets[model] if model in presets else registry.hf.read_config(model)["model_type"]


def abstract_params(model, cfg: GlueRunConfig):
  dummy = jnp.zeros((1, cfg.max_seq_length), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy, dummy)["params"])


def best_checkpoint_dir(path: str) -> str:
  """A run workdir, its checkpoints/ or checkpoints/best -> the best/ checkpoint directory."""
  for cand in (os.path.join(path, "checkpoints", checkpoint.BEST), os.path.join(path, checkpoint.BEST), path):
    if checkpoint.latest_step(cand) is not None:
      return cand
  raise FileNotFoundError(f"no best checkpoint under {path!r} (expected <workdir>/checkpoints/best from a run)")


def load_teacher(cfg: GlueRunConfig, model):
  """Teacher params (fp32) from an earlier run, after checking its metadata against this run."""
  ckpt = best_checkpoint_dir(cfg.teacher)
  meta = checkpoint.read_metadata(ckpt)
  if meta.get("task") != cfg.task:
    raise ValueError(f"--teacher={cfg.teacher!r} was trained on task {meta.get('task')!r}, not {cfg.task!r}")
  if meta.get("num_labels") != _num_labels(cfg.task):
    raise ValueError(f"--teacher has {meta.get('num_labels')} labels; task {cfg.task} needs {_num_labels(cfg.task)}")
  if meta.get("bits", "fp32") != "fp32":
    raise ValueError(f"--teacher={cfg.teacher!r} is a {meta.get('bits')} run; the teacher must be fp32")
  if os.path.abspath(str(meta.get("model"))) != os.path.abspath(cfg.model) and meta.get("model") != cfg.model:
    raise ValueError(f"--teacher was a {meta.get('model')!r} model, this run is --model={cfg.model!r}")
  restored, _ = checkpoint.restore(ckpt, {"params": abstract_params(model, cfg)})
  logging.info("teacher from %s (step %s, %s=%s)", ckpt, meta.get("step"), meta.get("metric_name"), meta.get("metric"))
  return restored["params"], meta


def build_experiment(cfg: GlueRunConfig) -> Experiment:
  """Validates inputs (data, teacher, model) and builds everything train_and_evaluate needs. No training."""
  if cfg.teacher and cfg.bits == "fp32":
    raise ValueError("--teacher is only used by quantized runs (--bits other than fp32)")
  teacher_meta = None
  if cfg.teacher:  # cheap metadata check before the (slow) data loading
    teacher_meta = checkpoint.read_metadata(best_checkpoint_dir(cfg.teacher))
    if teacher_meta.get("task") != cfg.task:
      raise ValueError(f"--teacher={cfg.teacher!r} was trained on task {teacher_meta.get('task')!r}, "
                       f"not {cfg.task!r}")
  train_arrays, eval_arrays = load_arrays(cfg)
  n_train = len(train_arrays["labels"])
  if n_train < cfg.batch_size:
    raise ValueError(f"train split has {n_train} examples, fewer than --batch_size={cfg.batch_size}")
  policy = make_policy_for(cfg)
  num_labels = _num_labels(cfg.task)
  is_regression = num_labels == 1
  if cfg.teacher:
    model, _ = build_model(cfg, policy, load_weights=False)
    teacher_cfg = dataclasses.replace(cfg, bits="fp32")
    teacher_model, _ = build_model(teacher_cfg, make_policy("fp32"), load_weights=False)
    teacher_params, _ = load_teacher(cfg, teacher_model)
    params = jax.tree.map(jnp.array, teacher_params)  # the student starts from the teacher (a separate copy)
  else:
    model, params = build_model(cfg, policy, load_weights=True)
    teacher_model, teacher_params = None, None
  head = params["classifier"]["kernel"].shape[-1] if "classifier" in params else num_labels
  if head != num_labels:
    raise ValueError(f"the model's classifier has {head} outputs; task {cfg.task} has {num_labels} labels")
  steps_per_epoch = n_train // cfg.batch_size
  num_train_steps = cfg.num_train_steps or max(1, math.ceil(cfg.num_epochs * steps_per_epoch))
  train_config = train.TrainConfig(
      num_train_steps=num_train_steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
      warmup_steps=int(cfg.warmup_ratio * num_train_steps), eval_every_steps=cfg.eval_every_steps,
      seed=cfg.seed, compute_dtype=cfg.compute_dtype, log_every_steps=cfg.log_every_steps,
      checkpoint_every_steps=cfg.checkpoint_every_steps)
  train_config.validate()
  if cfg.eval_batch_size % jax.device_count():
    raise ValueError(f"--eval_batch_size={cfg.eval_batch_size} must be a multiple of {jax.device_count()} devices")
  task = GlueTask(cfg.task, model, teacher_model, cfg.loss_terms, is_regression)
  metadata = dict(task=cfg.task, model=cfg.model, bits=cfg.bits, quant_mode=cfg.quant_mode, num_labels=num_labels,
                  teacher=cfg.teacher, teacher_metric=None if teacher_meta is None else teacher_meta.get("metric"),
                  num_train_examples=n_train, steps_per_epoch=steps_per_epoch)
  return Experiment(cfg, task, params, teacher_params, ArrayBatchSource(train_arrays, cfg.batch_size, cfg.seed),
                    eval_arrays, train_config, policy.to_json(), metadata)


def run(exp: Experiment, workdir: str, argv: list[str] | None = None, git_commit: str | None = None,
        **kwargs) -> dict:
  run_info = {"config": {"glue": exp.cfg.to_dict()}, "metadata": exp.metadata, "policy_json": exp.policy_json}
  if argv is not None:
    run_info["argv"] = argv
  if git_commit:
    run_info["git_commit"] = git_commit
  print(f"{exp.cfg.task} {exp.cfg.bits} ({exp.cfg.quant_mode}) model={exp.cfg.model}: "
        f"{exp.train_source.num_examples} train / {len(exp.eval_arrays['labels'])} eval examples, "
        f"{exp.train_config.num_train_steps} steps of {exp.cfg.batch_size} "
        f"({exp.train_config.num_train_steps / exp.train_source.steps_per_epoch:.2f} epochs), "
        f"lr {exp.cfg.learning_rate}, loss {'+'.join(exp.cfg.loss_terms)}, {jax.device_count()} device(s)",
        flush=True)
  result = train.train_and_evaluate(exp.task, exp.params, exp.teacher_params, exp.train_source, exp.eval_batches,
                                    exp.train_config, workdir, run_info, **kwargs)
  if not result.get("interrupted"):
    result["epochs"] = exp.train_config.num_train_steps / exp.train_source.steps_per_epoch
    result.update(task=exp.cfg.task, bits=exp.cfg.bits, quant_mode=exp.cfg.quant_mode, model=exp.cfg.model)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
  return result


def load_run_config(workdir: str) -> GlueRunConfig:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path!r} does not exist: is {workdir!r} a run directory of experiments.glue?")
  with open(path) as f:
    return GlueRunConfig.from_dict(json.load(f)["glue"])


def evaluate_best(workdir: str) -> tuple[dict[str, float], dict]:
  """Reloads checkpoints/best of a run and evaluates it. Returns (metrics now, checkpoint metadata)."""
  cfg = load_run_config(workdir)
  ckpt = best_checkpoint_dir(workdir)
  policy = make_policy_for(cfg)
  model, _ = build_model(cfg, policy, load_weights=False)
  restored, meta = checkpoint.restore(ckpt, {"params": abstract_params(model, cfg)})
  eval_arrays = load_eval_arrays(cfg)
  task = GlueTask(cfg.task, model, None, ("gt",), _num_labels(cfg.task) == 1)
  mesh = train.make_mesh()
  params = train.replicate(restored["params"], mesh)
  eval_fn = jax.jit(lambda p, b: train.eval_step(p, b, task=task, compute_dtype=cfg.compute_dtype))
  return train.evaluate(params, lambda: eval_batches(eval_arrays, cfg.eval_batch_size), eval_fn, mesh, task), meta


def load_eval_arrays(cfg: GlueRunConfig) -> dict[str, np.ndarray]:
  if cfg.task == SYNTHETIC:
    return synthetic.make_split("validation", None, cfg.max_seq_length)
  eval_ex = glue_data.load_split(cfg.task, "validation", cfg.data_dir)
  return glue_data.encode(eval_ex, _tokenizer(cfg), cfg.max_seq_length)


def _tokenizer(cfg: GlueRunConfig):
  from int4jax.tokenizers import load_tokenizer  # pylint: disable=g-import-not-at-top
  return load_tokenizer(cfg.tokenizer or (cfg.model if os.path.isdir(cfg.model) else "bert-base-uncased"))
