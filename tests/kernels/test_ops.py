"""`kernels_pallas.ops` on the CPU: prepared weights, the XLA candidate paths (checked per element), the measured
table's lookup, and the committed table's integrity."""
from __future__ import annotations

import glob
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_testlib import fresh_rng, int4_operand, packed
from int4jax.quant.formats import int4_to_e4m3
from kernels_pallas import ops, reference


def test_e4m3_layout_worked_example():
  e = np.asarray(int4_to_e4m3(jnp.asarray(np.array([[0x78, 0xF1, 0x00]], np.uint8))))
  assert e.view(np.uint8).tolist() == [[0xD0, 0x4E, 0x38, 0xB8, 0x00, 0x00]]
  assert np.asarray(e, np.float32).tolist() == [[-8, 7, 1, -1, 0, 0]]


@pytest.mark.parametrize("path", ["xla_int8", "xla_bf16", "xla_fp8"])
@pytest.mark.parametrize("prepared", [True, False])
def test_w4a4_xla_paths_pass_the_check(path, prepared):
  rng, seed = fresh_rng()
  m, k, n = 19, 512, 96
  xq, wq = int4_operand(rng, m, k, extreme_rows=(0, 1)), int4_operand(rng, n, k, extreme_rows=(0, 1))
  xs, ws = rng.uniform(0.01, 0.2, m).astype(np.float32), rng.uniform(1e-3, 0.05, n).astype(np.float32)
  b = rng.standard_normal(n).astype(np.float32)
  w = jnp.asarray(packed(wq))
  w = ops.prepare_weight(w, "w4a4") if prepared else w
  out = ops.w4a4_matmul(jnp.asarray(packed(xq)), jnp.asarray(xs), w, jnp.asarray(ws), jnp.asarray(b), True,
                        backend=path)
  y, mag = reference.int_gemm_exact(xq, xs, wq, ws, b, gelu=True)
  reference.check_gemm_output(np.asarray(out), y, reference.epilogue_bound(mag, b, y, np.dtype(out.dtype),
                                                                           gelu=True), what=path, seed=seed)


def test_prepared_weight_is_a_pytree_and_jits():
  rng, _ = fresh_rng()
  wp = jnp.asarray(packed(int4_operand(rng, 8, 64)))
  w = jax.jit(lambda p: ops.prepare_weight(p, "w4a16"))(wp)
  assert isinstance(w, ops.PreparedWeight) and w.int4.dtype == jnp.int4 and w.e4m3 is None
  x = jnp.asarray(rng.standard_normal((3, 64)), jnp.bfloat16)
  ws = jnp.ones((8,), jnp.float32)
  a = ops.w4a16_matmul(x, w, ws, backend="xla_int4w", out_dtype=jnp.float32)
  b = ops.w4a16_matmul(x, wp, ws, backend="xla_bf16", out_dtype=jnp.float32)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    ops.prepare_weight(jnp.zeros((4, 4), jnp.int8))
  w4 = ops.prepare_weight(wp)
  assert w4.int8 is not None and w4.e4m3 is None  # the FP8 layout only on request
  assert ops.prepare_weight(wp, layouts=("int8", "e4m3")).e4m3.dtype == jnp.float8_e4m3fn
  with pytest.raises(ValueError, match="unknown layouts"):
    ops.prepare_weight(wp, layouts=("fp4",))


def test_table_lookup_nearest_shape_and_m_class():
  table = {"entries": [
      {"op": "w4a4", "m": 32, "n": 1024, "k": 1024, "ranked": [["xla_int8", 3.0], ["mosaic_fp8", 9.0]]},
      {"op": "w4a4", "m": 3072, "n": 1024, "k": 1024, "ranked": [["mosaic_fp8", 7.0], ["xla_fp8", 8.0]]},
      {"op": "w4a4", "m": 3072, "n": 4096, "k": 1024, "ranked": [["xla_fp8", 19.0], ["mosaic_fp8", 20.0]]}]}
  assert ops.ranked_paths(table, "w4a4", 16, 1024, 1024)[0] == "xla_int8"
  assert ops.ranked_paths(table, "w4a4", 128, 1024, 1024)[0] == "xla_int8"     # nearest M in log scale
  assert ops.ranked_paths(table, "w4a4", 512, 1024, 1024)[0] == "mosaic_fp8"
  assert ops.ranked_paths(table, "w4a4", 99999, 1024, 1024)[0] == "mosaic_fp8"  # beyond: the largest M
  assert ops.ranked_paths(table, "w4a4", 3072, 3800, 1024)[0] == "xla_fp8"      # nearest (N, K)
  assert ops.ranked_paths(table, "w8a8", 3072, 1024, 1024) == []


def test_bad_backend_names_the_choices():
  with pytest.raises(ValueError, match="must be one of"):
    ops.choose_path("w4a4", "fastest", False, 8, 64, 64)


@pytest.mark.parametrize("path", sorted(glob.glob(ops.TABLE_DIR + "/*.json")))
def test_committed_tables_name_real_paths(path):
  table = json.load(open(path))
  assert table["entries"], path
  for e in table["entries"]:
    assert e["op"] in ops.PATHS and e["ranked"], e
    times = [t for _, t in e["ranked"]]
    assert times == sorted(times) and all(p in ops.PATHS[e["op"]] for p, _ in e["ranked"]), e


def test_auto_never_picks_an_inexact_path(monkeypatch):
  """Even where the table ranks an inexact path first, "auto" skips it (and the bench never ranks one)."""
  table = {"entries": [{"op": "w4a4", "m": 32, "n": 64, "k": 64, "ranked": [["xla_fp8", 1.0], ["xla_int8", 2.0]]}]}
  monkeypatch.setattr(ops, "_is_sm90", lambda: True)
  monkeypatch.setattr(ops, "load_table", lambda kind: table)
  assert ops.choose_path("w4a4", "auto", False, 32, 64, 64, (64,)) == "xla_int8"
  assert ("w4a4", "xla_fp8") in ops.INEXACT and ("w4a4", "mosaic_fp8") in ops.INEXACT


def test_matmul_picks_the_op_from_the_operands():
  rng, seed = fresh_rng()
  m, k, n = 5, 128, 32
  xq, wq = int4_operand(rng, m, k), int4_operand(rng, n, k)
  xs, ws = jnp.asarray(rng.uniform(0.01, 0.2, m), jnp.float32), jnp.asarray(rng.uniform(1e-3, 0.05, n), jnp.float32)
  w = ops.prepare_weight(jnp.asarray(packed(wq)))
  a = ops.matmul(jnp.asarray(packed(xq)), w, ws, x_scale=xs, backend="xla_int8", out_dtype=jnp.float32)
  b = ops.w4a4_matmul(jnp.asarray(packed(xq)), xs, w, ws, backend="xla_int8", out_dtype=jnp.float32)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"seed={seed}")
  c = ops.matmul(jnp.asarray(xq), jnp.asarray(wq), ws, x_scale=xs, backend="xla", out_dtype=jnp.float32)
  np.testing.assert_array_equal(np.asarray(c), np.asarray(b), err_msg=f"seed={seed}")  # int4 values as int8
  x = jnp.asarray(rng.standard_normal((m, k)), jnp.bfloat16)
  d = ops.matmul(x, w, ws, backend="xla_bf16", out_dtype=jnp.float32)
  assert d.shape == (m, n)
  with pytest.raises(ValueError, match="x_scale"):
    ops.matmul(jnp.asarray(packed(xq)), w, ws)
  with pytest.raises(ValueError, match="no x_scale"):
    ops.matmul(x, w, ws, x_scale=xs)
