"""train.py on a toy task: smoke, run dir, resume-after-kill, no retrace, multi-device equality, optimizer."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from int4jax.train import checkpoint
from int4jax.train import loop as train
from int4jax.data import ArrayBatchSource, eval_batches

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ToyTask:
  """Linear softmax classifier with dropout on the input (so the rng path is exercised)."""
  metric_name = "accuracy"
  higher_is_better = True

  def loss_fn(self, params, teacher_params, batch, rng):
    keep = jax.random.bernoulli(rng, 0.9, batch["x"].shape)
    x = jnp.where(keep, batch["x"] / 0.9, 0.0)
    logits = x @ params["dense"]["kernel"] + params["dense"]["bias"]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    loss = -jnp.mean(jnp.take_along_axis(logp, batch["labels"][:, None], axis=-1))
    return loss, {"ce": loss}

  def eval_batch(self, params, batch):
    logits = batch["x"] @ params["dense"]["kernel"] + params["dense"]["bias"]
    correct = (jnp.argmax(logits, -1) == batch["labels"]) * batch["weight"]
    return {"correct": correct.sum(), "count": batch["weight"].sum()}

  def summarize(self, accumulated):
    return {"accuracy": 100 * sum(a["correct"] for a in accumulated) / sum(a["count"] for a in accumulated)}


def toy_data(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 8)).astype(np.float32)
  labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
  return {"x": x, "labels": labels}


def toy_params():
  k = jax.random.PRNGKey(0)
  return {"dense": {"kernel": 0.01 * jax.random.normal(k, (8, 2)), "bias": jnp.zeros((2,))}}


def run(workdir, num_steps=12, max_steps_this_run=None, **kw):
  config = train.TrainConfig(num_train_steps=num_steps, batch_size=16, learning_rate=0.1, warmup_steps=2,
                             eval_every_steps=4, log_every_steps=2, **kw)
  dev = toy_data(40, 1)
  return train.train_and_evaluate(
      ToyTask(), toy_params(), None, ArrayBatchSource(toy_data(128, 0), 16, seed=3),
      lambda: eval_batches(dev, 16), config, str(workdir), {"metadata": {"task": "toy"}, "argv": ["toy"]},
      max_steps_this_run=max_steps_this_run)


def read_params(workdir, which="best"):
  target = {"params": jax.eval_shape(toy_params)}
  restored, meta = checkpoint.restore(os.path.join(workdir, "checkpoints", which), target)
  return restored["params"], meta


def eval_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if '"eval"' in l]


def test_smoke_run_dir_and_learning(tmp_path):
  result = run(tmp_path)
  for name in ("config.json", "command.txt", "metrics.jsonl", "summary.json"):
    assert (tmp_path / name).exists(), name
  assert "git" in (tmp_path / "command.txt").read_text()
  assert result["best"]["accuracy"] > 80
  assert [r["step"] for r in eval_rows(tmp_path)] == [4, 8, 12]
  meta = checkpoint.read_metadata(str(tmp_path / "checkpoints" / "best"))
  assert meta["task"] == "toy" and meta["step"] == result["best_step"]


def test_resume_after_kill_matches_uninterrupted(tmp_path):
  full = run(tmp_path / "full")
  assert run(tmp_path / "cut", max_steps_this_run=6) == {"interrupted": True, "step": 6}
  resumed = run(tmp_path / "cut")
  assert resumed["final"] == full["final"] and resumed["best"] == full["best"]
  assert eval_rows(tmp_path / "full") == eval_rows(tmp_path / "cut")
  # The full train state at the end is identical, not just the metrics.
  target = {"state": jax.eval_shape(lambda: train.TrainState(
      step=jnp.int32(0), params=toy_params(), opt_state=train.make_optimizer(
          train.TrainConfig(12, 16, 0.1, 2)).init(toy_params()), rng=jax.random.PRNGKey(0)))}
  a, _ = checkpoint.restore(str(tmp_path / "full" / "checkpoints" / "latest"), target)
  b, _ = checkpoint.restore(str(tmp_path / "cut" / "checkpoints" / "latest"), target)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert int(b["state"].step) == 12


def test_resume_when_best_is_ahead_of_latest(tmp_path):
  # latest/ every 8 steps, evaluations every 4: a kill just before the step-16 latest/ save leaves best/ (saved at
  # an evaluation after step 8) ahead of latest/. Simulate that kill: keep a copy of latest/ at step 8, finish the
  # run, then put the step-8 latest/ back.
  full = run(tmp_path / "full", num_steps=16, checkpoint_every_steps=8)
  latest_dir = tmp_path / "cut" / "checkpoints" / "latest"
  run(tmp_path / "cut", num_steps=16, checkpoint_every_steps=8, max_steps_this_run=8)
  shutil.copytree(latest_dir, tmp_path / "latest_at_8")
  run(tmp_path / "cut", num_steps=16, checkpoint_every_steps=8)
  shutil.rmtree(latest_dir)
  shutil.copytree(tmp_path / "latest_at_8", latest_dir)
  assert checkpoint.latest_step(str(latest_dir)) == 8
  best_step = checkpoint.latest_step(str(tmp_path / "cut" / "checkpoints" / "best"))
  assert best_step > 8, f"precondition: the toy run must improve after step 8 (best at {best_step})"
  resumed = run(tmp_path / "cut", num_steps=16, checkpoint_every_steps=8)
  assert resumed["steps_this_run"] == 8
  # the running best in every re-done evaluation row is the uninterrupted run's, and so is the final best/
  assert eval_rows(tmp_path / "cut") == eval_rows(tmp_path / "full")
  assert resumed["best"] == full["best"] and resumed["best_step"] == full["best_step"]
  jax.tree.map(np.testing.assert_array_equal, read_params(tmp_path / "cut")[0], read_params(tmp_path / "full")[0])


def test_kill_between_checkpoints_truncates_metrics(tmp_path):
  # Stop at step 6 (checkpoint at 6) but pretend the process had logged beyond it before dying.
  run(tmp_path, max_steps_this_run=6)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": 8, "split": "eval", "accuracy": -1.0}) + "\n")
  run(tmp_path)
  assert all(r["accuracy"] >= 0 for r in eval_rows(tmp_path))
  assert [r["step"] for r in eval_rows(tmp_path)] == [4, 8, 12]


def test_no_retrace(tmp_path):
  before = dict(train.TRACE_COUNTS)
  run(tmp_path, num_steps=8)
  assert train.TRACE_COUNTS["train_step"] - before.get("train_step", 0) == 1
  assert train.TRACE_COUNTS["eval_step"] - before.get("eval_step", 0) == 1


def test_bfloat16_compute_keeps_fp32_master_weights(tmp_path):
  result = run(tmp_path, compute_dtype="bfloat16")
  params, _ = read_params(str(tmp_path))
  assert params["dense"]["kernel"].dtype == jnp.float32
  assert result["best"]["accuracy"] > 80


def test_optimizer_skips_decay_on_biases_and_clips():
  config = train.TrainConfig(num_train_steps=10, batch_size=4, learning_rate=1.0, warmup_steps=0,
                             weight_decay=0.5)
  tx = train.make_optimizer(config)
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,)), "ln": {"scale": jnp.ones((2,))}}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(jnp.abs(updates["kernel"]).max()) > 0          # decayed
  assert float(jnp.abs(updates["bias"]).max()) == 0            # not decayed
  assert float(jnp.abs(updates["ln"]["scale"]).max()) == 0
  sched = train.learning_rate_schedule(train.TrainConfig(10, 4, 1.0, warmup_steps=5))
  np.testing.assert_allclose([sched(0), sched(5), sched(10)], [0.0, 1.0, 0.0], atol=1e-6)
  clipped, _ = optax.clip_by_global_norm(1.0).update({"g": jnp.full((4,), 10.0)}, None)
  np.testing.assert_allclose(optax.global_norm(clipped), 1.0, rtol=1e-6)


def test_bad_config_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="warmup_steps"):
    run(tmp_path, num_steps=1)
  with pytest.raises(ValueError, match="compute_dtype"):
    run(tmp_path, compute_dtype="float16")


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    import jax
    import test_loop as t
    for workdir, stop in {runs!r}:
      result = t.run(workdir, num_steps=6, max_steps_this_run=stop)
      rows = [json.loads(l) for l in open(workdir + "/metrics.jsonl") if '"train"' in l]
      print("RESULT", json.dumps({{"devices": jax.device_count(), "loss": [r["loss"] for r in rows],
                                  "steps_this_run": result.get("steps_this_run"), "final": result.get("final")}}))
""")


