"""Model families by name: presets, configs from config.json, and `load_pretrained`.

Each family module (bert.py, gpt2.py, bart.py) calls `register(Family(...))` at import time; this module
imports them lazily, so it never depends on a family at import and a family may import it freely.

    config = get_config("bert_base", policy=make_policy("w4a4"), num_labels=3)
    config = get_config("/path/to/hf_checkpoint_dir", policy=...)      # from config.json
    model, params = load_pretrained("/path/to/hf_checkpoint_dir", policy=..., task="sequence_classification")
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax

from int4jax.models import hf

# Modules that define families, imported on first use. A family file that is not written yet is skipped.
FAMILY_MODULES = ("int4jax.models.bert", "int4jax.models.gpt2", "int4jax.models.bart")


@dataclasses.dataclass(frozen=True)
class Family:
  """What the registry needs to know about one model family.

  name: the config.json "model_type" it handles ("bert", "gpt2", "bart").
  presets: preset name -> config factory: zero-argument, or taking field overrides as **kwargs
    (`bert_tiny(num_labels=1)`) when a preset derives dependent fields (BERT: num_labels 1 -> regression).
  config_from_hf: (config.json dict, **overrides) -> the family's frozen config dataclass.
  build: (config, task) -> an (uninitialised) Linen module.
  load_params: (config, task, config.json dict, tensors, rng, source) -> params (strict mapping, see hf.assign_params).
  tasks: task names accepted by `build`; default_task(config.json dict) picks one from "architectures".
  """
  name: str
  presets: Mapping[str, Callable[..., Any]]
  config_from_hf: Callable[..., Any]
  build: Callable[[Any, str], Any]
  load_params: Callable[..., Any]
  tasks: tuple[str, ...]
  default_task: Callable[[Mapping[str, Any]], str]


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
  FAMILIES[family.name] = family
  return family


def _ensure_registered() -> None:
  for module in FAMILY_MODULES:
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      if e.name != module:  # a real missing dependency inside the family, not the family itself
        raise


def family(model_type: str) -> Family:
  _ensure_registered()
  if model_type not in FAMILIES:
    raise ValueError(f"model_type {model_type!r} is not supported; known: {sorted(FAMILIES)}")
  return FAMILIES[model_type]


def presets() -> dict[str, str]:
  """preset name -> family name."""
  _ensure_registered()
  return {p: f.name for f in FAMILIES.values() for p in f.presets}


def get_config(preset_or_path: str | os.PathLike, **overrides) -> Any:
  """A family config from a preset name or a HF checkpoint directory / cached hub name, with field overrides."""
  _ensure_registered()
  for fam in FAMILIES.values():
    if str(preset_or_path) in fam.presets:
      make = fam.presets[str(preset_or_path)]
      config = make()
      _check_fields(config, overrides, str(preset_or_path))
      takes_overrides = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(make).parameters.values())
      return make(**overrides) if takes_overrides else dataclasses.replace(config, **overrides)
  try:
    ckpt_dir = hf.resolve_checkpoint_dir(preset_or_path)
  except FileNotFoundError as e:
    raise ValueError(f"{str(preset_or_path)!r} is neither a preset ({sorted(presets())}) nor a checkpoint: {e}") from e
  hf_config = hf.read_config(ckpt_dir)
  return family(_model_type(hf_config, ckpt_dir)).config_from_hf(hf_config, **overrides)


def load_pretrained(path_or_name: str | os.PathLike, *, policy=None, task: str | None = None,
                    rng: jax.Array | None = None, cache_dir: str | os.PathLike | None = None,
                    **overrides) -> tuple[Any, dict]:
  """(model, params) from a HF-format checkpoint directory or a hub name in the local HF cache.

  Args:
    path_or_name: directory with config.json + model.safetensors (or pytorch_model.bin), or a hub id.
    policy: QuantPolicy for every QDense (None = float).
    task: family task, e.g. "base" or "sequence_classification" for BERT; default from config.json "architectures".
    rng: init key for heads the checkpoint lacks (default PRNGKey(0)); they are logged by name.
    cache_dir: HF hub cache for hub names (default: huggingface_hub's).
    **overrides: config fields to replace (num_labels, dtype, dropout rates, ...).
  """
  ckpt_dir, hf_config, tensors = hf.load_checkpoint(path_or_name, cache_dir=cache_dir)
  fam = family(_model_type(hf_config, ckpt_dir))
  task = task or fam.default_task(hf_config)
  if task not in fam.tasks:
    raise ValueError(f"task {task!r} is not one of {fam.name}'s tasks {fam.tasks}")
  if policy is not None:
    overrides["policy"] = policy
  config = fam.config_from_hf(hf_config, **overrides)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  params = fam.load_params(config, task, hf_config, tensors, rng, str(ckpt_dir))
  return fam.build(config, task), params


def _model_type(hf_config: Mapping[str, Any], ckpt_dir) -> str:
  if "model_type" not in hf_config:
    raise ValueError(f"{os.path.join(str(ckpt_dir), hf.CONFIG_NAME)!r} has no 'model_type'")
  return hf_config["model_type"]


def _check_fields(config, overrides: Mapping[str, Any], what: str) -> None:
  names = {f.name for f in dataclasses.fields(config)}
  unknown = sorted(set(overrides) - names)
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown} for {what} ({type(config).__name__})")


def replace_config(config, overrides: Mapping[str, Any], what: str):
  """dataclasses.replace with unknown field names reported as ValueError (families use it in config_from_hf)."""
  _check_fields(config, overrides, what)
  return dataclasses.replace(config, **overrides)
