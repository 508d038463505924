"""results/scripts/collect_lm_smollm2.py: runs merged from several device calls (an earlier collection counts through
its "runs"), flags read back from a run's command, and the caveat on an undertrained scratch teacher."""
import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "collect_lm_smollm2", os.path.join(REPO, "results", "scripts", "collect_lm_smollm2.py"))
collector = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collector)


def _run(steps, budget=120, commit="abc"):
  return {"steps_run": steps, "best_step": steps, "git_commit": commit,
          "command": f"experiments/lm.py --num_train_steps=300 --time_budget_s={budget} --workdir=/tmp/x"}


def test_runs_merge_left_to_right_and_read_an_earlier_collection(tmp_path):
  earlier = tmp_path / "lm_smollm2.json"
  earlier.write_text(json.dumps({"rows": [], "runs": {"fp": _run(300, 100, "old"), "scratch_fp": _run(1)}}))
  call = tmp_path / "runs.json"
  call.write_text(json.dumps({"scratch_fp": _run(50, commit="new"), "scratch_w4a4": _run(300, commit="new")}))
  runs = collector.load_runs(f"{earlier},{call}")
  assert sorted(runs) == ["fp", "scratch_fp", "scratch_w4a4"]
  assert runs["fp"]["git_commit"] == "old" and runs["scratch_fp"]["steps_run"] == 50  # the later call wins
  assert collector._flag(runs["fp"], "time_budget_s") == "100" and collector._flag(runs["fp"], "seed") == "?"


def test_an_undertrained_scratch_teacher_is_named_next_to_the_verdict():
  assert "ran only 50 of the pretrained teacher's 300 steps" in collector._undertrained(
      {"fp": _run(300), "scratch_fp": _run(50)})
  assert collector._undertrained({"fp": _run(300), "scratch_fp": _run(200)}) == ""
  assert collector._undertrained({"fp": _run(300)}) == ""
