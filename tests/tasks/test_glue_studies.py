"""tasks/glue_studies.plan without training: the queue's order, what each job needs and follows, the runs the
studies share, and that a follower compiles the same programs as its leader (argv equal up to seed, workdir and
augmentation)."""
import os

import pytest

from int4jax.analysis import format_zoo
from int4jax.tasks import glue_studies, run_queue


def _flag(job, name):
  return next((a.split("=", 1)[1] for a in job.cmd if a.startswith(f"--{name}=")), None)


def _program(job):
  return [a for a in job.cmd if not a.startswith(("--seed=", "--workdir=", "--augment="))]


@pytest.fixture
def planned(tmp_path):
  for d in ("MRPC", "SST-2"):
    os.makedirs(tmp_path / "glue" / d)
    for f in ("train.tsv", "dev.tsv"):
      (tmp_path / "glue" / d / f).write_text("sentence\tlabel\n")
  cfg = glue_studies.StudiesConfig(
      model="bert_tiny", data_root=str(tmp_path / "glue"), work=str(tmp_path / "w"), seeds=(1, 2),
      teacher_flags=("--log_every_steps=5", "mrpc:--num_epochs=3", "sst2:--num_train_steps=20"),
      student_flags=("--num_train_steps=30",))
  jobs, views = glue_studies.plan(cfg)
  return cfg, jobs, views


def test_order_needs_and_leaders(planned):
  cfg, jobs, _ = planned
  names = [j.name for j in jobs]
  assert names[:2] == ["mrpc/fp32", "sst2/fp32"]
  assert _flag(jobs[0], "num_epochs") == "3" and _flag(jobs[1], "num_train_steps") == "20"
  assert _flag(jobs[0], "log_every_steps") == _flag(jobs[1], "log_every_steps") == "5"
  index = {j.workdir: i for i, j in enumerate(jobs)}
  for i, j in enumerate(jobs):
    assert all(index[n] < i for n in j.needs), j.name          # what a job needs is queued before it
    if j.leader:
      assert index[j.leader] < i and _program(j) == _program(jobs[index[j.leader]]), j.name
  first = [j for j in jobs if j.name.endswith(("seed1", "_s1", "caches"))]
  kinds = ["12" if j.name.startswith(("mrpc/", "sst2/")) else "1417" for j in first[2:]]
  assert kinds == sorted(kinds, key=lambda k: k != "12")      # issue 12's first seed before 14/17's
  engine = [i for i, n in enumerate(names) if n.startswith("engine/")]
  assert len(engine) == 2 * len(glue_studies.ENGINE_EVALS)
  # the engine checks right after issue 12's first seed, before 14/17's first seed
  first12 = [index[j.workdir] for j, k in zip(first[2:], kinds) if k == "12"]
  first1417 = [index[j.workdir] for j, k in zip(first[2:], kinds) if k == "1417"]
  assert max(first12) < engine[0] and engine[-1] < min(first1417), (first12, engine, first1417)
  optional = [j for j in jobs if j.optional]
  assert len(optional) == 2 * (len(glue_studies.SPARSE) + 1 + len(glue_studies.NEW_FORMATS))
  assert all(_flag(j, "seed") == "2" and j.leader for j in optional)
  assert min(index[j.workdir] for j in optional) > max(i for i, n in enumerate(names) if "seed2" in n)  # last
  assert len(jobs) == 2 + 2 * 2 * 5 + 2 + 2 * 2 * 9 + len(engine)


