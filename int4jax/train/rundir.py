"""The run directory: one run's files, locked to the config that started it.

    workdir/
      config.json     the resolved run config (paths absolute), written once when the run starts fresh
      command.txt     every command that ran here: argv, git SHA, time (appended)
      policy.json     the quantization policy
      metrics.jsonl   one strict-JSON object per line (NaN and inf are written as null)
      summary.json    the train loop's result; results.json: a task's final evaluation (LM)
      checkpoints/latest/<step>   the two most recent full train states (resume)
      checkpoints/best/<step>     params of the best evaluation (eval, teacher of a student)
      checkpoints/corrupt/        unreadable checkpoints moved aside, never deleted

The rules that protect a run:
  * the same command resumes; a different config is refused before anything is written, naming the keys that
    differ (`RunConfigMismatch`); `overwrite=True` starts fresh and says what it removes;
  * a config.json is never rewritten: a refused or failing run leaves it as it was;
  * metrics.jsonl keeps only rows up to the step a run resumes from (0 for a fresh start), so a restart never
    leaves stale rows;
  * keys named in `runtime_keys` (stop-after-N-steps, time budgets) may change between resumes.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

CONFIG = "config.json"
METRICS = "metrics.jsonl"
COMMAND = "command.txt"
POLICY = "policy.json"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"


class RunConfigMismatch(ValueError):
  """A run directory holds a run with another config."""


def git_commit() -> str:
  """HEAD of the repository this file lives in, or 'unknown' (a copied tree without .git)."""
  try:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def strict_json(value: Any) -> Any:
  """`value` with every non-finite float replaced by None, so json.dumps(allow_nan=False) accepts it."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, Mapping):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  return value


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it over `path`: readers never see half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(strict_json(obj), f, indent=2, sort_keys=True, allow_nan=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, Mapping):
    return {prefix: list(d) if isinstance(d, tuple) else d}
  out: dict[str, Any] = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
  return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any],
                       runtime_keys: Iterable[str] = ()) -> list[str]:
  """'key: old -> new' for every dotted key whose value differs; keys ending in a runtime key are ignored."""
  runtime = tuple(runtime_keys)
  a, b = _flatten(strict_json(old)), _flatten(strict_json(new))
  diffs = []
  for key in sorted(set(a) | set(b)):
    if key.split(".")[-1] in runtime:
      continue
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
  return diffs


class RunDir:
  """Paths and the locking rules of one run directory (see the module docstring)."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def latest_dir(self) -> str:
    return os.path.join(self.path, CHECKPOINTS, "latest")

  @property
  def best_dir(self) -> str:
    return os.path.join(self.path, CHECKPOINTS, "best")

  @property
  def corrupt_dir(self) -> str:
    return os.path.join(self.path, CHECKPOINTS, "corrupt")

  def read_config(self) -> dict[str, Any] | None:
    path = self.file(CONFIG)
    if not os.path.isfile(path):
      return None
    try:
      with open(path) as f:
        return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}); this run directory is damaged") from e

  def read_run_section(self, kind: str, launcher: str) -> dict[str, Any]:
    """The "run" section of config.json of a run of `kind` (FileNotFoundError / ValueError naming the directory)."""
    stored = self.read_config()
    if stored is None:
      raise FileNotFoundError(f"{self.file(CONFIG)!r} does not exist: is {self.path!r} a run directory of {launcher}?")
    if stored.get("kind") != kind:
      raise ValueError(f"{self.path!r} is a {stored.get('kind')!r} run, not a {kind} run of {launcher}")
    return stored["run"]

  def contents(self) -> list[str]:
    return sorted(os.listdir(self.path)) if os.path.isdir(self.path) else []

  def prepare(self, config: Mapping[str, Any], *, overwrite: bool = False, runtime_keys: Iterable[str] = (),
              keep: Iterable[str] = (), log=print) -> bool:
    """Checks (or, with overwrite, clears) the directory for a run of `config`. Returns True when resuming.

    Writes nothing unless `overwrite` removes an earlier run. The comparison covers the keys of `config` only, so
    a task can check its own section before the train loop adds the derived one. `keep`: entries that --overwrite
    leaves in place (a teacher trained inside the student's directory).
    """
    doomed = [name for name in self.contents() if name not in set(keep)]
    if overwrite and doomed:
      log(f"--overwrite: removing {', '.join(doomed)} from {self.path}")
      for name in doomed:
        target = self.file(name)
        shutil.rmtree(target) if os.path.isdir(target) and not os.path.islink(target) else os.remove(target)
      return False
    old = self.read_config()
    if old is None:
      if os.path.isdir(os.path.join(self.path, CHECKPOINTS)):
        raise RunConfigMismatch(f"{self.path} has checkpoints but no {CONFIG}: not a run directory this version can "
                                "resume; pass --overwrite to start fresh or choose another --workdir")
      return False
    old_section = {k: old.get(k) for k in config}
    diffs = config_differences(old_section, config, runtime_keys)
    if diffs:
      raise RunConfigMismatch(
          f"{self.path} holds a run with a different config ({'; '.join(diffs)}): re-run its own command "
          f"(command.txt) to resume, pass --overwrite to start fresh, or choose another --workdir")
    return True

  def start(self, config: Mapping[str, Any], *, argv: list[str] | None = None, commit: str | None = None,
            policy_json: str | None = None, runtime_keys: Iterable[str] = ()) -> bool:
    """Locks the directory to `config` (writing config.json if this is a fresh run) and logs the command.

    Returns True when resuming. Raises RunConfigMismatch (before writing anything) for a different config.
    """
    resuming = self.prepare(config, runtime_keys=runtime_keys)
    os.makedirs(self.path, exist_ok=True)
    if self.read_config() is None:
      write_json_atomic(self.file(CONFIG), dict(config))
    with open(self.file(COMMAND), "a") as f:
      f.write(f"{' '.join(argv if argv is not None else sys.argv)}\n"
              f"# git {commit or git_commit()}  {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    if policy_json:
      with open(self.file(POLICY), "w") as f:
        f.write(policy_json)
    return resuming

  # metrics.jsonl -------------------------------------------------------------------------------------------------

  def append_metrics(self, row: Mapping[str, Any]) -> None:
    with open(self.file(METRICS), "a") as f:
      f.write(json.dumps(strict_json(dict(row)), sort_keys=True, allow_nan=False) + "\n")

  def read_metrics(self) -> list[dict[str, Any]]:
    path = self.file(METRICS)
    if not os.path.exists(path):
      return []
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def truncate_metrics(self, last_step: int) -> int:
    """Keeps the rows logged at steps <= last_step (the step a run restarts from); returns how many were dropped."""
    path = self.file(METRICS)
    if not os.path.exists(path):
      return 0
    with open(path) as f:
      lines = [line for line in f if line.strip()]
    keep = [line for line in lines if json.loads(line)["step"] <= last_step]
    if len(keep) != len(lines):
      with open(path, "w") as f:
        f.writelines(keep)
    return len(lines) - len(keep)
