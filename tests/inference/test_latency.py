"""The latency benchmark's bookkeeping on the CPU: every path of a tiny encoder runs and computes the same model,
kernel names fall into the right category, and the targets are read off the numbers (not asserted as met)."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.inference import latency

TINY = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=200)


@pytest.mark.parametrize("name,category", [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>", "attention"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "gemm"),
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NNT", "gemm"),
    ("gemm_fusion_dot_12", "gemm"),
    ("int_gemm_ws_kernel", "gemm"),
    ("quantize_rows_int4", "quantize"),
    ("loop_add_fusion_3", "other"),
    ("input_reduce_fusion", "other"),
])
def test_kernel_category(name, category):
  assert latency.kernel_category(name) == category


def test_plain_encoder_matches_int4jax_bf16_on_the_same_weights():
  """The plain-jnp baseline and int4jax's own model must be the same network, or their ratio means nothing."""
  st = latency._ModelState("bert_base", TINY, None, want_torch=False, want_compile=False)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, TINY["vocab_size"], (2, 16)), jnp.int32)
  plain_fn, plain_w = st.jax_fn("jax_bf16")
  own_fn, own_w = st.jax_fn("int4jax_bf16")
  a = np.asarray(plain_fn(plain_w, ids), np.float32)
  b = np.asarray(own_fn(own_w, ids), np.float32)
  assert a.shape == b.shape == (2, 16, TINY["hidden_size"])
  # Both compute in bf16 from the same bf16 weights; LayerNorm outputs are O(1), bf16 has 8 mantissa bits, and
  # two layers may round differently: a few bf16 ulps of O(1) values.
  np.testing.assert_allclose(a, b, atol=6e-2)
  assert np.abs(a - b).mean() < 1e-2


def test_run_times_every_jax_path_and_reports_targets_honestly():
  settings = latency.Settings(models=("bert_base",), grid=((1, 16),), runs=2, warmup=1, budget_s=600,
                              paths=("jax_bf16", "int4jax_bf16", "int4jax_w4a4", "int4jax_w4a4_xlaq", "xla_int8",
                                     "torch_eager_fp16"),
                              config_overrides=TINY)
  partials = []
  result = latency.run(settings, on_row=lambda partial: partials.append(partial))
  # One snapshot after every cell, each listing the whole grid: the cells not yet timed say so (a run killed from
  # outside leaves its finished cells in the JSON written from the last snapshot).
  assert len(partials) == len(settings.paths)
  for i, snap in enumerate(partials):
    assert len(snap["rows"]) == len(settings.paths)
    assert sum(r["status"] == "not reached: run stopped" for r in snap["rows"]) == len(settings.paths) - 1 - i
  assert partials[-1]["rows"] == result["rows"]
  rows = {r["path"]: r for r in result["rows"]}
  for p in ("jax_bf16", "int4jax_bf16", "int4jax_w4a4", "int4jax_w4a4_xlaq", "xla_int8"):
    assert rows[p]["status"] == "ok", rows[p]
    assert rows[p]["wall_ms"] > 0 and rows[p]["median_ms"] == rows[p]["wall_ms"]  # no CUPTI on the CPU
  assert rows["torch_eager_fp16"]["status"].startswith("not available")  # no CUDA here: said, not timed
  md = latency.markdown({"info": result["info"], "rows": latency.speedups(result["rows"])}, "cmd", "abc")
  assert "| 1x16 |" in md
  # Only bert_base ran: every bert_large target says "not measured", none claims "met".
  large = [l for l in md.split("## Targets")[1].splitlines() if l.startswith("- bert_large")]
  assert large and all("not measured" in l for l in large), large


def test_targets_are_computed_from_the_numbers():
  def row(path, b, s, ms):
    return {"model": "bert_large", "batch": b, "seq": s, "path": path, "status": "ok", "median_ms": ms}
  rows = [row("jax_bf16", 32, 384, 10.0), row("int4jax_bf16", 32, 384, 10.2), row("int4jax_w4a4", 32, 384, 6.0),
          row("jax_bf16", 32, 512, 14.0), row("int4jax_bf16", 32, 512, 13.0), row("int4jax_w4a4", 32, 512, 10.0),
          row("int4jax_w8a8", 32, 512, 10.0), row("jax_bf16", 1, 128, 2.0), row("int4jax_w4a4", 1, 128, 2.5)]
  text = "\n".join(latency.targets(rows))
  # vs the faster bf16 path: 10.0 / 6.0 = 1.67x at 32x384 but 13.0 / 10.0 = 1.30x at 32x512 (not 14 / 10)
  assert "W4A4 >= 1.5x the faster bf16 JAX path at 32x384 and 32x512: NOT met" in text
  assert "32x512 1.30x" in text
  assert "never slower than it: NOT met" in text  # 0.80x at 1x128
  assert "W8A8 >= 1.3x at 32x512: met (1.30x)" in text
  assert "1x128 <= 1.2 ms: NOT met (2.500 ms)" in text
  assert "within 5% of plain JAX bf16 at every point: met" in text


