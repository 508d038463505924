"""GLUE pipeline end to end on the synthetic task: CLI, teacher -> W4A4 student, eval reload, resume, bad input."""

import json
import os
import subprocess
import sys

import pytest

from int4jax.tasks import glue as glue_task

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = dict(max_train_examples=256, eval_every_steps=8, log_every_steps=4, batch_size=16)
# The synthetic task's majority class covers about half of the validation split; a teacher that learned the task
# is well above it (the embedded default reaches ~95%). 48 steps at lr 3e-3 get bert_tiny there on the CPU.
TEACHER_STEPS, TEACHER_LR, CHANCE = 48, 3e-3, 55.0


def quick_run(workdir, bits="fp32", teacher=None, steps=16, stop_after=None, **kw):
  cfg = glue_task.resolve_config("synthetic", "bert_tiny", bits, teacher=teacher, num_train_steps=steps,
                                 **{**QUICK, **kw})
  return glue_task.run(glue_task.build_experiment(cfg), str(workdir), argv=["test"], max_steps_this_run=stop_after)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("teacher")
  result = quick_run(d, steps=TEACHER_STEPS, learning_rate=TEACHER_LR)
  assert result["best"]["accuracy"] > CHANCE + 10, result["best"]   # it learned the task (not chance level)
  return str(d)


def test_teacher_then_w4a4_student_and_exact_eval_reload(teacher_dir, tmp_path):
  result = quick_run(tmp_path, "w4a4", teacher=teacher_dir, steps=8)
  assert result["task"] == "synthetic" and result["bits"] == "w4a4"
  # The student starts from the teacher: distilled for 8 steps it stays above chance (a broken quantizer, a lost
  # scale or a student that ignored its teacher's weights would drop it there).
  assert result["best"]["accuracy"] > CHANCE + 10, result["best"]
  for name in ("config.json", "command.txt", "metrics.jsonl", "policy.json", "summary.json"):
    assert (tmp_path / name).exists(), name
  assert json.loads((tmp_path / "policy.json").read_text())["name"] == "w4a4_sym"
  metrics, meta = glue_task.evaluate_run(str(tmp_path))
  assert metrics == meta["metrics"] == result["best"]           # bit-exact reproduction of the logged metric
  assert meta["task"] == "synthetic" and meta["teacher"] == teacher_dir


def test_student_resume_after_kill_matches_uninterrupted(teacher_dir, tmp_path):
  full = quick_run(tmp_path / "full", "w4a4", teacher=teacher_dir, steps=12, quant_mode="asym")
  cut = quick_run(tmp_path / "cut", "w4a4", teacher=teacher_dir, steps=12, quant_mode="asym", stop_after=5)
  assert cut == {"interrupted": True, "step": 5}
  resumed = quick_run(tmp_path / "cut", "w4a4", teacher=teacher_dir, steps=12, quant_mode="asym")
  assert resumed["best"] == full["best"] and resumed["final"] == full["final"]
  rows = lambda d: [l for l in open(d / "metrics.jsonl") if '"eval"' in l]
  assert rows(tmp_path / "full") == rows(tmp_path / "cut")


def test_bad_input_fails_before_training(teacher_dir, tmp_path):
  with pytest.raises(ValueError, match="needs --teacher"):
    glue_task.resolve_config("synthetic", "bert_tiny", "w4a4")
  with pytest.raises(ValueError, match="unknown GLUE task"):
    glue_task.resolve_config("squad", "bert_tiny", "fp32")
  with pytest.raises(ValueError, match="neither a preset"):
    glue_task.resolve_config("sst2", "bert_huge", "fp32")
  with pytest.raises(ValueError, match="--bits"):
    glue_task.resolve_config("sst2", "bert_tiny", "w3a3")
  with pytest.raises(ValueError, match="KD loss terms"):
    glue_task.resolve_config("synthetic", "bert_tiny", "w4a4", teacher=teacher_dir, kd_losses=("logits",))
  # A teacher from another task is refused from its checkpoint metadata, before any data is read.
  cfg = glue_task.resolve_config("sst2", "bert_tiny", "w4a4", teacher=teacher_dir, data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="trained on task 'synthetic'"):
    glue_task.build_experiment(cfg)
  cfg = glue_task.resolve_config("synthetic", "bert_tiny", "w4a4", teacher=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    glue_task.build_experiment(cfg)
  cfg = glue_task.resolve_config("sst2", "bert_tiny", "fp32", data_dir=str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="missing"):
    glue_task.build_experiment(cfg)
  (tmp_path / "train.tsv").write_text("sentence\tlabel\n")
  cfg = glue_task.resolve_config("sst2", "bert_tiny", "fp32", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="no examples"):
    glue_task.build_experiment(cfg)


def test_label_count_must_match_the_checkpoint_head(tmp_path):
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("torch")
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64, num_labels=3,
                                   architectures=["BertForSequenceClassification"])
  transformers.BertForSequenceClassification(config).save_pretrained(str(tmp_path / "ckpt"))
  data = tmp_path / "data"
  data.mkdir()
  (data / "train.tsv").write_text("sentence\tlabel\n" + "a\t1\n" * 4)
  (data / "dev.tsv").write_text("sentence\tlabel\na\t1\n")
  cfg = glue_task.resolve_config("sst2", str(tmp_path / "ckpt"), "fp32", data_dir=str(data), batch_size=2,
                                 tokenizer="bert-base-uncased")
  with pytest.raises(ValueError, match="classifier"):
    glue_task.build_experiment(cfg)


