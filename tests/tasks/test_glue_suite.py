"""The GLUE suite: task discovery, seeds, the run plan, budgets, and the Table C.5 report from run directories."""

import json
import os

import numpy as np
import pytest

from int4jax import metrics
from int4jax.tasks import glue as glue_task
from int4jax.tasks import glue_suite

SEED = 7


def test_seeds_and_bad_input(tmp_path):
  assert glue_suite.parse_seeds("1,2,3") == (1, 2, 3) and glue_suite.parse_seeds(["4"]) == (4,)
  with pytest.raises(ValueError, match=r"repeats \[2\]"):
    glue_suite.parse_seeds("1,2,2")
  with pytest.raises(ValueError, match="integers"):
    glue_suite.parse_seeds("1,x")
  with pytest.raises(ValueError, match="holds no GLUE task"):
    glue_suite.find_tasks(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="not a directory"):
    glue_suite.find_tasks(str(tmp_path / "missing"))


def _glue_dir(root, name, dev="dev.tsv"):
  d = root / name
  d.mkdir(parents=True)
  (d / "train.tsv").write_text("sentence\tlabel\n")
  (d / dev).write_text("sentence\tlabel\n")


def test_plan_covers_tasks_modes_grid_and_seeds(tmp_path):
  _glue_dir(tmp_path, "MRPC")
  _glue_dir(tmp_path, "SST-2")
  _glue_dir(tmp_path, "MNLI", dev="dev.tsv")   # MNLI needs dev_matched + dev_mismatched: not found
  assert sorted(glue_suite.find_tasks(str(tmp_path))) == ["mrpc", "sst2"]
  cfg = glue_suite.SuiteConfig(model="bert_tiny", data_root=str(tmp_path), runs_root=str(tmp_path / "runs"),
                               quant_modes=("sym", "asym"), seeds=(1, 2, 3))
  runs = glue_suite.plan(cfg)
  teachers = [r for r in runs if r.kind == "teacher"]
  students = [r for r in runs if r.kind == "student"]
  assert len(teachers) == 2 and len(students) == 2 * 2 * len(glue_task.lr_grid("bert_tiny")) * 3
  assert len({r.workdir for r in runs}) == len(runs)
  s = next(r for r in students if r.task == "mrpc")
  assert "--budget=A" in s.argv and "--augment=20" in s.argv and s.teacher.endswith(os.path.join("mrpc", "fp32"))
  assert glue_task.lr_grid("bert_large") == (1e-5, 5e-5, 1e-4)
  # Seeds of one configuration share compiled programs: one leader each starts first, the others follow it.
  order = glue_suite._leaders_first(students)
  leaders = [r for r, lead in order if lead is None]
  assert len(leaders) == len(students) // 3 and order[:len(leaders)] == [(r, None) for r in leaders]
  assert all(lead is not None and glue_suite._shape_key(r) == glue_suite._shape_key(lead) and r is not lead
             for r, lead in order[len(leaders):])
  with pytest.raises(ValueError, match=r"asks for \['rte'\], not found"):
    glue_suite.find_tasks(str(tmp_path), only=["rte", "mrpc"])


def test_budgets_and_augment_validation(tmp_path):
  for task, epochs in (("mrpc", (1, 3, 12)), ("mnli", (3, 9, 18)), ("qnli", (1, 3, 6))):
    for budget, e in zip("ABC", epochs):
      cfg = glue_task.resolve_config(task, "bert_tiny", "w4a4", teacher="t", budget=budget.lower())
      assert cfg.num_epochs == e and cfg.budget == budget
  with pytest.raises(ValueError, match="either --budget"):
    glue_task.resolve_config("mrpc", "bert_tiny", "w4a4", teacher="t", budget="A", num_epochs=2)
  with pytest.raises(ValueError, match="no budget"):
    glue_task.resolve_config("wnli", "bert_tiny", "w4a4", teacher="t", budget="A")
  with pytest.raises(ValueError, match="teacher takes"):
    glue_task.resolve_config("mrpc", "bert_tiny", "fp32", budget="A")
  with pytest.raises(ValueError, match="no ground truth"):
    glue_task.resolve_config("mrpc", "bert_tiny", "w4a4", teacher="t", augment=2, kd_losses=("logit", "gt"))
  with pytest.raises(ValueError, match="quantized students"):
    glue_task.resolve_config("mrpc", "bert_tiny", "fp32", augment=2)