def test_merge_fills_skipped_cells_and_never_mixes_runs_in_a_ratio():
  def res(commit, rows, device="NVIDIA H200"):
    return {"info": {"device": device, "command": f"cmd {commit}", "commit": commit, "jax": "0.11.2",
                     "torch": "absent", "timing": "CUPTI", "runs": 30, "warmup": 3},
            "rows": [{"model": m, "batch": 32, "seq": 512, "path": p, "status": st, "median_ms": ms}
                     for m, p, st, ms in rows]}
  old = res("a", [("bert_large", "jax_bf16", "ok", 20.0), ("bert_large", "int4jax_w4a4", "ok", 10.0),
                  ("bert_large", "xla_int8", "skipped: time budget", None), ("bert_base", "jax_bf16", "ok", 7.0)])
  new = res("b", [("bert_large", "jax_bf16", "ok", 21.0), ("bert_large", "xla_int8", "ok", 30.0),
                  ("bert_base", "jax_bf16", "skipped: time budget", None)])
  merged = latency.merge([old, new])
  got = {(r["model"], r["path"]): (r["status"], r.get("median_ms"), r["source"], r.get("speedup_vs_jax_bf16"))
         for r in merged["rows"]}
  # The first measurement of a cell stays; the later run fills the cell the first skipped; every speedup is
  # against the jax_bf16 of the row's own run (xla_int8: 21 / 30 from run b, not 20 / 30).
  assert got == {("bert_large", "jax_bf16"): ("ok", 20.0, 0, 1.0),
                 ("bert_large", "int4jax_w4a4"): ("ok", 10.0, 0, 2.0),
                 ("bert_large", "xla_int8"): ("ok", 30.0, 1, 0.7),
                 ("bert_base", "jax_bf16"): ("ok", 7.0, 0, 1.0)}
  assert merged["info"]["sources"] == [{"command": "cmd a", "commit": "a"}, {"command": "cmd b", "commit": "b"}]
  # The markdown tags each cell with its run, and speedups() leaves a merged table's ratios alone.
  text = latency.markdown(merged)
  assert "10.000 (2.00x) [a]" in text and "30.000 (0.70x) [b]" in text and "(commit b)" in text
  assert latency.speedups(merged["rows"]) == merged["rows"]
  # Merging a merged table again keeps every cell's run.
  again = latency.merge([merged, res("c", [("bert_base", "jax_bf16", "ok", 8.0)])])
  assert [s["commit"] for s in again["info"]["sources"]] == ["a", "b", "c"]
  assert {(r["model"], r["path"]): r["source"] for r in again["rows"]} == {
      ("bert_large", "jax_bf16"): 0, ("bert_large", "int4jax_w4a4"): 0, ("bert_large", "xla_int8"): 1,
      ("bert_base", "jax_bf16"): 0}
  with pytest.raises(ValueError, match="different devices"):
    latency.merge([old, res("c", [], device="NVIDIA H100")])


def test_a_dropped_baseline_takes_its_ratios_along():
  """A run's JSON stores its ratios; a baseline row removed from it (a cell measured wrong) must not leave them."""
  row = lambda path, ms: {"model": "bert_base", "batch": 32, "seq": 512, "path": path, "status": "ok",
                          "median_ms": ms}
  rows = latency.speedups([row("jax_bf16", 9.0), row("torch_compile_fp16", 18.0), row("int4jax_w8a8", 7.2)])
  assert rows[2]["speedup_vs_torch_compile_fp16"] == 2.5
  kept = latency.speedups([r for r in rows if r["path"] != "torch_compile_fp16"])
  assert "speedup_vs_torch_compile_fp16" not in kept[1] and kept[1]["speedup_vs_jax_bf16"] == 1.25


def test_xla_quantize_variant_computes_the_same_engine():
  """int4jax_w4a4_xlaq changes only who runs quantize_rows (XLA instead of the Pallas kernel): the same codes and
  scales, so the same logits up to f32 summation order in the LayerNorm."""
  st = latency._ModelState("bert_base", TINY, latency.engine.default_mode(allow_xla_fallback=True),
                           want_torch=False, want_compile=False)
  ids = jnp.asarray(np.random.default_rng(1).integers(0, TINY["vocab_size"], (2, 16)), jnp.int32)
  ref_fn, ref_w = st.jax_fn("int4jax_w4a4")
  xq_fn, xq_w = st.jax_fn("int4jax_w4a4_xlaq")
  a, b = np.asarray(ref_fn(ref_w, ids), np.float32), np.asarray(xq_fn(xq_w, ids), np.float32)
  ref_bf16 = np.asarray(st.jax_fn("int4jax_bf16")[0](st.bf16, ids), np.float32)
  # A code that flips at a rounding tie moves one output by one quantization step; nearly all must agree.
  assert np.mean(np.abs(a - b) <= 1e-2) > 0.99
  assert np.abs(a - ref_bf16).mean() > 10 * np.abs(a - b).mean()  # the variants agree far better than with bf16


def test_from_json_bad_input_is_a_one_line_usage_error(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  (tmp_path / "bad.json").write_text('{"a": 1}')
  for arg, message in ((tmp_path / "missing.json", "No such file"),
                       (tmp_path / "bad.json", "is not an experiments.latency JSON")):
    out = subprocess.run([sys.executable, "-m", "experiments.latency", f"--from_json={arg}", f"--out={tmp_path}"],
                         cwd=repo, env=dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu"), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
