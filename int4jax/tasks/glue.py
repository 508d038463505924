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

The paper's recipe beyond Table C.1 (selectable, off by default so earlier runs keep their meaning):
  --budget=A|B|C  student epochs from Table C.4 (BUDGET_EPOCHS; where C says "18 or 36" we take the first).
  --augment=N     N TinyBERT-style copies of every train example (int4jax/data/augment.py), labelled by the
                  teacher only: the run must use KD terms without `gt`. Epochs count over the augmented set
                  (originals + copies), as XTC trains on the augmented train file. Table C.4 marks the tasks
                  that use it (AUGMENTED_TASKS); the paper's Table C.5 is Budget-A with augmentation.
  LR_GRID         the learning rates of Table C.5 (searched by experiments.glue_suite; the paper's "best" row
                  is the per-task maximum over the grid of the best-on-dev checkpoint).
  --qat=qwix      Qwix's QAT on the same GEMMs instead of int4jax's policy (quant/qwix_peer.py): the peer row.
Composability (issue 14): `sparsity="2:4"` (or "2:4@ffn", quant/policy.py's PRESET+N:M@SCOPE syntax) prunes the
student's quantized weights N:M along K (quant/sparsity.py; `prune` static|movement, `order` pq|qp,
`mask_update_every` for movement); `num_layers` builds a student with fewer encoder layers, initialised from and
distilled from teacher layers `layer_map` (default: distill.default_layer_map's uniform spacing, 6 -> 3: teacher layers 1, 3, 5).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from int4jax import metrics
from int4jax.train import checkpoint, distill
from int4jax.train import loop as train
from int4jax.train import rundir
from int4jax.data import ArrayBatchSource, eval_batches, glue as glue_data, synthetic
from int4jax.models import registry
from int4jax.models.family import architecture
from int4jax.models.outputs import Taps
from int4jax.tasks import base
from int4jax.quant import sparsity as nm_sparsity
from int4jax.quant.policy import PRESETS, make_policy_from_string

SYNTHETIC = "synthetic"

# Table C.4 (paper_spec.md §2.7): student epochs for Budget-A / B / C; C's "18 or 36", "6 or 9", "12 or 18" ->
# the first value. WNLI is not in the table (nor in the paper's GLUE average).
BUDGET_EPOCHS: dict[str, tuple[float, float, float]] = {
    "mnli": (3, 9, 18), "qqp": (3, 9, 18), "qnli": (1, 3, 6), "sst2": (1, 3, 12), "stsb": (1, 3, 12),
    "rte": (1, 3, 12), "cola": (1, 3, 12), "mrpc": (1, 3, 12), SYNTHETIC: (2, 6, 12)}
BUDGETS = ("A", "B", "C")
# Table C.4's "data aug." column: the tasks whose students train on TinyBERT-augmented data.
AUGMENTED_TASKS = ("qnli", "sst2", "stsb", "rte", "cola", "mrpc")
# Table C.5's learning-rate grid for W4A4 students: BERT-large rows, and BERT-base rows (used for other models).
LR_GRID = {"bert_large": (1e-5, 5e-5, 1e-4), "default": (2e-5, 5e-5, 1e-4)}
QAT_BACKENDS = ("int4jax", "qwix")


def lr_grid(model: str) -> tuple[float, ...]:
  return LR_GRID.get(model, LR_GRID["default"])


def budget_epochs(task: str, budget: str) -> float:
  if budget.upper() not in BUDGETS:
    raise ValueError(f"--budget={budget!r} must be one of {list(BUDGETS)} (Table C.4)")
  if task not in BUDGET_EPOCHS:
    raise ValueError(f"task {task!r} has no budget in Table C.4 (tasks: {sorted(BUDGET_EPOCHS)})")
  return float(BUDGET_EPOCHS[task][BUDGETS.index(budget.upper())])


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlueRunConfig(base.RunConfig):
  """A GLUE run: the shared RunConfig fields plus the task's own; stored in config.json so eval can rebuild it."""
  task: str
  max_seq_length: int = 128
  max_train_examples: int | None = None    # a prefix of the train split, for quick runs
  # Composability (issue 14): N:M sparsity of the quantized weights, and a layer-reduced student.
  sparsity: str | None = None              # "N:M" or "N:M@scope" (scope: all, ffn, attn, a GEMM type)
  prune: str = "static"                    # static (|W| of the teacher, fixed) | movement (from the same mask)
  order: str = "pq"                        # pq: prune then quantize | qp: quantize then prune
  mask_update_every: int = 100             # movement: steps between mask recomputations
  num_layers: int | None = None            # student encoder layers (None: the teacher's)
  layer_map: tuple[int, ...] | None = None  # student layer i <- teacher layer layer_map[i]

  budget: str | None = None                # Table C.4 budget "A" / "B" / "C": sets num_epochs (students)
  augment: int = 0                         # TinyBERT-style copies per train example (students; data/augment.py)
  augment_cache: str | None = None         # folder or .jsonl.gz of the augmentation cache (default ~/.cache)
  qat: str = "int4jax"                     # "qwix": Qwix's QAT on the same GEMMs instead (quant/qwix_peer.py)

  RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ("augment_cache",)

  def validate(self) -> "GlueRunConfig":
    if self.bits in PRESETS and self.quantized and not self.teacher:
      raise ValueError(
          f"--bits={self.bits} trains a quantized student and needs --teacher=<workdir of an fp32 run>; first run "
          f"`python -m experiments.glue --task={self.task} --model={self.model} --bits=fp32 --workdir=<teacher dir>`")
    if self.teacher and not self.quantized:
      raise ValueError("--teacher is only used by quantized runs (--bits other than fp32)")
    super().validate()
    if self.max_seq_length <= 0:
      raise ValueError(f"--max_seq_length={self.max_seq_length} must be positive")
    if self.qat not in QAT_BACKENDS:
      raise ValueError(f"--qat={self.qat!r} must be one of {QAT_BACKENDS}")
    if self.qat == "qwix" and (self.weight_group_size or not self.quantized):
      raise ValueError("--qat=qwix: a quantized --bits preset, one weight scale per channel (no --weight_group_size)")
    if self.augment < 0:
      raise ValueError(f"--augment={self.augment} must be >= 0 (copies per example)")
    if self.augment:
      if not self.quantized or self.task == SYNTHETIC:
        raise ValueError("--augment is for quantized students of GLUE tasks (the teacher labels the copies)")
      if self.kd_losses and "gt" in self.kd_losses:
        raise ValueError("--augment: augmented examples have no ground truth (the teacher labels them); drop 'gt' "
                         "from --kd_losses")
    if self.sparsity is not None:
      if not self.quantized:
        raise ValueError(f"--sparsity={self.sparsity} on a float GEMM (--bits=fp32): N:M sparsity is applied to the "
                         f"quantized weights of a student; use e.g. --bits=w4a4")
      self.make_policy()  # parses the pattern / scope; sparsity on GEMMs that --gemms leaves float raises here
    if (self.num_layers is not None or self.layer_map is not None) and not self.quantized:
      raise ValueError("--num_layers / --layer_map build a layer-reduced student, which needs a teacher (--bits "
                       "other than fp32 and --teacher)")
    return self

  def make_policy(self):
    """base.RunConfig.make_policy, plus the N:M sparsity of --sparsity / --prune / --order; --qat=qwix keeps the
    model float (Qwix quantizes by interception)."""
    if self.qat == "qwix":
      if self.sparsity is not None:
        raise ValueError("--qat=qwix cannot be combined with --sparsity")
      return dataclasses.replace(self, bits=base.FLOAT_BITS, teacher=None, qat="int4jax").make_policy()
    if self.sparsity is None or not self.quantized:
      return super().make_policy()
    return make_policy_from_string(f"{self.bits}+{self.sparsity}", method=self.prune, order=self.order,
                                   update_every=self.mask_update_every, symmetric=self.symmetric, gemms=self.gemms,
                                   weight_group_size=self.weight_group_size, weight_clip=self.weight_clip,
                                   act_clip=self.act_clip)

  def teacher_view(self) -> "GlueRunConfig":
    """This run's teacher: fp32, dense, full depth."""
    return dataclasses.replace(self, bits="fp32", teacher=None, sparsity=None, num_layers=None, layer_map=None,
                               qat="int4jax", augment=0, budget=None)


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
    d.update(kd_losses=distill.PAPER_BERT_LOSS_TERMS, weight_clip=(-5.0, 5.0), act_clip=(-5.0, 5.0))
  else:
    d.update(kd_losses=("gt",))
  return d


def resolve_config(task: str, model: str, bits: str = "fp32", *, quant_mode: str = "sym",
                   teacher: str | None = None, data_dir: str | None = None, **overrides) -> GlueRunConfig:
  """Defaults for (task, model, bits), then `overrides` (None values ignored; clip "none" = no clip), validated
  once (base.RunConfig.validate + the GLUE checks), paths made absolute. No model or data is loaded."""
  task = canonical_task(task)
  if bits not in PRESETS:
    raise ValueError(f"--bits={bits!r} is not one of {list(PRESETS)}")
  model = str(model)
  if model not in registry.presets() and not os.path.isdir(model):
    raise ValueError(f"--model={model!r} is neither a preset ({sorted(registry.presets())}) nor a directory")
  values = defaults(task, model, bits)
  budget = overrides.get("budget")
  if budget is not None:
    if bits == "fp32":
      raise ValueError("--budget selects the students' epochs of Table C.4; the fp32 teacher takes --num_epochs")
    if overrides.get("num_epochs") is not None or overrides.get("num_train_steps") is not None:
      raise ValueError("--budget sets the epochs; give either --budget or --num_epochs/--num_train_steps")
    overrides = dict(overrides, budget=budget.upper(), num_epochs=budget_epochs(task, budget))
  values.update({k: v for k, v in overrides.items() if v is not None})
  values.update({k: None for k in ("weight_clip", "act_clip") if values.get(k) == "none"})
  if "warmup_steps" in overrides and overrides["warmup_steps"] is not None:
    values["warmup_ratio"] = None
  unknown = sorted(set(values) - {f.name for f in dataclasses.fields(GlueRunConfig)})
  if unknown:
    raise ValueError(f"unknown GLUE config field(s) {unknown}")
  cfg = GlueRunConfig(task=task, model=model, bits=bits, quant_mode=quant_mode, teacher=teacher,
                      data_dir=data_dir, **values)
  return _resolve_layer_map(cfg.validate()).with_absolute_paths()


def _resolve_layer_map(cfg: GlueRunConfig) -> GlueRunConfig:
  """A layer-reduced student's num_layers and layer_map, checked against the teacher's depth (no weights read)."""
  if cfg.num_layers is None and cfg.layer_map is None:
    return cfg
  teacher_layers = registry.get_config(cfg.model).num_layers
  if cfg.layer_map is not None:
    distill.validate_layer_map(cfg.layer_map, teacher_layers, cfg.num_layers)
  num_layers = cfg.num_layers if cfg.num_layers is not None else len(cfg.layer_map)
  if num_layers < 1:
    raise ValueError(f"--num_layers={num_layers} must be positive")
  if num_layers > teacher_layers:
    raise ValueError(f"--num_layers={num_layers} is more than the teacher's {teacher_layers} layers")
  layer_map = distill.validate_layer_map(cfg.layer_map or distill.default_layer_map(num_layers, teacher_layers),
                                         teacher_layers, num_layers)
  return dataclasses.replace(cfg, num_layers=num_layers, layer_map=layer_map)


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
    self.sparse_specs: dict = {}              # {QDense path: SparsitySpec}, set by build_experiment
    self.layer_map: tuple[int, ...] | None = None

  def _forward(self, model, params, batch, *, deterministic, taps, rng=None):
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                       deterministic=deterministic, taps=taps, rngs=None if rng is None else {"dropout": rng})

  def loss_fn(self, params, teacher_params, batch, rng):
    student = self._forward(self.model, params, batch, deterministic=False, taps=self.taps, rng=rng)
    teacher = None
    if teacher_params is not None and self.loss_terms != ("gt",):
      teacher = self._forward(self.teacher_model, teacher_params, batch, deterministic=True, taps=self.taps)
    loss, parts = distill.kd_loss(student, teacher, batch["labels"], batch["attention_mask"], self.loss_terms,
                                  is_regression=self.is_regression, layer_map=self.layer_map)
    return loss, {f"loss_{k}": v for k, v in parts.items()}

  def after_update(self, old_params, new_params, grads, step):
    """N:M masks and movement scores after the optimizer (quant/sparsity.py); identity for dense runs."""
    if not self.sparse_specs:
      return new_params
    return nm_sparsity.after_update(old_params, new_params, grads, step, self.sparse_specs)

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


