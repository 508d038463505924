"""Model families by name: presets, configs from config.json, and `load_pretrained`.

An explicit table: each family module (bert.py, gpt2.py, bart.py, llama.py) defines `FAMILY`, a `family.Family`, and this
module lists them. Imports run one way (registry -> families -> family.py, hf.py), so there is no cycle.

    config = get_config("bert_base", policy=make_policy("w4a4"), num_labels=3)
    config = get_config("/path/to/hf_checkpoint_dir", policy=...)      # from config.json
    model, params = load_pretrained("/path/to/hf_checkpoint_dir", policy=..., task="sequence_classification")
    save_pretrained("/path/to/out_dir", model.config, "sequence_classification", params)   # the way back
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from typing import Any

import jax

from int4jax.models import bart, bert, gguf, gpt2, hf, llama
from int4jax.models.family import Family, check_fields

FAMILIES: dict[str, Family] = {f.name: f for f in (bert.FAMILY, gpt2.FAMILY, bart.FAMILY, llama.FAMILY)}


def family(model_type: str) -> Family:
  if model_type not in FAMILIES:
    raise ValueError(f"model_type {model_type!r} is not supported; known: {sorted(FAMILIES)}")
  return FAMILIES[model_type]


def presets() -> dict[str, str]:
  """preset name -> family name."""
  return {p: f.name for f in FAMILIES.values() for p in f.presets}


def get_config(preset_or_path: str | os.PathLike, **overrides) -> Any:
  """A family config from a preset name or a HF checkpoint directory / cached hub name, with field overrides."""
  for fam in FAMILIES.values():
    if str(preset_or_path) in fam.presets:
      make = fam.presets[str(preset_or_path)]
      config = make()
      check_fields(config, overrides, str(preset_or_path))
      takes_overrides = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(make).parameters.values())
      return make(**overrides) if takes_overrides else dataclasses.replace(config, **overrides)
  if gguf.is_gguf(preset_or_path):
    return family("llama").config_from_hf(gguf.read_config(preset_or_path), **overrides)
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
    path_or_name: directory with config.json + model.safetensors (or pytorch_model.bin, or a qblocks index), a
      hub id, or a Llama .gguf file.
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


def family_of(config) -> Family:
  """The family whose presets build configs of type(config) (BertConfig -> bert, ...)."""
  for fam in FAMILIES.values():
    if any(isinstance(config, type(make())) for make in fam.presets.values()):
      return fam
  raise ValueError(f"no registered family builds a {type(config).__name__}")


def save_pretrained(out_dir: str | os.PathLike, config, task: str, params) -> Any:
  """Writes `params` of `build(config, task)` as a transformers checkpoint (config.json + model.safetensors).

  `out_dir` must exist. The tensor names come from the family's read table inverted (hf.export_tensors), so
  what `load_pretrained` reads, this writes. ValueError if the family has no export yet (config_to_hf).
  """
  fam = family_of(config)
  if task not in fam.tasks:
    raise ValueError(f"task {task!r} is not one of {fam.name}'s tasks {fam.tasks}")
  if fam.config_to_hf is None or fam.export_mapping is None:
    raise ValueError(f"family {fam.name!r} cannot be exported to Hugging Face yet: its FAMILY needs config_to_hf "
                     "and export_mapping (see models/family.py)")
  hf_config = fam.config_to_hf(config, task)
  tensors = hf.export_tensors(params, fam.export_mapping(config, task), source=f"{fam.name} {task}")
  return hf.write_checkpoint(out_dir, hf_config, tensors)


def _model_type(hf_config: Mapping[str, Any], ckpt_dir) -> str:
  if "model_type" not in hf_config:
    raise ValueError(f"{os.path.join(str(ckpt_dir), hf.CONFIG_NAME)!r} has no 'model_type'")
  return hf_config["model_type"]
