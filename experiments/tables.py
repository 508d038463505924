"""Regenerate README.md's results tables and results/README.md from the committed results JSON.

    python -m experiments.tables            # rewrite both files
    python -m experiments.tables --check    # exit 1 with a diff if either differs from what the JSON says

How to add a table for a new results file: int4jax/report.py (module docstring).
"""
from __future__ import annotations

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_bool("check", False, "Do not write; exit 1 (printing a diff) if a file is stale.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from int4jax import report  # pylint: disable=g-import-not-at-top
  try:
    files = report.regenerate()
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  stale = [path for path, (now, new) in files.items() if now != new]
  for path in stale:
    if FLAGS.check:
      print(report.diff(path, *files[path]))
    else:
      (report.REPO_ROOT / path).write_text(files[path][1])
  verb = "stale" if FLAGS.check else "rewritten"
  print(f"{verb}: {', '.join(stale) or 'none'}; tables: {', '.join(sorted(report.TABLES))}", flush=True)
  if FLAGS.check and stale:
    raise SystemExit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