def load_examples(cfg: GlueRunConfig):
  """(train, eval) examples, read and checked but not tokenized (None for the synthetic task, which has ids)."""
  if cfg.task == SYNTHETIC:
    return None, None
  train_ex = glue_data.load_split(cfg.task, "train", cfg.data_dir)
  eval_ex = glue_data.load_split(cfg.task, "validation", cfg.data_dir)
  if cfg.max_train_examples:
    n = cfg.max_train_examples
    train_ex = glue_data.GlueExamples(train_ex.text_a[:n], None if train_ex.text_b is None else train_ex.text_b[:n],
                                      train_ex.labels[:n], train_ex.split_ids[:n], train_ex.source)
  return train_ex, eval_ex


def word_embeddings(params) -> np.ndarray:
  """The [vocab, hidden] input embedding table of a BERT-family params tree."""
  found = [np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
           if "word_embeddings" in jax.tree_util.keystr(path)]
  if len(found) != 1:
    raise ValueError(f"expected one word_embeddings table in the teacher's params, found {len(found)}")
  return found[0]


def _with_augmentation(cfg: GlueRunConfig, train_ex, tokenizer, train_arrays: dict[str, np.ndarray],
                       teacher_params) -> dict[str, np.ndarray]:
  """The original train arrays followed by cfg.augment copies per example (data/augment.py)."""
  from int4jax.data import augment  # pylint: disable=g-import-not-at-top
  spec = augment.AugmentSpec(cfg.task, cfg.augment, seed=cfg.seed)
  cache = cfg.augment_cache or augment.default_cache_dir()
  aug = augment.load_or_build(spec, train_ex, tokenizer, word_embeddings(teacher_params), cache)
  arrays = glue_data.encode(aug, tokenizer, cfg.max_seq_length)
  logging.info("augmentation: %d copies from %s", len(aug), aug.source)
  return {k: np.concatenate([train_arrays[k], arrays[k]]) for k in train_arrays}


