"""What every task shares: the run-config fields, their one validation, paths, policy, teacher and vocabulary checks.

A task's config (GlueRunConfig, LMRunConfig, ...) subclasses `RunConfig` and adds only what is its own (`task`,
`dataset`, `block_size`, ...). Data flows one way: flags -> a task's `resolve_config` (defaults, then overrides)
-> `validate()` here, once, before any model or data is loaded -> data -> model -> train.loop -> train.rundir.

The shared names (every launcher spells them the same; experiments/flags.py defines them once):
  model, bits, quant_mode, weight_clip / act_clip (flag --clip sets both), weight_group_size, gemms, teacher,
  kd_losses, learning_rate, num_train_steps | num_epochs, warmup_ratio | warmup_steps, batch_size,
  eval_batch_size, eval_every_steps, log_every_steps, checkpoint_every_steps, seed, compute_dtype, dropout,
  tokenizer, data_dir.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from int4jax.quant import policy as policy_lib
from int4jax.train import distill
from int4jax.train import rundir

QUANT_MODES = ("sym", "asym")
COMPUTE_DTYPES = ("float32", "bfloat16")
FLOAT_BITS = "fp32"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  """The fields every task shares. Subclasses add task fields; `validate()` checks everything once."""
  model: str
  bits: str = FLOAT_BITS
  quant_mode: str = "sym"
  weight_clip: tuple[float, float] | None = None
  act_clip: tuple[float, float] | None = None
  weight_group_size: int | None = None
  gemms: tuple[str, ...] = policy_lib.GEMM_TYPES
  teacher: str | None = None
  kd_losses: tuple[str, ...] | None = None     # None: the task's default for (bits, teacher)
  tokenizer: str | None = None
  data_dir: str | None = None
  learning_rate: float = 1e-4
  num_train_steps: int | None = None            # overrides num_epochs
  num_epochs: float = 3.0
  warmup_ratio: float | None = 0.1
  warmup_steps: int | None = None               # overrides warmup_ratio
  batch_size: int = 32
  eval_batch_size: int = 128
  eval_every_steps: int = 1000
  log_every_steps: int = 50
  checkpoint_every_steps: int | None = None
  seed: int = 42
  compute_dtype: str = "float32"
  dropout: float | None = None

  # Keys that may differ between the runs that resume one run directory (stop conditions, caches).
  RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ()
  # Fields holding paths: stored absolute so a run directory works from any working directory.
  PATH_FIELDS: ClassVar[tuple[str, ...]] = ("model", "teacher", "tokenizer", "data_dir")

  @property
  def quantized(self) -> bool:
    return self.bits != FLOAT_BITS

  @property
  def symmetric(self) -> bool:
    return self.quant_mode == "sym"

  # ------------------------------------------------------------------------------------------- validation

  def validate(self) -> "RunConfig":
    """All checks that need no model or data; errors name the flag. Returns self for chaining."""
    if self.bits not in policy_lib.PRESETS:
      raise ValueError(f"--bits={self.bits!r} is not one of {list(policy_lib.PRESETS)}")
    if self.quant_mode not in QUANT_MODES:
      raise ValueError(f"--quant_mode={self.quant_mode!r} must be one of {QUANT_MODES}")
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(f"--compute_dtype={self.compute_dtype!r} must be one of {COMPUTE_DTYPES}")
    for name in ("weight_clip", "act_clip"):
      clip = getattr(self, name)
      if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
        raise ValueError(f"--{name}={clip} must be lo,hi with lo < hi")
    unknown = sorted(set(self.gemms) - set(policy_lib.GEMM_TYPES))
    if unknown or not self.gemms:
      raise ValueError(f"--gemms={','.join(self.gemms)}: unknown {unknown}; choose from {policy_lib.GEMM_TYPES}")
    for name in ("batch_size", "eval_batch_size", "eval_every_steps", "log_every_steps"):
      if getattr(self, name) <= 0:
        raise ValueError(f"--{name}={getattr(self, name)} must be positive")
    for name in ("num_train_steps", "checkpoint_every_steps", "weight_group_size"):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f"--{name}={value} must be positive")
    if self.num_train_steps is None and not self.num_epochs > 0:
      raise ValueError(f"--num_epochs={self.num_epochs} must be positive")
    if not self.learning_rate > 0:
      raise ValueError(f"--learning_rate={self.learning_rate} must be positive")
    if self.warmup_steps is not None and self.warmup_steps < 0:
      raise ValueError(f"--warmup_steps={self.warmup_steps} must be >= 0")
    if self.warmup_steps is None and not (self.warmup_ratio is not None and 0 <= self.warmup_ratio < 1):
      raise ValueError(f"--warmup_ratio={self.warmup_ratio} must be in [0, 1)")
    if self.dropout is not None and not 0 <= self.dropout < 1:
      raise ValueError(f"--dropout={self.dropout} must be in [0, 1)")
    if self.kd_losses is not None:
      distill.validate_loss_terms(self.kd_losses, has_teacher=bool(self.teacher))
    self.make_policy()  # bits x quant_mode x weight_group_size (format presets refuse asym and groups)
    return self

  def warmup_steps_for(self, num_train_steps: int) -> int:
    if self.warmup_steps is not None:
      return min(self.warmup_steps, num_train_steps)
    return int(self.warmup_ratio * num_train_steps)

  # ------------------------------------------------------------------------------------------- derived pieces

  def make_policy(self) -> policy_lib.QuantPolicy:
    """The QuantPolicy of this run (fp32: no quantizer anywhere)."""
    if not self.quantized:
      return policy_lib.make_policy(FLOAT_BITS)
    return policy_lib.make_policy(self.bits, symmetric=self.symmetric, gemms=self.gemms,
                                  weight_group_size=self.weight_group_size, weight_clip=self.weight_clip,
                                  act_clip=self.act_clip)

  def with_absolute_paths(self) -> "RunConfig":
    """Paths that exist on disk become absolute (preset and hub names stay as they are)."""
    updates = {}
    for name in self.PATH_FIELDS:
      value = getattr(self, name, None)
      if isinstance(value, str) and value and os.path.exists(value):
        updates[name] = os.path.abspath(value)
    return dataclasses.replace(self, **updates)

  # ------------------------------------------------------------------------------------------- JSON

  def to_dict(self) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

  def locked_dict(self) -> dict[str, Any]:
    """to_dict() without the runtime keys: what a run directory is locked to."""
    return {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_KEYS}

  def run_section(self, kind: str) -> dict[str, Any]:
    """The part of config.json a task owns, {kind, run}: train.rundir locks a run directory to it."""
    return {"kind": kind, "run": self.locked_dict()}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    names = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for k, v in d.items():
      if k in names:
        values[k] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def check_teacher_matches(student: Mapping[str, Any], teacher: Mapping[str, Any], teacher_path: str) -> None:
  """Refuses a teacher whose run differs from the student's in task, architecture, tokenizer or vocabulary.

  `student` and `teacher` hold the same keys (`task`, `model_config`, `tokenizer`, `vocab_size`); the message names
  both values. Keys the teacher's metadata lacks (older runs) are not compared.
  """
  for key, what in (("task", "task"), ("tokenizer", "tokenizer"), ("vocab_size", "tokenizer vocabulary size")):
    if key in teacher and teacher[key] != student.get(key):
      raise ValueError(f"--teacher={teacher_path!r} was trained with {what} {teacher[key]!r}; this run has "
                       f"{student.get(key)!r}")
  t_cfg, s_cfg = teacher.get("model_config"), student.get("model_config")
  if t_cfg is not None and s_cfg is not None:
    diffs = sorted(k for k in set(t_cfg) | set(s_cfg) if t_cfg.get(k) != s_cfg.get(k))
    if diffs:
      detail = ", ".join(f"{k}: teacher {t_cfg.get(k)!r} vs student {s_cfg.get(k)!r}" for k in diffs)
      raise ValueError(f"--teacher={teacher_path!r} has a different architecture ({detail})")


def check_vocab(tokenizer_name: str, tokenizer_size: int, model_name: str, embedding_rows: int) -> None:
  """The tokenizer's ids must index the model's embedding table; otherwise training reads garbage (NaN)."""
  if tokenizer_size > embedding_rows:
    raise ValueError(f"tokenizer {tokenizer_name!r} has {tokenizer_size} tokens but model {model_name!r} embeds only "
                     f"{embedding_rows}: pass a matching --tokenizer or --model")


def check_length(flag: str, value: int, model_name: str, max_positions: int) -> None:
  if value > max_positions:
    raise ValueError(f"--{flag}={value} is larger than model {model_name!r}'s {max_positions} positions")


def prepare_run(cfg: RunConfig, validate: Callable[[RunConfig], Any], kind: str, *, overwrite: bool = False):
  """Validation and the run-directory check of a task whose config holds its `workdir`, before any data or weights
  are read: every input error is a ValueError / FileNotFoundError here (launchers turn them into one-line usage
  errors). Returns (the config with absolute paths, what `validate` returned: the task's plan)."""
  cfg = cfg.with_absolute_paths()
  plan = validate(cfg)
  rundir.RunDir(cfg.workdir).prepare(cfg.run_section(kind), overwrite=overwrite, runtime_keys=cfg.RUNTIME_KEYS)
  return cfg, plan
