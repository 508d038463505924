"""A trained model (teacher, or QAT student with its float weights) -> a Hugging Face checkpoint directory.

    export_model("exported/sst2_w4a4", model.config, "sequence_classification", params, policy=policy,
                 tokenizer="path/to/tokenizer")
    tasks.runs.export_hf("runs/sst2_w4a4", "exported/sst2_w4a4")   # a run directory: python -m experiments.export
    model = transformers.AutoModelForSequenceClassification.from_pretrained("exported/sst2_w4a4")
    model, params, policy = load_exported("exported/sst2_w4a4")   # back into int4jax, re-quantized by the policy

The directory holds what transformers needs (config.json with the right `*For*` architecture, model.safetensors,
the tokenizer files of the run) plus two int4jax files:
  int4jax_policy.json   the run's QuantPolicy (QuantPolicy.from_json reads it): a QAT student's float weights are
                        only meaningful re-quantized by it, so it travels with them;
  int4jax_export.json   provenance: source run, step, metric, bits, family and task.
The weights are written through the family's own HF tensor map inverted (`registry.save_pretrained`), so every
family that `load_pretrained` reads and that defines `config_to_hf` exports. This module knows no task: reading a
run directory (which task, which checkpoint, which tokenizer) is `int4jax.tasks.runs`.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil

from int4jax.models import registry
from int4jax.quant.policy import QuantPolicy, make_policy

POLICY_NAME = "int4jax_policy.json"
PROVENANCE_NAME = "int4jax_export.json"


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> pathlib.Path:
  """ValueError if `out_dir` is a file, or a non-empty directory without `overwrite`. Writes nothing."""
  out = pathlib.Path(out_dir)
  if out.exists() and not out.is_dir():
    raise ValueError(f"--out={str(out)!r} is a file, not a directory")
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise ValueError(f"--out={str(out)!r} is not empty; pass --overwrite to replace its contents")
  return out


def prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool, log=print) -> pathlib.Path:
  """Creates `out_dir` after check_out_dir; with `overwrite` it first says what it removes, and removes it."""
  out = check_out_dir(out_dir, overwrite)
  if out.is_dir() and any(out.iterdir()):
    log(f"--overwrite: removing {', '.join(sorted(p.name for p in out.iterdir()))} from {out}")
    shutil.rmtree(out)
  out.mkdir(parents=True, exist_ok=True)
  return out


def export_model(out_dir: str | os.PathLike, config, task: str, params, *, policy: QuantPolicy | None = None,
                 tokenizer: str | None = None, provenance: dict | None = None, overwrite: bool = False
                 ) -> pathlib.Path:
  """Any family model -> HF directory: weights + config, tokenizer files, policy JSON and provenance."""
  registry.family_of(config)   # fail on an unknown model before touching out_dir
  out = prepare_out_dir(out_dir, overwrite)
  registry.save_pretrained(out, config, task, params)
  if tokenizer is not None:
    from int4jax.tokenizers import load_tokenizer  # pylint: disable=g-import-not-at-top
    load_tokenizer(tokenizer).save_pretrained(str(out))
  (out / POLICY_NAME).write_text((policy or make_policy("fp32")).to_json())
  info = dict(provenance or {}, family=registry.family_of(config).name, task=task, tokenizer=tokenizer)
  (out / PROVENANCE_NAME).write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
  return out


def load_exported(path: str | os.PathLike, *, policy: QuantPolicy | None | str = "stored", **overrides):
  """(model, params, policy) from an exported directory; policy "stored" re-quantizes with int4jax_policy.json."""
  if policy == "stored":
    policy_file = pathlib.Path(path) / POLICY_NAME
    policy = QuantPolicy.from_json(policy_file.read_text()) if policy_file.is_file() else None
  model, params = registry.load_pretrained(path, policy=policy, **overrides)
  return model, params, policy
