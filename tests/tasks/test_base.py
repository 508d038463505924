"""tasks/base.py: the shared RunConfig validates once with errors that name the flag; paths become absolute;
teacher / vocabulary / length checks name both sides."""
import dataclasses
import os

import pytest

from int4jax.tasks import base
from int4jax.tasks.glue import GlueRunConfig
from int4jax.tasks.lm import LMRunConfig
from int4jax.tasks.summarization import SummarizationRunConfig


def glue(**kw):
  return GlueRunConfig(task="synthetic", model="bert_tiny", **kw)


@pytest.mark.parametrize("kw, message", [
    (dict(bits="w3a3"), "--bits='w3a3'"),
    (dict(quant_mode="both"), "--quant_mode='both'"),
    (dict(weight_clip=(1.0, -1.0)), "--weight_clip"),
    (dict(gemms=("qkv", "mlp")), "unknown ['mlp']"),
    (dict(batch_size=0), "--batch_size=0 must be positive"),
    (dict(learning_rate=0.0), "--learning_rate"),
    (dict(warmup_ratio=1.5), "--warmup_ratio=1.5"),
    (dict(compute_dtype="float16"), "--compute_dtype"),
    (dict(bits="w4a4"), "needs --teacher"),
    (dict(teacher="somewhere"), "--teacher is only used by quantized runs"),
    (dict(bits="w4a4", teacher="t", kd_losses=("logits",)), "KD loss terms"),
])
def test_validate_names_the_flag(kw, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
    glue(**kw).validate()


def test_shared_fields_are_one_definition():
  shared = {f.name for f in dataclasses.fields(base.RunConfig)}
  for cls in (GlueRunConfig, LMRunConfig, SummarizationRunConfig):
    assert shared <= {f.name for f in dataclasses.fields(cls)}
  assert glue(warmup_steps=7).warmup_steps_for(100) == 7 and glue(warmup_ratio=0.25).warmup_steps_for(100) == 25


def test_paths_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "teacher_run").mkdir()
  cfg = glue(bits="w4a4", teacher="teacher_run").with_absolute_paths()
  assert cfg.teacher == os.path.join(str(tmp_path), "teacher_run") and cfg.model == "bert_tiny"   # presets stay
  assert cfg.locked_dict()["teacher"] == cfg.teacher


def test_teacher_mismatch_names_both():
  student = dict(task="sst2", tokenizer="bert-base-uncased", vocab_size=30522,
                 model_config={"hidden_size": 384, "num_layers": 6})
  teacher = dict(student, model_config={"hidden_size": 384, "num_layers": 12})
  with pytest.raises(ValueError, match="num_layers: teacher 12 vs student 6"):
    base.check_teacher_matches(student, teacher, "runs/t")
  with pytest.raises(ValueError, match="tokenizer 'gpt2'; this run has 'bert-base-uncased'"):
    base.check_teacher_matches(student, dict(student, tokenizer="gpt2"), "runs/t")
  with pytest.raises(ValueError, match="task 'mrpc'; this run has 'sst2'"):
    base.check_teacher_matches(student, dict(student, task="mrpc"), "runs/t")
  base.check_teacher_matches(student, dict(student), "runs/t")    # identical: accepted


def test_vocab_and_length_checks():
  with pytest.raises(ValueError, match="tokenizer 'bert-base-uncased' has 30522 tokens but model 'bert_tiny' embeds "
                     "only 1000"):
    base.check_vocab("bert-base-uncased", 30522, "bert_tiny", 1000)
  base.check_vocab("synthetic", 64, "bert_tiny", 1000)
  with pytest.raises(ValueError, match="--max_seq_length=256 is larger than model 'bert_tiny'"):
    base.check_length("max_seq_length", 256, "bert_tiny", 128)
