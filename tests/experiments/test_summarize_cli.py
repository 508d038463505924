"""experiments.summarize speaks experiments/flags.py's shared vocabulary: the flags land in SummarizationRunConfig,
the old spellings (--init, --symmetric, --loss_terms) map onto the new ones, and bad input is a one-line usage error
before any work. Flag parsing only (absl flags are per process, so each case runs in its own interpreter)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Parses argv with the launcher's flags (as app.run would), applies the deprecated aliases, prints the config.
PARSE = """
import dataclasses, json, sys
from absl import flags
from experiments import flags as common, summarize
summarize.define_flags()
flags.FLAGS(["summarize"] + sys.argv[1:])
common.apply_deprecated()
print(json.dumps(summarize.config_from_flags().to_dict()))
"""


def _python(*args, code=None):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "experiments.summarize", *args]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def parsed(*args):
  proc = _python(*args, code=PARSE)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_shared_flags_reach_the_config():
  cfg, _ = parsed("--workdir=w", "--bits=w4a4", "--quant_mode=asym", "--teacher=t", "--kd_losses=logit,rep",
                  "--clip=-2,2", "--act_clip=none", "--learning_rate=1e-4", "--num_train_steps=7", "--warmup_ratio=0.2",
                  "--batch_size=8", "--seed=3", "--compute_dtype=bfloat16", "--decoder_layer_map=0,2,5",
                  "--arch=d_model=64", "--num_beams=2")
  assert (cfg["bits"], cfg["quant_mode"], cfg["teacher"], cfg["kd_losses"]) == ("w4a4", "asym", "t", ["logit", "rep"])
  assert cfg["weight_clip"] == [-2.0, 2.0] and cfg["act_clip"] is None        # --clip, then --act_clip=none
  assert (cfg["learning_rate"], cfg["num_train_steps"], cfg["warmup_ratio"], cfg["batch_size"], cfg["seed"]) == \
      (1e-4, 7, 0.2, 8, 3)
  assert cfg["compute_dtype"] == "bfloat16" and cfg["decoder_layer_map"] == [0, 2, 5]
  assert cfg["arch"] == [["d_model", 64]] and cfg["num_beams"] == 2
  # Unset flags keep the task's defaults (BART-base's Table C.1 row), not the flags' None.
  default, _ = parsed("--workdir=w")
  assert (default["model"], default["bits"], default["weight_clip"], default["learning_rate"],
          default["batch_size"], default["num_epochs"], default["warmup_ratio"], default["dataset"]) == \
      ("bart_base", "fp32", [-1.0, 1.0], 5e-5, 16, 20.0, 0.05, "xsum")


def test_old_spellings_map_onto_the_new_names():
  cfg, err = parsed("--workdir=w", "--init=runs/denoise", "--nosymmetric", "--loss_terms=gt,logit")
  assert cfg["model"] == "runs/denoise" and cfg["quant_mode"] == "asym" and cfg["kd_losses"] == ["gt", "logit"]
  for hint in ("--init is deprecated: use --model=runs/denoise", "--symmetric is deprecated: use --quant_mode=asym",
               "--loss_terms is deprecated: use --kd_losses=gt, logit"):
    assert hint in err, err


@pytest.mark.parametrize("args, message", [
    (["--warmup_ratio=0.1", "--warmup_steps=5"], "give --warmup_ratio or --warmup_steps, not both"),
    (["--decoder_layer_map=a,b"], "--decoder_layer_map=a,b must be comma-separated integers"),
    (["--num_beams=0"], "--num_beams=0 must be >= 1"),
    (["--arch=width=64"], "--arch names ['width']"),
    (["--init=a", "--model=b"], "--init is a deprecated alias of --model; give only --model"),
])
def test_bad_input_is_one_usage_line(tmp_path, args, message):
  proc = _python(f"--workdir={tmp_path / 'run'}", *args)
  assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
