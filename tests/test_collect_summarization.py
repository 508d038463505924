"""results/scripts/collect_summarization.py on a synthetic runs folder: gpu.json's statuses (done, killed at the
deadline with the evaluations it logged, never started), the partial flag, and the table that marks a cut run."""
import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "collect_summarization", os.path.join(REPO, "results", "scripts", "collect_summarization.py"))
collector = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collector)


def _results(name, predictions, layers=(6, 6)):
  """The keys of tasks/summarization.py's results.json that the collector reads."""
  return {"policy": "fp32" if name == "fp32" else "w4a4_sym", "bits": "w4a4", "best_step": 40, "steps_run": 80,
          "stopped_by_time_budget": True, "train_wall_time_s": 50.0, "startup_s": 3.0, "num_params": 10,
          "git_commit": "abc", "device_kind": "cpu", "command": f"python -m experiments.summarize {name}",
          "model_config": {"encoder_layers": layers[0], "decoder_layers": layers[1], "d_model": 16,
                           "encoder_attention_heads": 2, "encoder_ffn_dim": 32},
          "decoder_layer_map": None, "predictions": predictions, "references": ["the council voted on a plan"] * 2,
          "generation": {"num_beams": 6, "length_penalty": 1.0, "max_length": 62, "min_length": 11,
                         "no_repeat_ngram_size": 3, "num_examples": 2},
          "valid": {"loss": 2.0, "perplexity": 7.39, "nll_sum_by_position": [4.0, 2.0, 1.0],
                    "num_tokens_by_position": [2.0, 2.0, 1.0]}}


def _runs_folder(root):
  def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(obj if isinstance(obj, str) else json.dumps(obj))
  write(os.path.join(root, "fp32", "results.json"), _results("fp32", ["the council voted on a plan"] * 2))
  write(os.path.join(root, "w4a4_sym", "results.json"), _results("w4a4_sym", ["the council met"] * 2))
  write(os.path.join(root, "w4a4_asym", "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in [
      {"step": 50, "split": "train", "loss": 3.0}, {"step": 50, "split": "eval", "loss": 2.5},
      {"step": 100, "split": "train", "loss": 2.8}, {"step": 100, "split": "eval", "loss": 2.6}]))
  write(os.path.join(root, "walls.txt"), "denoise rc=0 start=0s wall=118s\nfp32 rc=0 start=118s wall=70s\n"
        "w4a4_sym rc=0 start=177s wall=98s\nw4a4_asym rc=124 start=177s wall=138s\n"
        "w4a4_6+3 rc=1 start=177s wall=9s\nw4a4_6+1 skipped start=316s\nwarm/fp32 rc=0 start=0s wall=75s\n")
  write(os.path.join(root, "budgets.json"), {"pretrain_s": 100, "finetune_s": 50, "student_s": 75,
                                             "deadline_s": 315, "smoke": 0})
  write(os.path.join(root, "gpu.txt"), "NVIDIA H200\n")


def test_status_says_which_runs_were_cut(tmp_path):
  _runs_folder(str(tmp_path))
  status = collector.run_status(str(tmp_path))
  runs = status["runs"]
  assert status["partial"] and status["budgets"]["student_s"] == 75 and "H200" in status["gpu"]
  assert runs["fp32"]["status"] == "done" and runs["fp32"]["heldout_loss"] == 2.0 and runs["fp32"]["startup_s"] == 3
  assert runs["w4a4_asym"]["status"] == "killed at the deadline"
  assert (runs["w4a4_asym"]["best_heldout_loss"], runs["w4a4_asym"]["best_step"],
          runs["w4a4_asym"]["last_train_step"]) == (2.5, 50, 100)
  assert runs["w4a4_6+3"]["status"] == "failed (rc 1)" and runs["w4a4_6+1"]["status"] == "not started (deadline)"
  assert runs["denoise"]["status"] == "ended without results.json"
  assert list(status["warm_up"]) == ["warm/fp32"]


def test_table_marks_the_partial_runs(tmp_path):
  _runs_folder(str(tmp_path / "runs"))
  out = collector.collect(str(tmp_path / "runs"), str(tmp_path / "results"))
  assert out["partial"] and out["budgets_s"]["deadline_s"] == 315
  assert out["runs"]["fp32"]["rouge"]["rouge1"] == 100.0 and out["runs"]["fp32"]["rougeL_gap_to_teacher"] == 0.0
  assert out["runs"]["w4a4_sym"]["rougeL_gap_to_teacher"] < 0
  assert out["runs"]["w4a4_asym"] == {"status": "killed at the deadline", "rouge": None, "best_step": 50,
                                      "heldout_loss": 2.5, "steps_run": 100, "rougeL_gap_to_teacher": None}
  md = (tmp_path / "results" / "summarization_xsum.md").read_text()
  assert "**Partial run**" in md and "| w4a4_asym | killed at the deadline | - |" in md and "| 2.5000 | 100 (50) |" in md
  assert "pretraining 100, fine-tune 50, each of the 4 concurrent students 75; hard deadline 315 s" in md
  assert (tmp_path / "results" / "summarization_xsum_positional" / "positional_perplexity.png").is_file()


def test_claims_judge_the_rouge_l_gaps_against_one_point_and_the_layer_order():
  row = lambda gap: {"rougeL_gap_to_teacher": gap}
  verdicts = collector.claims({"fp32": row(0.0), "w4a4_sym": row(-0.99), "w4a4_asym": row(-1.01),
                               "w4a4_6+3": row(-0.5), "w4a4_6+1": row(-0.2)})
  assert verdicts["w4a4_sym within 1 ROUGE-L of its teacher"].startswith("**reproduces**: gap -0.99 (paper -0.67)")
  assert verdicts["w4a4_asym within 1 ROUGE-L of its teacher"].startswith("**contradicts**: gap -1.01")
  assert verdicts["fewer decoder layers cost more (Table 3: 6+1 below 6+3)"].startswith("**contradicts**: 6+3 -0.50")
  cut = collector.claims({"fp32": row(0.0), "w4a4_sym": row(None), "w4a4_6+3": row(-0.5)})
  assert cut["w4a4_sym within 1 ROUGE-L of its teacher"] == "not measured"
  assert cut["fewer decoder layers cost more (Table 3: 6+1 below 6+3)"] == "not measured"