def encode_examples(cfg: GlueRunConfig, examples, tokenizer) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(train arrays, eval arrays), tokenized and padded to max_seq_length."""
  if cfg.task == SYNTHETIC:
    return (synthetic.make_split("train", cfg.max_train_examples, cfg.max_seq_length),
            synthetic.make_split("validation", None, cfg.max_seq_length))
  train_ex, eval_ex = examples
  return (glue_data.encode(train_ex, tokenizer, cfg.max_seq_length),
          glue_data.encode(eval_ex, tokenizer, cfg.max_seq_length))


def _model_overrides(cfg: GlueRunConfig, policy) -> dict:
  o = dict(policy=policy, num_labels=_num_labels(cfg.task))
  if cfg.compute_dtype == "bfloat16":
    o["dtype"] = jnp.bfloat16
  if cfg.dropout is not None:
    o.update(hidden_dropout=cfg.dropout, attention_dropout=cfg.dropout)
  if cfg.num_layers is not None:
    o["num_layers"] = cfg.num_layers
  return o


def build_model(cfg: GlueRunConfig, policy, *, load_weights: bool):
  """(module, params or None). HF directories load their weights (new classifier heads are initialised)."""
  overrides = _model_overrides(cfg, policy)
  rng = jax.random.PRNGKey(cfg.seed)
  if os.path.isdir(cfg.model) and load_weights:
    return registry.load_pretrained(cfg.model, task="sequence_classification", rng=rng, **overrides)
  config = registry.get_config(cfg.model, **overrides)
  model = registry.family(_family_name(cfg.model)).build(config, "sequence_classification")
  if cfg.qat == "qwix" and cfg.quantized:
    from int4jax.quant import qwix_peer  # pylint: disable=g-import-not-at-top  (optional dependency)
    model = qwix_peer.wrap(model, bits=cfg.bits, quant_mode=cfg.quant_mode, gemms=cfg.gemms)
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


def model_config(cfg: GlueRunConfig):
  """The family config this run trains (no weights loaded): what teachers and students are compared on."""
  return registry.get_config(cfg.model, **_model_overrides(cfg, None))


def tokenizer_name(cfg: GlueRunConfig) -> str:
  if cfg.task == SYNTHETIC:
    return SYNTHETIC
  return cfg.tokenizer or (cfg.model if os.path.isdir(cfg.model) else "bert-base-uncased")


def identity(cfg: GlueRunConfig, config) -> dict[str, Any]:
  """What a teacher's checkpoint metadata records and a student must match (base.check_teacher_matches)."""
  return dict(task=cfg.task, model_config=architecture(config), tokenizer=tokenizer_name(cfg),
              vocab_size=config.vocab_size)


