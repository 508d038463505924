"""Evaluate a run through the integer engine (experiments.eval --engine=int): GLUE runs (BERT) and LM runs (GPT-2,
Llama; perplexity).

The run's best checkpoint is packed in memory (or a packed checkpoint written by experiments.export from it is
loaded) and its validation split is evaluated with the same batching and metrics as fake-quant evaluation, so the
two numbers compare directly. Packed in memory, the float tensors keep the engine's compute dtype (float32: the
run's own float32 weights, so a float32 engine computes what fake-quant evaluation computes up to float rounding);
a packed checkpoint holds them in bf16. Summarization runs (BART) are refused: experiments.export packs them, but
their evaluation (held-out loss, beam search + ROUGE) lives inside tasks.summarization's training pipeline, which has
no standalone evaluate_run to mirror yet.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

from int4jax import data
from int4jax.inference import engine
from int4jax.tasks import runs


def run_engine(workdir: str, packed: str | None = None, *, dtype=jnp.bfloat16, int_mode=None) -> engine.Engine:
  """The Engine of a run: from `packed` (checked to come from this run) or packed from the run in memory."""
  if packed is not None:
    eng = engine.load(packed, int_mode=int_mode, dtype=dtype)
    src = eng.meta.get("source", "")
    if src and os.path.realpath(src) != os.path.realpath(workdir):
      raise ValueError(f"--packed={packed!r} was exported from {src!r}, not from --workdir={workdir!r}")
    return eng
  params, config, task, _, _, _ = runs.packed_source(workdir)
  return engine.from_float(params, config, task, int_mode=int_mode, dtype=dtype, float_dtype=dtype, source=workdir)


def time_batch(step, params, batch: dict, *, runs: int, warmup: int = 3) -> dict:
  """Latency of one evaluation batch through `step` (already compiled by the evaluation): the wall-clock median of
  `runs` synced calls, and on a GPU the CUPTI device time split into GEMM / attention / quantize / other, as
  experiments.latency measures its cells (int4jax.inference.latency)."""
  from int4jax.inference import latency  # pylint: disable=g-import-not-at-top  (torch-free, but heavy)
  batch = jax.device_put(batch)
  call = lambda: step(params, batch)
  timing = latency.time_calls(call, jax.block_until_ready, warmup=warmup, runs=runs)
  timing.update(latency.device_profile(call, jax.block_until_ready, runs=runs) or {})
  timing["batch_shape"] = {k: list(v.shape) for k, v in batch.items()}
  return timing


def evaluate_run(workdir: str, packed: str | None = None, *, dtype=jnp.bfloat16, int_mode=None,
                 data_dir: str | None = None, split: str | None = None,
                 time_runs: int = 0) -> tuple[dict[str, float], dict]:
  """(metrics through the integer engine, best checkpoint metadata) of a GLUE or LM run, as its task's evaluate_run
  computes them in fake-quant mode. time_runs > 0 also times the first evaluation batch (`time_batch`), returned
  as meta["timing"]."""
  from int4jax.tasks import glue, lm  # pylint: disable=g-import-not-at-top  (task modules import each other lazily)
  from int4jax.train import checkpoint, loop as train  # pylint: disable=g-import-not-at-top
  dtype = jnp.dtype(dtype)
  kind = runs.run_kind(workdir)
  if kind == glue.TASK_KIND:
    cfg = glue.load_run_config(workdir)
    if data_dir is not None:
      cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(data_dir))
    meta = checkpoint.read_metadata(glue.best_checkpoint_dir(workdir))
    eng = run_engine(workdir, packed, dtype=dtype, int_mode=int_mode)
    task = glue.GlueTask(cfg.task, eng.model, None, ("gt",), glue._num_labels(cfg.task) == 1)  # pylint: disable=protected-access
    arrays = glue.load_eval_arrays(cfg, split or "validation")
    batches = lambda: data.eval_batches(arrays, cfg.eval_batch_size)
  elif kind == lm.TASK_KIND:
    batches = lm.eval_batches(lm.load_run_config(workdir), data_dir, split)  # bad --split refused before packing
    meta = lm.read_run_metadata(workdir)
    eng = run_engine(workdir, packed, dtype=dtype, int_mode=int_mode)
    task = lm.LMTask(eng.model, None, ("gt",))
  else:
    raise ValueError(f"{workdir!r} holds a run of kind {kind!r}; --engine=int evaluates experiments.glue and "
                     "experiments.lm runs")
  step = jax.jit(task.eval_batch)
  metrics = train.evaluate(eng.params, batches, step, train.make_mesh(), task)
  if time_runs > 0:
    meta = dict(meta, timing=time_batch(step, eng.params, next(iter(batches())), runs=time_runs))
  return metrics, meta
