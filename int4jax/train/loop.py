"""The training loop shared by GLUE and LM: one jitted, donated train step; eval; checkpoints; resume.

    result = train_and_evaluate(task, params, teacher_params, train_source, eval_batches, config, workdir, run_info)

A `TrainTask` supplies pure `loss_fn` / `eval_batch` / `summarize`; this module owns the optimizer (AdamW with
weight decay 0.01 on matrices only, linear warmup then linear decay to 0, global-norm clipping), the data-parallel
placement, evaluation every `eval_every_steps`, the best and latest orbax checkpoints and the run directory:

    workdir/config.json  command.txt (argv + git SHA)  policy.json  metrics.jsonl  summary.json
    workdir/checkpoints/{latest,best}

Determinism and resume. Batch k of the run is `train.batch_at(k)` and the dropout key of step k is
fold_in(rng, k), so a run's trajectory depends only on (config, data, initial params). Starting the same command
again restores latest/ (params, opt_state, step, rng), drops metrics.jsonl rows past that step, and continues: the
final params and metrics equal those of an uninterrupted run.

Data parallelism. All devices of all processes form a 1-D mesh ("data",). Params, optimizer state and the teacher
are replicated; every batch is sharded along its leading axis, and XLA inserts the gradient all-reduce. Results
for the same global batch agree across device counts up to float reassociation (tested 1 vs 2 host devices).
Multi-host: call `jax.distributed.initialize()` (coordinator address, process count and id, or the cluster's
auto-detection) in every process before anything touches JAX, then run the same command everywhere; the mesh
then spans all hosts, each process feeds its contiguous slice of the global batch through
`jax.make_array_from_process_local_data`, only process 0 writes logs, and orbax writes checkpoints cooperatively.

Mixed precision. compute_dtype="bfloat16" casts params (and teacher params) to bf16 inside the step; the
gradients flow back through the cast to the fp32 master weights the optimizer holds. Losses stay fp32.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from int4jax.train import checkpoint
from int4jax.train import rundir

# Incremented each time a step function is traced; the no-retrace test reads it.
TRACE_COUNTS: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  num_train_steps: int
  batch_size: int                 # global batch, split across all devices
  learning_rate: float
  warmup_steps: int
  weight_decay: float = 0.01
  grad_clip_norm: float = 1.0
  eval_every_steps: int = 1000
  seed: int = 42
  compute_dtype: str = "float32"  # "bfloat16": bf16 compute, fp32 master weights
  # Additions beyond architecture.md (defaults keep every caller valid):
  log_every_steps: int = 50
  checkpoint_every_steps: int | None = None  # None: save latest/ at every evaluation

  def validate(self) -> None:
    for name in ("num_train_steps", "batch_size", "eval_every_steps", "log_every_steps"):
      if getattr(self, name) <= 0:
        raise ValueError(f"TrainConfig.{name}={getattr(self, name)} must be positive")
    if not 0 <= self.warmup_steps <= self.num_train_steps:
      raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps} must be in [0, {self.num_train_steps=}]")
    if self.learning_rate <= 0:
      raise ValueError(f"TrainConfig.learning_rate={self.learning_rate} must be positive")
    if self.compute_dtype not in ("float32", "bfloat16"):
      raise ValueError(f"TrainConfig.compute_dtype={self.compute_dtype!r} must be 'float32' or 'bfloat16'")
    if self.batch_size % jax.device_count():
      raise ValueError(f"TrainConfig.batch_size={self.batch_size} must be a multiple of the "
                       f"{jax.device_count()} devices")


class BatchSource(Protocol):
  """Deterministic: batch k of epoch e depends only on (seed, e, k)."""
  num_examples: int

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """The global batch for this global step."""


class TimeBudgetExceeded(Exception):
  """Raised by `Deadline.batch_at` with the step at which the time budget stopped training."""


class Deadline:
  """BatchSource wrapper for a training time budget (compilation included): asked for a batch after `deadline`
  (None: never), it raises TimeBudgetExceeded(step) and records `stopped_at`. With `best_dir`, only once an
  evaluation has saved a checkpoint there, so a budget shorter than start-up + compilation still ends with a
  result to evaluate; without it, at the first step past the deadline. `second_batch_at`: when the second batch
  was asked for, i.e. after the first step's compilation (or compile-cache read)."""

  def __init__(self, source, deadline: float | None, best_dir: str | None = None):
    self.source, self.deadline, self.best_dir, self.num_examples = source, deadline, best_dir, source.num_examples
    self.calls, self.second_batch_at, self.stopped_at = 0, None, None

  def position(self, step):
    return self.source.position(step)

  def batch_at(self, step):
    self.calls += 1
    if self.calls == 2:
      self.second_batch_at = time.time()
    if (self.deadline is not None and time.time() > self.deadline
        and (self.best_dir is None or checkpoint.latest_step(self.best_dir) is not None)):
      self.stopped_at = step
      raise TimeBudgetExceeded(step)
    return self.source.batch_at(step)