def check_model_fits(cfg: GlueRunConfig, config, tokenizer_size: int) -> None:
  """Vocabulary and length checks that keep a run from training on out-of-range ids (NaN) or positions."""
  base.check_vocab(tokenizer_name(cfg), tokenizer_size, cfg.model, config.vocab_size)
  base.check_length("max_seq_length", cfg.max_seq_length, cfg.model, config.max_position_embeddings)


def read_teacher(cfg: GlueRunConfig, config) -> dict:
  """The teacher's best/ metadata after checking it against this run (cheap: no arrays are read)."""
  meta = checkpoint.read_metadata(best_checkpoint_dir(cfg.teacher))
  if meta.get("task") != cfg.task:
    raise ValueError(f"--teacher={cfg.teacher!r} was trained on task {meta.get('task')!r}, not {cfg.task!r}")
  if meta.get("num_labels") != _num_labels(cfg.task):
    raise ValueError(f"--teacher has {meta.get('num_labels')} labels; task {cfg.task} needs {_num_labels(cfg.task)}")
  if meta.get("bits", "fp32") != "fp32":
    raise ValueError(f"--teacher={cfg.teacher!r} is a {meta.get('bits')} run; the teacher must be fp32")
  if "model_config" not in meta and os.path.abspath(str(meta.get("model"))) != os.path.abspath(cfg.model):
    raise ValueError(f"--teacher was a {meta.get('model')!r} model, this run is --model={cfg.model!r}")
  base.check_teacher_matches(identity(cfg, config), meta, cfg.teacher)
  return meta


