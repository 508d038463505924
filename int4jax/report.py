"""README tables and the results index, generated from the committed results JSON (never typed by hand).

    python -m experiments.tables            # rewrites README.md's tables and results/README.md
    python -m experiments.tables --check    # exit 1 (with a diff) if either is stale; tests/test_report.py does this

README.md holds each generated table between two marker comments; everything outside them is prose and is left
alone:

    <!-- table:glue -->
    | run | ... |              <- replaced by TABLES["glue"].render(json.load(results/glue_sst2_minilm.json))
    <!-- /table:glue -->

results/README.md is wholly generated: one row per results JSON (what, GPU, commit, command) with the files that
belong to it (same name stem: `lm_ptb.md`, `lm_ptb_positional_perplexity.png` belong to `lm_ptb.json`), then the
driver scripts. A results file that belongs to no JSON is listed too, so nothing in results/ goes unindexed.

Adding a table for a new results JSON is one registration here plus the markers in README.md:

    @table("summarization_xsum", "results/summarization_xsum.json")
    def _summarization(d: dict) -> list[list[str]]:
      return [["run", "ROUGE-L"]] + [[r["run"], f"{r['rougeL']:.2f}"] for r in d["runs"]]

A renderer returns rows (the first is the header), or a finished markdown string. A marker in README.md with no
registration, or a registration whose JSON is missing, is an error naming it; a registration without markers in
README.md fails tests/test_report.py (register a table together with its markers). A renderer can serve every file
of one format: `record_kernel_table` reads the kernels bench of record (results/kernels/NVIDIA_<GPU>.json, one row
per op / path / shape), so another GPU is one line:
`table("kernels_<gpu>", "results/kernels/NVIDIA_<GPU>.json")(record_kernel_table)`.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import pathlib
import re
from collections.abc import Callable
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
README = "README.md"
RESULTS_DIR = "results"
RESULTS_INDEX = "results/README.md"

Rows = list[list[str]]


@dataclasses.dataclass(frozen=True)
class Table:
  name: str                                   # the marker name in README.md
  source: str                                 # results JSON, relative to the repository root
  render: Callable[[dict], Rows | str]


TABLES: dict[str, Table] = {}


def table(name: str, source: str):
  """Registers `render(json dict) -> rows | markdown` as README table `name`, fed from `source`."""
  if not re.fullmatch(r"[a-z0-9_]+", name):
    raise ValueError(f"table name {name!r}: use lower-case letters, digits and _")

  def register(render):
    if name in TABLES:
      raise ValueError(f"table {name!r} is registered twice")
    TABLES[name] = Table(name, source, render)
    return render
  return register


def markdown(rows: Rows) -> str:
  """Rows (header first) -> a GitHub markdown table."""
  if not rows or any(len(r) != len(rows[0]) for r in rows):
    raise ValueError("a table needs a header row and rows of the same length")
  lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
  lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
  return "\n".join(lines)


def _num(x: float | None, fmt: str = ".2f") -> str:
  return "–" if x is None else format(x, fmt)


# ----------------------------------------------------------------------------------------------------------------
# The tables


@table("glue", "results/glue_sst2_minilm.json")
def glue_table(d: dict) -> Rows:
  paper = d.get("paper_reference", {})
  rows = [["run", "paper (BERT-base, MNLI-m)", "ours: dev acc. (best)", "gap to teacher"]]
  for r in d["runs"]:
    key = "fp32_mnli" if r["bits"] == "fp32" else f"{r['bits']}_{r['quant_mode']}_mnli"
    ref = paper.get(key)
    rows.append([r["run"], ref.split("/")[0] if ref else "–", _num(r["dev_accuracy"]),
                 _num(r["gap_to_teacher"], "+.2f")])
  return rows


_LM_LABELS = {"fp": "FP teacher", "fp_kd": "FP32 student, same KD recipe (control)", "w4a16": "W4-only (w4a16)",
              "w4a8": "W4A8", "w4a4": "W4A4 sym", "w4a4_asym": "W4A4 asym"}
_LM_PAPER_NOTES = {"w4a16": "≈0 (Fig. C.2)"}   # the paper states this in words, without a number


@table("lm_ptb", "results/lm_ptb.json")
def lm_ptb_table(d: dict) -> Rows:
  runs = {r["run"]: r for r in d["runs"]}
  paper_teacher = runs["fp"]["paper_ptb_gpt2_base"]
  rows = [["run", "paper valid ppl", "ours valid", "ours test", "gap valid (ours)", "paper gap"]]
  for name, label in _LM_LABELS.items():
    r = runs[name]
    paper = r.get("paper_ptb_gpt2_base")
    paper_gap = (_num(paper - paper_teacher, "+.2f") if paper is not None and name != "fp"
                 else _LM_PAPER_NOTES.get(name, "–"))
    rows.append([label, _num(paper), _num(r["valid_ppl"]), _num(r["test_ppl"]), _num(r["gap_valid"], "+.2f"),
                 paper_gap])
  if "post_fp" in runs and "post_w4a4" in runs:
    t, s = runs["post_fp"], runs["post_w4a4"]
    rows.append(["Post-LN teacher → W4A4 sym", "–", f"{t['valid_ppl']:.2f} → {s['valid_ppl']:.2f}",
                 f"{t['test_ppl']:.2f} → {s['test_ppl']:.2f}", _num(s["gap_valid"], "+.2f"), "–"])
  return rows


# (label, op, (M, N, K), the baseline for this op): rows of the bench-of-record table (one JSON row per
# op / path / shape; "bare" rows are XLA's dot alone).
RECORD_HIGHLIGHTS = (
    ("W4A16 decode", "w4a16", (1, 28672, 8192), "bf16"),
    ("W4A16 decode", "w4a16", (16, 28672, 8192), "bf16"),
    ("W8A8", "w8a8", (3072, 4096, 1024), "int8"),
    ("W8A8", "w8a8", (12288, 4096, 1024), "int8"),
    ("W4A4", "w4a4", (3072, 4096, 1024), "fp8"),
    ("W4A4", "w4a4", (12288, 4096, 1024), "fp8"),
    ("W4A4", "w4a4", (32, 4096, 1024), "fp8"),
)


def record_kernel_table(d: dict) -> Rows:
  """The bench of record (results/kernels/NVIDIA_<GPU>.json): per highlighted GEMM the path `ops` picks (the
  fastest that passed the per-element check and, where measured, the worst-case exactness check), the bare XLA
  dots, and ours against the issue's baseline and against the strongest bare dot."""
  def us(op, path, shape):
    r = next((r for r in d["rows"] if r["op"] == op and r["path"] == path and tuple(r["shape"]) == shape), None)
    return None if r is None or "error" in r else r.get("us")

  rows = [["GEMM", "shape (M × N × K)", "ours (`ops` pick)", "bare XLA bf16", "bare XLA int8", "bare XLA fp8",
           "vs baseline, vs strongest bare", "best XLA path of the op"]]
  for label, op, shape, baseline in RECORD_HIGHLIGHTS:
    ok = [r for r in d["rows"] if r["op"] == op and tuple(r["shape"]) == shape and "error" not in r
          and r.get("us") is not None and r.get("worst_case_exact", True)]
    if not ok:
      continue
    pick = min(ok, key=lambda r: r["us"])
    bare = {k: us("bare", f"xla_{k}", shape) for k in ("bf16", "int8", "fp8")}
    measured = {k: v for k, v in bare.items() if v is not None}
    strongest = min(measured, key=measured.get)
    vs = [f"{measured[baseline] / pick['us']:.2f}× {baseline}"] if baseline in measured else []
    if strongest != baseline:
      vs.append(f"{measured[strongest] / pick['us']:.2f}× {strongest}")
    xla = [r for r in ok if r["path"].startswith("xla")]
    best_xla = min(xla, key=lambda r: r["us"]) if xla else None
    rows.append([label, " × ".join(map(str, shape)), f"{pick['us']:.1f} µs ({pick['path']})",
                 *(f"{v:.1f} µs" if v is not None else "–" for v in bare.values()), ", ".join(vs),
                 "–" if best_xla is None else f"{best_xla['path']} {best_xla['us']:.1f} µs "
                 f"(ours {best_xla['us'] / pick['us']:.2f}×)"])
  return rows


