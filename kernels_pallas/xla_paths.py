"""XLA's own GEMM paths with the kernels' exact epilogue, as candidates of the measured dispatcher (`ops`).

Each path takes the same operands as the Pallas kernels and returns the same function:
y = act(x_scale[m] * sum_g w_scale[n, g] * (x_g . w_g) + bias[n]), computed as an XLA dot followed by one f32
elementwise fusion. The integer dot is exact on every path used for INT4 operands:
- `int8`: int8 x int8 -> int32 (exact for any K below 2^17 at int8, 2^25 at int4);
- `bf16`: int4 values and products are exact in bf16/f32, sums exact in the f32 accumulator below 2^24 (K < 2^18);
- `fp8`: e4m3 operands, f32 output; exact only if cuBLAS's fp8 accumulation keeps the partial sums, which
  tests/kernels/test_hopper.py checks on the GPU (all -8 operands at the largest benchmarked K).
W4A16 paths: `int4w` (weights as XLA's own jnp.int4 [N, K], convert + bf16 dot) and `bf16` (dequantize per call).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from int4jax.quant.formats import unpack_int4
from kernels_pallas.triton import common
from kernels_pallas.triton.w4a4 import int_epilogue_xla

INT_DOT_DTYPES = {"int8": (jnp.int8, jnp.int32), "bf16": (jnp.bfloat16, jnp.float32),
                  "fp8": (jnp.float8_e4m3fn, jnp.float32)}


def grouped_dot(x_op, w_op, w_scale, acc_dtype):
  """[M, K] . [N, K]^T with per-channel [N] or per-group [N, G] weight scales applied in f32."""
  n, k = w_op.shape
  group_size, grouped = common.group_size_of(w_scale.shape, n, k)
  w_scale = w_scale.astype(jnp.float32)
  if not grouped:
    acc = lax.dot_general(x_op, w_op, (((1,), (1,)), ((), ())), preferred_element_type=acc_dtype)
    return acc.astype(jnp.float32) * w_scale[None, :]
  g = k // group_size
  part = jnp.einsum("mgk,ngk->mng", x_op.reshape(x_op.shape[0], g, group_size), w_op.reshape(n, g, group_size),
                    preferred_element_type=acc_dtype)
  return jnp.sum(part.astype(jnp.float32) * w_scale[None], axis=-1)


@functools.partial(jax.jit, static_argnames=("kind", "gelu", "out_dtype"))
def int_matmul(x_int, x_scale, w_op, w_scale, bias=None, *, kind: str, gelu=False, out_dtype=jnp.bfloat16):
  """x_int int8 [M, K] (int4 or int8 values); w_op [N, K] already in the dot dtype of `kind` (or int8)."""
  op_dtype, acc_dtype = INT_DOT_DTYPES[kind]
  acc = grouped_dot(x_int.astype(op_dtype), w_op.astype(op_dtype), w_scale, acc_dtype)
  return int_epilogue_xla(acc, x_scale, bias, gelu, jnp.dtype(out_dtype))


@functools.partial(jax.jit, static_argnames=("gelu", "out_dtype"))
def w4a16_int4w(x, w_int4, w_scale, bias=None, *, gelu=False, out_dtype=jnp.bfloat16):
  """x bf16 [M, K]; w_int4 jnp.int4 [N, K] (XLA's own packed storage; see ops.prepare_weight)."""
  y = grouped_dot(x.astype(jnp.bfloat16), w_int4.astype(jnp.bfloat16), w_scale, jnp.float32)
  if bias is not None:
    y = y + bias.astype(jnp.float32)[None, :]
  if gelu:
    y = jax.nn.gelu(y, approximate=False)
  return y.astype(out_dtype)


def int4_from_packed(p):
  """Canonical packed (N, K/2) uint8 -> jnp.int4 (N, K) by value (not a bitcast: XLA 0.11.2's gemm fusion crashes
  on a bitcast int4 operand, NOTES.md)."""
  return unpack_int4(p, axis=-1).astype(jnp.int4)
