"""A trained run (teacher, or QAT student with its float weights) -> a Hugging Face checkpoint directory.

    export_run("runs/sst2_w4a4", "exported/sst2_w4a4")      # python -m experiments.export --format=hf ...
    model = transformers.AutoModelForSequenceClassification.from_pretrained("exported/sst2_w4a4")
    model, params, policy = load_exported("exported/sst2_w4a4")   # back into int4jax, re-quantized by the policy

The directory holds what transformers needs (config.json with the right `*For*` architecture, model.safetensors,
the tokenizer files of the run) plus two int4jax files:
  int4jax_policy.json   the run's QuantPolicy (QuantPolicy.from_json reads it): a QAT student's float weights are
                        only meaningful re-quantized by it, so it travels with them;
  int4jax_export.json   provenance: source run, step, metric, bits, family and task.
The weights are the run's best/ checkpoint, written through the family's own HF tensor map inverted
(`registry.save_pretrained`), so every family that `load_pretrained` reads and that defines `config_to_hf` exports.

Which runs: experiments.glue (BERT, sequence classification) and experiments.lm (GPT-2 LM head) run directories;
`restore_trained_run` is the one place that knows them, until train/rundir.restore_run covers every task. A BART
model exports through `registry.save_pretrained` directly (no summarization run directory exists yet).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from typing import Any

from int4jax.models import registry
from int4jax.quant.policy import QuantPolicy, make_policy

POLICY_NAME = "int4jax_policy.json"
PROVENANCE_NAME = "int4jax_export.json"


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """What export needs from a run directory."""
  config: Any                 # the family config (BertConfig, GPT2Config, ...), policy included
  task: str                   # family task: "sequence_classification", "lm", ...
  params: Any
  policy: QuantPolicy | None
  tokenizer: str | None       # a load_tokenizer() name or directory; None: the run had none (synthetic data)
  metadata: dict


def restore_trained_run(workdir: str | os.PathLike) -> TrainedRun:
  """The best/ checkpoint of an experiments.glue or experiments.lm run, with its config, policy and tokenizer."""
  workdir = str(workdir)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"run directory {workdir!r} does not exist")
  from int4jax.tasks import glue as glue_task, lm as lm_task  # pylint: disable=g-import-not-at-top
  from int4jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  if os.path.isfile(os.path.join(workdir, "config.json")) and "glue" in _read_json(os.path.join(workdir,
                                                                                                "config.json")):
    cfg = glue_task.load_run_config(workdir)
    policy = glue_task.make_policy_for(cfg)
    model, _ = glue_task.build_model(cfg, policy, load_weights=False)
    restored, meta = checkpoint.restore(glue_task.best_checkpoint_dir(workdir),
                                        {"params": glue_task.abstract_params(model, cfg)})
    tokenizer = None if cfg.task == glue_task.SYNTHETIC else (
        cfg.tokenizer or (cfg.model if os.path.isdir(cfg.model) else "bert-base-uncased"))
    return TrainedRun(model.config, "sequence_classification", restored["params"], policy, tokenizer, meta)
  try:
    model, params, meta = lm_task.restore_run(workdir)
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f"{workdir!r} is neither an experiments.glue nor an experiments.lm run directory: {e}") from e
  return TrainedRun(model.config, "lm", params, model.config.policy, meta.get("tokenizer"), meta)


def prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> pathlib.Path:
  """Creates `out_dir`; a non-empty one is refused unless `overwrite` (then its contents are removed)."""
  out = pathlib.Path(out_dir)
  if out.exists() and not out.is_dir():
    raise ValueError(f"--out={str(out)!r} is a file, not a directory")
  if out.is_dir() and any(out.iterdir()):
    if not overwrite:
      raise ValueError(f"--out={str(out)!r} is not empty; pass --overwrite to replace its contents")
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


def export_run(workdir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
  """A run directory's best checkpoint -> HF directory (see the module docstring)."""
  if pathlib.Path(out_dir).resolve() == pathlib.Path(workdir).resolve():
    raise ValueError("--out must differ from --workdir")
  run = restore_trained_run(workdir)
  meta = run.metadata
  provenance = dict(source_run=os.path.abspath(str(workdir)), step=meta.get("step"), bits=meta.get("bits"),
                    quant_mode=meta.get("quant_mode"), metric_name=meta.get("metric_name"), metric=meta.get("metric"))
  return export_model(out_dir, run.config, run.task, run.params, policy=run.policy, tokenizer=run.tokenizer,
                      provenance=provenance, overwrite=overwrite)


def load_exported(path: str | os.PathLike, *, policy: QuantPolicy | None | str = "stored", **overrides):
  """(model, params, policy) from an exported directory; policy "stored" re-quantizes with int4jax_policy.json."""
  if policy == "stored":
    policy_file = pathlib.Path(path) / POLICY_NAME
    policy = QuantPolicy.from_json(policy_file.read_text()) if policy_file.is_file() else None
  model, params = registry.load_pretrained(path, policy=policy, **overrides)
  return model, params, policy


def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)