table("kernels_h200", "results/kernels/NVIDIA_H200.json")(record_kernel_table)


def _mean_std(m: dict | None) -> str:
  if not m:
    return "–"
  return f"{m['mean']:.2f}" + (f" ± {m['std']:.2f}" if m["n"] > 1 else "") + f" (n={m['n']})"


@table("composability", "results/composability.json")
def composability_table(d: dict) -> Rows:
  """results/scripts/collect_composability.py's summary: best dev accuracy per student, seed mean (n), gap."""
  tasks = sorted(d["summary"])
  rows = [["student"] + [f"{t.upper()} acc. (n)" for t in tasks] + [f"gap {t.upper()}" for t in tasks]]
  teacher = {t: (d["summary"][t].get("teacher") or {}).get("best", {}).get("accuracy") for t in tasks}
  rows.append(["FP32 teacher"] + [_num(teacher[t]) for t in tasks] + ["–"] * len(tasks))
  stats = {v: st for t in tasks for v, st in d["summary"][t].get("stats", {}).items()}
  variants = sorted(stats, key=lambda v: stats[v].get("order", 0))  # the collector's order (JSON keys are sorted)
  for v in variants:
    st = [d["summary"][t].get("stats", {}).get(v) for t in tasks]
    label = next(x["label"] for x in st if x)
    rows.append([label] + [f"{x['mean']:.2f} ({x['n']})" if x and x["mean"] is not None else "–" for x in st]
                + [_num(x["gap"], "+.2f") if x and x["gap"] is not None else "–" for x in st])
  return rows


