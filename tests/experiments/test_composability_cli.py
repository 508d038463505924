"""W4A4 + N:M sparsity and layer reduction through `python -m experiments.glue` on the synthetic task, and the
launcher's validation of the composability flags (all before any data is read or step is run)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from int4jax.quant import sparsity
from int4jax.tasks import glue as glue_task
from int4jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_sparse_w4a4_smoke_run_through_the_launcher(tmp_path):
  """Two-stage default: dense fp32 teacher, then a W4A4 + 2:4 movement (Q=>P) student."""
  cmd = [sys.executable, "-m", "experiments.glue", "--task=synthetic", "--model=bert_tiny", "--sparsity=2:4",
         "--prune=movement", "--order=qp", "--mask_update_every=2", "--num_train_steps=4", "--batch_size=16",
         "--max_train_examples=64", "--eval_every_steps=4", "--log_every_steps=2", f"--workdir={tmp_path}"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "W4A4 sym student" in proc.stdout
  student = tmp_path / "w4a4_sym"
  assert json.loads((student / "policy.json").read_text())["name"] == "w4a4_sym_2of4movement-qp"
  assert json.loads((tmp_path / "fp32" / "policy.json").read_text())["name"] == "fp32"   # the teacher is dense
  cfg = glue_task.load_run_config(str(student))
  model, _ = glue_task.build_model(cfg, cfg.make_policy(), load_weights=False)
  params = checkpoint.restore(os.path.join(student, "checkpoints", "best"),
                              {"params": glue_task.abstract_params(model, cfg)})[0]["params"]
  mask = np.asarray(params["encoder"]["layer_0"]["intermediate"][sparsity.MASK])          # [K=64, 128]
  assert ((mask.reshape(16, 4, -1) == 0).sum(axis=1) == 2).all()
  assert sparsity.SCORE in params["encoder"]["layer_1"]["attention"]["query"]
  meta = checkpoint.read_metadata(os.path.join(student, "checkpoints", "best"))
  assert meta["sparsity"]["mask_zero_fraction"] == 0.5 and meta["sparsity"]["sparse_layers"] == 12


def test_composability_flags_are_validated_up_front(tmp_path):
  resolve = lambda bits="w4a4", **kw: glue_task.resolve_config("synthetic", "bert_tiny", bits, teacher=str(tmp_path),
                                                               **kw)
  with pytest.raises(ValueError, match="float GEMM"):
    glue_task.resolve_config("synthetic", "bert_tiny", "fp32", sparsity="2:4")
  with pytest.raises(ValueError, match="keeps float"):
    resolve(sparsity="2:4@ffn", gemms=("qkv",))
  with pytest.raises(ValueError, match="N:M"):
    resolve(sparsity="50%")
  with pytest.raises(ValueError, match="longer than the teacher's 2 layers"):
    resolve(layer_map=(0, 1, 1))
  with pytest.raises(ValueError, match="more than the teacher's 2 layers"):
    resolve(num_layers=3)
  cfg = resolve(num_layers=1)
  assert cfg.layer_map == (1,)
  cfg = resolve(sparsity="3:5")  # bert_tiny: K = 64 (hidden) and 128 (FFN); 5 divides neither
  with pytest.raises(ValueError, match="M=5 does not divide the reduction size K=64"):
    glue_task.build_experiment(cfg)    # raises before the (missing) teacher checkpoint is even looked at
  for bad in ("--layer_map=a,b", "--prune=magnitude"):
    proc = subprocess.run([sys.executable, "-m", "experiments.glue", "--bits=w4a4", f"--teacher={tmp_path}", bad],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode != 0 and ("layer_map" in proc.stderr or "prune" in proc.stderr), proc.stderr[-500:]