PAPER_FP32 = glue_suite.PAPER_C5["BERT-base FP32 (paper)"]


def _fake_run(root, name, task, bits, lr, seed, best, partial=False):
  d = root / name
  d.mkdir(parents=True)
  glue = dict(task=task, bits=bits, quant_mode="sym", learning_rate=lr, seed=seed, augment=0, budget="A",
              batch_size=64)
  (d / "config.json").write_text(json.dumps({"kind": "glue", "run": glue, "train": {"num_train_steps": 100}}))
  primary = metrics.primary_metric(task)
  rows = [{"step": 50, "split": "eval", **{k: v - 1 for k, v in best.items()}},
          {"step": 100, "split": "eval", **best, f"best_{primary}": best[primary]}]
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  if not partial:
    (d / "summary.json").write_text(json.dumps({"best": best, "final": best, "step": 100, "wall_time_s": 10.0,
                                                "epochs": 1.0, "first_step_s": 2.0}))


def test_collect_averages_seeds_selects_lr_and_reproduces_the_paper_average(tmp_path):
  rng = np.random.default_rng(SEED)
  for task, scores in PAPER_FP32.items():   # the paper's teacher row as our teachers: Avg must be 83.95
    _fake_run(tmp_path, f"{task}/fp32", task, "fp32", 5e-5, 42, scores)
  draws = {}
  for lr, shift in ((1e-4, -1.0), (2e-5, 0.5)):
    for seed in (1, 2, 3):
      acc = 86.3 + shift + rng.normal()
      draws.setdefault(lr, []).append(acc)
      _fake_run(tmp_path, f"mrpc/s_lr{lr}/seed{seed}", "mrpc", "w4a4", lr, seed, {"f1": 90.0, "accuracy": acc},
                partial=(lr == 2e-5 and seed == 3))
  report = glue_suite.collect(str(tmp_path))
  assert report["averages"]["FP32 teacher"]["avg"] == pytest.approx(83.95, abs=0.01)
  assert report["averages"]["FP32 teacher"]["avg_wo_cola"] == pytest.approx(86.98, abs=0.01)
  label = next(l for l in report["selected"] if l != "FP32 teacher")
  chosen = report["selected"][label]["mrpc"]
  best_lr = max(draws, key=lambda lr: np.mean(draws[lr]))
  assert chosen["learning_rate"] == best_lr and chosen["seeds"] == [1, 2, 3]
  assert chosen["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(draws[best_lr]), abs=1e-9)
  assert chosen["metrics"]["accuracy"]["std"] == pytest.approx(np.std(draws[best_lr], ddof=1), abs=1e-9)
  assert any(e["partial"] for e in report["grid"])           # the run without summary.json counts as partial
  gap = {(t["task"], t["metric"]): t for t in report["targets"]}
  assert gap[("mrpc", "accuracy")]["gap"] == pytest.approx(np.mean(draws[best_lr]) - 86.3, abs=1e-9)
  md = glue_suite.markdown(report)
  assert "BERT-base W4A4 best (paper)" in md and "83.95" in md and "± " in md
  if not gap[("mrpc", "accuracy")]["met"]:
    assert "Eval curves behind the missed targets" in md


def test_write_report_adds_the_curve_plot_and_links_it(tmp_path):
  _fake_run(tmp_path / "runs", "mrpc/fp32", "mrpc", "fp32", 5e-5, 42, {"f1": 88.0, "accuracy": 84.0})
  _fake_run(tmp_path / "runs", "mrpc/s/seed1", "mrpc", "w4a4", 1e-4, 1, {"f1": 87.0, "accuracy": 83.0})
  report = glue_suite.collect(str(tmp_path / "runs"))
  md, _ = glue_suite.write_report(report, str(tmp_path / "out" / "glue"))
  png = tmp_path / "out" / "glue_curves.png"
  assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
  assert "![dev accuracy curves](glue_curves.png)" in open(md).read()