class TrainTask(Protocol):
  metric_name: str
  higher_is_better: bool

  def loss_fn(self, params, teacher_params, batch, rng) -> tuple[jax.Array, dict]:
    """Pure and jittable: (scalar loss, aux scalars)."""

  def eval_batch(self, params, batch) -> dict[str, jax.Array]:
    """Pure and jittable: per-batch sums / counts or per-example predictions."""

  def summarize(self, accumulated: list[dict]) -> dict[str, float]:
    """Host side: metrics from the list of eval_batch outputs (numpy); must include metric_name."""

  # Optional: after_update(old_params, new_params, grads, step) -> params, pure and jittable, called after every
  # optimizer update (quant/sparsity.py uses it to keep N:M masks and movement scores out of the optimizer's hands).


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


# ----------------------------------------------------------------------------------------------
# Optimizer and the pure step functions


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
  """Linear warmup 0 -> lr over warmup_steps, then linear decay to 0 at num_train_steps."""
  decay = optax.linear_schedule(config.learning_rate, 0.0, max(config.num_train_steps - config.warmup_steps, 1))
  if config.warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


def weight_decay_mask(params):
  """Decay matrices and embeddings only: no decay on biases and LayerNorm scales/offsets (all 1-D params)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.adamw(learning_rate_schedule(config), b1=0.9, b2=0.999, eps=1e-8, weight_decay=config.weight_decay,
                  mask=weight_decay_mask))


def cast_floating(tree, dtype):
  """Floating leaves to `dtype` (None leaves and integers untouched)."""
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def train_step(state: TrainState, batch, teacher_params, *, task: TrainTask, tx: optax.GradientTransformation,
               schedule: optax.Schedule, compute_dtype: str) -> tuple[TrainState, dict]:
  """One optimizer step. Pure; jit it with donate_argnums=0. The teacher is a frozen argument."""
  TRACE_COUNTS["train_step"] += 1
  rng = jax.random.fold_in(state.rng, state.step)
  teacher = None if teacher_params is None else jax.lax.stop_gradient(
      cast_floating(teacher_params, jnp.dtype(compute_dtype)))

  def loss_of(params):
    return task.loss_fn(cast_floating(params, jnp.dtype(compute_dtype)), teacher, batch, rng)

  (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if hasattr(task, "after_update"):  # optional task hook: params the optimizer must not own (N:M masks, scores)
    params = task.after_update(state.params, params, grads, state.step)
  aux = dict(aux, loss=loss, grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng), aux


def eval_step(params, batch, *, task: TrainTask, compute_dtype: str) -> dict:
  TRACE_COUNTS["eval_step"] += 1
  return task.eval_batch(cast_floating(params, jnp.dtype(compute_dtype)), batch)


# ----------------------------------------------------------------------------------------------
# Placement


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Global host batch -> arrays sharded along axis 0 over the mesh (each process feeds its own rows)."""
  sharding = NamedSharding(mesh, P("data"))
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  n, i = jax.process_count(), jax.process_index()

  def local(x):
    rows = len(x) // n
    return jax.make_array_from_process_local_data(sharding, x[i * rows:(i + 1) * rows], x.shape)

  return jax.tree.map(local, batch)


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))