@table("formats", "results/formats.json")
def formats_table(d: dict) -> Rows:
  """experiments.formats' summary: best dev accuracy per format, seed mean ± std (n), gap to the teacher; then, where
  the JSON has decoder LM settings ("lm"), test perplexity per format and its gap to the teacher (positive: worse)."""
  tasks = list(d["summary"]["tasks"])
  lm = d.get("lm", {}).get("summary", {}).get("settings", {})
  labels = list(dict.fromkeys([r["label"] for t in tasks for r in d["summary"]["tasks"][t]["rows"]]
                              + [r["label"] for s in lm for r in lm[s]["rows"]]))
  rows = [["format"] + [f"{t.upper()} {d['summary']['tasks'][t]['metric']}" for t in tasks]
          + [f"gap {t.upper()}" for t in tasks]
          + [f"{s.upper()} test ppl" for s in lm] + [f"gap {s.upper()}" for s in lm]]
  for label in labels:
    cells = [next((r for r in d["summary"]["tasks"][t]["rows"] if r["label"] == label), None) for t in tasks]
    lm_cells = [next((r for r in lm[s]["rows"] if r["label"] == label), None) for s in lm]
    rows.append([label] + [_mean_std(c["best"]) if c else "–" for c in cells]
                + [_num(c["gap_to_teacher"], "+.2f") if c and c["gap_to_teacher"] is not None else "–"
                   for c in cells]
                + [_mean_std(c["test"]) if c and c["test"]["n"] else "–" for c in lm_cells]
                + [_num(c["gap_to_teacher"]["test"], "+.2f") if c and c["gap_to_teacher"] else "–" for c in lm_cells])
  return rows


@table("glue_minilm", "results/glue_minilm.json")
def glue_minilm_table(d: dict) -> Rows:
  """The GLUE suite report (experiments.glue_suite --collect): per configuration, MRPC accuracy / F1 and SST-2
  accuracy as seed mean ± sample std, with each gap to the teacher."""
  sel = d["selected"]
  teacher = sel.get("FP32 teacher", {})
  cols = [("mrpc", "accuracy"), ("mrpc", "f1"), ("sst2", "accuracy")]
  rows = [["run"] + [f"{t.upper()} {m}" for t, m in cols] + [f"gap {t.upper()} {m}" for t, m in cols]]
  for label, per_task in sel.items():
    cells, gaps = [], []
    for task, metric in cols:
      m = per_task.get(task, {}).get("metrics", {}).get(metric)
      tm = teacher.get(task, {}).get("metrics", {}).get(metric)
      cells.append(_mean_std(m))
      gaps.append("–" if not m or not tm or label == "FP32 teacher" else f"{m['mean'] - tm['mean']:+.2f}")
    rows.append([label] + cells + gaps)
  for label, per_task in d.get("paper", {}).items():  # the paper's BERT-base rows (Table C.5), for scale
    rows.append([f"*{label}*"] + [f"{per_task[t][m]:.1f}" if m in per_task.get(t, {}) else "–" for t, m in cols]
                + ["–"] * len(cols))
  return rows