def test_studies_share_runs_and_change_one_thing(planned):
  cfg, jobs, views = planned
  by_name = {j.name: j for j in jobs}
  base = by_name["mrpc/w4a4_sym_aug0_custom_lr0.0001/seed1"]
  mov = by_name["composability/mrpc_s24_movement_qp_s1"]
  extra = set(mov.cmd) - set(base.cmd)
  assert extra == {"--sparsity=2:4", "--prune=movement", "--order=qp", f"--mask_update_every={cfg.mask_update_every}",
                   f"--workdir={mov.workdir}"}
  assert {"--bits=w4a4_nvfp4"} < set(by_name["formats/sst2_w4a4_nvfp4_sym_s1"].cmd)
  assert "--augment=10" in by_name["mrpc/w4a4_asym_aug10_custom_lr0.0001/seed2"].cmd
  prep = by_name["mrpc/augmentation caches"]
  assert {"--prepare_only=true", "--seeds=1,2", "--augment=10"} < set(prep.cmd) and _flag(prep, "seed") is None
  links = {os.path.relpath(l, cfg.work): os.path.relpath(t, cfg.work) for l, t in views}
  assert links["composability/sst2_w4a4_s2"] == "runs/sst2/w4a4_sym_aug0_custom_lr0.0001/seed2"
  asym = format_zoo.run_name("mrpc", format_zoo.STUDENTS[1], 1)
  assert links[f"formats/{asym}"] == "runs/mrpc/w4a4_asym_aug0_custom_lr0.0001/seed1"
  assert links["formats/mrpc_fp32"] == links["composability/mrpc_fp32"] == "runs/mrpc/fp32"
  glue_studies.make_views(views)
  glue_studies.make_views(views)   # idempotent
  assert os.readlink(os.path.join(cfg.work, "composability", "mrpc_fp32")) == os.path.join("..", "runs", "mrpc", "fp32")


def test_task_scoped_flags():
  assert glue_studies.flags_for(["--a=1", "mrpc:--b=2", "sst2:--c=3"], "mrpc") == ("--a=1", "--b=2")
  with pytest.raises(ValueError, match="not a GLUE task"):
    glue_studies.flags_for(["mprc:--b=2"], "mrpc")


def test_engine_report_reads_the_eval_lines(tmp_path):
  """experiments.eval's JSON lines (a progress bar may share the line) -> engine vs fake quant, per student."""
  run = str(tmp_path / "runs" / "sst2" / "w4a4_sym" / "seed1")
  lines = {"int_bf16": 'eval: 0batch [00:00]   {"engine": "int", "metrics": {"accuracy": 90.25}, '
                       '"logged_fake_quant": {"accuracy": 90.0}, "split": "validation", "step": 300, "workdir": "%s"}',
           "fake": '{"logged": {"accuracy": 90.0}, "metrics": {"accuracy": 90.0}, "split": "validation", '
                   '"step": 300, "workdir": "%s"}'}
  for kind, line in lines.items():
    d = tmp_path / "engine" / "sst2_sym" / kind
    d.mkdir(parents=True)
    (d / "stdout.log").write_text("start-up noise\n" + line % run + "\nbest checkpoint ...\n")
  report = glue_studies.engine_report(str(tmp_path), {"gpu": "H200", "commit": "abc"})
  (row,) = report["runs"]
  assert row["run"] == os.path.join("runs", "sst2", "w4a4_sym", "seed1") and row["missing"] == ["int_fp32"]
  assert row["int_bf16_minus_fake"] == pytest.approx(0.25) and row["int_bf16_within_target"] is False
  assert row["int_fp32"] is None and row["logged_at_training"] == 90.0 and report["gpu"] == "H200"


def test_select_runs_the_engine_checks_with_only_the_runs_they_read(planned):
  _, jobs, _ = planned
  picked = [j.name for j in run_queue.select(jobs, ["engine/*"])]
  engine = [n for n in picked if n.startswith("engine/")]
  assert len(engine) == 2 * len(glue_studies.ENGINE_EVALS)
  # the SST-2 teacher and its first-seed W4A4 sym and asym students, nothing else
  assert sorted(set(picked) - set(engine)) == sorted(["sst2/fp32", "sst2/w4a4_sym_aug0_custom_lr0.0001/seed1",
                                                      "sst2/w4a4_asym_aug0_custom_lr0.0001/seed1"]), picked
