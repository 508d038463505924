"""GPU-only tests of the Hopper (Pallas Mosaic GPU) kernels against the exact NumPy references.

Run on the H100 with `JAX_PLATFORMS=cuda PYTHONPATH=. python -m pytest tests/kernels/test_hopper.py`.
Skipped without an sm_90 GPU (CI has none). Fresh random inputs each run; -8/+7 (and -128/+127) rows, a
zero row, M not a multiple of the tile, BERT K/N, poisoned outputs are impossible to miss because every
element is compared. Tolerances: integer accumulation is exact, so the only error is the final cast:
bf16 outputs |out - ref| <= 1e-2 * max|ref|. The int GEMMs write bf16 only (an f32 output tile does not fit
in SMEM): f32 must be refused by can_use and raise in the wrapper, so the dispatcher routes it to Triton.
"""
import numpy as np
import pytest

import jax.numpy as jnp

from kernels_pallas.mosaic import w4a4 as hopper_w4a4, w4a16 as hopper_w4a16, w8a8 as hopper_w8a8
from kernels_pallas.reference import w4a4_matmul_ref, w4a16_matmul_ref, w8a8_matmul_ref
from kernels_pallas.layout import pack_int4_np


def _on_hopper():
  try:
    return hopper_w8a8._is_hopper()
  except Exception:  # noqa: BLE001
    return False


pytestmark = pytest.mark.skipif(not _on_hopper(), reason="needs an sm_90 (Hopper) GPU; CI runs none")

TOL = {jnp.bfloat16: 1e-2, jnp.float32: 1e-5}


def _ints(rng, shape, bits):
  lo, hi = (-8, 8) if bits == 4 else (-128, 128)
  q = rng.integers(lo, hi, shape, dtype=np.int8)
  q[0] = lo
  q[1] = hi - 1
  q[2] = 0
  return q


def _check(out, ref, out_dtype):
  out = np.asarray(out, np.float64)
  ref = np.asarray(ref, np.float64)
  assert np.all(np.isfinite(out))
  assert np.max(np.abs(out - ref)) <= TOL[out_dtype] * max(np.max(np.abs(ref)), 1e-30)


@pytest.mark.parametrize("m,n,k", [(200, 1024, 1024), (32, 3072, 1024), (3072, 1024, 4096)])
@pytest.mark.parametrize("out_dtype", [jnp.bfloat16])
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("variant", ["default_ws", "fused", "prepass"])
def test_w4a4(m, n, k, out_dtype, gelu, variant):
  rng = np.random.default_rng()
  xq, wq = _ints(rng, (m, k), 4), _ints(rng, (n, k), 4)
  xs = rng.uniform(0.5, 2, m).astype(np.float32) / 8
  ws = rng.uniform(0.5, 2, n).astype(np.float32) / 8
  b = rng.normal(size=n).astype(np.float32)
  xp, wp = pack_int4_np(xq), pack_int4_np(wq)
  cfg = {"default_ws": hopper_w4a4.DEFAULT, "fused": hopper_w4a4.FUSED, "prepass": hopper_w4a4.PREPASS}[variant]
  out = hopper_w4a4.w4a4_matmul(jnp.asarray(xp), jnp.asarray(xs), jnp.asarray(wp), jnp.asarray(ws),
                                jnp.asarray(b), gelu, out_dtype=out_dtype, config=cfg)
  assert out.shape == (m, n) and out.dtype == out_dtype
  _check(out, w4a4_matmul_ref(xp, xs, wp, ws, b, gelu=gelu), out_dtype)


@pytest.mark.parametrize("m,n,k", [(200, 1024, 1024), (3072, 4096, 1024)])
@pytest.mark.parametrize("out_dtype", [jnp.bfloat16])
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("single_wg", [False, True])
def test_w8a8(m, n, k, out_dtype, gelu, single_wg):
  rng = np.random.default_rng()
  xq, wq = _ints(rng, (m, k), 8), _ints(rng, (n, k), 8)
  xs = rng.uniform(0.5, 2, m).astype(np.float32) / 128
  ws = rng.uniform(0.5, 2, n).astype(np.float32) / 128
  b = rng.normal(size=n).astype(np.float32)
  out = hopper_w8a8.w8a8_matmul(jnp.asarray(xq), jnp.asarray(xs), jnp.asarray(wq), jnp.asarray(ws),
                                jnp.asarray(b), gelu, out_dtype=out_dtype,
                                config=hopper_w8a8.SINGLE_WG if single_wg else None)
  _check(out, w8a8_matmul_ref(xq, xs, wq, ws, b, gelu=gelu), out_dtype)


@pytest.mark.parametrize("m,n,k", [(1, 4096, 4096), (16, 4096, 4096), (5, 1024, 4096), (16, 28672, 8192)])
@pytest.mark.parametrize("group_size", [None, 128, 1024])
def test_w4a16(m, n, k, group_size):
  rng = np.random.default_rng()
  x = rng.normal(size=(m, k)).astype(jnp.bfloat16)
  wq = _ints(rng, (n, k), 4)
  ws_shape = (n,) if group_size is None else (n, k // group_size)
  ws = rng.uniform(0.5, 2, ws_shape).astype(np.float32) / 8
  b = rng.normal(size=n).astype(np.float32)
  wp = pack_int4_np(wq)
  if not hopper_w4a16.can_use(m, n, k, w_scale_shape=ws.shape):
    pytest.skip(f"config does not cover {m=} {n=} {k=} {group_size=}")
  out = hopper_w4a16.w4a16_matmul(jnp.asarray(x), jnp.asarray(wp), jnp.asarray(ws), jnp.asarray(b),
                                  jnp.bfloat16, gelu=True)
  ref = w4a16_matmul_ref(np.asarray(x, np.float32), wp, ws, b, gelu=True)
  # bf16 weights-times-scale in registers (per-group) and bf16 output: 1e-2 of max|ref|
  _check(out, ref, jnp.bfloat16)


def test_int_gemms_refuse_f32_output():
  assert not hopper_w8a8.can_use(3072, 1024, 1024, out_dtype=jnp.float32)
  assert not hopper_w4a4.can_use(3072, 1024, 1024, out_dtype=jnp.float32)
  x = jnp.zeros((128, 512), jnp.int8)
  with pytest.raises(ValueError, match="bf16 only"):
    hopper_w8a8.w8a8_matmul(x, jnp.ones(128), jnp.zeros((256, 512), jnp.int8), jnp.ones(256), None, False,
                            out_dtype=jnp.float32)