# Latency columns of the README table (the JSON holds every path; results/latency/<GPU>.md shows them all).
_LATENCY_PATHS = (("jax_bf16", "plain JAX bf16"), ("int4jax_bf16", "int4jax bf16"), ("int4jax_w8a8", "int4jax W8A8"),
                  ("int4jax_w4a4", "int4jax W4A4"), ("int4jax_w4a4_xlaq", "W4A4, XLA quantize"),
                  ("torch_eager_fp16", "torch eager fp16"), ("torch_compile_fp16", "torch.compile fp16"),
                  ("xla_int8", "XLA int8"), ("xla_fp8", "XLA fp8"))


def latency_table(d: dict) -> Rows:
  """End-to-end encoder latency (experiments.latency JSON): device ms per path, W4A4's speedup over the faster bf16
  JAX path, and the GEMM share of W4A4's kernel time. Columns that no cell measured are left out."""
  ok = {(r["model"], r["batch"], r["seq"], r["path"]): r for r in d["rows"] if r["status"] == "ok"}
  paths = [(p, label) for p, label in _LATENCY_PATHS if any(k[3] == p for k in ok)]
  rows = [["model", "batch × seq"] + [label for _, label in paths] + ["W4A4 vs faster bf16", "W4A4 GEMM share"]]
  points = list(dict.fromkeys((r["model"], r["batch"], r["seq"]) for r in d["rows"]))
  for model, b, s in points:
    cell = lambda p: ok.get((model, b, s, p))
    if not any(cell(p) for p, _ in paths):
      continue
    w4 = cell("int4jax_w4a4")
    # vs the faster bf16 path = the smaller speedup, each computed within W4A4's own run (a merged JSON's rows
    # may come from several runs: inference/latency.merge); a run that timed only one of the two says which
    sp = {p: w4[f"speedup_vs_{p}"] for p in ("jax_bf16", "int4jax_bf16") if w4 and f"speedup_vs_{p}" in w4}
    vs = ("–" if not sp else f"{min(sp.values()):.2f}×" if len(sp) == 2 else
          f"{next(iter(sp.values())):.2f}× (vs {dict(_LATENCY_PATHS)[next(iter(sp))]} only)")
    rows.append([model, f"{b} × {s}"] + [f"{cell(p)['median_ms']:.3f}" if cell(p) else "–" for p, _ in paths]
                + [vs,
                   f"{100 * w4['share']['gemm']:.0f}%" if w4 and "share" in w4 else "–"])
  return rows


table("latency_h200", "results/latency/NVIDIA_H200.json")(latency_table)


@table("lm_smollm2", "results/lm_smollm2.json")
def lm_smollm2_table(d: dict) -> Rows:
  rows = [["run", "PTB valid", "PTB test", "WT2 valid", "WT2 test", "gap PTB valid", "steps (best)"]]
  for r in d["rows"]:
    rows.append([r["label"]] + [_num(r[k]) for k in ("ptb_valid", "ptb_test", "wikitext2_valid", "wikitext2_test")]
                + [_num(r["gap_ptb_valid"], "+.2f") if r["gap_ptb_valid"] is not None else "–",
                   f"{r['steps']} ({r['best_step']})"])
  return rows


# ----------------------------------------------------------------------------------------------------------------
# README blocks

_BLOCK = re.compile(r"(<!-- table:([a-z0-9_]+) -->\n)(.*?)(<!-- /table:\2 -->)", re.S)


def render(name: str, root: pathlib.Path = REPO_ROOT) -> str:
  t = TABLES[name]
  path = root / t.source
  if not path.is_file():
    raise FileNotFoundError(f"table {name!r}: results file {t.source} does not exist")
  out = t.render(json.loads(path.read_text()))
  return out if isinstance(out, str) else markdown(out)


def update_readme(text: str, root: pathlib.Path = REPO_ROOT) -> str:
  """`text` with every marked table regenerated. ValueError on an unregistered or unclosed marker."""
  opened = re.findall(r"<!-- table:([a-z0-9_]+) -->", text)
  closed = re.findall(r"<!-- /table:([a-z0-9_]+) -->", text)
  if sorted(opened) != sorted(closed):
    raise ValueError(f"README table markers do not pair up: opened {opened}, closed {closed}")
  unknown = sorted(set(opened) - set(TABLES))
  if unknown:
    raise ValueError(f"README has markers for unregistered tables {unknown}; registered: {sorted(TABLES)}")
  return _BLOCK.sub(lambda m: m.group(1) + render(m.group(2), root) + "\n" + m.group(4), text)


