"""The paper's decoder failure analysis over trained experiments.lm runs (paper_spec.md §3.2, §4; Figs. 5, 6, C.2).

    python -m experiments.lm_analysis --analysis=positional,act_range,sensitivity \
        --runs=fp=runs/ptb_fp,w4=runs/ptb_w4a16,w4a8=runs/ptb_w4a8,w4a4=runs/ptb_w4a4,w4a4_asym=runs/ptb_w4a4_asym
    python -m experiments.lm_analysis --analysis=ln \
        --runs=pre_fp=runs/pre_fp,pre_w4a4=runs/pre_w4a4,post_fp=runs/post_fp,post_w4a4=runs/post_w4a4

The first run is the reference (the FP teacher). Each analysis writes <name>.json and <name>.png into --output_dir
(default: <first run>/analysis). positional/sensitivity/ln read results.json and metrics.jsonl; act_range re-loads
the best checkpoints and runs `--num_batches` batches of the validation split (data and tokenizer as the first run
stored them, or --data_dir / --tokenizer).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

from int4jax.analysis import lm_failure as lm_analysis
from int4jax.tasks import lm as lm_task
from int4jax import tokenizers
from int4jax.data import lm as lm_data

ANALYSES = ("positional", "act_range", "ln", "sensitivity")

def define_flags() -> None:
  """Flags are defined only when run as a command, so tests can import several launchers."""
  flags.DEFINE_list("analysis", ["positional", "act_range", "sensitivity"], f"Any of {ANALYSES}.")
  flags.DEFINE_list("runs", None, "label=workdir pairs of experiments.lm runs; the first is the reference.")
  flags.DEFINE_string("output_dir", None, "Where the JSON and PNG files go (default <first run>/analysis).")
  flags.DEFINE_enum("split", "valid", ("valid", "test"), "Split for positional perplexity and activation ranges.")
  flags.DEFINE_integer("num_batches", 8, "Batches for the activation range (paper: 8).")
  flags.DEFINE_integer("batch_size", 8, "Batch size for the activation range.")
  flags.DEFINE_list("act_range_runs", None, "Labels to include in act_range (default: all runs).")
  flags.DEFINE_string("data_dir", None, "Override the data folder the first run stored.")
  flags.DEFINE_string("tokenizer", None, "Override the tokenizer the first run stored.")


def parse_runs(pairs) -> dict[str, str]:
  """['a=dir', ...] -> {'a': 'dir'}, each dir checked to hold a finished experiments.lm run."""
  if not pairs:
    raise ValueError("--runs is required: label=workdir,...")
  runs = {}
  for pair in pairs:
    label, sep, workdir = pair.partition("=")
    if not sep or not label or not workdir:
      raise ValueError(f"--runs entry {pair!r} must be label=workdir")
    if label in runs:
      raise ValueError(f"--runs label {label!r} appears twice")
    if not os.path.isfile(os.path.join(workdir, "results.json")):
      raise FileNotFoundError(f"--runs {label}={workdir}: no results.json (run experiments.lm to the end first)")
    runs[label] = workdir
  return runs


def _json(path):
  with open(path) as f:
    return json.load(f)


def _metrics_rows(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_analyses(analyses, runs: dict[str, str], output_dir: str | None = None, *, split: str = "valid",
                 num_batches: int = 8, batch_size: int = 8, act_range_runs=None, data_dir: str | None = None,
                 tokenizer: str | None = None) -> dict[str, dict]:
  bad = [a for a in analyses if a not in ANALYSES]
  if bad:
    raise ValueError(f"--analysis {bad} unknown; choose from {ANALYSES}")
  output_dir = output_dir or os.path.join(next(iter(runs.values())), "analysis")
  results = {k: _json(os.path.join(w, "results.json")) for k, w in runs.items()}
  curves = {k: _metrics_rows(w) for k, w in runs.items()}
  out = {}
  if "positional" in analyses:
    out["positional"] = lm_analysis.positional_perplexity(results, output_dir, split=split)
  if "sensitivity" in analyses:
    out["sensitivity"] = lm_analysis.sensitivity(results, curves, output_dir)
  if "ln" in analyses:
    out["ln"] = lm_analysis.ln_study(results, curves, output_dir)
  if "act_range" in analyses:
    labels = act_range_runs or list(runs)
    unknown = [k for k in labels if k not in runs]
    if unknown:
      raise ValueError(f"--act_range_runs {unknown} are not in --runs")
    first = _json(os.path.join(runs[labels[0]], "config.json"))["run"]
    tok = tokenizers.load_tokenizer(tokenizer or first["tokenizer"])
    corpus = lm_data.load_corpus(first["dataset"], tok, data_dir=data_dir or first["data_dir"], splits=(split,))
    ranges = {}
    for k in labels:
      model, params, _ = lm_task.restore_run(runs[k])
      block = results[k]["block_size"]
      batches = lm_data.eval_split(corpus.ids[split], block).batches(batch_size)
      ranges[k] = lm_analysis.ffn_out_input_range(model, params, batches,
                                                  lm_analysis.default_layers(model.config.n_layer),
                                                  num_batches)
    out["act_range"] = lm_analysis.activation_range(ranges, output_dir)
  print(f"wrote {', '.join(sorted(out))} to {output_dir}", flush=True)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  out = run_analyses(f.analysis, parse_runs(f.runs), f.output_dir, split=f.split, num_batches=f.num_batches,
                     batch_size=f.batch_size, act_range_runs=f.act_range_runs, data_dir=f.data_dir,
                     tokenizer=f.tokenizer)
  if "sensitivity" in out:
    print(lm_analysis.format_table(out["sensitivity"]["rows"],
                                   ("run", "policy", "valid", "test", "gap_valid", "gap_test", "steps")))
  if "positional" in out:
    labels = list(out["positional"]["runs"])
    print(lm_analysis.format_table(out["positional"]["buckets"], ["positions"] + labels +
                                   [f"gap_{k}" for k in labels[1:]]))
  if "ln" in out:
    print(lm_analysis.format_table(out["ln"]["rows"], ("ln", "fp_valid", "w4a4_valid", "gap_valid", "gap_test")))
  sys.stdout.flush()


if __name__ == "__main__":
  define_flags()
  app.run(main)
