"""train/distributed.py: the multi-host configuration is checked before any connection, and a real 2-process CPU job
(jax.distributed over localhost, gloo collectives, one CPU device per process) trains the toy task of test_loop.py to
the same losses as one process with one device."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from int4jax.train import distributed

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ENV_KEYS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS")


@pytest.fixture
def clean_env(monkeypatch):
  for k in ENV_KEYS:
    monkeypatch.delenv(k, raising=False)
  return monkeypatch


def test_single_process_without_a_coordinator(clean_env):
  assert distributed.resolve(None, None, None) is None
  assert distributed.initialize() is False


def test_flags_and_environment_resolve(clean_env):
  assert distributed.resolve("10.0.0.1:1234", 4, 3, [0, 1]) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3, "local_device_ids": [0, 1]}
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "node0:9999")
  clean_env.setenv("JAX_NUM_PROCESSES", "2")
  clean_env.setenv("JAX_PROCESS_ID", "1")
  assert distributed.resolve(None, None, None) == {"coordinator_address": "node0:9999", "num_processes": 2,
                                                   "process_id": 1}
  assert distributed.resolve(None, None, 0)["process_id"] == 0   # a flag beats the environment


@pytest.mark.parametrize("args, match", [
    ((None, 2, 0), "need --coordinator_address"),
    (("node0", 2, 0), "must be host:port"),
    (("node0:12ab", 2, 0), "must be host:port"),
    (("node0:1234", None, 0), "needs --num_processes and --process_id"),
    (("node0:1234", 2, 2), r"--process_id=2 must be in \[0, --num_processes=2\)"),
])
def test_bad_configuration_fails_in_one_line(clean_env, args, match):
  with pytest.raises(ValueError, match=match):
    distributed.resolve(*args)


def test_bad_environment_value(clean_env):
  clean_env.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match=r"\$JAX_NUM_PROCESSES='two' must be an integer"):
    distributed.resolve("node0:1234", None, 0)


_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {here!r})
    from int4jax.train import distributed
    address, pid, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if address != "none":
      assert distributed.initialize(address, 2, pid)
    import jax
    import test_loop as t
    result = t.run(workdir, num_steps=6)
    rows = [json.loads(l) for l in open(workdir + "/metrics.jsonl") if '"train"' in l]
    print("RESULT", json.dumps({{"processes": jax.process_count(), "devices": jax.device_count(),
                                "loss": [r["loss"] for r in rows], "final": result["final"]}}))
""").format(repo=REPO, here=HERE)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _result(stdout: str) -> dict:
  return json.loads([l for l in stdout.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):])


def test_two_processes_train_like_one(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  for k in ENV_KEYS:
    env.pop(k, None)
  address = f"localhost:{_free_port()}"
  workers = [subprocess.Popen([sys.executable, "-c", _WORKER, address, str(i), str(tmp_path / "two")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  single = subprocess.run([sys.executable, "-c", _WORKER, "none", "0", str(tmp_path / "one")], env=env,
                          capture_output=True, text=True, timeout=240)
  outs = [w.communicate(timeout=240) for w in workers]
  for w, (_, err) in zip(workers, outs):
    assert w.returncode == 0, err[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  one = _result(single.stdout)
  two = [_result(out) for out, _ in outs]
  assert (one["processes"], one["devices"]) == (1, 1)
  for r in two:
    assert (r["processes"], r["devices"]) == (2, 2)
    np.testing.assert_allclose(r["loss"], one["loss"], atol=1e-5)
    assert r["final"] == pytest.approx(one["final"], abs=1e-5)