# ----------------------------------------------------------------------------------------------------------------
# results/README.md

def _first(d: dict, *keys: str) -> Any:
  """The first of `keys` present at the top level or under "meta" (None for a JSON list, e.g. a list of checks)."""
  if not isinstance(d, dict):
    return None
  for where in (d, d.get("meta") or {}):
    for k in keys:
      if where.get(k):
        return where[k]
  return None


def _clip(s: Any, n: int) -> str:
  s = " ".join(str(s).split()).replace("|", "\\|")
  return s if len(s) <= n else s[: n - 1] + "…"


def _command(d: dict) -> str:
  cmd = _first(d, "command")
  if cmd:
    return f"`{_clip(cmd, 160)}`"
  runs = [r for r in (d.get("runs", []) if isinstance(d, dict) else []) if isinstance(r, dict) and r.get("command")]
  if runs:
    more = f" (+{len(runs) - 1} more in the JSON)" if len(runs) > 1 else ""
    return f"`{_clip(runs[0]['command'], 160)}`{more}"
  return "–"


def _commit(d: dict) -> str:
  c = _first(d, "commit")
  if not c:
    return "–"
  m = re.match(r"[0-9a-f]{7,40}\b", str(c))
  return f"`{m.group(0)[:7]}`" + (" " + _clip(str(c)[m.end():], 60) if str(c)[m.end():].strip() else "") if m \
      else _clip(c, 70)


def results_index(root: pathlib.Path = REPO_ROOT) -> str:
  results = root / RESULTS_DIR
  files = sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file())
  files = [f for f in files if f != "README.md" and not f.endswith(".pyc")]
  jsons = [f for f in files if f.endswith(".json") and not f.startswith("scripts/")]
  stems = {j: j[: -len(".json")] for j in jsons}
  owner: dict[str, str] = {}
  for f in files:
    if f in jsons or f.startswith("scripts/"):
      continue
    matches = [j for j, s in stems.items() if f.startswith(s)]
    if matches:
      owner[f] = max(matches, key=lambda j: len(stems[j]))
  rows = [["results JSON", "what", "GPU", "commit", "command", "files from the same run"]]
  for j in jsons:
    d = json.loads((results / j).read_text())
    what = _first(d, "experiment", "what", "metric", "timing") or "–"
    gpu = _first(d, "gpu") or "–"
    rows.append([f"[{j}]({j})", _clip(what, 90), _clip(gpu, 50), _commit(d), _command(d),
                 ", ".join(f"[{f}]({f})" for f in files if owner.get(f) == j) or "–"])
  scripts = [f for f in files if f.startswith("scripts/")]
  orphans = [f for f in files if f not in jsons and f not in owner and not f.startswith("scripts/")]
  out = ["# Results index", "",
         "Generated by `python -m experiments.tables` from the JSON files here (do not edit by hand). Each JSON is the",
         "record of one measured run: the README tables are rendered from it (`int4jax/report.py`).", "",
         markdown(rows), "", "## Driver scripts (run on the GPU machine; see each JSON's command)", ""]
  out += [f"- [{f}]({f})" for f in scripts] or ["- none"]
  if orphans:
    out += ["", "## Files with no results JSON", ""] + [f"- [{f}]({f})" for f in orphans]
  return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------------------

def regenerate(root: pathlib.Path = REPO_ROOT) -> dict[str, tuple[str, str]]:
  """{path: (current text, generated text)} for README.md and results/README.md (nothing is written)."""
  readme = root / README
  index = root / RESULTS_INDEX
  current = readme.read_text()
  return {README: (current, update_readme(current, root)),
          RESULTS_INDEX: (index.read_text() if index.is_file() else "", results_index(root))}


def diff(path: str, current: str, generated: str) -> str:
  return "".join(difflib.unified_diff(current.splitlines(True), generated.splitlines(True), f"{path} (committed)",
                                      f"{path} (from the results JSON)"))
