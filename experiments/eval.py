"""Reload the best checkpoint of an experiments.glue run and re-evaluate it on the validation split.

    python -m experiments.eval --workdir=runs/glue/synthetic_bert_tiny/w4a4_sym

Rebuilds model, policy and data from <workdir>/config.json, restores checkpoints/best, and prints the metrics
next to the ones logged when that checkpoint was saved. Exits 1 if the primary metric differs (it should not:
evaluation is deterministic and uses the same batch shapes as training did).
"""

from __future__ import annotations

import json

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory written by experiments.glue.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from int4jax.tasks import glue as glue_task  # pylint: disable=g-import-not-at-top
  now, meta = glue_task.evaluate_best(FLAGS.workdir)
  name = meta["metric_name"]
  logged = meta["metrics"][name]
  print(json.dumps({"workdir": FLAGS.workdir, "step": meta["step"], "metrics": now, "logged": meta["metrics"]},
                   sort_keys=True))
  same = now[name] == logged
  print(f"best checkpoint (step {meta['step']}): {name}={now[name]:.4f}, logged {logged:.4f}: "
        f"{'identical' if same else 'MISMATCH'}", flush=True)
  if not same:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