# ----------------------------------------------------------------------------------------------
# Guards


class NonFiniteLoss(FloatingPointError):
  """The training loss became NaN or inf; the run stops before any checkpoint is written from that state."""


def _check_finite(pending: list[tuple[int, jax.Array]]) -> None:
  """Raises NonFiniteLoss naming the first step in `pending` whose loss is not finite; empties `pending`."""
  if not pending:
    return
  values = jax.device_get([loss for _, loss in pending])
  steps = [step for step, _ in pending]
  pending.clear()
  for step, value in zip(steps, values):
    if not np.isfinite(value):
      raise NonFiniteLoss(f"training loss is {float(value)} at step {step}: stopping; no checkpoint was written "
                          "from it (lower --learning_rate, check the data, or set --clip)")


def _to_host(tree):
  """Device outputs -> numpy. Across processes, per-example outputs are gathered so every process sees all rows."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


def _to_float_dict(d: dict) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(d).items()}


# ----------------------------------------------------------------------------------------------
# The loop


def evaluate(params, eval_batches: Callable[[], Iterable], eval_fn, mesh: Mesh, task: TrainTask) -> dict:
  batches = tqdm.tqdm(eval_batches(), desc="eval", unit="batch", leave=False, dynamic_ncols=True,
                      mininterval=1.0 if sys.stderr.isatty() else 30.0, disable=jax.process_index() != 0)
  accumulated = [_to_host(eval_fn(params, shard_batch(b, mesh))) for b in batches]
  if not accumulated:
    raise ValueError("the evaluation split yielded no batches")
  return {k: float(v) for k, v in task.summarize(accumulated).items()}


def evaluate_once(task: TrainTask, params, eval_batches: Callable[[], Iterable], compute_dtype: str) -> dict:
  """Metrics of `params` (host or device arrays) as the train loop evaluates them: same mesh, step and compute dtype.
  What experiments.eval uses to re-check a run's best checkpoint."""
  mesh = make_mesh()
  eval_fn = jax.jit(functools.partial(eval_step, task=task, compute_dtype=compute_dtype))
  return evaluate(replicate(params, mesh), eval_batches, eval_fn, mesh, task)


