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


# ------------------------------------------------------------------------------------------------- decoder LMs

def fake_lm_run(root, setting, student, seed, valid, test=None, steps=10, planned=10):
  """A run directory like experiments.lm's: config.json, command.txt, metrics.jsonl (one validation per entry of
  `valid`), results.json when `test` is given (the float32 re-evaluation of the best checkpoint)."""
  d = root / format_zoo.run_name(setting, student, seed)
  d.mkdir()
  run = {"model": "gpt2_base", "dataset": "ptb", "bits": student.bits, "quant_mode": student.quant_mode,
         "seed": seed or 1, "num_train_steps": planned, "batch_size": 8, "learning_rate": 1e-4, "block_size": 512,
         "weight_clip": [-1.0, 1.0], "dropout": 0.05, "compute_dtype": "bfloat16", "teacher": None}
  (d / "config.json").write_text(json.dumps({
      "kind": "lm", "run": run, "kd_losses": ["gt"] if student == format_zoo.TEACHER else ["gt", "logit"],
      "model_config": {"model_type": "gpt2", "n_layer": 6, "n_embd": 512}}))
  (d / "command.txt").write_text(f"python -m experiments.lm --bits={student.bits}\n# git abc")
  rows = [{"step": steps * (i + 1) // len(valid), "split": "eval", "perplexity": v} for i, v in enumerate(valid)]
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  if test is not None:
    best = min(rows, key=lambda r: r["perplexity"])
    (d / "results.json").write_text(json.dumps({
        "valid": {"perplexity": best["perplexity"] - 0.01}, "test": {"perplexity": test},
        "best_step": best["step"], "steps_run": steps, "stopped_by_time_budget": steps < planned,
        "train_wall_time_s": 50.0, "wall_time_s": 60.0, "policy": student.bits}))


def lm_root(root, setting, shift=0.0):
  """One LM setting: teacher; INT4 sym (2 seeds); MXFP4 and NVFP4 (2 seeds, NVFP4 seed 2 cut by the budget);
  ternary seed 1 killed before its re-evaluation (partial); INT4 asym seed 1 started, never evaluated."""
  z = format_zoo
  root.mkdir()
  int4, asym, mx, nv, tern = z.STUDENTS
  fake_lm_run(root, setting, z.TEACHER, None, [60.0, 50.0], 45.0 + shift)
  fake_lm_run(root, setting, int4, 1, [52.0], 47.0 + shift)
  fake_lm_run(root, setting, int4, 2, [52.0], 47.2 + shift)
  fake_lm_run(root, setting, mx, 1, [53.0], 48.0 + shift)
  fake_lm_run(root, setting, mx, 2, [53.0], 48.2 + shift)
  fake_lm_run(root, setting, nv, 1, [51.0], 46.0 + shift)
  fake_lm_run(root, setting, nv, 2, [51.0], 46.1 + shift, steps=8)
  fake_lm_run(root, setting, tern, 1, [70.0, 65.0])
  fake_lm_run(root, setting, asym, 1, [])
  return str(root)


def test_lm_records_and_summary(tmp_path):
  recs = format_zoo.collect_lm(lm_root(tmp_path / "lm", "ptb_gpt2"), "ptb_gpt2", format_zoo.STUDENTS, [1, 2])
  by_name = {r["name"]: r for r in recs}
  assert by_name["ptb_gpt2_fp32"]["status"] == "ok" and by_name["ptb_gpt2_fp32"]["model_label"] == "GPT-2 6x512"
  tern = by_name["ptb_gpt2_w1.58a8_sym_s1"]
  assert tern["status"] == "partial" and tern["valid_ppl"] == 65.0 and tern["test_ppl"] is None
  assert by_name["ptb_gpt2_w4a4_asym_s1"]["status"] == "missing"       # started, never evaluated
  assert by_name["ptb_gpt2_w4a4_asym_s2"]["reason"].startswith("no run directory")
  s = format_zoo.summarize_lm(recs)
  assert s["missing"] == ["ptb_gpt2_w4a4_asym_s1", "ptb_gpt2_w4a4_asym_s2", "ptb_gpt2_w1.58a8_sym_s2"]
  assert s["partial"] == ["ptb_gpt2_w1.58a8_sym_s1 (step 10)"]
  rows = {e["label"]: e for e in s["settings"]["ptb_gpt2"]["rows"]}
  assert rows["NVFP4"]["test"]["values"] == [46.0, 46.1] and rows["NVFP4"]["steps"] == [8, 10]
  assert rows["NVFP4"]["stopped_by_time_budget"] and not rows["MXFP4"]["stopped_by_time_budget"]
  assert rows["MXFP4"]["gap_to_teacher"]["test"] == pytest.approx(48.1 - 45.0)
  assert rows["ternary W + INT8 A"]["test"]["n"] == 0 and rows["ternary W + INT8 A"]["valid"]["mean"] == 65.0
  assert s["settings"]["ptb_gpt2"]["verdict"].startswith(
      "NVFP4 has the lowest mean test perplexity (46.05), 1.05 ahead of INT4 sym, more than the seed spread")
  assert "GPT-2 6x512 from scratch on ptb" in format_zoo.lm_setup(recs)
  assert s["settings"]["ptb_gpt2"]["unequal_planned_steps"] is None
  recs[1] = dict(recs[1], num_train_steps=300)  # a run of another driver setting collected with the others
  assert format_zoo.summarize_lm(recs)["settings"]["ptb_gpt2"]["unequal_planned_steps"] == [10, 300]


def test_claims_are_computed_from_the_numbers(tmp_path):
  """The NVFP4-vs-MXFP4 and ternary statements follow the numbers: flipping the LM ranking flips the LM clause."""
  glue = format_zoo.summarize(format_zoo.collect(str(_glue_runs(tmp_path / "glue"))))
  lm = format_zoo.summarize_lm(format_zoo.collect_lm(lm_root(tmp_path / "lm", "ptb_gpt2"), "ptb_gpt2",
                                                     format_zoo.STUDENTS, [1, 2]))
  nv, tern = format_zoo.claims_vs_numbers(glue, lm)
  assert "Egiazarian" in nv and "sst2 ahead by 2.75 accuracy" in nv and "ptb_gpt2 ahead by 2.05 test perplexity" in nv
  assert "consistent with the claim (NVFP4 ahead in 2 of 2 settings)" in nv
  assert "BitNet b1.58" in tern and "sst2" not in tern and "stays behind" not in tern  # no GLUE ternary, no LM test
  for e in lm["settings"]["ptb_gpt2"]["rows"]:
    if e["label"] == "NVFP4":
      e["test"] = dict(e["test"], mean=50.0)
  nv, _ = format_zoo.claims_vs_numbers(glue, lm)
  assert "ptb_gpt2 behind by 1.90 test perplexity" in nv and "mixed (NVFP4 ahead in 1 of 2 settings" in nv


def _glue_runs(root):
  root.mkdir()
  mx, nv = format_zoo.STUDENTS[2], format_zoo.STUDENTS[3]
  fake_run(root, "sst2", format_zoo.TEACHER, None, [88.0, 90.0])
  for seed, (m, n) in enumerate([(86.0, 89.0), (87.0, 89.5)]):
    fake_run(root, "sst2", mx, seed, [m])
    fake_run(root, "sst2", nv, seed, [n])
  return root


def _formats_cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.formats", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120)


def test_lm_runs_update_results_in_place(tmp_path):
  """--lm_collect writes a setting's LM runs JSON; --lm_runs adds its rows to an existing results file (GLUE part
  read from it, its table unchanged); a second setting is added beside the first, and re-running replaces it."""
  prefix = str(tmp_path / "res" / "formats")
  format_zoo.write_results(format_zoo.collect(str(_glue_runs(tmp_path / "glue"))), prefix, {"commit": "abc"})
  glue_md = open(prefix + ".md").read()
  table = glue_md[glue_md.index("| format |"):glue_md.index("## Which format")]
  for setting, shift in (("ptb_gpt2", 0.0), ("ptb_smollm2", -20.0)):
    root = lm_root(tmp_path / setting, setting, shift)
    out = _formats_cli(f"--lm_collect={root}", f"--lm_setting={setting}", "--seeds=1,2",
                       f"--runs_json={tmp_path / setting}.json", "--gpu=H200")
    assert out.returncode == 0 and "7 of 11 runs finished" in out.stdout, out.stderr[-2000:]
  out = _formats_cli(f"--lm_runs={tmp_path / 'ptb_gpt2'}.json", f"--results={prefix}")
  assert out.returncode == 0, out.stderr[-2000:]
  md = open(prefix + ".md").read()
  assert md.startswith(glue_md[:glue_md.index("## Which format")]) and table in md
  assert "| ptb_gpt2 valid ppl | Δ teacher | test ppl | Δ teacher | steps |" in md
  assert "| NVFP4 | nvfp4 e2m1" in md and "| 50.99 ± 0.00 (n=2) | +1.00 | 46.05 ± 0.07 | +1.05 | 8/10* |" in md
  assert "- **ptb_gpt2** (GPT-2 6x512, ptb): NVFP4 has the lowest mean test perplexity (46.05)" in md
  assert "Partial LM runs" in md and "ptb_gpt2_w1.58a8_sym_s1 (step 10)" in md and "gpu: H200" in md
  data = json.load(open(prefix + ".json"))
  assert data["summary"]["tasks"]["sst2"]["metric"] == "accuracy" and list(data["lm"]["meta"]) == ["ptb_gpt2"]
  # A second setting joins the first; the first, collected again, replaces its old rows.
  out = _formats_cli(f"--lm_runs={tmp_path / 'ptb_smollm2'}.json,{tmp_path / 'ptb_gpt2'}.json", f"--results={prefix}")
  assert out.returncode == 0, out.stderr[-2000:]
  data = json.load(open(prefix + ".json"))
  assert set(data["lm"]["summary"]["settings"]) == {"ptb_smollm2", "ptb_gpt2"} and len(data["lm"]["runs"]) == 22
  assert "| ptb_smollm2 valid ppl |" in open(prefix + ".md").read()


def test_lm_input_errors(tmp_path):
  glue_json = tmp_path / "glue_runs.json"
  glue_json.write_text(json.dumps({"runs": [{"name": "sst2_fp32", "status": "missing"}]}))
  lm_json = tmp_path / "lm_runs.json"
  lm_json.write_text(json.dumps({"runs": [{"name": "ptb_gpt2_fp32", "setting": "ptb_gpt2", "status": "missing"}]}))
  for args, message in (([f"--lm_runs={glue_json}"], "not an LM runs JSON"),
                        ([f"--from_runs={lm_json}"], "pass it as --lm_runs"),
                        ([f"--lm_runs={tmp_path}/none.json"], "no such file"),
                        ([f"--lm_collect={tmp_path}"], "pass --runs_json"),
                        ([f"--lm_runs={lm_json}", f"--results={tmp_path}/r"], "nothing to tabulate")):
    out = _formats_cli(*args)
    assert out.returncode != 0 and message in out.stderr, (args, out.stderr[-1000:])
