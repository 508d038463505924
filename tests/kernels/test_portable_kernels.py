"""Portable (Pallas Triton-lowered) kernels against the exact NumPy references.

One base class holds the cases; `TestInterpret` runs them in interpret mode on the CPU (CI), `TestGpu` compiles them
for the GPU (skipped, with the reason, where there is none) and adds the paper's BERT shapes. Every output buffer is
pre-filled with NaN / a sentinel (poison=True aliases it) so an unwritten tile fails the comparison.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_testlib import assert_close, check_int_gemm, fresh_rng, int4_operand, int8_operand, packed
from kernels_pallas import reference
from kernels_pallas.layout import unpack_int4_np
from kernels_pallas.triton.quantize_rows import quantize_rows_pallas
from kernels_pallas.triton.w4a4 import w4a4_matmul_pallas
from kernels_pallas.triton.w4a16 import w4a16_matmul_pallas
from kernels_pallas.triton.w8a8 import w8a8_matmul_pallas

M, K, N = 37, 256, 192  # M is not a multiple of any tile


def _on_gpu() -> bool:
  return jax.devices()[0].platform == "gpu"


class KernelCases:
  interpret: bool = True

  # ---- W4A4 ----
  def _w4a4(self, m, k, n, *, w_scale="channel", bias=False, gelu=False, out_dtype=jnp.float32, unit=False,
            config=None):
    rng, seed = fresh_rng()
    xq = int4_operand(rng, m, k, zero_row=m // 2, extreme_rows=(0, 1))
    wq = int4_operand(rng, n, k, zero_row=n - 1, extreme_rows=(0, 1))
    xs = np.ones(m, np.float32) if unit else rng.uniform(0.01, 0.2, m).astype(np.float32)
    if unit:
      ws = np.ones(n, np.float32)
    elif w_scale == "channel":
      ws = rng.uniform(0.001, 0.05, n).astype(np.float32)
    else:
      ws = rng.uniform(0.001, 0.05, (n, k // w_scale)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    args = (packed(xq), xs, packed(wq), ws, b)
    out = w4a4_matmul_pallas(*[None if a is None else jnp.asarray(a) for a in args], gelu=gelu,
                             out_dtype=out_dtype, config=config, interpret=self.interpret, poison=True)
    ref = reference.w4a4_matmul_ref(*args, gelu=gelu, out_dtype=np.float64)
    out = np.asarray(out)
    return out, ref, seed, xq, wq, lambda what: check_int_gemm(out, xq, xs, wq, ws, b, gelu, out_dtype, seed, what)

  def test_w4a4_integer_part_bit_exact(self):
    out, ref, seed, xq, wq, _ = self._w4a4(M, K, N, unit=True)
    exact = xq.astype(np.int64) @ wq.astype(np.int64).T
    np.testing.assert_array_equal(ref, exact)
    np.testing.assert_array_equal(out, exact.astype(np.float32), err_msg=f"seed={seed}")

  def test_w4a4_group_scales_bias_gelu_f32(self):
    *_, check = self._w4a4(M, K, N, w_scale=128, bias=True, gelu=True)
    check("w4a4 group")

  def test_w4a4_channel_bf16(self):
    *_, check = self._w4a4(M, K, N, bias=True, out_dtype=jnp.bfloat16)
    check("w4a4 bf16")

  def test_w4a4_bert_like(self):
    *_, check = self._w4a4(M, 768, 64, bias=True, gelu=True, out_dtype=jnp.bfloat16)
    check("w4a4 K=768 N=64")

  # ---- W8A8 ----
  def _w8a8(self, m, k, n, *, w_scale="channel", bias=False, gelu=False, out_dtype=jnp.float32, unit=False):
    rng, seed = fresh_rng()
    xq = int8_operand(rng, m, k, zero_row=m // 2, extreme_rows=(0, 1))
    wq = int8_operand(rng, n, k, zero_row=0, extreme_rows=(1, 2))
    xs = np.ones(m, np.float32) if unit else rng.uniform(1e-3, 1e-2, m).astype(np.float32)
    if unit:
      ws = np.ones(n, np.float32)
    elif w_scale == "channel":
      ws = rng.uniform(1e-4, 1e-3, n).astype(np.float32)
    else:
      ws = rng.uniform(1e-4, 1e-3, (n, k // w_scale)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    args = (xq, xs, wq, ws, b)
    out = w8a8_matmul_pallas(*[None if a is None else jnp.asarray(a) for a in args], gelu=gelu,
                             out_dtype=out_dtype, interpret=self.interpret, poison=True)
    out = np.asarray(out)
    return (out, reference.w8a8_matmul_ref(*args, gelu=gelu, out_dtype=np.float64), seed, xq, wq,
            lambda what: check_int_gemm(out, xq, xs, wq, ws, b, gelu, out_dtype, seed, what))

  def test_w8a8_integer_part_bit_exact(self):
    out, ref, seed, xq, wq, _ = self._w8a8(M, K, N, unit=True)
    np.testing.assert_array_equal(out, (xq.astype(np.int64) @ wq.astype(np.int64).T).astype(np.float32),
                                  err_msg=f"seed={seed}")

  def test_w8a8_group_bias_gelu_bf16(self):
    *_, check = self._w8a8(M, K, N, w_scale=64, bias=True, gelu=True, out_dtype=jnp.bfloat16)
    check("w8a8 group bf16")

  # ---- W4A16 ----
  def _w4a16(self, m, k, n, *, group_size=128, bias=True, gelu=False, out_dtype=jnp.float32):
    rng, seed = fresh_rng()
    x = rng.standard_normal((m, k)).astype(jnp.bfloat16)
    x[m // 2] = 0
    wq = int4_operand(rng, n, k, extreme_rows=(0, 1))
    ws = rng.uniform(0.001, 0.05, (n, k // group_size) if group_size else n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    args = (x, packed(wq), ws, b)
    out = w4a16_matmul_pallas(*[None if a is None else jnp.asarray(a) for a in args], out_dtype, gelu=gelu,
                              interpret=self.interpret, poison=True)
    return np.asarray(out), reference.w4a16_matmul_ref(*args, np.float64, gelu=gelu), seed

  @pytest.mark.parametrize("m", [1, M])
  def test_w4a16_group_f32(self, m):
    out, ref, seed = self._w4a16(m, K, N)
    assert_close(out, ref, np.float32, seed, f"w4a16 m={m}")

  def test_w4a16_channel_gelu_bf16(self):
    out, ref, seed = self._w4a16(5, 768, 64, group_size=None, gelu=True, out_dtype=jnp.bfloat16)
    assert_close(out, ref, jnp.bfloat16, seed, "w4a16 channel bf16")

  # ---- quantize_rows ----
  def _quantize(self, bits, k, *, ln, x_dtype=jnp.bfloat16, m=M):
    rng, seed = fresh_rng()
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10, (m, 1))).astype(x_dtype)
    x[m // 2] = 0  # zero row: scale floor, q = 0
    if m > 2:  # ties: absmax 2^(b-1) gives S = 1, so x / S = x exactly; +2^(b-1) must clip to 2^(b-1) - 1
      x[1] = 0.5
      x[1, :8] = [2 ** (bits - 1), 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -(2 ** (bits - 1))]
    gamma = rng.uniform(0.5, 1.5, k).astype(np.float32) if ln else None
    beta = (0.1 * rng.standard_normal(k)).astype(np.float32) if ln else None
    q, s = quantize_rows_pallas(jnp.asarray(x), bits, None if gamma is None else jnp.asarray(gamma),
                                None if beta is None else jnp.asarray(beta), 1e-5, interpret=self.interpret,
                                poison=True)
    q, s = np.asarray(q), np.asarray(s)
    q_ref, s_ref, y = reference.quantize_rows_ref(x, bits, gamma, beta, 1e-5, return_unrounded=True)
    msg = f"seed={seed}"
    assert np.isfinite(s).all(), msg
    if ln:
      np.testing.assert_allclose(s, s_ref, rtol=1e-5, err_msg=msg)
    else:
      np.testing.assert_array_equal(s, s_ref, err_msg=msg)  # absmax is an input element; / 2^(b-1) is exact
    qi = unpack_int4_np(q) if bits == 4 else q.astype(np.int64)
    qr = unpack_int4_np(q_ref) if bits == 4 else q_ref.astype(np.int64)
    diff = qi.astype(np.int64) - qr
    # Only near round-half ties may differ, and by one step (f32 LN / possibly approximate GPU division).
    near_tie = np.abs(np.abs(y - np.floor(y)) - 0.5) < (1e-3 if ln else 1e-5)
    bad = (diff != 0) & ~(near_tie & (np.abs(diff) == 1))
    assert not bad.any(), f"q differs at {np.argwhere(bad)[:5]}: {qi[bad][:5]} vs {qr[bad][:5]} {msg}"
    assert (diff != 0).mean() < 1e-3, msg
    if not ln and m > 2:
      np.testing.assert_array_equal(qi[1, :8], [2 ** (bits - 1) - 1, 0, 2, 2, 0, -2, -2, -(2 ** (bits - 1))])
      assert (qi[m // 2] == 0).all()

  @pytest.mark.parametrize("bits", [4, 8])
  @pytest.mark.parametrize("ln", [False, True])
  def test_quantize_rows(self, bits, ln):
    self._quantize(bits, K, ln=ln)

  def test_quantize_rows_bert_k768_f32_input(self):
    self._quantize(4, 768, ln=True, x_dtype=np.float32)


class TestInterpret(KernelCases):
  """Interpret mode on the CPU: the same kernel bodies, run by the Pallas interpreter (CI)."""
  interpret = True


@pytest.mark.skipif(not _on_gpu(), reason=f"needs a GPU; jax.devices()[0].platform={jax.devices()[0].platform!r} "
                    "(run on a machine whose JAX sees a GPU)")
class TestGpu(KernelCases):
  """The compiled Triton path, plus the paper's BERT GEMM shapes (K, N from h = 768 / 1024)."""
  interpret = False

  @pytest.mark.parametrize("h", [768, 1024])
  @pytest.mark.parametrize("kn", ["h-h", "3h-h", "h-4h", "4h-h"])
  def test_w4a4_bert_shapes(self, h, kn):
    n_mult, k_mult = {"h-h": (1, 1), "3h-h": (3, 1), "h-4h": (1, 4), "4h-h": (4, 1)}[kn]
    *_, check = self._w4a4(200, k_mult * h, n_mult * h, bias=True, gelu=kn == "4h-h", out_dtype=jnp.bfloat16)
    check(f"w4a4 h={h} {kn}")

  @pytest.mark.parametrize("h", [768, 1024])
  def test_w4a4_bert_shapes_exact(self, h):
    out, ref, seed, xq, wq, _ = self._w4a4(3000, 4 * h, h, unit=True)
    np.testing.assert_array_equal(out, ref.astype(np.float32), err_msg=f"seed={seed}")

  @pytest.mark.parametrize("h", [768, 1024])
  def test_w8a8_bert_shapes(self, h):
    *_, check = self._w8a8(200, h, 4 * h, bias=True, gelu=True, out_dtype=jnp.bfloat16)
    check(f"w8a8 h={h}")

  @pytest.mark.parametrize("m", [1, 16])
  def test_w4a16_decode_shapes(self, m):
    out, ref, seed = self._w4a16(m, 4096, 4096, out_dtype=jnp.bfloat16)
    assert_close(out, ref, jnp.bfloat16, seed, f"w4a16 m={m}")

  @pytest.mark.parametrize("h", [768, 1024])
  def test_quantize_rows_bert(self, h):
    self._quantize(4, h, ln=True, m=3000)
