"""A bounded queue of experiment processes: priority order, dependencies, compile-cache leaders, one deadline.

    jobs = [Job("mrpc/fp32", cmd, "runs/mrpc/fp32"),
            Job("mrpc/w4a4/seed1", cmd, "runs/mrpc/w4a4/seed1", needs=("runs/mrpc/fp32",)),
            Job("mrpc/w4a4/seed2", cmd, "runs/mrpc/w4a4/seed2", needs=(...), leader="runs/mrpc/w4a4/seed1")]
    records = run(jobs, max_par=10, deadline=time.time() + 480)

Why: small models share one GPU well, but every process first spends tens of seconds of CPU on start-up and XLA
compilation; too many at once starve each other (a GPU session once started ~36 and none reached its first step),
too few leave the GPU idle. So at most `max_par` run at a time, and a free slot goes to the first job of the list
(the caller's priority order) that is ready:
  * needs: workdirs of jobs that must have succeeded first: their summary.json exists (a student's teacher, the run
    an evaluation reads) or, for a job that writes none, its process exited with 0 in this queue. A job whose need
    can no longer be met (its producer failed, or it is neither done nor queued) is skipped.
  * leader: the run directory of a job that compiles the same programs. The job waits until the leader has logged
    its first metrics row (its first step is done, so its executables sit in the persistent compilation cache) and
    then starts in seconds instead of compiling again; a leader that ended, or is not queued, releases it at once.
    Waiting jobs hold no slot.
  * optional: started only after its leader finished well. Any job whose leader has finished is started only if
    the time left exceeds what the leader's run suggests (its wall less its compilation), so that a run is not cut
    into a partial result by the deadline when it could be known not to fit.
At the deadline running jobs are killed (their metrics so far stay on disk; collectors report them as partial) and
jobs not started are skipped. A job's stdout and stderr go to <workdir>/stdout.log, its record (rc, pid for
nvidia-smi pmon, wall, CPU seconds) to <workdir>/process.json. Jobs whose workdir already holds summary.json are
not run again, so a queue re-run after a cut resumes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence

SUMMARY = "summary.json"   # train.rundir.SUMMARY; the queue stays free of jax imports
METRICS = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  cmd: tuple[str, ...]
  workdir: str
  needs: tuple[str, ...] = ()
  leader: str | None = None
  optional: bool = False

  def done(self) -> bool:
    return finished(self.workdir)


def finished(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, SUMMARY))


def first_step_done(workdir: str) -> bool:
  """The run logged a metrics row, so its first step (compilation included) has finished."""
  path = os.path.join(workdir, METRICS)
  return os.path.isfile(path) and os.path.getsize(path) > 0


def follower_wall(leader: str, leader_wall: float | None) -> float | None:
  """What a run after `leader` should take: the leader's wall less its compilation (summary.json's first_step_s,
  which a follower replaces by a cache read of a few seconds)."""
  if leader_wall is None:
    return None
  try:
    with open(os.path.join(leader, SUMMARY)) as f:
      compile_s = json.load(f).get("first_step_s") or 0.0
  except (OSError, ValueError):
    compile_s = 0.0
  return leader_wall - compile_s + 5.0


def select(jobs: Sequence[Job], patterns: Sequence[str]) -> list[Job]:
  """The jobs whose name matches one of the shell-style `patterns`, with every job they need (transitively), in the
  given order: a short device session can run one study's missing rows (a matched job's leaders are not added: a
  leader absent from the queue releases its followers at once). A pattern that matches no job raises ValueError."""
  unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(j.name, p) for j in jobs)]
  if unmatched:
    raise ValueError(f"no job name matches {unmatched} (names look like {jobs[0].name!r}, {jobs[-1].name!r})"
                     if jobs else f"no job name matches {unmatched}: the plan is empty")
  by_workdir = {j.workdir: j for j in jobs}
  keep, stack = set(), [j for j in jobs if any(fnmatch.fnmatchcase(j.name, p) for p in patterns)]
  while stack:
    job = stack.pop()
    if job.workdir not in keep:
      keep.add(job.workdir)
      stack.extend(by_workdir[n] for n in job.needs if n in by_workdir)
  return [j for j in jobs if j.workdir in keep]


def run(jobs: Sequence[Job], max_par: int, deadline: float | None = None, *, poll_s: float = 0.5,
        log: Callable[[str], None] = lambda s: print(s, flush=True)) -> list[dict]:
  """Runs `jobs` as described in the module docstring; returns one record per job, in the order given."""
  if max_par < 1:
    raise ValueError(f"max_par={max_par} must be >= 1")
  names = [j.workdir for j in jobs]
  if len(set(names)) != len(names):
    raise ValueError("two jobs share a workdir: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))
  t0 = time.time()
  queued = {j.workdir: j for j in jobs}
  records: dict[str, dict] = {j.workdir: {"name": j.name, "status": "done before"} for j in jobs if j.done()}
  pending = [j for j in jobs if j.workdir not in records]
  running: dict[str, tuple[Job, subprocess.Popen, float]] = {}

  def note(job: Job, status: str, **extra) -> None:
    records[job.workdir] = {"name": job.name, "status": status, **extra}
    log(f"[queue +{time.time() - t0:4.0f}s] {job.name}: {status} "
        + " ".join(f"{k}={v}" for k, v in extra.items() if k in ("rc", "wall_s", "reason")))

  def reap(kill: bool) -> None:
    if kill:  # all first, then wait: each exit tears down a GPU context
      for _, proc, _ in running.values():
        proc.kill()
    for wd, (job, proc, start) in list(running.items()):
      pid, wait_status, usage = os.wait4(proc.pid, 0 if kill else os.WNOHANG)
      if pid == 0:
        continue
      proc.returncode = rc = os.waitstatus_to_exitcode(wait_status)
      del running[wd]
      status = "timeout" if kill and rc < 0 else ("ok" if rc == 0 else "failed")
      rec = {"rc": rc, "pid": proc.pid, "start": start, "start_s": round(start - t0, 1),
             "wall_s": round(time.time() - start, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
             "cmd": " ".join(job.cmd)}
      with open(os.path.join(wd, "process.json"), "w") as f:
        json.dump(rec, f, indent=2)
      note(job, status, **rec)

  def met(need: str) -> bool:
    return finished(need) or records.get(need, {}).get("status") == "ok"

  def blocked(job: Job, now: float) -> str | None:
    """Why `job` can never start (or never finish before the deadline), or None."""
    for need in job.needs:
      if not met(need) and (need not in queued or need in records):
        return f"{need} ended without {SUMMARY}" if need in records else f"{need} has no {SUMMARY}"
    lead = records.get(job.leader)
    if lead is None or lead["status"] == "done before":
      return None
    if job.optional and lead["status"] != "ok":
      return f"leader {lead['name']} {lead['status']}"
    expected = follower_wall(job.leader, lead.get("wall_s"))
    if deadline is not None and expected is not None and expected >= deadline - now:
      return f"{deadline - now:.0f} s left, {expected:.0f} s expected from its leader's run"
    return None

  def ready(job: Job) -> bool:
    if not all(met(n) for n in job.needs):
      return False
    lead = job.leader
    if lead is None or lead not in queued or lead in records:
      return True   # blocked() has checked an optional job's leader and the time left
    return not job.optional and first_step_done(lead)

  while pending or running:
    now = time.time()
    if deadline is not None and now >= deadline:
      reap(kill=True)
      for job in pending:
        note(job, "skipped", reason="deadline")
      break
    reap(kill=False)
    for job in list(pending):
      why = blocked(job, now)
      if why:
        pending.remove(job)
        note(job, "skipped", reason=why)
    started = False
    for job in list(pending):
      if len(running) >= max_par:
        break
      if ready(job):
        pending.remove(job)
        os.makedirs(job.workdir, exist_ok=True)
        with open(os.path.join(job.workdir, "stdout.log"), "a") as out:
          proc = subprocess.Popen(job.cmd, stdout=out, stderr=subprocess.STDOUT)
        running[job.workdir] = (job, proc, time.time())
        started = True
        log(f"[queue +{time.time() - t0:4.0f}s] {job.name}: started ({len(running)} running)")
    if not running and not started and pending:  # cannot happen with leaders queued before their followers
      for job in pending:
        note(job, "skipped", reason="waits for a job that will not run")
      break
    time.sleep(poll_s)
  return [records[j.workdir] for j in jobs]
