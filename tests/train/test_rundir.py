"""The run directory protects its runs (train/rundir.py + the loop's use of it), on the toy task of test_loop:
different config refused naming the keys, --overwrite lists what it removes, corrupt latest/ falls back, no stale
metrics rows, strict JSON, a NaN loss stops the run before any checkpoint is written from it."""

import glob
import json
import math
import os

import numpy as np
import pytest

from int4jax.data import ArrayBatchSource, eval_batches
from int4jax.train import checkpoint
from int4jax.train import loop as train
from int4jax.train import rundir

import test_loop as toy  # noqa: E402  tests/train/test_loop.py: toy task, data and a run() helper


def test_same_config_resumes_different_config_is_refused_naming_keys(tmp_path):
  toy.run(tmp_path, num_steps=8)
  config_before = (tmp_path / "config.json").read_text()
  command_before = (tmp_path / "command.txt").read_text()
  with pytest.raises(rundir.RunConfigMismatch) as e:
    toy.run(tmp_path, num_steps=8, seed=7)
  assert "train.seed: 42 -> 7" in str(e.value) and "--overwrite" in str(e.value)
  # Nothing was written by the refused run.
  assert (tmp_path / "config.json").read_text() == config_before
  assert (tmp_path / "command.txt").read_text() == command_before
  again = toy.run(tmp_path, num_steps=8)                  # the same command resumes (here: finds it finished)
  assert again["best"] is not None and (tmp_path / "command.txt").read_text().count("toy") == 2


def test_overwrite_says_what_it_removes(tmp_path):
  toy.run(tmp_path, num_steps=4)
  printed = []
  resuming = rundir.RunDir(str(tmp_path)).prepare({"train": {}}, overwrite=True, keep=("teacher",),
                                                  log=printed.append)
  assert not resuming and len(printed) == 1
  assert "--overwrite: removing" in printed[0] and "checkpoints" in printed[0] and "config.json" in printed[0]
  assert os.listdir(tmp_path) == []


def test_config_differences_ignore_runtime_keys():
  old = {"run": {"lr": 1.0, "max_steps_this_run": 3, "clip": [-1, 1]}}
  new = {"run": {"lr": 2.0, "max_steps_this_run": 9, "clip": (-1, 1)}}
  assert rundir.config_differences(old, new, runtime_keys=("max_steps_this_run",)) == ["run.lr: 1.0 -> 2.0"]


def test_fresh_restart_leaves_no_stale_metrics_rows(tmp_path):
  rd = rundir.RunDir(str(tmp_path))
  tmp_path.mkdir(exist_ok=True)
  # A run killed before its first checkpoint: rows on disk, no latest/.
  rd.append_metrics({"step": 2, "split": "train", "loss": 9.0})
  rd.append_metrics({"step": 4, "split": "train", "loss": float("nan")})
  toy.run(tmp_path, num_steps=4)
  rows = rd.read_metrics()
  assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4]
  assert all(r.get("loss") != 9.0 for r in rows)          # the stale rows are gone
  for line in open(tmp_path / "metrics.jsonl"):            # strict JSON on every line
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in metrics.jsonl"))


def test_strict_json_writes_nan_as_null(tmp_path):
  rd = rundir.RunDir(str(tmp_path))
  rd.append_metrics({"step": 1, "x": float("nan"), "y": [float("inf"), 1.0]})
  assert rd.read_metrics() == [{"step": 1, "x": None, "y": [None, 1.0]}]


def _corrupt(step_dir):
  """Truncates every data file of a saved step to half its size (a disk that filled up mid-write)."""
  files = [f for f in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)
           if os.path.isfile(f) and os.path.getsize(f) > 16 and "metadata" not in os.path.basename(f)]
  assert files, step_dir
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)


def test_corrupt_latest_falls_back_to_the_previous_checkpoint(tmp_path, capsys):
  full = toy.run(tmp_path / "full", num_steps=12, checkpoint_every_steps=2)
  cut = toy.run(tmp_path / "cut", num_steps=12, checkpoint_every_steps=2, max_steps_this_run=6)
  assert cut == {"interrupted": True, "step": 6}
  latest = tmp_path / "cut" / "checkpoints" / "latest"
  assert checkpoint.all_steps(str(latest)) == [4, 6]      # two kept
  _corrupt(str(latest / "6"))
  capsys.readouterr()
  resumed = toy.run(tmp_path / "cut", num_steps=12, checkpoint_every_steps=2)
  out = capsys.readouterr().out
  lines = [l for l in out.splitlines() if "unreadable" in l]
  assert len(lines) == 1 and str(latest / "6") in lines[0] and "falling back" in lines[0], out
  assert "resuming from step 4" in out
  assert os.path.isdir(tmp_path / "cut" / "checkpoints" / "corrupt" / "latest_6")   # set aside, not deleted
  assert resumed["best"] == full["best"] and resumed["final"] == full["final"]     # nothing else lost


class NaNAtStep:
  """The toy data with NaN inputs from global step `bad_step` on."""
  def __init__(self, bad_step):
    self.source = ArrayBatchSource(toy.toy_data(128, 0), 16, seed=3)
    self.num_examples, self.bad_step = self.source.num_examples, bad_step

  def batch_at(self, step):
    batch = dict(self.source.batch_at(step))
    if step + 1 >= self.bad_step:
      batch["x"] = np.full_like(batch["x"], np.nan)
    return batch


def test_nan_loss_stops_the_run_before_any_checkpoint_from_it(tmp_path):
  config = train.TrainConfig(num_train_steps=12, batch_size=16, learning_rate=0.1, warmup_steps=2,
                             eval_every_steps=4, log_every_steps=4)
  dev = toy.toy_data(40, 1)
  with pytest.raises(train.NonFiniteLoss, match=r"training loss is nan at step 6"):
    train.train_and_evaluate(toy.ToyTask(), toy.toy_params(), None, NaNAtStep(6), lambda: eval_batches(dev, 16),
                             config, str(tmp_path), {"argv": ["toy"]})
  # Only the step-4 checkpoints exist: nothing was evaluated or saved from the NaN steps.
  assert checkpoint.all_steps(str(tmp_path / "checkpoints" / "best")) == [4]
  assert checkpoint.all_steps(str(tmp_path / "checkpoints" / "latest")) == [4]
  assert not (tmp_path / "summary.json").exists()
  assert all(math.isfinite(r["loss"]) for r in rundir.RunDir(str(tmp_path)).read_metrics() if r["split"] == "train")