def load_teacher(cfg: GlueRunConfig, model):
  """Teacher params (fp32) from an earlier run's best/ checkpoint."""
  ckpt = best_checkpoint_dir(cfg.teacher)
  restored, meta = checkpoint.restore(ckpt, {"params": abstract_params(model, cfg)})
  logging.info("teacher from %s (step %s, %s=%s)", ckpt, meta.get("step"), meta.get("metric_name"), meta.get("metric"))
  return restored["params"], meta


def build_experiment(cfg: GlueRunConfig) -> Experiment:
  """Validates inputs (model, vocabulary, teacher, data) and builds everything train_and_evaluate needs. No
  training. The cheap checks run first, so a bad flag fails before data or weights are read."""
  config = model_config(cfg)
  sparse_specs = {}
  if cfg.sparsity is not None:  # the student, abstractly: a pattern that does not divide K raises here
    sparse_model, _ = build_model(cfg, cfg.make_policy(), load_weights=False)
    sparse_specs = nm_sparsity.layer_specs(lambda: abstract_params(sparse_model, cfg))
  teacher_config = config if cfg.layer_map is None else model_config(cfg.teacher_view())
  teacher_meta = read_teacher(cfg, teacher_config) if cfg.teacher else None
  examples = load_examples(cfg)
  tokenizer = None if cfg.task == SYNTHETIC else _tokenizer(cfg)
  check_model_fits(cfg, config, synthetic.VOCAB_SIZE if tokenizer is None else len(tokenizer))
  train_arrays, eval_arrays = encode_examples(cfg, examples, tokenizer)
  n_train = len(train_arrays["labels"])
  if n_train < cfg.batch_size:
    raise ValueError(f"train split has {n_train} examples, fewer than --batch_size={cfg.batch_size}")
  policy = cfg.make_policy()
  num_labels = _num_labels(cfg.task)
  is_regression = num_labels == 1
  if cfg.teacher:
    model, _ = build_model(cfg, policy, load_weights=False)
    teacher_cfg = cfg.teacher_view()
    teacher_model, _ = build_model(teacher_cfg, teacher_cfg.make_policy(), load_weights=False)
    teacher_params, _ = load_teacher(cfg, teacher_model)
    params = jax.tree.map(jnp.array, teacher_params)  # the student starts from the teacher (a separate copy)
    if cfg.layer_map is not None:
      params = distill.student_params_from_teacher(params, cfg.layer_map)
    if sparse_specs:
      params = nm_sparsity.init_state(params, sparse_specs)
    if cfg.augment:
      train_arrays = _with_augmentation(cfg, examples[0], tokenizer, train_arrays, teacher_params)
      n_train = len(train_arrays["labels"])
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
      warmup_steps=cfg.warmup_steps_for(num_train_steps), eval_every_steps=cfg.eval_every_steps,
      seed=cfg.seed, compute_dtype=cfg.compute_dtype, log_every_steps=cfg.log_every_steps,
      checkpoint_every_steps=cfg.checkpoint_every_steps)
  train_config.validate()
  if cfg.eval_batch_size % jax.device_count():
    raise ValueError(f"--eval_batch_size={cfg.eval_batch_size} must be a multiple of {jax.device_count()} devices")
  task = GlueTask(cfg.task, model, teacher_model, cfg.kd_losses, is_regression)
  task.sparse_specs, task.layer_map = sparse_specs, cfg.layer_map
  metadata = dict(identity(cfg, config), model=cfg.model, bits=cfg.bits, quant_mode=cfg.quant_mode,
                  num_labels=num_labels, teacher=cfg.teacher,
                  teacher_metric=None if teacher_meta is None else teacher_meta.get("metric"),
                  num_train_examples=n_train, steps_per_epoch=steps_per_epoch, augment=cfg.augment,
                  qat=cfg.qat)
  if sparse_specs:
    metadata["sparsity"] = dict(nm_sparsity.mask_stats(params, sparse_specs), pattern=cfg.sparsity,
                                prune=cfg.prune, order=cfg.order)
  if cfg.layer_map is not None:
    metadata["layer_map"] = list(cfg.layer_map)
  return Experiment(cfg, task, params, teacher_params, ArrayBatchSource(train_arrays, cfg.batch_size, cfg.seed),
                    eval_arrays, train_config, policy.to_json(), metadata)


