"""Quick timing of the portable (Triton-lowered) kernels next to XLA bf16 / int8 on the same shapes.

    JAX_PLATFORMS=cuda PYTHONPATH=. python -m kernels_pallas.portable_bench [gemm|w4a16|quant] [bm,bn,bk,warps,stages]
Device time via wall clock around block_until_ready (median of 20 after warm-up, two input sets alternated). A lead
only: kernels_pallas/bench.py is the benchmark of record.
"""

from __future__ import annotations

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from kernels_pallas import ops as dispatch
from kernels_pallas.triton.common import MatmulConfig


def _time(f, arg_sets, iters=20):
  for a in arg_sets:
    jax.block_until_ready(f(*a))
  ts = []
  for i in range(iters):
    a = arg_sets[i % len(arg_sets)]
    t0 = time.perf_counter()
    jax.block_until_ready(f(*a))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def main(argv):
  rng = np.random.default_rng(0)
  which = argv[1] if len(argv) > 1 else "all"
  cfg = MatmulConfig(*map(int, argv[2].split(","))) if len(argv) > 2 else None
  print(f"config: {cfg or 'default'}", flush=True)
  shapes = [(3072, 1024, 4096), (12288, 4096, 1024), (512, 768, 3072)]
  for m, k, n in shapes if which in ("all", "gemm") else []:
    def mk():
      xp = jnp.asarray(rng.integers(0, 256, (m, k // 2), dtype=np.uint8))
      wp = jnp.asarray(rng.integers(0, 256, (n, k // 2), dtype=np.uint8))
      x8 = jnp.asarray(rng.integers(-128, 128, (m, k), dtype=np.int8))
      w8 = jnp.asarray(rng.integers(-128, 128, (n, k), dtype=np.int8))
      xb = jnp.asarray(rng.standard_normal((m, k)), jnp.bfloat16)
      wb = jnp.asarray(rng.standard_normal((n, k)), jnp.bfloat16)
      return xp, wp, x8, w8, xb, wb
    sets = [mk(), mk()]
    xs, ws = jnp.ones((m,), jnp.float32), jnp.ones((n,), jnp.float32)
    ops = 2 * m * n * k
    fns = {
        "triton w4a4": (jax.jit(lambda xp, wp, *_: dispatch.w4a4_matmul(xp, xs, wp, ws, backend="triton",
                                                                                  config=cfg)), 0),
        "triton w8a8": (jax.jit(lambda xp, wp, x8, w8, *_: dispatch.w8a8_matmul(x8, xs, w8, ws, backend="triton",
                                                                                         config=cfg)), 0),
        "xla bf16": (jax.jit(lambda *a: jnp.dot(a[4], a[5].T, preferred_element_type=jnp.float32)
                             .astype(jnp.bfloat16)), 0),
        "xla int8": (jax.jit(lambda *a: jax.lax.dot_general(a[2], a[3], (((1,), (1,)), ((), ())),
                                                           preferred_element_type=jnp.int32)), 0),
    }
    for name, (f, _) in fns.items():
      try:
        t = _time(f, sets)
        print(f"M={m:6d} K={k:5d} N={n:5d} {name:12s} {t * 1e6:9.1f} us {ops / t / 1e12:7.1f} TOPS", flush=True)
      except Exception as e:  # noqa: BLE001
        print(f"M={m} K={k} N={n} {name}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
  for m, k, n in [(1, 4096, 4096), (16, 8192, 28672)] if which in ("all", "w4a16") else []:
    sets = [(jnp.asarray(rng.standard_normal((m, k)), jnp.bfloat16),
             jnp.asarray(rng.integers(0, 256, (n, k // 2), dtype=np.uint8)),
             jnp.asarray(rng.uniform(size=(n, k // 128)), jnp.float32),
             jnp.asarray(rng.standard_normal((n, k)), jnp.bfloat16)) for _ in range(2)]
    for name, f in {"triton w4a16": jax.jit(lambda x, wp, s, wb: dispatch.w4a16_matmul(x, wp, s, backend="triton",
                                                                                                config=cfg)),
                    "xla bf16": jax.jit(lambda x, wp, s, wb: jnp.dot(x, wb.T))}.items():
      try:
        t = _time(f, sets)
        gbs = (n * k // 2 if "w4a16" in name else 2 * n * k) / t / 1e9
        print(f"M={m:6d} K={k:5d} N={n:5d} {name:12s} {t * 1e6:9.1f} us {gbs:7.0f} GB/s weights", flush=True)
      except Exception as e:  # noqa: BLE001
        print(f"w4a16 M={m} {name}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
  for m, k in [(12288, 1024), (12288, 768)] if which in ("all", "quant") else []:
    sets = [(jnp.asarray(rng.standard_normal((m, k)), jnp.bfloat16),) for _ in range(2)]
    g, b = jnp.ones((k,), jnp.float32), jnp.zeros((k,), jnp.float32)
    for name, f in {"quant4": jax.jit(lambda x: dispatch.quantize_rows(x, 4, backend="triton")),
                    "quant4+ln": jax.jit(lambda x: dispatch.quantize_rows(x, 4, g, b, backend="triton"))}.items():
      try:
        t = _time(f, sets)
        print(f"M={m:6d} K={k:5d} {name:12s} {t * 1e6:9.1f} us {(m * k * 2 + m * k // 2) / t / 1e9:7.0f} GB/s",
              flush=True)
      except Exception as e:  # noqa: BLE001
        print(f"quant M={m} {name}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)


if __name__ == "__main__":
  main(sys.argv)