def _cli(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  return out.stdout


def test_cli_design_card_command_trains_then_reuses_its_teacher_and_eval(tmp_path):
  """`python -m experiments.glue --bits=w4a4` without --teacher trains its FP32 teacher in <workdir>/teacher and says
  so; the same command again reuses it and resumes the finished student; eval reloads best/ exactly and on another
  split; a different flag in the same workdir is refused naming the key."""
  args = ("experiments.glue", "--task=synthetic", "--model=bert_tiny", "--bits=w4a4", "--num_train_steps=8",
          "--max_train_examples=128", "--batch_size=16", "--eval_every_steps=8", f"--workdir={tmp_path}")
  out = _cli(*args)
  assert f"no --teacher given, training one in {tmp_path / 'teacher'}" in out
  assert "FP32 teacher accuracy" in out and "W4A4 sym student" in out and out.count("summary:") == 2
  out = _cli(*args)
  assert "reusing the finished run" in out and "resuming from step 8" in out
  out = _cli("experiments.eval", f"--workdir={tmp_path}")
  assert "identical" in out
  out = _cli("experiments.eval", f"--workdir={tmp_path}", "--split=test")
  assert "on test: accuracy=" in out
  out = _cli("experiments.eval", f"--workdir={tmp_path}", "--engine=int", "--engine_backend=xla", "--time_runs=2")
  assert "integer engine latency, one evaluation batch (" in out and "median of 2 calls (no device timer here" in out
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  bad = subprocess.run([sys.executable, "-m", "experiments.eval", f"--workdir={tmp_path}", "--time_runs=2"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "--time_runs times the integer engine: add --engine=int" in bad.stderr
  config_before = (tmp_path / "config.json").read_text()
  refused = subprocess.run([sys.executable, "-m", *args[:-1], "--learning_rate=0.01", f"--workdir={tmp_path}",
                            "--teacher=" + str(tmp_path / "teacher")], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
  assert refused.returncode != 0 and "run.learning_rate: 0.0005 -> 0.01" in refused.stderr, refused.stderr[-2000:]
  assert (tmp_path / "config.json").read_text() == config_before


def test_cli_flag_errors_are_one_line_usage_errors(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  for name in ("train.tsv", "dev.tsv"):   # a valid SST-2 folder: the vocabulary check is what must fail
    (tmp_path / name).write_text("sentence\tlabel\na fine film\t1\n")
  cases = [(["--teacher=x"], "--teacher needs --bits"),
           (["--max_steps_this_run=3"], "--max_steps_this_run needs a single stage"),
           (["--prepare_only"], "--prepare_only needs --bits and --teacher"),
           (["--bits=fp32", "--coordinator_address=node0:1234", "--num_processes=2", "--process_id=2"],
            "--process_id=2 must be in [0, --num_processes=2)"),
           (["--bits=fp32", "--max_seq_length=4096"], "larger than model 'bert_tiny'"),
           (["--bits=fp32", "--clip=3,1"], "lo must be below hi"),
           (["--bits=fp32", "--task=sst2", "--data_dir=" + str(tmp_path)], "embeds only 1000")]
  for args, message in cases:
    out = subprocess.run([sys.executable, "-m", "experiments.glue", *args, f"--workdir={tmp_path / 'run'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and message in out.stderr, (args, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, (args, out.stderr[-2000:])
    assert not (tmp_path / "run").exists(), args   # nothing written before the error
