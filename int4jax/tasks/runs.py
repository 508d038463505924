"""Any task's trained run directory, read back by its kind: what export (HF and packed) needs from a run.

    run = restore_trained_run("runs/sst2_w4a4")     # TrainedRun: family config, task, params, policy, tokenizer
    export_hf("runs/sst2_w4a4", "exported/sst2_w4a4")   # python -m experiments.export --format=hf

The kind comes from the run's config.json (train.rundir); each task module rebuilds its model and policy from the
stored config, so this module only dispatches. It lives in tasks/ because reading a run needs the tasks, and the
library below tasks/ (inference/, models/) must not import them. A new task adds one branch here.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

from int4jax.inference import hf_export
from int4jax.models import registry
from int4jax.quant.policy import QuantPolicy
from int4jax.tasks import glue as glue_task, lm as lm_task, summarization as summarization_task
from int4jax.train import checkpoint, rundir


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """The best/ checkpoint of a run with what is needed to use it outside the run."""
  config: Any                 # the family config (BertConfig, GPT2Config, ...), policy included
  task: str                   # family task: "sequence_classification", "lm", ...
  params: Any
  policy: QuantPolicy | None
  tokenizer: str | None       # a load_tokenizer() name or directory; None: the run had none (synthetic data)
  metadata: dict


def restore_trained_run(workdir: str | os.PathLike) -> TrainedRun:
  """The best/ checkpoint of an experiments.glue, experiments.lm or experiments.summarize run, with its config,
  policy and tokenizer."""
  workdir = str(workdir)
  kind = run_kind(workdir)
  if kind == glue_task.TASK_KIND:
    cfg = glue_task.load_run_config(workdir)
    policy = cfg.make_policy()
    model, _ = glue_task.build_model(cfg, policy, load_weights=False)
    restored, meta = checkpoint.restore(glue_task.best_checkpoint_dir(workdir),
                                        {"params": glue_task.abstract_params(model, cfg)})
    tokenizer = None if cfg.task == glue_task.SYNTHETIC else glue_task.tokenizer_name(cfg)
    return TrainedRun(model.config, "sequence_classification", restored["params"], policy, tokenizer, meta)
  if kind in (lm_task.TASK_KIND, summarization_task.TASK_KIND):
    lm = kind == lm_task.TASK_KIND
    model, params, meta = (lm_task if lm else summarization_task).restore_run(workdir)
    return TrainedRun(model.config, "lm" if lm else "conditional_generation", params, model.config.policy,
                      meta.get("tokenizer"), meta)
  raise ValueError(f"{workdir!r} is not a run directory of experiments.glue, experiments.lm or experiments.summarize "
                   f"(its config.json kind is {kind!r})")


def run_kind(workdir: str) -> str | None:
  """The "kind" of a run directory's config.json (glue, lm; None for runs that record none)."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"run directory {workdir!r} does not exist")
  return (rundir.RunDir(workdir).read_config() or {}).get("kind")


def export_hf(workdir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
  """A run's best checkpoint -> a Hugging Face directory (int4jax.inference.hf_export), with its provenance."""
  if pathlib.Path(out_dir).resolve() == pathlib.Path(workdir).resolve():
    raise ValueError("--out must differ from --workdir")
  hf_export.check_out_dir(out_dir, overwrite)   # refuse before reading the run
  run = restore_trained_run(workdir)
  meta = run.metadata
  provenance = dict(source_run=os.path.abspath(str(workdir)), step=meta.get("step"), bits=meta.get("bits"),
                    quant_mode=meta.get("quant_mode"), metric_name=meta.get("metric_name"), metric=meta.get("metric"))
  return hf_export.export_model(out_dir, run.config, run.task, run.params, policy=run.policy,
                                tokenizer=run.tokenizer, provenance=provenance, overwrite=overwrite)


def packed_source(workdir: str):
  """(params, config, task, family, tokenizer or None, policy) of a GLUE (BERT), LM (GPT-2, Llama) or summarization
  (BART) run's best checkpoint: what inference.export.export packs."""
  from int4jax.tokenizers import load_tokenizer  # pylint: disable=g-import-not-at-top
  run = restore_trained_run(workdir)
  if run.policy is None or run.policy.is_float:
    raise ValueError(f"{workdir!r} is a float run (policy {getattr(run.policy, 'name', None)!r}): nothing to pack; "
                     "export a quantized run (or an HF checkpoint with --bits)")
  tok = None if run.tokenizer is None else load_tokenizer(run.tokenizer)
  return run.params, run.config, run.task, registry.family_of(run.config).name, tok, run.policy
