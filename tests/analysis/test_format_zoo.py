"""int4jax.analysis.format_zoo and experiments.formats without training: run directories written by hand (the files
experiments.glue writes), records, statistics over seeds, partial runs, the table / plot writer, flag errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from int4jax.analysis import format_zoo

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fake_run(root, task, student, seed, accs, finished=True):
  """A run directory like experiments.glue's: config.json, command.txt, metrics.jsonl (+ summary.json if finished)."""
  d = root / format_zoo.run_name(task, student, seed)
  d.mkdir()
  cfg = {"task": task, "model": "m", "bits": student.bits, "quant_mode": student.quant_mode, "seed": seed,
         "num_train_steps": 10 * len(accs), "batch_size": 64, "learning_rate": 1e-4, "max_train_examples": None,
         "kd_losses": ["logit"], "max_seq_length": 64}
  (d / "config.json").write_text(json.dumps({"kind": "glue", "run": cfg}))
  (d / "command.txt").write_text(f"python -m experiments.glue --bits={student.bits}\n# git abc")
  rows = [{"step": 10 * (i + 1), "split": "eval", "accuracy": a} for i, a in enumerate(accs)]
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  if finished:
    best = max(rows, key=lambda r: r["accuracy"])
    (d / "summary.json").write_text(json.dumps({
        "metric_name": "accuracy", "best": {"accuracy": best["accuracy"]}, "final": {"accuracy": accs[-1]},
        "best_step": best["step"], "step": rows[-1]["step"], "wall_time_s": 5.0, "examples_per_s": 100.0,
        "epochs": 1.0}))
  return str(d)


@pytest.fixture
def runs(tmp_path):
  mx, nv, int4 = format_zoo.STUDENTS[2], format_zoo.STUDENTS[3], format_zoo.STUDENTS[0]
  fake_run(tmp_path, "sst2", format_zoo.TEACHER, None, [88.0, 90.0])
  fake_run(tmp_path, "sst2", mx, 0, [85.0, 86.0])
  fake_run(tmp_path, "sst2", mx, 1, [87.0, 84.0])
  fake_run(tmp_path, "sst2", nv, 0, [89.0, 89.5])
  fake_run(tmp_path, "sst2", nv, 1, [89.0, 88.5], finished=False)  # stopped by a deadline after 2 evaluations
  (tmp_path / "sst2_w4a4_sym_s0").mkdir()  # never started: no config.json -> not collected
  fake_run(tmp_path, "sst2", int4, 1, [], finished=False)  # started, never evaluated
  return tmp_path


def test_records_and_summary(runs):
  recs = format_zoo.collect(str(runs))
  by_name = {r["name"]: r for r in recs}
  assert "sst2_w4a4_sym_s0" not in by_name
  assert by_name["sst2_w4a4_sym_s1"]["status"] == "missing"
  part = by_name["sst2_w4a4_nvfp4_sym_s1"]
  assert part["status"] == "partial" and part["best"] == {"accuracy": 89.0} and part["steps"] == 20
  s = format_zoo.summarize(recs)
  rows = {e["label"]: e for e in s["tasks"]["sst2"]["rows"]}
  assert rows["MXFP4"]["best"]["values"] == [86.0, 87.0] and rows["MXFP4"]["final"]["mean"] == 85.0
  assert rows["MXFP4"]["best"]["std"] == pytest.approx(np.std([86.0, 87.0], ddof=1))
  assert rows["MXFP4"]["gap_to_teacher"] == pytest.approx(86.5 - 90.0)
  assert rows["NVFP4"]["best"]["mean"] == pytest.approx(89.25) and rows["NVFP4"]["seeds"] == [0, 1]
  assert s["missing"] == ["sst2_w4a4_sym_s1"] and s["partial"] == ["sst2_w4a4_nvfp4_sym_s1 (step 20)"]
  assert s["tasks"]["sst2"]["verdict"].startswith("NVFP4 has the highest mean accuracy (89.25), 2.75 ahead of MXFP4")
  assert "more than the seed spread" in s["tasks"]["sst2"]["verdict"]


def test_write_results_and_from_runs_cli(runs, tmp_path):
  recs = format_zoo.collect(str(runs))
  paths = format_zoo.write_results(recs, str(tmp_path / "out" / "formats"), {"commit": "abc", "gpu": "H200"})
  md = open(paths[1]).read()
  assert "| MXFP4 | mxfp4 e2m1, e8m0 scale per 32 along K |" in md and "86.50 ± 0.71 (n=2) | -3.50 |" in md
  assert "Partial runs" in md and os.path.getsize(paths[2]) > 1000
  assert json.load(open(paths[0]))["summary"]["tasks"]["sst2"]["metric"] == "accuracy"
  runs_json = tmp_path / "runs.json"
  runs_json.write_text(json.dumps({"meta": {"commit": "abc"}, "runs": recs}))
  out = subprocess.run([sys.executable, "-m", "experiments.formats", f"--from_runs={runs_json}",
                        f"--results={tmp_path / 'cli' / 'formats'}"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert (tmp_path / "cli" / "formats.md").read_text() == md.replace("- gpu: H200\n", "")


def test_bad_flags_fail_before_any_run(tmp_path):
  for flag, message in (("--formats=w4a4_mxfp4:asym", "quant_mode=asym"), ("--formats=w3a3", "not a quantized"),
                        ("--seeds=a", "must be integers")):
    out = subprocess.run([sys.executable, "-m", "experiments.formats", flag, f"--workdir={tmp_path}/w"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and message in out.stderr, (flag, out.stderr[-1000:])
    assert not os.path.exists(tmp_path / "w")
