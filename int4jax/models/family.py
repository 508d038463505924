"""What the registry knows about one model family, and the config-override check every family uses.

Kept apart from `registry.py` so that a family module imports this file and the registry imports the families:
imports run one way (registry -> family modules -> family.py), with no cycle.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


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
  config_to_hf: (config, task) -> a transformers config.json dict (with "architectures"), for export; None: the
    family cannot be exported yet. A new family (Llama) adds it and `export_mapping` to become exportable.
  export_mapping: (config, task) -> {flax path: hf.Ref}, the same table `load_params` reads with, names[0] being
    the name transformers' `*For*` class expects (hf.export_tensors inverts it).
  int_fusions: config -> {fused module path: source module paths}, the GEMMs that integer mode with
    `IntMode.fuse_qkv` runs as one (projections of one input, their weights concatenated along N in this order;
    `fusion` builds entries); None: the family has no integer mode (int4jax.inference refuses it).
  """
  name: str
  presets: Mapping[str, Callable[..., Any]]
  config_from_hf: Callable[..., Any]
  build: Callable[[Any, str], Any]
  load_params: Callable[..., Any]
  tasks: tuple[str, ...]
  default_task: Callable[[Mapping[str, Any]], str]
  config_to_hf: Callable[[Any, str], dict[str, Any]] | None = None
  export_mapping: Callable[[Any, str], Mapping[str, Any]] | None = None
  int_fusions: Callable[[Any], Mapping[str, tuple[str, ...]]] | None = None


def fusion(prefix: str, fused: str, parts: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
  """One `Family.int_fusions` entry: {prefix + fused: (prefix + part, ...)}."""
  return {prefix + fused: tuple(prefix + p for p in parts)}


def check_fields(config, overrides: Mapping[str, Any], what: str) -> None:
  names = {f.name for f in dataclasses.fields(config)}
  unknown = sorted(set(overrides) - names)
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown} for {what} ({type(config).__name__})")


def replace_config(config, overrides: Mapping[str, Any], what: str):
  """dataclasses.replace with unknown field names reported as ValueError (families use it in config_from_hf)."""
  check_fields(config, overrides, what)
  return dataclasses.replace(config, **overrides)


_NOT_ARCHITECTURE = ("policy", "dtype")


def architecture(config) -> dict[str, Any]:
  """The fields of a family config that define the network's shape and function: everything except the
  quantization policy, the compute dtype and dropout rates. Teachers and students are compared on it."""
  out = {}
  for f in dataclasses.fields(config):
    if f.name in _NOT_ARCHITECTURE or "dropout" in f.name or "pdrop" in f.name:
      continue
    value = getattr(config, f.name)
    out[f.name] = list(value) if isinstance(value, tuple) else value
  return out
