"""tasks/run_queue.py with stand-in processes (a few lines of python that write metrics.jsonl / summary.json like a
training would): priority order under the slot bound, needs, leaders, optional jobs, the deadline."""
import json
import os
import sys
import time

import pytest

from int4jax.tasks import run_queue

FAKE = """
import json, os, sys, time
wd, first_s, rest_s, rc = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
time.sleep(first_s)                       # start-up and compilation
open(os.path.join(wd, "metrics.jsonl"), "a").write(json.dumps({"step": 1, "t": time.time()}) + "\\n")
time.sleep(rest_s)                        # training
if rc == 0 and sys.argv[5] == "1":
  open(os.path.join(wd, "summary.json"), "w").write("{}")
sys.exit(rc)
"""


def job(tmp_path, name, first_s=0.0, rest_s=0.0, rc=0, summary=True, **kw):
  wd = str(tmp_path / name)
  return run_queue.Job(name, (sys.executable, "-c", FAKE, wd, str(first_s), str(rest_s), str(rc), str(int(summary))),
                       wd, **kw)


def run(jobs, max_par=1, deadline_s=None):
  deadline = None if deadline_s is None else time.time() + deadline_s
  return {r["name"]: r for r in run_queue.run(jobs, max_par, deadline, poll_s=0.02, log=lambda s: None)}


def test_priority_needs_and_failures(tmp_path):
  teacher = job(tmp_path, "teacher")
  bad = job(tmp_path, "bad_teacher", rc=3)
  prep = job(tmp_path, "prep", summary=False)   # succeeds without summary.json: its exit status counts
  jobs = [teacher, bad, job(tmp_path, "a", needs=(teacher.workdir, prep.workdir)), prep,
          job(tmp_path, "b", needs=(bad.workdir,)), job(tmp_path, "c", needs=(str(tmp_path / "nowhere"),))]
  r = run(jobs, max_par=1)
  assert [r[n]["status"] for n in ("teacher", "bad_teacher", "prep", "a")] == ["ok", "failed", "ok", "ok"]
  assert r["bad_teacher"]["rc"] == 3 and os.path.isfile(os.path.join(bad.workdir, "process.json"))
  assert r["teacher"]["start"] < r["bad_teacher"]["start"] < r["prep"]["start"] < r["a"]["start"]  # list order
  assert r["b"]["status"] == "skipped" and "ended without" in r["b"]["reason"]
  assert r["c"]["status"] == "skipped" and "nowhere" in r["c"]["reason"]
  again = run(jobs[:1])   # a finished run is not run again
  assert again["teacher"]["status"] == "done before"


def test_followers_start_after_the_leaders_first_step_and_hold_no_slot(tmp_path):
  leader = job(tmp_path, "leader", first_s=0.6, rest_s=0.8)
  follower = job(tmp_path, "follower", leader=leader.workdir)
  other = job(tmp_path, "other", rest_s=0.1)
  r = run([leader, follower, other], max_par=2)
  first_row = json.loads(open(os.path.join(leader.workdir, "metrics.jsonl")).readline())["t"]
  assert r["other"]["start"] < first_row            # the waiting follower did not take the free slot
  assert first_row <= r["follower"]["start"] < r["leader"]["start"] + r["leader"]["wall_s"]
  assert all(r[n]["status"] == "ok" for n in r)


def test_optional_jobs_start_only_when_their_leaders_wall_fits(tmp_path):
  lead = job(tmp_path, "lead", rest_s=0.7)
  fits = job(tmp_path, "fits", leader=lead.workdir, optional=True)
  r = run([lead, fits], max_par=2, deadline_s=30)
  # wall_s is recorded rounded to 0.1 s, so the leader's end is known to +-0.05 s.
  assert r["fits"]["status"] == "ok" and r["fits"]["start"] >= r["lead"]["start"] + r["lead"]["wall_s"] - 0.05
  lead2 = job(tmp_path, "lead2", rest_s=3.0)   # ends ~3 s in: 2 s left is less than its wall
  late = job(tmp_path, "late", leader=lead2.workdir, optional=True)
  r = run([lead2, late], max_par=2, deadline_s=5.0)
  assert r["lead2"]["status"] == "ok" and r["late"]["status"] == "skipped" and "left" in r["late"]["reason"]


def test_deadline_kills_running_and_skips_pending(tmp_path):
  slow = job(tmp_path, "slow", rest_s=30)
  r = run([slow, job(tmp_path, "next")], max_par=1, deadline_s=1.0)
  assert r["slow"]["status"] == "timeout" and r["slow"]["wall_s"] < 5
  assert r["next"]["status"] == "skipped" and r["next"]["reason"] == "deadline"
  with pytest.raises(ValueError, match="share a workdir"):
    run([slow, slow])


def test_select_keeps_the_matching_jobs_and_what_they_need_in_order():
  job = lambda name, needs=(), leader=None: run_queue.Job(name, ("true",), f"/w/{name}", tuple(f"/w/{n}" for n in
                                                                                                needs), leader)
  jobs = [job("t"), job("t2"), job("s1", ["t"]), job("s2", ["t"], leader="/w/s1"), job("e", ["s2"]),
          job("x", ["t2"])]
  # e needs s2, s2 needs t; s2's leader s1 is not added (a missing leader releases its followers)
  assert [j.name for j in run_queue.select(jobs, ["e"])] == ["t", "s2", "e"]
  assert [j.name for j in run_queue.select(jobs, ["s*", "x"])] == ["t", "t2", "s1", "s2", "x"]
  with pytest.raises(ValueError, match=r"no job name matches \['nope'\]"):
    run_queue.select(jobs, ["e", "nope"])