TASK_KIND = "glue"


def run_config_section(cfg: GlueRunConfig) -> dict:
  """The part of config.json this task owns: a run directory is locked to it (train.rundir)."""
  return cfg.run_section(TASK_KIND)


def run(exp: Experiment, workdir: str, argv: list[str] | None = None, git_commit: str | None = None,
        **kwargs) -> dict:
  run_info = {"config": run_config_section(exp.cfg), "metadata": exp.metadata, "policy_json": exp.policy_json,
              "runtime_keys": exp.cfg.RUNTIME_KEYS}
  if argv is not None:
    run_info["argv"] = argv
  if git_commit:
    run_info["git_commit"] = git_commit
  print(f"{exp.cfg.task} {exp.cfg.bits} ({exp.cfg.quant_mode}) model={exp.cfg.model}: "
        f"{exp.train_source.num_examples} train / {len(exp.eval_arrays['labels'])} eval examples, "
        f"{exp.train_config.num_train_steps} steps of {exp.cfg.batch_size} "
        f"({exp.train_config.num_train_steps / exp.train_source.steps_per_epoch:.2f} epochs), "
        f"lr {exp.cfg.learning_rate}, loss {'+'.join(exp.cfg.kd_losses)}, {jax.device_count()} device(s)",
        flush=True)
  result = train.train_and_evaluate(exp.task, exp.params, exp.teacher_params, exp.train_source, exp.eval_batches,
                                    exp.train_config, workdir, run_info, **kwargs)
  if not result.get("interrupted"):
    result["epochs"] = exp.train_config.num_train_steps / exp.train_source.steps_per_epoch
    result.update(task=exp.cfg.task, bits=exp.cfg.bits, quant_mode=exp.cfg.quant_mode, model=exp.cfg.model)
    rundir.write_json_atomic(os.path.join(workdir, rundir.SUMMARY), result)
  return result


