"""Evaluate an experiments.glue run through the integer engine (experiments.eval --engine=int).

The run's best checkpoint is packed in memory (or a packed checkpoint written by experiments.export from it is
loaded) and its validation split is evaluated with the same batching and metrics as fake-quant evaluation, so the
two numbers compare directly.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp

from int4jax.inference import engine, export
from int4jax.tasks import runs
from int4jax.models import hf


def run_engine(workdir: str, packed: str | None = None, *, dtype=jnp.bfloat16, int_mode=None) -> engine.Engine:
  """The Engine of a run: from `packed` (checked to come from this run) or packed from the run in memory."""
  if packed is not None:
    eng = engine.load(packed, int_mode=int_mode, dtype=dtype)
    src = eng.meta.get("source", "")
    if src and os.path.realpath(src) != os.path.realpath(workdir):
      raise ValueError(f"--packed={packed!r} was exported from {src!r}, not from --workdir={workdir!r}")
    return eng
  params, config, task, family, _, policy = runs.packed_source(workdir)
  flat = export.pack_params(params, config, task, family)
  meta = {"family": family, "task": task, "config": export.config_to_dict(config),
          "policy": json.loads(policy.to_json()), "fuse_qkv": True, "source": workdir}
  return engine.from_params(meta, hf.unflatten(flat), int_mode=int_mode, dtype=dtype)


def evaluate_run(workdir: str, packed: str | None = None, *, dtype=jnp.bfloat16, int_mode=None,
                 data_dir: str | None = None, split: str | None = None) -> tuple[dict[str, float], dict]:
  """(metrics through the integer engine, best checkpoint metadata) of a GLUE run, as tasks.glue.evaluate_run."""
  from int4jax.data import eval_batches  # pylint: disable=g-import-not-at-top
  from int4jax.tasks import glue  # pylint: disable=g-import-not-at-top  (task modules import each other lazily)
  from int4jax.train import checkpoint, loop as train  # pylint: disable=g-import-not-at-top
  cfg = glue.load_run_config(workdir)
  if data_dir is not None:
    cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(data_dir))
  meta = checkpoint.read_metadata(glue.best_checkpoint_dir(workdir))
  eng = run_engine(workdir, packed, dtype=dtype, int_mode=int_mode)
  task = glue.GlueTask(cfg.task, eng.model, None, ("gt",), glue._num_labels(cfg.task) == 1)  # pylint: disable=protected-access
  arrays = glue.load_eval_arrays(cfg, split or "validation")
  metrics = train.evaluate(eng.params, lambda: eval_batches(arrays, cfg.eval_batch_size), jax.jit(task.eval_batch),
                           train.make_mesh(), task)
  return metrics, meta
