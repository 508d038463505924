"""README tables and results/README.md are what the committed results JSON says (int4jax/report.py)."""
import json
import shutil

import pytest

from int4jax import report


def test_committed_readme_and_results_index_match_the_json():
  stale = {path: report.diff(path, now, new) for path, (now, new) in report.regenerate().items() if now != new}
  assert not stale, "run `python -m experiments.tables`:\n" + "\n".join(stale.values())


def test_every_registered_table_has_markers_and_every_marker_a_table():
  text = (report.REPO_ROOT / report.README).read_text()
  for name in report.TABLES:
    assert f"<!-- table:{name} -->" in text and f"<!-- /table:{name} -->" in text, name


@pytest.fixture
def repo_copy(tmp_path):
  shutil.copytree(report.REPO_ROOT / "results", tmp_path / "results")
  shutil.copy(report.REPO_ROOT / report.README, tmp_path / report.README)
  return tmp_path


def test_a_changed_number_in_the_json_shows_up_as_stale(repo_copy):
  path = repo_copy / "results/glue_sst2_minilm.json"
  d = json.loads(path.read_text())
  d["runs"][3]["dev_accuracy"] = 12.34
  path.write_text(json.dumps(d))
  now, new = report.regenerate(repo_copy)[report.README]
  assert now != new and "| W4A4 sym | 84.31 | 12.34 | +0.46 |" in new
  assert new.count("<!-- table:glue -->") == 1     # regenerating keeps the markers, once
  assert report.update_readme(new, repo_copy) == new


def test_bad_markers_are_named():
  with pytest.raises(ValueError, match="unregistered tables \\['nope'\\]"):
    report.update_readme("<!-- table:nope -->\nx\n<!-- /table:nope -->\n")
  with pytest.raises(ValueError, match="do not pair up"):
    report.update_readme("<!-- table:glue -->\nx\n")


def test_results_index_lists_every_results_file():
  index = report.results_index()
  for p in (report.REPO_ROOT / "results").rglob("*"):
    rel = p.relative_to(report.REPO_ROOT / "results").as_posix()
    if p.is_file() and rel != "README.md":
      assert f"]({rel})" in index, rel


def test_record_kernel_table_picks_only_exact_passing_paths():
  shape = [3072, 4096, 1024]
  row = lambda op, path, us, **kw: dict(op=op, path=path, shape=shape, us=us, **kw)
  d = {"rows": [row("w4a4", "mosaic_fp8", 10.0, worst_case_exact=False),     # fastest, inexact: never picked
                row("w4a4", "triton", 12.0, error="AssertionError: 1 element outside the bound"),
                row("w4a4", "mosaic_ws", 20.0, worst_case_exact=True),
                row("w4a4", "xla_int8", 30.0, worst_case_exact=True),
                row("bare", "xla_bf16", 40.0), row("bare", "xla_int8", 25.0), row("bare", "xla_fp8", 16.0)]}
  rows = report.record_kernel_table(d)
  assert rows[1:] == [["W4A4", "3072 × 4096 × 1024", "20.0 µs (mosaic_ws)", "40.0 µs", "25.0 µs", "16.0 µs",
                       "0.80× fp8", "xla_int8 30.0 µs (ours 1.50×)"]]


def test_formats_table_adds_lm_settings_beside_glue():
  stats = lambda mean, n=1: {"mean": mean, "std": None, "n": n, "values": [mean] * n}
  glue = {"tasks": {"sst2": {"metric": "accuracy", "rows": [
      {"label": "FP32 teacher", "best": stats(90.0), "gap_to_teacher": None},
      {"label": "NVFP4", "best": stats(89.0), "gap_to_teacher": -1.0}]}}}
  lm = {"settings": {"ptb_gpt2": {"rows": [
      {"label": "FP32 teacher", "test": stats(45.0), "gap_to_teacher": None},
      {"label": "MXFP4", "test": stats(47.5), "gap_to_teacher": {"valid": 2.0, "test": 2.5}}]}}}
  rows = report.formats_table({"summary": glue, "lm": {"summary": lm}})
  assert rows[0] == ["format", "SST2 accuracy", "gap SST2", "PTB_GPT2 test ppl", "gap PTB_GPT2"]
  assert rows[1:] == [["FP32 teacher", "90.00 (n=1)", "–", "45.00 (n=1)", "–"],
                      ["NVFP4", "89.00 (n=1)", "-1.00", "–", "–"], ["MXFP4", "–", "–", "47.50 (n=1)", "+2.50"]]


def test_latency_table_names_the_one_bf16_baseline_a_run_timed():
  row = lambda path, ms, **sp: {"model": "bert_base", "batch": 32, "seq": 512, "path": path, "status": "ok",
                                "median_ms": ms, **{f"speedup_vs_{k}": v for k, v in sp.items()}}
  both = report.latency_table({"rows": [row("jax_bf16", 9.0), row("int4jax_bf16", 8.0),
                                        row("int4jax_w4a4", 7.2, jax_bf16=1.25, int4jax_bf16=8.0 / 7.2)]})
  assert both[1][-2] == "1.11×"   # the smaller of the two ratios: the faster bf16 path
  one = report.latency_table({"rows": [row("jax_bf16", 9.0), row("int4jax_w4a4", 7.2, jax_bf16=1.25)]})
  assert one[1][-2] == "1.25× (vs plain JAX bf16 only)"