def train_and_evaluate(task: TrainTask, params, teacher_params, train: BatchSource,
                       eval_batches: Callable[[], Iterable], config: TrainConfig, workdir: str, run_info: dict,
                       *, max_steps_this_run: int | None = None) -> dict:
  """Trains `params` on `task`, evaluating and checkpointing; resumes from workdir/checkpoints/latest.

  run_info (all optional): "config" (resolved experiment config, merged into config.json), "metadata" (stored
  in every checkpoint, e.g. task / model / num_labels), "policy_json", "argv", "git_commit", "runtime_keys" (config
  keys that may change between resumes). The run directory's rules (train/rundir.py) apply: a different config in
  an existing workdir raises rundir.RunConfigMismatch before anything is written.
  max_steps_this_run stops (after saving latest/) once that many steps ran in this call: a preemption stand-in.
  A non-finite loss raises NonFiniteLoss before any checkpoint is written from it.
  Returns {"final": metrics, "best": metrics, "best_step", "step", "wall_time_s", "examples_per_s", ...};
  examples_per_s counts training steps only (no compilation, no evaluation, no checkpointing).
  """
  config.validate()
  t_start = time.time()
  rd = rundir.RunDir(workdir)
  is_main = jax.process_index() == 0
  rd.start({"train": dataclasses.asdict(config), **run_info.get("config", {})}, argv=run_info.get("argv"),
           commit=run_info.get("git_commit"), policy_json=run_info.get("policy_json"),
           runtime_keys=run_info.get("runtime_keys", ()))
  latest_dir, best_dir = rd.latest_dir, rd.best_dir
  base_meta = dict(run_info.get("metadata", {}), policy_json=run_info.get("policy_json"),
                   metric_name=task.metric_name, train_config=dataclasses.asdict(config))

  mesh = make_mesh()
  tx = make_optimizer(config)
  schedule = learning_rate_schedule(config)
  state = TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(config.seed))
  state = replicate(state, mesh)
  teacher_params = None if teacher_params is None else replicate(teacher_params, mesh)

  best_value, best_metrics, best_step, wall_before = None, None, None, 0.0
  meta = {}
  restored = checkpoint.restore_newest(latest_dir, {"state": state}, rd.corrupt_dir)
  if restored is not None:
    state, meta = restored[0]["state"], restored[1]
    wall_before = meta.get("train_wall_s", 0.0)
    logging.info("resumed from %s at step %d", latest_dir, int(state.step))
    print(f"resuming from step {int(state.step)} ({latest_dir})", flush=True)
  # A fresh start keeps no metrics rows; a resume keeps those up to its step (later ones are logged again).
  if is_main:
    rd.truncate_metrics(int(state.step))
  # A kill can leave best/ ahead of latest/ (when latest/ is saved less often than evaluations run). Those
  # evaluations are redone deterministically, so drop their best/ and take the running best as it stood at
  # latest/'s step; otherwise the re-run would compare against a best from its own future.
  dropped = checkpoint.delete_after(best_dir, int(state.step))
  if dropped:
    logging.info("dropped best/ checkpoints %s saved after the resume step %d", dropped, int(state.step))
  if meta.get("best") is not None:
    best_value, best_metrics, best_step = meta["best"]["value"], meta["best"]["metrics"], meta["best"]["step"]

  step_fn = jax.jit(functools.partial(train_step, task=task, tx=tx, schedule=schedule,
                                      compute_dtype=config.compute_dtype), donate_argnums=(0,))
  eval_fn = jax.jit(functools.partial(eval_step, task=task, compute_dtype=config.compute_dtype))

  def is_better(value):
    if best_value is None:
      return True
    return value > best_value if task.higher_is_better else value < best_value

  def save_latest(step, last_metrics):
    pos = train.position(step) if hasattr(train, "position") else None
    best = None if best_value is None else {"value": best_value, "metrics": best_metrics, "step": best_step}
    checkpoint.save(latest_dir, step, {"state": state}, dict(
        base_meta, step=step, data_position={"step": step, "epoch_batch": pos},
        metrics=last_metrics, best=best, train_wall_s=wall_before + time.time() - t_start), keep=2)

  start = int(state.step)
  first_step_this_run = start
  last_metrics = None
  bar = tqdm.tqdm(total=config.num_train_steps, initial=start, unit="step", dynamic_ncols=True,
                  mininterval=1.0 if sys.stderr.isatty() else 30.0, disable=not is_main)
  # Throughput clock: runs only over training steps. It starts after the first step of this run has finished
  # (that step includes compilation) and pauses for evaluation and checkpointing.
  timed_steps = timed_s = 0.0
  interval_steps, interval_s, clock = 0, 0.0, None
  examples_per_s = float("nan")
  pending_losses: list[tuple[int, jax.Array]] = []
  first_step_at = None

  def stop_clock():
    nonlocal clock, interval_s
    if clock is not None:
      jax.block_until_ready(state.step)
      interval_s += time.time() - clock
      clock = None

  for step in range(start, config.num_train_steps):
    state, aux = step_fn(state, shard_batch(train.batch_at(step), mesh), teacher_params)
    done = step + 1
    pending_losses.append((done, aux["loss"]))
    bar.update(1)
    if done == first_step_this_run + 1:   # compilation + the first step stay outside the clock
      jax.block_until_ready(state.step)
      clock = first_step_at = time.time()   # start-up (compilation or a compile-cache read) ends here
    else:
      interval_steps += 1
    if done % config.log_every_steps == 0 or done == config.num_train_steps:
      _check_finite(pending_losses)
      stop_clock()
      aux = _to_float_dict(aux)
      examples_per_s = interval_steps * config.batch_size / interval_s if interval_s > 0 else float("nan")
      timed_steps, timed_s = timed_steps + interval_steps, timed_s + interval_s
      interval_steps, interval_s = 0, 0.0
      bar.set_postfix(loss=f"{aux['loss']:.4f}", ex_per_s=f"{examples_per_s:.0f}")
      if is_main:
        rd.append_metrics({"step": done, "split": "train", "examples_per_s": examples_per_s, **aux})
    evaluate_now = done % config.eval_every_steps == 0 or done == config.num_train_steps
    ckpt_every = config.checkpoint_every_steps
    saved_now = evaluate_now if ckpt_every is None else (done % ckpt_every == 0 or done == config.num_train_steps)
    stop_now = max_steps_this_run is not None and done - first_step_this_run >= max_steps_this_run
    if evaluate_now or saved_now or stop_now:
      _check_finite(pending_losses)   # never evaluate or checkpoint a state that came from a NaN step
      stop_clock()
    if evaluate_now:
      last_metrics = evaluate(state.params, eval_batches, eval_fn, mesh, task)
      value = last_metrics[task.metric_name]
      improved = is_better(value)
      if improved:
        best_value, best_metrics, best_step = value, last_metrics, done
        # best/ before latest/: a kill between the two re-runs this eval, which reproduces the same best.
        checkpoint.save(best_dir, done, {"params": state.params},
                        dict(base_meta, step=done, metric=value, metrics=last_metrics))
      if is_main:
        rd.append_metrics({"step": done, "split": "eval", **last_metrics, f"best_{task.metric_name}": best_value})
      bar.write(f"step {done}: {task.metric_name}={value:.4f} (best {best_value:.4f} at step {best_step})")
    if saved_now:
      save_latest(done, last_metrics)
    if clock is None:   # restart after a pause for logging, evaluation or checkpointing
      clock = time.time()
    if stop_now and done < config.num_train_steps:
      if not saved_now:  # saving the same step twice raises orbax's StepAlreadyExistsError
        save_latest(done, last_metrics)
      bar.close()
      print(f"stopping after {max_steps_this_run} steps at step {done} (checkpoint saved)", flush=True)
      return {"interrupted": True, "step": done}
  bar.close()
  _check_finite(pending_losses)
  stop_clock()
  timed_steps, timed_s = timed_steps + interval_steps, timed_s + interval_s
  steps_run = config.num_train_steps - first_step_this_run
  if last_metrics is None:  # resumed at the very end: report what was logged
    last_metrics = checkpoint.read_metadata(latest_dir).get("metrics") or best_metrics
  result = {
      "final": last_metrics, "best": best_metrics, "best_step": best_step, "metric_name": task.metric_name,
      "step": config.num_train_steps, "steps_this_run": steps_run,
      "wall_time_s": wall_before + time.time() - t_start,
      "examples_per_s": timed_steps * config.batch_size / timed_s if timed_s > 0 else float("nan"),
      "num_devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
      "first_step_at": first_step_at, "first_step_s": None if first_step_at is None else first_step_at - t_start,
  }
  if is_main:
    rundir.write_json_atomic(rd.file(rundir.SUMMARY), result)
  print(f"summary: {task.metric_name} best={best_value:.4f} at step {best_step}, "
        f"final={last_metrics[task.metric_name]:.4f}, steps={config.num_train_steps}, "
        f"wall={result['wall_time_s']:.1f}s, {result['examples_per_s']:.0f} ex/s (training steps only), "
        f"workdir={workdir}", flush=True)
  return result
