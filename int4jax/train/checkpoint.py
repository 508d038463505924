"""Orbax checkpoints; the only module that imports orbax.

A run keeps two managers under `<workdir>/checkpoints/`:
  latest/  params + opt_state + step + rng (the full train state) and metadata, for resuming; keeps two steps, so a
           corrupt or half-written newest one falls back to the one before (`restore_newest`);
  best/    params and metadata of the best validation step, for evaluation and as a student's teacher; keeps one. Metadata is JSON: task, model, policy JSON, data position, metrics, resolved config, so a
checkpoint is self-describing (a teacher from another task is refused before training starts).
Saves are synchronous: a preempted run then always finds a complete checkpoint (orbax renames atomically).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from absl import logging

import jax
import numpy as np
import orbax.checkpoint as ocp

LATEST, BEST = "latest", "best"


def _manager(directory: str, keep: int = 1) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(directory: str, step: int, state: dict[str, Any], metadata: dict[str, Any], *, keep: int = 1) -> None:
  """Saves the pytree items in `state` (e.g. params, opt_state, ...) and JSON `metadata` at `step`; the newest
  `keep` steps stay on disk."""
  items = {name: ocp.args.StandardSave(_wrap(tree)) for name, tree in state.items()}
  items["metadata"] = ocp.args.JsonSave(metadata)
  with _manager(directory, keep) as mngr:
    mngr.save(step, args=ocp.args.Composite(**items), force=True)
    mngr.wait_until_finished()


def latest_step(directory: str) -> int | None:
  if not os.path.isdir(directory):
    return None
  with _manager(directory) as mngr:
    return mngr.latest_step()


def delete_after(directory: str, step: int) -> list[int]:
  """Deletes the checkpoints in `directory` saved after `step` (left by a run killed before its next latest/);
  returns their steps."""
  if not os.path.isdir(directory):
    return []
  with _manager(directory) as mngr:
    later = [s for s in mngr.all_steps() if s > step]
    for s in later:
      mngr.delete(s)
  return later


def read_metadata(directory: str) -> dict[str, Any]:
  """The JSON metadata of the checkpoint in `directory` (latest/ or best/). FileNotFoundError if none."""
  step = latest_step(directory)
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {directory!r}")
  with _manager(directory) as mngr:
    return dict(mngr.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"])


def read_run_metadata(workdir: str, task: str, launcher: str, which: str = "best") -> dict[str, Any]:
  """Metadata of a run's best/ (or latest/) checkpoint, checked to come from `task` and to record its model_config;
  errors name the run and the launcher that makes such runs."""
  directory = os.path.join(workdir, "checkpoints", which)
  try:
    meta = read_metadata(directory)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{workdir!r} has no {which} checkpoint (expected {directory}); train it with "
                            f"{launcher} first") from e
  if meta.get("task") != task or "model_config" not in meta:
    raise ValueError(f"{workdir!r} is a {meta.get('task')!r} run, not a {task} run of {launcher}")
  return meta


def restore(directory: str, targets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """Restores the items named in `targets` (abstract pytrees: jax.ShapeDtypeStruct leaves with shardings, or
  concrete arrays whose shape/dtype/sharding are copied) and the metadata. Returns (items, metadata)."""
  step = latest_step(directory)
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {directory!r}")
  items = {name: ocp.args.StandardRestore(_wrap(jax.tree.map(_abstract, tree))) for name, tree in targets.items()}
  items["metadata"] = ocp.args.JsonRestore()
  with _manager(directory) as mngr:
    out = mngr.restore(step, args=ocp.args.Composite(**items))
  restored = {name: _unwrap(out[name], targets[name]) for name in targets}
  return restored, dict(out["metadata"])


def all_steps(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  with _manager(directory) as mngr:
    return sorted(mngr.all_steps())


def restore_newest(directory: str, targets: dict[str, Any], corrupt_dir: str, *, log=print
                   ) -> tuple[dict[str, Any], dict[str, Any]] | None:
  """Restores the newest readable checkpoint in `directory`; None if there is none.

  A checkpoint that fails to restore (truncated file, half-written step, mismatched tree) is moved into
  `corrupt_dir` (never deleted) with one line naming it, and the next older step is tried.
  """
  for step in reversed(all_steps(directory)):
    try:
      with _manager(directory) as mngr:
        items = {name: ocp.args.StandardRestore(_wrap(jax.tree.map(_abstract, tree)))
                 for name, tree in targets.items()}
        items["metadata"] = ocp.args.JsonRestore()
        out = mngr.restore(step, args=ocp.args.Composite(**items))
      return {name: _unwrap(out[name], targets[name]) for name in targets}, dict(out["metadata"])
    except Exception as e:  # noqa: BLE001 - any failure of one step means: set it aside, try the previous one
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      src = os.path.join(directory, str(step))
      os.makedirs(corrupt_dir, exist_ok=True)
      dst = os.path.join(corrupt_dir, f"{os.path.basename(os.path.normpath(directory))}_{step}")
      if os.path.exists(src):
        shutil.move(src, dst)
      log(f"checkpoint {src} is unreadable ({type(e).__name__}: {reason}); moved to {dst}, falling back to the "
          "previous one")
      logging.warning("unreadable checkpoint %s moved to %s", src, dst)
  return None


def _is_leaf(tree) -> bool:
  return len(jax.tree.leaves(tree)) == 1 and jax.tree.structure(tree).num_nodes == 1


def _wrap(tree):
  # StandardSave refuses a bare array (step, rng): store it as {"value": x}.
  return {"value": tree} if _is_leaf(tree) else tree


def _unwrap(tree, target):
  return tree["value"] if _is_leaf(target) else tree


def _abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    if x.sharding is None:
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    return x
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  x = np.asarray(x)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