def _run_with_devices(n, *runs):
  """Runs t.run(workdir, num_steps=6, max_steps_this_run=stop) for each (workdir, stop) in one process with n
  forced host devices; returns one RESULT dict per run."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
  script = _MULTI_DEVICE_SCRIPT.format(repo=REPO, tests=os.path.dirname(os.path.abspath(__file__)),
                                       runs=[(str(w), stop) for w, stop in runs])
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return [json.loads(l[len("RESULT "):]) for l in out.stdout.splitlines() if l.startswith("RESULT ")]


def test_two_devices_match_one_device(tmp_path):
  [one] = _run_with_devices(1, (tmp_path / "one", None))
  [two] = _run_with_devices(2, (tmp_path / "two", None))
  assert (one["devices"], two["devices"]) == (1, 2)
  np.testing.assert_allclose(one["loss"], two["loss"], atol=1e-5)
  assert one["final"] == pytest.approx(two["final"], abs=1e-5)


def test_checkpoints_resume_across_device_counts(tmp_path):
  """A run stopped at step 3 of 6 on 2 devices finishes on 1 device, and one stopped on 1 finishes on 2; both end
  on the uninterrupted 1-device trajectory (same tolerance as above: float reassociation only)."""
  [two_first] = _run_with_devices(2, (tmp_path / "two_first", 3))
  ref, two_then_one, one_first = _run_with_devices(1, (tmp_path / "ref", None), (tmp_path / "two_first", None),
                                                   (tmp_path / "one_first", 3))
  [one_then_two] = _run_with_devices(2, (tmp_path / "one_first", None))
  assert (two_first["devices"], ref["devices"], one_then_two["devices"]) == (2, 1, 2)
  assert two_first["final"] is None and one_first["final"] is None   # stopped, nothing final yet
  for resumed in (two_then_one, one_then_two):
    assert resumed["steps_this_run"] == 3   # resumed at step 3, not restarted
    np.testing.assert_allclose(resumed["loss"], ref["loss"], atol=1e-5)
    assert resumed["final"] == pytest.approx(ref["final"], abs=1e-5)
