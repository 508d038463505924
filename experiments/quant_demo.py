"""Quantization error of every preset on BERT-base-shaped GEMMs (no training, no checkpoint; a sanity table).

Weights ~ N(0, 0.02) with the four BERT-base GEMM shapes (Flax [K, N]): qkv 768x2304, attn_out 768x768,
ffn_in 768x3072, ffn_out 3072x768. Activations [tokens, K] are heavy-tailed: Student-t (df=3) with a few outlier
channels scaled up, the pattern that makes per-token INT4 activations hard. For each preset and sym/asym the table
shows relative Frobenius errors ||q(A) - A|| / ||A|| of the weights, of the activations and of the GEMM output
q(X) q(W) vs X W, averaged over the four GEMMs (--per_gemm prints each).

Runs in a few seconds on CPU:
  python -m experiments.quant_demo
  python -m experiments.quant_demo --weight_group_size=128 --per_gemm
"""
from __future__ import annotations

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from int4jax.quant import policy as policy_lib
from int4jax.quant import numerics as quant

_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed for weights and activations.")
_NUM_TOKENS = flags.DEFINE_integer("num_tokens", 256, "Activation rows (batch x seq).")
_GROUP = flags.DEFINE_integer("weight_group_size", None, "Weight groups along K (default: per output channel).")
_OUTLIER_CHANNELS = flags.DEFINE_integer("outlier_channels", 4, "Activation channels scaled by --outlier_scale.")
_OUTLIER_SCALE = flags.DEFINE_float("outlier_scale", 20.0, "Scale of the outlier activation channels.")
_PRESETS = flags.DEFINE_list("presets", list(policy_lib.PRESETS), "Presets to evaluate.")
_PER_GEMM = flags.DEFINE_bool("per_gemm", False, "Print one row per GEMM instead of the average.")

# (gemm type, K, N) of BERT-base.
BERT_BASE_GEMMS = (("qkv", 768, 2304), ("attn_out", 768, 768), ("ffn_in", 768, 3072), ("ffn_out", 3072, 768))


def make_operands(seed: int, num_tokens: int, outlier_channels: int, outlier_scale: float):
  """{gemm: (x [num_tokens, K], w [K, N])} as float32 numpy arrays."""
  rng = np.random.default_rng(seed)
  ops = {}
  for gemm, k, n in BERT_BASE_GEMMS:
    w = rng.normal(0.0, 0.02, size=(k, n)).astype(np.float32)
    x = rng.standard_t(3.0, size=(num_tokens, k))
    x[:, rng.choice(k, outlier_channels, replace=False)] *= outlier_scale
    ops[gemm] = (x.astype(np.float32), w)
  return ops


def rel_err(a, ref) -> float:
  a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
  return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def gemm_errors(x, w, w_spec, a_spec) -> tuple[float, float, float]:
  """(weight, activation, output) relative errors for one GEMM under (w_spec, a_spec); None spec = float."""
  wq = w if w_spec is None else quant.fake_quant(w, w_spec, axis=0)
  xq = x if a_spec is None else quant.fake_quant(x, a_spec, axis=-1)
  y_ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
  y = jnp.dot(xq, wq, precision=jax.lax.Precision.HIGHEST)
  return rel_err(wq, w), rel_err(xq, x), rel_err(y, y_ref)


def run(presets, seed, num_tokens, weight_group_size, outlier_channels, outlier_scale, per_gemm):
  """Returns rows (preset, scheme, gemm, w_err, a_err, out_err)."""
  ops = make_operands(seed, num_tokens, outlier_channels, outlier_scale)
  rows = []
  for preset in presets:
    for symmetric in ((True,) if preset not in policy_lib.INT_PRESETS[1:] else (True, False)):
      pol = policy_lib.make_policy(preset, symmetric=symmetric, weight_group_size=weight_group_size)
      errs = {g: gemm_errors(*ops[g], *pol.resolve(f"encoder/layer_0/{g}", g)) for g, _, _ in BERT_BASE_GEMMS}
      scheme = "-" if preset not in policy_lib.INT_PRESETS[1:] else ("sym" if symmetric else "asym")
      if per_gemm:
        rows += [(preset, scheme, g, *e) for g, e in errs.items()]
      else:
        rows.append((preset, scheme, "mean", *np.mean(list(errs.values()), axis=0)))
  return rows


def format_table(rows) -> str:
  lines = ["| preset | scheme | gemm | weight rel err | act rel err | GEMM out rel err |", "|---|---|---|---|---|---|"]
  lines += [f"| {p} | {s} | {g} | {we:.4f} | {ae:.4f} | {oe:.4f} |" for p, s, g, we, ae, oe in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  bad = sorted(set(_PRESETS.value) - set(policy_lib.PRESETS))
  if bad:
    raise app.UsageError(f"--presets: unknown {bad}; valid: {list(policy_lib.PRESETS)}")
  rows = run(_PRESETS.value, _SEED.value, _NUM_TOKENS.value, _GROUP.value, _OUTLIER_CHANNELS.value,
             _OUTLIER_SCALE.value, _PER_GEMM.value)
  print(f"BERT-base GEMMs, {_NUM_TOKENS.value} tokens, Student-t(3) activations with {_OUTLIER_CHANNELS.value} "
        f"outlier channels x{_OUTLIER_SCALE.value:g}, weights N(0, 0.02), "
        f"weight groups: {_GROUP.value or 'per output channel'}")
  print(format_table(rows))


if __name__ == "__main__":
  app.run(main)
