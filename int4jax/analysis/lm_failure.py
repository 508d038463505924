"""The paper's decoder failure analysis (paper_spec.md §3.2, §4): each analysis writes `<name>.json` and `<name>.png`.

- positional perplexity (Fig. 6): perplexity of the token at each position of a block, FP teacher vs students, from
  the per-position nll sums that experiments/lm.py stores in results.json (or recomputed from a checkpoint);
- activation range (Fig. 5): max - min over features of the FFN-out (mlp/c_proj, Llama mlp/down_proj) input at the first, a middle and
  the last layer, per token position, mean and spread over the sequences of `num_batches` batches;
- Pre-LN vs Post-LN (§4): FP and W4A4 perplexity of both placements and the gap curve over training steps;
- sensitivity (Fig. C.2): W4-only / W4A8 / W4A4 gaps side by side and validation perplexity over steps.
The functions take plain dicts (results.json contents, metrics rows) so they test without training.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

# Position buckets (1-based token index within a block) for the "early positions hurt most" summary.
POSITION_BUCKETS = ((1, 4), (5, 16), (17, 64), (65, 256), (257, 1 << 30))


def _ppl(nll_sum, count):
  nll_sum, count = np.asarray(nll_sum, np.float64), np.asarray(count, np.float64)
  with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
    return np.where(count > 0, np.exp(nll_sum / np.maximum(count, 1)), np.nan)


def _write(out_dir: str, name: str, data: dict, fig) -> dict:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
    json.dump(data, f, indent=1, allow_nan=True)
  fig.savefig(os.path.join(out_dir, f"{name}.png"), dpi=120, bbox_inches="tight")
  plt.close(fig)
  return data


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
  """Moving average that averages only over the points inside the array at the edges."""
  if window <= 1 or len(y) < window:
    return y
  kernel = np.ones(window)
  valid = np.isfinite(y)
  num = np.convolve(np.where(valid, y, 0.0), kernel, mode="same")
  den = np.convolve(valid.astype(np.float64), kernel, mode="same")
  return num / np.maximum(den, 1)


def _log_bins(length: int, num: int = 40) -> np.ndarray:
  """Edges of position bins [e_i, e_{i+1}) from 1 to length, one position wide at the start, wider later."""
  return np.unique(np.round(np.geomspace(1, length, num)).astype(int))


# ------------------------------------------------------------------------------------------------- positional ppl

def positional_perplexity(runs: Mapping[str, Mapping[str, Any]], out_dir: str, *, split: str = "valid",
                          zoom: int = 64) -> dict:
  """runs: label -> results.json dict (the first label is the reference, normally the FP teacher).

  Writes positional_perplexity.{json,png}: per-position perplexity for every run, the gap to the reference, and the
  gap per position bucket (POSITION_BUCKETS), which is what the paper's "early tokens suffer most" claim is about.
  """
  if not runs:
    raise ValueError("positional perplexity needs at least one run")
  labels = list(runs)
  ref = labels[0]
  out: dict[str, Any] = {"split": split, "reference": ref, "runs": {}, "buckets": []}
  sums = {k: np.asarray(r[split]["nll_sum_by_position"], np.float64) for k, r in runs.items()}
  counts = {k: np.asarray(r[split]["num_tokens_by_position"], np.float64) for k, r in runs.items()}
  lengths = {len(v) for v in sums.values()}
  if len(lengths) != 1:
    raise ValueError(f"runs have different block sizes {sorted(lengths)}; compare runs of one block size")
  (length,) = lengths
  for k in labels:
    ppl = _ppl(sums[k], counts[k])
    out["runs"][k] = {"perplexity": float(_ppl(sums[k].sum(), counts[k].sum())),
                      "perplexity_by_position": [None if not np.isfinite(v) else float(v) for v in ppl]}
  for lo, hi in POSITION_BUCKETS:
    if lo >= length:
      break
    sel = slice(lo, min(hi, length - 1) + 1)
    row = {"positions": [lo, min(hi, length - 1)]}
    for k in labels:
      row[k] = float(_ppl(sums[k][sel].sum(), counts[k][sel].sum()))
      if k != ref:
        row[f"gap_{k}"] = row[k] - row[ref]
    out["buckets"].append(row)

  fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
  pos = np.arange(length)
  z = min(zoom, length)
  edges = _log_bins(length)
  centers = np.sqrt(edges[:-1] * np.maximum(edges[1:] - 1, edges[:-1]))
  binned = {k: _ppl(np.add.reduceat(sums[k], edges[:-1])[:len(edges) - 1],
                    np.add.reduceat(counts[k], edges[:-1])[:len(edges) - 1]) for k in labels}
  out["log_bins"] = {"edges": edges.tolist(), **{k: v.tolist() for k, v in binned.items()}}
  for k in labels:
    ppl = _ppl(sums[k], counts[k])
    axes[0].plot(pos[1:z], ppl[1:z], label=f"{k} ({out['runs'][k]['perplexity']:.2f})", lw=1.2)
    axes[1].plot(centers, binned[k], marker=".", label=k, lw=1.0)
    if k != ref:
      axes[2].plot(centers, binned[k] - binned[ref], marker=".", label=f"{k} - {ref}", lw=1.0)
  axes[0].set(title=f"perplexity by position, first {z} ({split})", xlabel="token position in block",
              ylabel="perplexity", yscale="log")
  axes[1].set(title="all positions (log-spaced bins)", xlabel="token position in block", ylabel="perplexity",
              xscale="log", yscale="log")
  axes[2].set(title=f"gap to {ref} (log-spaced bins)", xlabel="token position in block", ylabel="perplexity gap",
              xscale="log")
  axes[2].axhline(0, color="k", lw=0.5)
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return _write(out_dir, "positional_perplexity", out, fig)


# ----------------------------------------------------------------------------------------------- activation range

def default_layers(n_layer: int) -> tuple[int, ...]:
  """First, middle and last layer (0-based), deduplicated."""
  return tuple(sorted({0, n_layer // 2, n_layer - 1}))


def ffn_out_input_range(model, params, batches: Iterable[Mapping[str, np.ndarray]], layers: Sequence[int],
                        num_batches: int = 8) -> dict[int, np.ndarray]:
  """Per layer, float64 [num_sequences, seq] of max - min over the features of the mlp/c_proj input.

  Uses the `ffn_out_input` value that GPT2MLP / LlamaMLP sow into "intermediates" (before the layer's own
  quantizer): block i is "h_{i}" in GPT-2 and "layers_{i}" in Llama.
  """
  @jax.jit
  def step(params, ids):
    _, state = model.apply({"params": params}, ids, deterministic=True, mutable=["intermediates"])
    inter = state["intermediates"]
    out = []
    for i in layers:
      block = inter[f"h_{i}"] if f"h_{i}" in inter else inter[f"layers_{i}"]
      h = block["mlp"]["ffn_out_input"][0].astype(jnp.float32)
      out.append(jnp.max(h, axis=-1) - jnp.min(h, axis=-1))
    return out

  ranges: dict[int, list[np.ndarray]] = {i: [] for i in layers}
  for b, batch in enumerate(batches):
    if b >= num_batches:
      break
    keep = np.asarray(batch["target_mask"]).sum(-1) > 0   # drop padding rows
    for i, r in zip(layers, jax.device_get(step(params, batch["input_ids"]))):
      ranges[i].append(np.asarray(r, np.float64)[keep])
  if not ranges[layers[0]]:
    raise ValueError("activation range: no batches")
  return {i: np.concatenate(v) for i, v in ranges.items()}


def activation_range(ranges: Mapping[str, Mapping[int, np.ndarray]], out_dir: str, *, smooth: int = 1) -> dict:
  """ranges: label -> {layer: [num_sequences, seq] ranges}. Writes activation_range.{json,png} (mean +- std)."""
  out: dict[str, Any] = {"what": "max-min over features of the mlp/c_proj (FFN-out) input, per position; "
                                 "mean and std over sequences", "runs": {}}
  layers = sorted({i for r in ranges.values() for i in r})
  fig, axes = plt.subplots(1, len(layers), figsize=(5.5 * len(layers), 4), squeeze=False)
  for label, per_layer in ranges.items():
    out["runs"][label] = {}
    for ax, i in zip(axes[0], layers):
      if i not in per_layer:
        continue
      r = per_layer[i]
      mean, std = r.mean(0), r.std(0)
      out["runs"][label][f"layer_{i + 1}"] = {
          "num_sequences": int(r.shape[0]), "mean": mean.tolist(), "std": std.tolist(),
          "mean_first_8": float(mean[:8].mean()), "mean_rest": float(mean[8:].mean()) if len(mean) > 8 else None}
      pos = np.arange(len(mean))
      m = _smooth(mean, smooth)
      ax.plot(pos, m, label=label, lw=1.0)
      ax.fill_between(pos, m - _smooth(std, smooth), m + _smooth(std, smooth), alpha=0.2)
      ax.set(title=f"layer {i + 1}: FFN-out input range", xlabel="token position", ylabel="max - min")
  for ax in axes[0]:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return _write(out_dir, "activation_range", out, fig)


# ------------------------------------------------------------------------------------------- Pre-LN vs Post-LN

def _eval_curve(metrics_rows: Iterable[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
  rows = [r for r in metrics_rows if r.get("split") == "eval" and "perplexity" in r]
  return np.array([r["step"] for r in rows]), np.array([r["perplexity"] for r in rows], np.float64)


def ln_study(runs: Mapping[str, Mapping[str, Any]], curves: Mapping[str, Iterable[Mapping[str, Any]]],
             out_dir: str) -> dict:
  """runs: results.json of "pre_fp", "pre_w4a4", "post_fp", "post_w4a4"; curves: the students' metrics.jsonl rows.

  Writes ln_study.{json,png}: FP and W4A4 perplexity (valid, test) and their gap for each LN placement, and the
  gap over training steps (student eval perplexity minus its teacher's best), as in the paper's §4 figure.
  """
  need = ("pre_fp", "pre_w4a4", "post_fp", "post_w4a4")
  missing = [k for k in need if k not in runs]
  if missing:
    raise ValueError(f"ln study needs runs {need}; missing {missing}")
  out: dict[str, Any] = {"rows": []}
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
  for ln in ("pre", "post"):
    fp, q = runs[f"{ln}_fp"], runs[f"{ln}_w4a4"]
    row = {"ln": f"{ln.capitalize()}-LN"}
    for split in ("valid", "test"):
      row[f"fp_{split}"] = fp[split]["perplexity"]
      row[f"w4a4_{split}"] = q[split]["perplexity"]
      row[f"gap_{split}"] = q[split]["perplexity"] - fp[split]["perplexity"]
    out["rows"].append(row)
    steps, ppl = _eval_curve(curves.get(f"{ln}_w4a4", []))
    if len(steps):
      ax1.plot(steps, ppl - fp["valid"]["perplexity"], marker="o", ms=3, label=row["ln"])
  x = np.arange(2)
  ax0.bar(x - 0.2, [r["fp_valid"] for r in out["rows"]], 0.4, label="FP teacher")
  ax0.bar(x + 0.2, [r["w4a4_valid"] for r in out["rows"]], 0.4, label="W4A4 student")
  ax0.set_xticks(x, [r["ln"] for r in out["rows"]])
  ax0.set(title="validation perplexity", ylabel="perplexity")
  ax1.set(title="W4A4 gap to its teacher over training", xlabel="step", ylabel="ppl(W4A4) - ppl(FP)")
  for ax in (ax0, ax1):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return _write(out_dir, "ln_study", out, fig)


# ------------------------------------------------------------------------------------------------- sensitivity

def sensitivity(runs: Mapping[str, Mapping[str, Any]], curves: Mapping[str, Iterable[Mapping[str, Any]]],
                out_dir: str) -> dict:
  """runs: label -> results.json, the first label the FP teacher. Writes sensitivity.{json,png}: a table of
  valid/test perplexity and gap per run, and the validation perplexity of each student over training."""
  labels = list(runs)
  ref = runs[labels[0]]
  out: dict[str, Any] = {"reference": labels[0], "rows": []}
  for k in labels:
    r = runs[k]
    out["rows"].append({
        "run": k, "policy": r.get("policy"), "valid": r["valid"]["perplexity"], "test": r["test"]["perplexity"],
        "gap_valid": r["valid"]["perplexity"] - ref["valid"]["perplexity"],
        "gap_test": r["test"]["perplexity"] - ref["test"]["perplexity"],
        "steps": r.get("steps_run"), "best_step": r.get("best_step")})
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
  students = out["rows"][1:]
  x = np.arange(len(students))
  ax0.bar(x - 0.2, [r["gap_valid"] for r in students], 0.4, label="valid")
  ax0.bar(x + 0.2, [r["gap_test"] for r in students], 0.4, label="test")
  ax0.set_xticks(x, [r["run"] for r in students], rotation=15)
  ax0.set(title=f"perplexity gap to {labels[0]}", ylabel="ppl(student) - ppl(teacher)")
  for k in labels[1:]:
    steps, ppl = _eval_curve(curves.get(k, []))
    if len(steps):
      ax1.plot(steps, ppl, marker="o", ms=3, label=k)
  ax1.axhline(ref["valid"]["perplexity"], color="k", ls="--", lw=0.8, label=f"{labels[0]} (valid)")
  ax1.set(title="student validation perplexity over QAT steps", xlabel="step", ylabel="perplexity")
  for ax in (ax0, ax1):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return _write(out_dir, "sensitivity", out, fig)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  """A Markdown table of the given columns (floats with 2 decimals)."""
  fmt = lambda v: f"{v:.2f}" if isinstance(v, float) and math.isfinite(v) else str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(lines)