def load_run_config(workdir: str) -> GlueRunConfig:
  return GlueRunConfig.from_dict(rundir.RunDir(workdir).read_run_section(TASK_KIND, "experiments.glue"))


def evaluate_run(workdir: str, *, data_dir: str | None = None, split: str | None = None
                 ) -> tuple[dict[str, float], dict]:
  """Reloads checkpoints/best of a run and evaluates it: on the run's own validation split, or on `split` of
  `data_dir` (any labelled file of the task, e.g. a held-out test TSV). Returns (metrics now, checkpoint metadata)."""
  cfg = load_run_config(workdir)
  if data_dir is not None:
    cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(data_dir))
  ckpt = best_checkpoint_dir(workdir)
  model, _ = build_model(cfg, cfg.make_policy(), load_weights=False)
  restored, meta = checkpoint.restore(ckpt, {"params": abstract_params(model, cfg)})
  eval_arrays = load_eval_arrays(cfg, split or "validation")
  task = GlueTask(cfg.task, model, None, ("gt",), _num_labels(cfg.task) == 1)
  batches = lambda: eval_batches(eval_arrays, cfg.eval_batch_size)
  return train.evaluate_once(task, restored["params"], batches, cfg.compute_dtype), meta


def load_eval_arrays(cfg: GlueRunConfig, split: str = "validation") -> dict[str, np.ndarray]:
  if cfg.task == SYNTHETIC:
    return synthetic.make_split(split, None, cfg.max_seq_length)
  eval_ex = glue_data.load_split(cfg.task, split, cfg.data_dir)
  return glue_data.encode(eval_ex, _tokenizer(cfg), cfg.max_seq_length)


def _tokenizer(cfg: GlueRunConfig):
  from int4jax.tokenizers import load_tokenizer  # pylint: disable=g-import-not-at-top
  return load_tokenizer(tokenizer_name(cfg))
