"""Packed layout (bit-exact) and the dispatcher: clear errors, logged XLA fallback equal to the reference."""

from __future__ import annotations

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_testlib import assert_close, fresh_rng, int4_operand, packed
from kernels_pallas import ops as dispatch, reference
from kernels_pallas.layout import pack_int4, pack_int4_np, unpack_int4, unpack_int4_np


def test_layout_worked_example_and_roundtrip():
  assert pack_int4_np(np.array([[-8, 7]], np.int8)).tolist() == [[0x78]]
  assert pack_int4_np(np.array([[1, -1]], np.int8)).tolist() == [[0xF1]]
  rng, seed = fresh_rng()
  q = int4_operand(rng, 7, 768, zero_row=3)
  p = pack_int4_np(q)
  np.testing.assert_array_equal(np.asarray(pack_int4(jnp.asarray(q), axis=-1)), p, err_msg=f"seed={seed}")
  np.testing.assert_array_equal(unpack_int4_np(p), q)
  np.testing.assert_array_equal(np.asarray(unpack_int4(jnp.asarray(p), axis=-1)), q)


def _w4a4_args(rng, m=37, k=256, n=192, groups=None):
  xq, wq = int4_operand(rng, m, k), int4_operand(rng, n, k)
  ws = rng.uniform(0.001, 0.05, (n, groups) if groups else n).astype(np.float32)
  return (packed(xq), rng.uniform(0.01, 0.2, m).astype(np.float32), packed(wq), ws,
          rng.standard_normal(n).astype(np.float32))


@pytest.mark.skipif(jax.devices()[0].platform == "gpu", reason="checks the CPU-only error")
def test_cpu_without_interpret_is_an_error():
  rng, _ = fresh_rng()
  args = [jnp.asarray(a) for a in _w4a4_args(rng)]
  with pytest.raises(ValueError, match="interpret=True"):
    dispatch.w4a4_matmul(*args)
  with pytest.raises(ValueError, match="backend="):
    dispatch.w4a4_matmul(*args, backend="cuda")
  with pytest.raises(ValueError, match="mosaic"):
    dispatch.w4a4_matmul(*args, backend="mosaic")  # no sm_90 here


@pytest.mark.parametrize("bad, match", [
    ("n", r"n=100 must be a multiple of block_n"),
    ("dtype", r"x_packed.dtype=int8 must be uint8"),
    ("group", r"group_size=48 must be a multiple of block_k"),
    ("scale", r"x_scale.shape"),
])
def test_bad_shapes_name_the_problem(bad, match):
  rng, _ = fresh_rng()
  xp, xs, wp, ws, b = _w4a4_args(rng)
  if bad == "n":
    wp, ws, b = wp[:100], ws[:100], b[:100]
  elif bad == "dtype":
    xp = xp.view(np.int8)
  elif bad == "group":
    k = 48 * 4  # four groups of 48: no power-of-two K step divides a group
    xp, wp = xp[:, :k // 2], wp[:, :k // 2]
    ws = rng.uniform(size=(192, 4)).astype(np.float32)
  elif bad == "scale":
    xs = xs[:5]
  with pytest.raises(ValueError, match=match):
    dispatch.w4a4_matmul(*map(jnp.asarray, (xp, xs, wp, ws, b)), interpret=True)


def test_xla_fallback_is_logged_and_matches_reference(monkeypatch):
  rng, seed = fresh_rng()
  xp, xs, wp, ws, b = _w4a4_args(rng)
  wp, ws, b = wp[:100], ws[:100], b[:100]  # N = 100: no block_n divides it
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
  out = dispatch.w4a4_matmul(*map(jnp.asarray, (xp, xs, wp, ws, b)), gelu=True, out_dtype=jnp.float32,
                             interpret=True, allow_xla_fallback=True)
  assert warnings and "falling back to XLA" in warnings[0] and "n=100" in warnings[0], warnings
  assert_close(out, reference.w4a4_matmul_ref(xp, xs, wp, ws, b, True, np.float64), np.float32, seed, "fallback")


def test_xla_backends_match_references():
  rng, seed = fresh_rng()
  xp, xs, wp, ws, b = _w4a4_args(rng, groups=2)
  out = dispatch.w4a4_matmul(*map(jnp.asarray, (xp, xs, wp, ws, b)), out_dtype=jnp.float32, backend="xla")
  assert_close(out, reference.w4a4_matmul_ref(xp, xs, wp, ws, b, False, np.float64), np.float32, seed, "w4a4 xla")
  xq, wq = rng.integers(-128, 128, (9, 64)).astype(np.int8), rng.integers(-128, 128, (32, 64)).astype(np.int8)
  out = dispatch.w8a8_matmul(jnp.asarray(xq), jnp.asarray(xs[:9]), jnp.asarray(wq), jnp.asarray(ws[:32, 0]),
                             out_dtype=jnp.float32, backend="xla")
  assert_close(out, reference.w8a8_matmul_ref(xq, xs[:9], wq, ws[:32, 0], None, False, np.float64), np.float32,
               seed, "w8a8 xla")
  x = rng.standard_normal((3, 256)).astype(jnp.bfloat16)
  out = dispatch.w4a16_matmul(jnp.asarray(x), jnp.asarray(wp), jnp.asarray(ws), jnp.asarray(b), jnp.float32,
                              backend="xla")
  assert_close(out, reference.w4a16_matmul_ref(x, wp, ws, b, np.float64), np.float32, seed, "w4a16 xla")
  x = (rng.standard_normal((5, 256)) * 3).astype(np.float32)
  for bits in (4, 8):
    q, s = dispatch.quantize_rows(jnp.asarray(x), bits, backend="xla")
    q_ref, s_ref = reference.quantize_rows_ref(x, bits)
    np.testing.assert_array_equal(np.asarray(q), q_ref, err_msg=f"seed={seed}")
    np.testing.assert_array_equal(np.asarray(s), s_ref)


def test_dispatch_interpret_runs_portable_kernel():
  rng, seed = fresh_rng()
  xp, xs, wp, ws, b = _w4a4_args(rng, m=5, k=128, n=64)
  out = dispatch.w4a4_matmul(*map(jnp.asarray, (xp, xs, wp, ws, b)), out_dtype=jnp.float32, interpret=True)
  assert_close(out, reference.w4a4_matmul_ref(xp, xs, wp, ws, b, False, np.float64), np.float32, seed, "dispatch")
  with pytest.raises(ValueError, match="bits=3 must be 4 or 8"):
    dispatch.quantize_rows(jnp.zeros((4, 64), jnp.bfloat16), 3, interpret=True)
  with pytest.raises(ValueError, match="x.dtype=int32"):
    dispatch.quantize_rows(jnp.zeros((4, 64), jnp.int32), 4, interpret=True)


def test_jittable_under_dispatch():
  rng, seed = fresh_rng()
  xp, xs, wp, ws, b = map(jnp.asarray, _w4a4_args(rng, m=5, k=128, n=64))
  f = jax.jit(lambda *a: dispatch.w4a4_matmul(*a, out_dtype=jnp.float32, backend="xla"))
  np.testing.assert_allclose(f(xp, xs, wp, ws, b), dispatch.w4a4_matmul(xp, xs, wp, ws, b, out_dtype=jnp.float32,
                                                                         backend="xla"), rtol=1e-6)
