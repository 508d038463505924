"""A real preemption: SIGKILL `python -m experiments.glue` mid-run, start the same command again, compare the result
with an uninterrupted run of the same command (issue 4: "resumes from the last checkpoint and ends with the same
metrics as an uninterrupted run").

tests/test_train.py and test_glue_cli.py stop a run cooperatively (max_steps_this_run saves latest/ and returns);
here nothing gets to clean up: the process dies between two checkpoints with metrics.jsonl rows already written
past the last checkpoint, possibly in the middle of an orbax save.

Equality is exact: XLA on CPU is deterministic run to run for the same program, inputs and thread count, and the
trajectory depends only on (config, data, initial params), so the resumed run must reproduce the uninterrupted
run's eval metrics, train losses and final params bit for bit (observed: max |diff| = 0 on every leaf).
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from int4jax.tasks import glue as glue_task
from int4jax.train import checkpoint
from int4jax.train import loop as train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, CKPT_EVERY, EVAL_EVERY = 40, 2, 4
KILL_AFTER_CKPT = 6     # kill once latest/ holds a step >= this and a train row past it has been logged
TIMEOUT_S = 300         # per process; a run takes ~20 s on a quiet 2-core machine


def command(workdir):
  return [sys.executable, "-m", "experiments.glue", "--task=synthetic", "--model=bert_tiny", "--bits=fp32",
          f"--num_train_steps={STEPS}", "--max_train_examples=256", "--batch_size=16",
          f"--eval_every_steps={EVAL_EVERY}", f"--checkpoint_every_steps={CKPT_EVERY}", "--log_every_steps=1",
          "--git_commit=test", f"--workdir={workdir}"]


def start(workdir, log_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  log = open(log_path, "w")  # a file, not a pipe: a pipe nobody reads could block the child
  return subprocess.Popen(command(workdir), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log


def finish(proc, log, log_path):
  try:
    proc.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  log.close()
  out = open(log_path).read()
  assert proc.returncode == 0, f"{' '.join(command('...'))} exited {proc.returncode}:\n{out[-4000:]}"
  return out


def finished_steps(ckpt_dir):
  """Steps of complete orbax checkpoints: orbax writes <step>.orbax-checkpoint-tmp-* and renames it to <step>.
  (Reading the directory, not opening a CheckpointManager, so the poll cannot touch the writer's files.)"""
  try:
    return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
  except FileNotFoundError:
    return []


def read_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def without_timing(rows):
  return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in rows]


def final_state(workdir):
  """(latest/ TrainState, best/ params) of a finished run, restored against a template built from its config."""
  exp = glue_task.build_experiment(glue_task.load_run_config(workdir))
  tx = train.make_optimizer(exp.train_config)
  template = train.TrainState(step=jnp.asarray(0, jnp.int32), params=exp.params, opt_state=tx.init(exp.params),
                              rng=jax.random.PRNGKey(exp.train_config.seed))
  latest, _ = checkpoint.restore(os.path.join(workdir, "checkpoints", "latest"), {"state": template})
  best, _ = checkpoint.restore(os.path.join(workdir, "checkpoints", "best"), {"params": exp.params})
  return jax.device_get(latest["state"]), jax.device_get(best["params"])


def test_sigkill_mid_run_then_same_command_resumes_to_identical_result(tmp_path):
  cut, full = tmp_path / "cut", tmp_path / "full"
  # The uninterrupted reference runs alongside the run we kill (results do not depend on timing).
  ref, ref_log = start(full, tmp_path / "full.log")
  proc, log = start(cut, tmp_path / "cut_1.log")

  # 1. Kill -9 once latest/ has a checkpoint at step >= KILL_AFTER_CKPT and some train rows lie beyond it.
  latest_dir = cut / "checkpoints" / "latest"
  deadline = time.time() + TIMEOUT_S
  ckpt_step = None
  while time.time() < deadline and proc.poll() is None:
    steps = finished_steps(latest_dir)
    if steps and steps[-1] >= KILL_AFTER_CKPT:
      try:
        logged = [r["step"] for r in read_rows(cut) if r["split"] == "train"]
      except (FileNotFoundError, json.JSONDecodeError):  # a row half written as we read
        logged = []
      if logged and logged[-1] > steps[-1]:
        proc.send_signal(signal.SIGKILL)
        ckpt_step = steps[-1]
        break
    time.sleep(0.01)
  if ckpt_step is None:
    proc.kill()
    ref.kill()
    raise AssertionError(f"could not kill mid-run: the run exited with {proc.poll()} (or {TIMEOUT_S}s passed) before "
                         f"latest/ reached step {KILL_AFTER_CKPT}; log:\n{open(tmp_path / 'cut_1.log').read()[-3000:]}")
  proc.wait(timeout=60)
  log.close()
  assert proc.returncode == -signal.SIGKILL
  assert not (cut / "summary.json").exists(), "the killed run must not have finished"
  # The checkpoint the restart will find (the process may have completed a later save before the signal landed).
  resume_from = finished_steps(latest_dir)[-1]
  assert KILL_AFTER_CKPT <= ckpt_step <= resume_from < STEPS
  killed_rows = read_rows(cut)
  assert max(r["step"] for r in killed_rows) > ckpt_step   # rows past the checkpoint exist and must be dropped

  # 2. The same command again, to completion.
  proc, log = start(cut, tmp_path / "cut_2.log")
  out = finish(proc, log, tmp_path / "cut_2.log")
  assert f"resuming from step {resume_from} " in out, out[-3000:]
  finish(ref, ref_log, tmp_path / "full.log")

  # 3. Same metrics as the uninterrupted run: every eval row, every train row's loss/grad norm/lr, the summary.
  rows_cut, rows_full = read_rows(cut), read_rows(full)
  assert without_timing(rows_cut) == without_timing(rows_full)     # also: no duplicated or missing step
  evals = [r for r in rows_cut if r["split"] == "eval"]
  assert [r["step"] for r in evals] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
  assert evals[-1] == [r for r in rows_full if r["split"] == "eval"][-1]
  sum_cut, sum_full = (json.loads((d / "summary.json").read_text()) for d in (cut, full))
  for key in ("final", "best", "best_step", "step", "metric_name"):
    assert sum_cut[key] == sum_full[key], key
  assert sum_cut["final"]["accuracy"] == evals[-1]["accuracy"]

  # 4. Nothing before the checkpoint was redone: the restart ran only the remaining steps, and the rows up to the
  #    checkpoint are the killed process's own lines (examples_per_s is a wall-clock measurement: a rerun of those
  #    steps would have rewritten it), while every row past it comes from the restart.
  assert sum_cut["steps_this_run"] == STEPS - resume_from and sum_full["steps_this_run"] == STEPS
  kept = [r for r in killed_rows if r["step"] <= resume_from]
  assert rows_cut[:len(kept)] == kept
  assert all(r["step"] > resume_from for r in rows_cut[len(kept):])

  # 5. Same final train state (params, Adam moments, step, rng) and best params, bit for bit.
  (state_cut, best_cut), (state_full, best_full) = final_state(str(cut)), final_state(str(full))
  assert int(state_cut.step) == int(state_full.step) == STEPS
  for name, a, b in (("latest state", state_cut, state_full), ("best params", best_cut, best_full)):
    diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64)
                                                                          - np.asarray(y, np.float64)), initial=0)),
                                         a, b))
    assert max(diffs) == 0.0, f"{name}: max |diff| {max(diffs)}"
