"""GPU-only tests of the Hopper paths of `kernels_pallas.ops` (Mosaic kernels and XLA's dots with the same epilogue).

Run on an H100/H200 with `PYTHONPATH=. python -m pytest tests/kernels/test_hopper.py`; skipped without an sm_90 GPU
(CI has none), with the reason. Every output is checked element by element with the bound of
`kernels_pallas.reference.epilogue_bound` (integer sums exact, then 1 bf16 ulp of the exact value plus the f32
epilogue's rounding), the same check the CPU tests and the bench use. Inputs are seeded (the seed is printed).
Exactness of the FP8 paths: all -8 operands at K = 4096 (the largest benchmarked K; every partial sum a multiple of
64 up to 2^18) and a mixed worst case (x = -8, w alternating -8/7) with unit scales and f32-exact outputs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_testlib import fresh_rng
from int4jax.quant.formats import pack_int4_np
from kernels_pallas import ops, reference


def _on_hopper():
  d = jax.devices()[0]
  return d.platform == "gpu" and str(getattr(d, "compute_capability", "")).startswith("9.")


pytestmark = pytest.mark.skipif(not _on_hopper(), reason="needs an sm_90 (Hopper) GPU; CI runs none")

# The exact W4A4 paths. xla_fp8 and mosaic_fp8 are inexact (ops.INEXACT): test_fp8_paths_lose_low_bits_at_large_k.
W4A4_PATHS = ["mosaic_fp8_promote", "mosaic_ws", "xla_int8", "xla_bf16"]


def _ints(rng, shape, bits):
  lo, hi = (-8, 8) if bits == 4 else (-128, 128)
  q = rng.integers(lo, hi, shape, dtype=np.int8)
  q[0], q[1], q[2] = lo, hi - 1, 0
  return q


def _check_int(out, xq, xs, wq, ws, b, gelu, seed, what):
  y, mag = reference.int_gemm_exact(xq, xs, wq, ws, b, gelu=gelu)
  bound = reference.epilogue_bound(mag, b, y, np.dtype(out.dtype), gelu=gelu)
  reference.check_gemm_output(np.asarray(out), y, bound, what=what, seed=seed)


@pytest.mark.parametrize("path", W4A4_PATHS)
@pytest.mark.parametrize("m,n,k,gelu", [(200, 1024, 1024, True), (3072, 1024, 4096, False), (32, 3072, 1024, True)])
def test_w4a4_paths(path, m, n, k, gelu):
  rng, seed = fresh_rng()
  xq, wq = _ints(rng, (m, k), 4), _ints(rng, (n, k), 4)
  xs = rng.uniform(0.5, 2, m).astype(np.float32) / 32
  ws = rng.uniform(0.5, 2, n).astype(np.float32) / 32
  b = rng.normal(size=n).astype(np.float32)
  w = ops.prepare_weight(jnp.asarray(pack_int4_np(wq)), "w4a4")
  out = ops.w4a4_matmul(jnp.asarray(pack_int4_np(xq)), jnp.asarray(xs), w, jnp.asarray(ws), jnp.asarray(b), gelu,
                        backend=path)
  assert out.shape == (m, n) and out.dtype == jnp.bfloat16
  _check_int(out, xq, xs, wq, ws, b, gelu, seed, f"w4a4 {path}")


@pytest.mark.parametrize("path", W4A4_PATHS)
@pytest.mark.parametrize("case", ["all_minus8", "odd_low_bits"])
def test_w4a4_integer_sums_exact_at_largest_k(path, case):
  """Integer part exact at K = 4096 (the largest benchmarked K) with worst-case magnitudes.

  all_minus8: every product 64, sums 2^18. odd_low_bits: x = 7, w random in {-8, -7}: sums near -2^17.7 whose
  low bits all matter (what a reduced-precision FP8 accumulator loses). Every row of x is the same, so the exact
  sum E depends on n only; with unit scales and bias = -E[n] the f32 epilogue gives exactly 0 where the sum is
  exact and the (integer) error itself elsewhere, which bf16 represents exactly: out must be all zeros.
  """
  rng, seed = fresh_rng()
  m, n, k = 256, 256, 4096
  if case == "all_minus8":
    xq, wq = np.full((m, k), -8, np.int8), np.full((n, k), -8, np.int8)
  else:
    xq, wq = np.full((m, k), 7, np.int8), rng.integers(-8, -6, (n, k)).astype(np.int8)
  exact = reference.exact_int_matmul(xq[:1], wq)[0]
  assert np.abs(exact).max() >= 2 ** 17
  out = ops.w4a4_matmul(jnp.asarray(pack_int4_np(xq)), jnp.ones(m, jnp.float32),
                        ops.prepare_weight(jnp.asarray(pack_int4_np(wq))), jnp.ones(n, jnp.float32),
                        jnp.asarray(-exact.astype(np.float32)), backend=path)
  out = np.asarray(out).astype(np.float64)
  bad = np.argwhere(out != 0)
  assert not bad.size, (f"{path} {case}: {len(bad)} sums off, e.g. by {out[tuple(bad[0])]} at {bad[0]} of "
                        f"{exact[bad[0][1]]} (K={k}) seed={seed}")


@pytest.mark.parametrize("path", ["mosaic_ws", "xla_int8"])
@pytest.mark.parametrize("m,n,k,gelu", [(200, 1024, 1024, True), (3072, 4096, 1024, False)])
def test_w8a8_paths(path, m, n, k, gelu):
  rng, seed = fresh_rng()
  xq, wq = _ints(rng, (m, k), 8), _ints(rng, (n, k), 8)
  xs = rng.uniform(0.5, 2, m).astype(np.float32) / 512
  ws = rng.uniform(0.5, 2, n).astype(np.float32) / 512
  b = rng.normal(size=n).astype(np.float32)
  out = ops.w8a8_matmul(*map(jnp.asarray, (xq, xs, wq, ws, b)), gelu, backend=path)
  _check_int(out, xq, xs, wq, ws, b, gelu, seed, f"w8a8 {path}")


@pytest.mark.parametrize("path", ["mosaic", "xla_int4w"])
@pytest.mark.parametrize("m,n,k", [(1, 4096, 4096), (16, 4096, 4096), (5, 1024, 4096), (16, 28672, 8192)])
@pytest.mark.parametrize("group_size", [None, 128])
def test_w4a16_paths(path, m, n, k, group_size):
  rng, seed = fresh_rng()
  x = rng.normal(size=(m, k)).astype(np.float32)
  xb = jnp.asarray(x, jnp.bfloat16)
  wq = _ints(rng, (n, k), 4)
  ws_shape = (n,) if group_size is None else (n, k // group_size)
  ws = rng.uniform(0.5, 2, ws_shape).astype(np.float32) / 8
  b = rng.normal(size=n).astype(np.float32)
  w = ops.prepare_weight(jnp.asarray(pack_int4_np(wq)), "w4a16")
  out = ops.w4a16_matmul(xb, w, jnp.asarray(ws), jnp.asarray(b), gelu=True, backend=path)
  xf = np.asarray(xb.astype(jnp.float32), np.float64)
  ws2 = ws.astype(np.float64).reshape(n, -1)
  wf = (wq.astype(np.float64).reshape(n, ws2.shape[1], -1) * ws2[:, :, None]).reshape(n, k)
  pre = xf @ wf.T + b[None, :]
  y = reference.gelu_erf_f64(pre)
  mag = np.abs(xf) @ np.abs(wf).T
  # f32 accumulation over K in any order (K eps), per-group weights scaled in bf16 in registers (2^-8 relative)
  acc_err = (k * reference.F32_EPS + (2.0 ** -8 if group_size else 0.0)) * mag
  bound = 1.13 * acc_err + reference.epilogue_bound(mag * 0, b, y, np.dtype(out.dtype), gelu=True)
  reference.check_gemm_output(np.asarray(out), y, bound, what=f"w4a16 {path}", seed=seed)


def test_auto_picks_a_checked_path_and_logs_it():
  rng, seed = fresh_rng()
  m, n, k = 3072, 4096, 1024
  xq, wq = _ints(rng, (m, k), 4), _ints(rng, (n, k), 4)
  xs = rng.uniform(0.5, 2, m).astype(np.float32) / 32
  ws = rng.uniform(0.5, 2, n).astype(np.float32) / 32
  b = rng.normal(size=n).astype(np.float32)
  path = ops.choose_path("w4a4", "auto", False, m, n, k, (n,), jnp.bfloat16)
  assert path in ops.PATHS["w4a4"]
  out = ops.w4a4_matmul(jnp.asarray(pack_int4_np(xq)), jnp.asarray(xs), jnp.asarray(pack_int4_np(wq)),
                        jnp.asarray(ws), jnp.asarray(b))
  _check_int(out, xq, xs, wq, ws, b, False, seed, f"w4a4 auto={path}")


@pytest.mark.parametrize("path", ["xla_fp8", "mosaic_fp8"])
def test_fp8_paths_lose_low_bits_at_large_k(path):
  """Why ops.INEXACT holds the FP8 paths without promotion: Hopper's FP8 wgmma does not keep a full f32 sum. On the
  H200 (NOTES.md runs 5-6) XLA's FP8 GEMM gave -215040 for -229376 on the -8 / +7 extreme rows at K = 4096, and the
  Mosaic FP8 kernel was off by about 8384 in -214872 on x = 7, w in {-8, -7}. If this passes, revisit INEXACT."""
  assert ("w4a4", path) in ops.INEXACT
  rng, seed = fresh_rng()
  m, n, k = 512, 512, 4096
  xq, wq = _ints(rng, (m, k), 4), _ints(rng, (n, k), 4)
  xq[3], wq[3:] = 7, rng.integers(-8, -6, (n - 3, k))  # x = 7 against w in {-8, -7}: odd low bits at |sum| ~ 2^17.7
  xs = rng.uniform(0.5, 2, m).astype(np.float32) / 32
  ws = rng.uniform(0.5, 2, n).astype(np.float32) / 32
  b = rng.normal(size=n).astype(np.float32)
  out = ops.w4a4_matmul(jnp.asarray(pack_int4_np(xq)), jnp.asarray(xs), ops.prepare_weight(jnp.asarray(
      pack_int4_np(wq))), jnp.asarray(ws), jnp.asarray(b), backend=path)
  with pytest.raises(AssertionError, match="outside the epilogue bound"):
    _check_int(out, xq, xs, wq, ws, b, False, seed, f"w4a4 {path}")
