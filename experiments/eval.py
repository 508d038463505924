"""Reload the best checkpoint of any run (GLUE or LM) and evaluate it.

    python -m experiments.eval --workdir=runs/glue/synthetic_bert_tiny/w4a4_sym
    python -m experiments.eval --workdir=runs/sst2_w4a4 --data_dir=heldout/ --split=test.tsv   # another labelled file
    python -m experiments.eval --workdir=runs/ptb_w4a4 --split=test                          # an LM run's test split

The task comes from <workdir>/config.json ("kind"); model, policy and data are rebuilt from it (paths there are
absolute, so this works from any directory). Without --data_dir/--split the run's own validation split is
evaluated and compared with the metric logged when best/ was saved: exit status 1 if they differ (they should not:
evaluation is deterministic and uses the same batch shapes as training did). With them, the metrics are printed.

    python -m experiments.eval --workdir=runs/sst2_w4a4 --engine=int [--packed=packed/sst2_w4a4] [--time_runs=30]

--engine=int evaluates a quantized GLUE run (BERT) or LM run (GPT-2, Llama: perplexity) through the integer
inference engine (int4jax.inference: packed weights, integer kernels) and prints its metrics next to the logged
fake-quant ones (float rounding apart, equal). Summarization runs (BART) are refused with a one-line error.
--time_runs=N then times one evaluation batch through the engine (wall median of N synced calls after warm-up; on a
GPU also CUPTI device time and its GEMM / quantize / attention / other split): the latency of *this* model. Against
bf16, torch and XLA's int8/fp8 paths in one process: experiments.latency.
"""
from __future__ import annotations

import json

from absl import app, flags, logging

from experiments import flags as common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory written by experiments.glue or experiments.lm.", required=True)
flags.DEFINE_string("data_dir", None, "Evaluate on data from this folder instead of the run's own.")
flags.DEFINE_string("split", None, "Split to evaluate (GLUE: validation, test or a TSV file name in --data_dir; "
                    "LM: valid, test or train). Default: the run's validation split.")
flags.DEFINE_enum("engine", "fake", ["fake", "int"], "fake: fake quantization (training's forward); int: the "
                  "integer inference engine (quantized GLUE and LM runs).")
flags.DEFINE_string("packed", None, "--engine=int: a packed checkpoint exported from this run (experiments.export); "
                    "default: pack the run's best checkpoint in memory.")
flags.DEFINE_enum("engine_dtype", "bfloat16", ["bfloat16", "float32"], "--engine=int: compute dtype.")
flags.DEFINE_enum("engine_backend", "auto", ["auto", "triton", "mosaic", "xla"], "--engine=int: the kernels' "
                  "backend (IntMode.backend; auto: the measured dispatcher on a GPU, the Pallas kernels in interpret "
                  "mode on a CPU; xla: XLA's integer dots, the quick choice on a CPU).")
flags.DEFINE_integer("time_runs", 0, "--engine=int: also time one evaluation batch through the engine over this "
                     "many calls (0: no timing).", lower_bound=0)


def task_module(workdir: str):
  """The tasks.* module that wrote this run directory."""
  from int4jax.tasks import glue, lm  # pylint: disable=g-import-not-at-top  (flags parse before jax starts)
  from int4jax.train import rundir  # pylint: disable=g-import-not-at-top
  stored = rundir.RunDir(workdir).read_config()
  if stored is None:
    raise FileNotFoundError(f"{workdir!r} has no config.json: not a run directory")
  modules = {glue.TASK_KIND: glue, lm.TASK_KIND: lm}
  if stored.get("kind") not in modules:
    raise ValueError(f"{workdir!r} holds a run of kind {stored.get('kind')!r}; this evaluator knows {sorted(modules)}")
  return modules[stored["kind"]]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if FLAGS.engine == "int":
    _eval_int()
    return
  if FLAGS.time_runs:
    raise app.UsageError("--time_runs times the integer engine: add --engine=int")
  with common.usage_errors():
    module = task_module(FLAGS.workdir)
    now, meta = module.evaluate_run(FLAGS.workdir, data_dir=FLAGS.data_dir, split=FLAGS.split)
  name = meta["metric_name"]
  print(json.dumps({"workdir": FLAGS.workdir, "step": meta["step"], "split": FLAGS.split or "validation",
                    "metrics": now, "logged": meta["metrics"]}, sort_keys=True))
  if FLAGS.data_dir or FLAGS.split:
    print(f"best checkpoint (step {meta['step']}) on {FLAGS.split or 'validation'}"
          f"{' of ' + FLAGS.data_dir if FLAGS.data_dir else ''}: {name}={now[name]:.4f}", flush=True)
    return
  logged = meta["metrics"][name]
  same = now[name] == logged
  print(f"best checkpoint (step {meta['step']}): {name}={now[name]:.4f}, logged {logged:.4f}: "
        f"{'identical' if same else 'MISMATCH'}", flush=True)
  if not same:
    raise SystemExit(1)


def _eval_int():
  with common.usage_errors():
    from int4jax.inference import engine  # pylint: disable=g-import-not-at-top
    from int4jax.tasks import engine_eval as evaluate  # pylint: disable=g-import-not-at-top
    now, meta = evaluate.evaluate_run(FLAGS.workdir, FLAGS.packed, dtype=FLAGS.engine_dtype, data_dir=FLAGS.data_dir,
                                      split=FLAGS.split, int_mode=engine.default_mode(backend=FLAGS.engine_backend),
                                      time_runs=FLAGS.time_runs)
  name = meta["metric_name"]
  print(json.dumps({"workdir": FLAGS.workdir, "engine": "int", "step": meta["step"], "split": FLAGS.split or
                    "validation", "metrics": now, "logged_fake_quant": meta["metrics"],
                    **({"timing": meta["timing"]} if "timing" in meta else {})}, sort_keys=True))
  logged = meta["metrics"][name]
  print(f"integer engine ({FLAGS.engine_dtype}): {name}={now[name]:.4f}; fake-quant logged {logged:.4f} on the "
        f"validation split (difference {now[name] - logged:+.2f})", flush=True)
  if "timing" in meta:
    t = meta["timing"]
    shape = " x ".join(map(str, next(iter(t["batch_shape"].values()))))
    device = (f", device {t['device_ms']:.3f} ms (" + ", ".join(f"{c} {v:.0%}" for c, v in t["share"].items()) + ")"
              if "device_ms" in t else " (no device timer here: wall clock only)")
    print(f"integer engine latency, one evaluation batch ({shape}): wall {t['wall_ms']:.3f} ms median of "
          f"{t['runs']} calls{device}", flush=True)


if __name__ == "__main__":
  app.run(main)
