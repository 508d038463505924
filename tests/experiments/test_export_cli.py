"""experiments.export --format=hf on a real (tiny) QAT student run: transformers runs the exported float weights
exactly as our float model does, the policy travels, and a non-empty --out is refused unless --overwrite."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from int4jax.inference import hf_export
from int4jax.models import bert
from int4jax.quant.policy import QuantPolicy
from int4jax.tasks import runs

TOL = 1e-4
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _max_diff(ours, theirs):
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs.detach().numpy().astype(np.float64))))


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
  """A tiny synthetic GLUE teacher and its W4A4 student (a few steps each)."""
  from int4jax.tasks import glue as glue_task
  root = tmp_path_factory.mktemp("runs")
  quick = dict(max_train_examples=64, eval_every_steps=4, log_every_steps=4, batch_size=16)
  for bits, teacher in (("fp32", None), ("w4a4", str(root / "fp32"))):
    cfg = glue_task.resolve_config("synthetic", "bert_tiny", bits, teacher=teacher, num_train_steps=4, **quick)
    glue_task.run(glue_task.build_experiment(cfg), str(root / bits), argv=["test"])
  return root / "w4a4"


def test_cli_exports_a_student_run_and_refuses_a_non_empty_out(student_run, tmp_path):
  out = tmp_path / "hf"
  cmd = [sys.executable, "-m", "experiments.export", "--format=hf", f"--workdir={student_run}", f"--out={out}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  provenance = json.loads((out / hf_export.PROVENANCE_NAME).read_text())
  assert provenance["bits"] == "w4a4" and provenance["task"] == "sequence_classification"
  policy = QuantPolicy.from_json((out / hf_export.POLICY_NAME).read_text())
  assert policy.name == "w4a4_sym"
  # the exported float weights are the run's best checkpoint, exactly; transformers runs them as a float model
  run = runs.restore_trained_run(student_run)
  float_model = bert.build(bert.bert_tiny(num_labels=2), "sequence_classification")
  ids = np.random.RandomState(0).randint(3, 100, (2, 8)).astype(np.int64)
  ours = float_model.apply({"params": run.params}, jnp.asarray(ids, jnp.int32)).logits
  theirs = transformers.AutoModelForSequenceClassification.from_pretrained(str(out), attn_implementation="eager")
  with torch.no_grad():
    ref = theirs.eval()(input_ids=torch.tensor(ids)).logits
  assert _max_diff(ours, ref) <= TOL
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0 and "not empty; pass --overwrite" in again.stderr
  with pytest.raises(ValueError, match="not empty"):
    runs.export_hf(student_run, out)
  runs.export_hf(student_run, out, overwrite=True)
  assert (out / "model.safetensors").is_file()
