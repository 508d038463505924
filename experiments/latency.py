"""End-to-end BERT encoder latency of every inference path (library: int4jax.inference.latency).

    python -m experiments.latency --out=results/latency                  # full grid, BERT-base and -large
    python -m experiments.latency --out=/tmp/lat --smoke                  # tiny model, one grid point (CPU check)
    python -m experiments.latency --from_json=results/latency/NVIDIA_H200.json --out=results/latency  # re-render
    python -m experiments.latency --from_json=a.json,b.json --out=results/latency  # one table: b fills a's gaps

Writes <out>/<device>.json (every cell, with its status), <device>.md (table, speedups) and <device>.png (plot).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_list("models", ["bert_base", "bert_large"], "BERT presets.")
flags.DEFINE_list("grid", ["1x128", "8x128", "32x128", "32x384", "32x512"], "batch x seq points.")
flags.DEFINE_list("paths", None, "Paths to time (default: all).")
flags.DEFINE_integer("runs", 30, "Timed calls per cell (wall: median; device: CUPTI mean of back-to-back calls).")
flags.DEFINE_integer("warmup", 3, "Untimed calls per cell after the first (compiling) one.")
flags.DEFINE_float("budget_s", 330.0, "Cells starting after this many seconds are skipped (and listed).")
flags.DEFINE_bool("smoke", False, "Tiny BERT (hidden 128, 2 layers) at 1x128, for a CPU check of the pipeline.")
flags.DEFINE_list("from_json", None, "Re-render the markdown and plot of earlier runs' JSON; with several, one "
                  "table cell by cell: the first run that measured a cell supplies it, later runs fill the cells it "
                  "skipped, every ratio within its own run (latency.merge).")
flags.DEFINE_string("git_commit", None, "Commit to record when the tree has no .git (a copy sent to a GPU machine).")


def _commit() -> str:
  from int4jax.train import rundir  # pylint: disable=g-import-not-at-top
  return FLAGS.git_commit or rundir.git_commit()


def _write_json(result: dict, out: str) -> str:
  """Writes <out>/<device>.json atomically (with speedups); returns the path without extension."""
  from int4jax.inference import latency  # pylint: disable=g-import-not-at-top
  result["rows"] = latency.speedups(result["rows"])
  os.makedirs(out, exist_ok=True)
  base = os.path.join(out, result["info"]["device"].replace(" ", "_"))
  with open(base + ".json.tmp", "w") as f:
    json.dump(result, f, indent=2)
  os.replace(base + ".json.tmp", base + ".json")
  return base


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from int4jax.inference import latency  # pylint: disable=g-import-not-at-top
  if FLAGS.from_json:
    loaded = []
    for path in FLAGS.from_json:
      try:
        with open(path) as f:
          loaded.append(json.load(f))
      except (OSError, json.JSONDecodeError) as e:
        raise app.UsageError(f"--from_json {path}: {e}") from None
      if not isinstance(loaded[-1], dict) or not {"info", "rows"} <= set(loaded[-1]):
        raise app.UsageError(f"--from_json {path} is not an experiments.latency JSON (no info/rows)")
    try:
      result = latency.merge(loaded) if len(loaded) > 1 else loaded[0]
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  else:
    grid = []
    for g in FLAGS.grid:
      try:
        b, s = (int(v) for v in g.lower().split("x"))
      except ValueError:
        raise app.UsageError(f"--grid entry {g!r} is not BATCHxSEQ") from None
      grid.append((b, s))
    paths = tuple(FLAGS.paths or latency.PATHS)
    bad = sorted(set(paths) - set(latency.PATHS))
    if bad:
      raise app.UsageError(f"--paths {bad} are not among {list(latency.PATHS)}")
    bad = sorted(set(FLAGS.models) - {"bert_base", "bert_large", "bert_tiny"})
    if bad:
      raise app.UsageError(f"--models {bad} are not BERT presets (bert_base, bert_large, bert_tiny)")
    settings = latency.Settings(models=tuple(FLAGS.models), grid=tuple(grid), paths=paths, runs=FLAGS.runs,
                                warmup=FLAGS.warmup, budget_s=FLAGS.budget_s)
    if FLAGS.smoke:
      settings = latency.Settings(models=("bert_base",), grid=((1, 128),), paths=paths, runs=3, warmup=1,
                                  budget_s=FLAGS.budget_s,
                                  config_overrides=dict(hidden_size=128, num_layers=2, num_heads=2,
                                                        intermediate_size=256, vocab_size=1000))
    run_info = {"command": "python -m experiments.latency " + " ".join(sys.argv[1:]), "commit": _commit()}
    os.makedirs(FLAGS.out, exist_ok=True)
    # Every finished cell is on disk at once: a run stopped from outside keeps what it measured.
    result = latency.run(settings, on_row=lambda partial: _write_json(dict(partial, info=dict(
        partial["info"], **run_info)), FLAGS.out))
    result["info"].update(run_info)
  base = _write_json(result, FLAGS.out)
  md = latency.markdown(result, result["info"].get("command", ""), result["info"].get("commit", ""))
  with open(base + ".md", "w") as f:
    f.write(md)
  latency.plot(result, base + ".png")
  print(md)
  logging.info("wrote %s.{json,md,png}", base)


if __name__ == "__main__":
  app.run(main)
