"""The persistent compilation cache: a second process compiling the same program reads it from the folder."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each process: enable the cache at argv[1], compile one program, report whether jax found it in the cache.
PROGRAM = r"""
import json, sys, time
from int4jax.train import compile_cache
path = compile_cache.enable(sys.argv[1], min_compile_s=0.0)
import jax, jax.numpy as jnp
from jax._src import monitoring
hits = []
monitoring.register_event_listener(lambda name, **kw: hits.append(name) if "cache_hits" in name else None)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
t = time.time(); f(jnp.ones((64, 64))).block_until_ready()
print(json.dumps({"path": path, "hit": bool(hits), "s": time.time() - t}))
"""


def _run(cache):
  out = subprocess.run([sys.executable, "-c", PROGRAM, cache], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_cache_and_none_turns_it_off(tmp_path):
  cache = str(tmp_path / "jax")
  first, second = _run(cache), _run(cache)
  assert first["path"] == cache and not first["hit"] and os.listdir(cache)
  assert second["hit"]
  off = _run("none")
  assert off["path"] is None and not off["hit"]
