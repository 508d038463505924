"""The summarization task end to end on a tiny BART (CPU, seconds): FP run with resume, a layer-reduced W4A4 KD
student, beam-decoded held-out summaries + ROUGE, KD terms, a run directory as the starting point, the run-directory
lock, bad input before any work."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from int4jax.tasks import summarization as task_lib
from int4jax.train import rundir

ARCH = (("d_model", 16), ("encoder_layers", 2), ("decoder_layers", 2), ("encoder_attention_heads", 2),
        ("decoder_attention_heads", 2), ("encoder_ffn_dim", 32), ("decoder_ffn_dim", 32),
        ("max_position_embeddings", 64))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  path = tmp_path_factory.mktemp("xsum") / "x.jsonl"
  rows = [{"document": f"The council met on day {i}.\nIt voted on plan {i % 5}.", "summary": f"Plan {i % 5} vote."}
          for i in range(20)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _cfg(workdir, data, **kw):
  base = dict(workdir=str(workdir), model="bart_base", arch=ARCH, data_dir=data, heldout_fraction=0.2,
              source_max_len=24, target_max_len=12, batch_size=4, num_train_steps=2, eval_every_steps=2,
              eval_batch_size=4, learning_rate=1e-3, num_beams=2, max_gen_length=8, min_length=0, dropout=0.0)
  return task_lib.SummarizationRunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data):
  workdir = tmp_path_factory.mktemp("runs") / "fp"
  first = task_lib.run(_cfg(workdir, data, max_steps_this_run=1))
  assert first["interrupted"] and first["step"] == 1
  return workdir, task_lib.run(_cfg(workdir, data))          # resumes at step 1


def test_teacher_resumes_and_reports(teacher, capsys):
  workdir, results = teacher
  assert results["steps_run"] == 2 and results["best_step"] == 2
  assert len(results["predictions"]) == len(results["references"]) == 4
  assert set(results["rouge"]) >= {"rouge1", "rouge2", "rougeL", "rougeLsum"}
  assert results["generation"]["num_beams"] == 2 and results["generation"]["max_length"] == 8
  counts = results["valid"]["num_tokens_by_position"]
  assert len(counts) == 12 and counts[0] == 4                  # every summary scores its first token
  assert json.loads((workdir / "results.json").read_text())["policy"] == "fp32"


def test_layer_reduced_w4a4_student(teacher, data, tmp_path):
  workdir, _ = teacher
  results = task_lib.run(_cfg(tmp_path / "st", data, arch=(), teacher=str(workdir), bits="w4a4",
                              decoder_layer_map=(1,)))
  assert results["policy"] == "w4a4_sym" and results["model_config"]["decoder_layers"] == 1
  assert list(results["decoder_layer_map"]) == [1] and results["encoder_layer_map"] is None
  assert results["loss_terms"] == ["gt", "logit", "att", "rep"] and np.isfinite(results["valid"]["loss"])
  assert len(results["predictions"]) == 4
  # The run as experiments.export reads it: packed, the integer engine (XLA's integer dots) gives its fake-quant
  # logits within check.float_tolerance; as a Hugging Face directory, its float weights exactly.
  from int4jax.inference import check
  from int4jax.models import hf, registry
  from int4jax.nn import int_gemm
  from int4jax.tasks import runs
  params, config, task, family, _, _ = runs.packed_source(str(tmp_path / "st"))
  assert (family, task) == ("bart", "conditional_generation")
  r = check.compare(config, task=task, params=params, seq=8, int_mode=int_gemm.IntMode(backend="xla"))
  assert r["within_tolerance"] and r["argmax_agree"] == 1.0, r
  _, exported = registry.load_pretrained(runs.export_hf(tmp_path / "st", tmp_path / "hf"))
  got, want = hf.flatten(exported), hf.flatten(params)
  assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


def test_kd_terms_vanish_for_an_identical_student(teacher):
  workdir, _ = teacher
  model, params, _ = task_lib.restore_run(str(workdir), policy=None)
  t = task_lib.Seq2SeqTask(model, model, ("logit", "att", "rep"))
  rs = np.random.RandomState(0)
  batch = {"input_ids": rs.randint(3, 100, (2, 24)).astype(np.int32), "attention_mask": np.ones((2, 24), np.int32),
           "labels": np.concatenate([rs.randint(3, 100, (2, 6)), np.full((2, 6), -100)], 1).astype(np.int32)}
  batch["attention_mask"][1, 10:] = 0
  _, parts = t.loss_fn(params, params, batch, jax.random.PRNGKey(0))
  assert float(parts["att"]) == 0.0 and float(parts["rep"]) == 0.0
  assert float(parts["logit"]) > 0                             # the teacher's entropy, not zero


def test_reduce_layers_copies_the_mapped_teacher_layers(teacher):
  workdir, _ = teacher
  _, params, _ = task_lib.restore_run(str(workdir), policy=None)
  student = task_lib.reduce_layers(params, None, (1,))
  assert sorted(k for k in student["decoder"] if k.startswith("layers_")) == ["layers_0"]
  assert jax.tree.all(jax.tree.map(np.array_equal, student["decoder"]["layers_0"], params["decoder"]["layers_1"]))
  assert student["encoder"] is not None and len([k for k in student["encoder"] if k.startswith("layers_")]) == 2


def test_a_run_directory_as_model_starts_from_that_run(teacher, data, tmp_path):
  """--model=<run> (the old --init): the architecture is the run's; a teacher beside it is refused."""
  workdir, _ = teacher
  cfg = _cfg(tmp_path / "ft", data, arch=(), model=str(workdir))
  plan = task_lib.validate(cfg)
  assert cfg.starts_from_run and plan.teacher_meta["model_config"]["d_model"] == 16
  assert plan.config.encoder_layers == 2 and plan.loss_terms == ("gt",)
  with pytest.raises(ValueError, match="both name a starting point"):
    task_lib.validate(_cfg(tmp_path / "bad", data, arch=(), model=str(workdir), teacher=str(workdir), bits="w4a4"))


def test_run_directory_is_locked_to_its_config(teacher, data):
  workdir, _ = teacher
  with pytest.raises(rundir.RunConfigMismatch, match="learning_rate"):
    task_lib.prepare(_cfg(workdir, data, learning_rate=0.5))
  task_lib.prepare(_cfg(workdir, data, max_steps_this_run=5))          # a runtime key: resumes


@pytest.mark.parametrize("bad, match", [
    (dict(num_beams=0), "--num_beams=0"),
    (dict(decoder_layer_map=(0, 2)), r"names teacher layer\(s\) \[2\]"),
    (dict(bits="w3a3"), "--bits"),
    (dict(tokenizer="bert-base-uncased"), "no BOS/EOS"),
    (dict(kd_losses=("logit",), teacher=None), "need a teacher"),
])
def test_bad_input_before_work(teacher, data, tmp_path, bad, match):
  workdir, _ = teacher
  kw = dict(teacher=str(workdir), bits="w4a4", arch=())
  kw.update(bad)
  with pytest.raises(ValueError, match=match):
    task_lib.validate(_cfg(tmp_path / "bad", data, **kw))
  assert not (tmp_path / "bad").exists()
