"""Joining a multi-process (multi-host) JAX job before the train loop builds its ("data",) mesh.

    distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # in every process, its own id

Each process then sees `jax.devices()` of all hosts; `train.loop` shards every global batch over them, each process
feeding its own rows (README "Several hosts"). Values left as None fall back to the JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID and JAX_LOCAL_DEVICE_IDS environment variables; with no coordinator at all this is
a no-op (one process, all local devices). Checks run before any connection attempt, so a typo fails in one line
instead of after the coordinator's 5-minute timeout. On the CPU, cross-process collectives go through gloo (jax's
default `jax_cpu_collectives_implementation`), which is what the 2-process CPU test uses.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import jax


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"${name}={value!r} must be an integer") from None


def resolve(coordinator_address: str | None, num_processes: int | None, process_id: int | None,
            local_device_ids: Sequence[int] | None = None) -> dict | None:
  """The checked arguments of jax.distributed.initialize, or None for a single-process run."""
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  pid = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  if address is None:
    if num is not None or pid is not None or local_device_ids is not None:
      raise ValueError("--num_processes/--process_id/--local_device_ids need --coordinator_address "
                       "(or $JAX_COORDINATOR_ADDRESS)")
    return None
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit():
    raise ValueError(f"--coordinator_address={address!r} must be host:port (process 0's host, a free port)")
  if num is None or pid is None:
    raise ValueError("--coordinator_address needs --num_processes and --process_id (or $JAX_NUM_PROCESSES and "
                     "$JAX_PROCESS_ID)")
  if num < 1 or not 0 <= pid < num:
    raise ValueError(f"--process_id={pid} must be in [0, --num_processes={num})")
  args = {"coordinator_address": address, "num_processes": num, "process_id": pid}
  if local_device_ids is not None:
    args["local_device_ids"] = list(local_device_ids)
  return args


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None) -> bool:
  """Calls jax.distributed.initialize when a coordinator is named; returns whether it did."""
  args = resolve(coordinator_address, num_processes, process_id, local_device_ids)
  if args is None:
    return False
  jax.distributed.initialize(**args)
  print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local / "
        f"{jax.device_count()} global devices", flush=True)
  return True
