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


def test_kernel_table_takes_the_fastest_variant_and_skips_unmeasured_shapes():
  res = lambda **us: {k: {"us": v} for k, v in us.items()}
  d = {"rows": [{"kind": "bert", "m": 3072, "n": 4096, "k": 1024,
                 "res": res(xla_bf16=30.0, xla_int8=20.0, mosaic_w4a4=40.0, mosaic_w4a4_ws=15.0)}]}
  rows = report.kernel_table(d)
  assert rows[1:] == [["W4A4", "3072 × 4096 × 1024", "15.0 µs", "30.0 µs", "20.0 µs", "2.00×", "1.33×"]]


def test_results_index_lists_every_results_file():
  index = report.results_index()
  for p in (report.REPO_ROOT / "results").rglob("*"):
    rel = p.relative_to(report.REPO_ROOT / "results").as_posix()
    if p.is_file() and rel != "README.md":
      assert f"]({rel})" in index, rel
