"""Turns the output of results/scripts/lm_smollm2_gpu.sh into results/lm_smollm2.{md,json} and the plots.

    mkdir -p /tmp/smol && tar -xzf <files_at>/logs.tgz -C /tmp/smol
    python results/scripts/collect_lm_smollm2.py <files_at>/runs.json /tmp/smol results/

Runs from several device calls (e.g. the scratch pair of an ONLY_SCRATCH=1 call added to a collected pretrained
run): a comma-separated list, merged left to right (a later file's run replaces an earlier one of the same name);
an earlier collection (results/lm_smollm2.json) counts as a runs file through its "runs". Extract every call's
logs.tgz into the same logs folder.

    python results/scripts/collect_lm_smollm2.py results/lm_smollm2.json,<files_at>/runs.json /tmp/smol results/
"""
import json
import math
import pathlib
import shutil
import sys

STUDENTS = (("w4a16", "W4-only (w4a16)"), ("w4a8", "W4A8"), ("w4a4", "W4A4 sym"), ("w4a4_asym", "W4A4 asym"))


def _ppl(r, dataset, split):
  if dataset == "ptb":
    return r[split]["perplexity"]
  return r.get("extra_eval", {}).get(dataset, {}).get(split, {}).get("perplexity", math.nan)


def _f(v):
  return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"


def _flag(run: dict, name: str) -> str:
  """A flag's value from the run's recorded command line ("?" when it was not given)."""
  return next((a.split("=", 1)[1] for a in run.get("command", "").split() if a.startswith(f"--{name}=")), "?")


def _undertrained(runs: dict) -> str:
  """A caveat when the scratch teacher stopped far short of the pretrained teacher's steps."""
  s, p = runs.get("scratch_fp"), runs.get("fp")
  if not s or not p or s["steps_run"] >= p["steps_run"] / 2:
    return ""
  return (f" (but the scratch teacher ran only {s['steps_run']} of the pretrained teacher's {p['steps_run']} steps: "
          "a barely trained model, which has little to lose)")


def _verdict(ok: bool | None, yes: str, no: str) -> str:
  return "not measured" if ok is None else (f"**reproduces**: {yes}" if ok else f"**contradicts**: {no}")


def load_runs(runs_jsons: str) -> dict:
  """Runs by name from a comma-separated list of runs.json files (or earlier collections), later files winning."""
  runs = {}
  for path in runs_jsons.split(","):
    d = json.loads(pathlib.Path(path).read_text())
    runs.update(d["runs"] if "rows" in d and "runs" in d else d)
  return runs


def main(runs_json: str, logs_dir: str, out_dir: str) -> None:
  runs = load_runs(runs_json)
  logs, out = pathlib.Path(logs_dir), pathlib.Path(out_dir)
  an = json.loads((logs / "an" / "positional_perplexity.json").read_text())
  act = json.loads((logs / "an" / "activation_range.json").read_text())
  an_s_path = logs / "an_scratch" / "positional_perplexity.json"
  an_s = json.loads(an_s_path.read_text()) if an_s_path.exists() else None
  gpu = (logs / "gpu.txt").read_text().strip() if (logs / "gpu.txt").exists() else "unknown"
  teacher = runs["fp"]
  cells = [(d, s) for d in ("ptb", "wikitext2") for s in ("valid", "test")]
  rows = []
  teachers = (("zs", "pretrained SmolLM2, zero-shot (dequantized Q4_1)"),
              ("fp", "FP teacher (pretrained, PTB fine-tune)"))
  for key, label in teachers + STUDENTS:
    if key not in runs:
      continue
    r = runs[key]
    row = {"run": key, "label": label, "steps": r["steps_run"], "best_step": r["best_step"],
           "train_wall_s": r.get("train_wall_time_s")}
    for d, s in cells:
      row[f"{d}_{s}"] = _ppl(r, d, s)
      row[f"gap_{d}_{s}"] = None if key in ("zs", "fp") else _ppl(r, d, s) - _ppl(teacher, d, s)
    rows.append(row)
  commits = {}
  for name, r in runs.items():
    commits.setdefault(str(r.get("git_commit", "unknown"))[:7], []).append(name)
  scratch = {}
  if "scratch_fp" in runs and "scratch_w4a4" in runs:
    for d, s in cells:
      scratch[f"{d}_{s}"] = {"fp": _ppl(runs["scratch_fp"], d, s), "w4a4": _ppl(runs["scratch_w4a4"], d, s),
                             "gap": _ppl(runs["scratch_w4a4"], d, s) - _ppl(runs["scratch_fp"], d, s),
                             "pretrained_fp": _ppl(teacher, d, s), "pretrained_w4a4": _ppl(runs["w4a4"], d, s),
                             "pretrained_gap": _ppl(runs["w4a4"], d, s) - _ppl(teacher, d, s)}
  by = {r["run"]: r for r in rows}
  g = lambda k: by.get(k, {}).get("gap_ptb_valid")
  early = next((b for b in an["buckets"] if b["positions"][0] == 1), None)
  late = an["buckets"][-1] if an["buckets"] else None
  claims = {
      "W4A4 gap >> weight-only gap": _verdict(
          None if g("w4a4") is None or g("w4a16") is None else g("w4a4") > 2 * max(g("w4a16"), 0.0) and g("w4a4") > 0,
          f"PTB valid gap W4A4 {_f(g('w4a4'))} vs W4-only {_f(g('w4a16'))}",
          f"PTB valid gap W4A4 {_f(g('w4a4'))} vs W4-only {_f(g('w4a16'))}"),
      "early positions hurt most (>100 ppl)": _verdict(
          None if early is None or "gap_w4a4_sym" not in early else early["gap_w4a4_sym"] > late["gap_w4a4_sym"],
          f"W4A4 sym gap at positions 1-4 {_f(early and early.get('gap_w4a4_sym'))} vs "
          f"{_f(late and late.get('gap_w4a4_sym'))} at the last bucket"
          + ("" if early and early.get("gap_w4a4_sym", 0) > 100 else " (but not >100 ppl)"),
          f"W4A4 sym gap at positions 1-4 {_f(early and early.get('gap_w4a4_sym'))} vs "
          f"{_f(late and late.get('gap_w4a4_sym'))} at the last bucket"),
      "pretrained suffers more than scratch": _verdict(
          None if not scratch else scratch["ptb_valid"]["pretrained_gap"] > scratch["ptb_valid"]["gap"],
          f"W4A4 gap pretrained {_f(scratch.get('ptb_valid', {}).get('pretrained_gap'))} vs scratch "
          f"{_f(scratch.get('ptb_valid', {}).get('gap'))} (PTB valid)" + _undertrained(runs),
          f"W4A4 gap pretrained {_f(scratch.get('ptb_valid', {}).get('pretrained_gap'))} vs scratch "
          f"{_f(scratch.get('ptb_valid', {}).get('gap'))} (PTB valid)" + _undertrained(runs)),
      "asymmetric helps": _verdict(
          None if g("w4a4_asym") is None else g("w4a4_asym") < g("w4a4"),
          f"W4A4 asym gap {_f(g('w4a4_asym'))} < sym {_f(g('w4a4'))}",
          f"W4A4 asym gap {_f(g('w4a4_asym'))} >= sym {_f(g('w4a4'))}"),
  }
  result = {"what": "pretrained SmolLM2-135M-Instruct (Llama) on PTB: FP teacher and W4/W4A8/W4A4 QAT+KD students; "
                    "scratch-trained same architecture for comparison (issue 15)",
            "gpu": gpu, "commit": teacher.get("git_commit"), "commits": commits, "rows": rows,
            "scratch_vs_pretrained": scratch,
            "positional_buckets": an["buckets"], "positional_buckets_scratch": an_s and an_s["buckets"],
            "activation_range": {k: {layer: {"mean_first_8": v["mean_first_8"], "mean_rest": v["mean_rest"]}
                                     for layer, v in per.items()} for k, per in act["runs"].items()},
            "claims": claims, "runs": runs}
  (out / "lm_smollm2.json").write_text(json.dumps(result, indent=1))
  for src, dst in (("an/positional_perplexity.png", "lm_smollm2_positional_perplexity.png"),
                   ("an/activation_range.png", "lm_smollm2_activation_range.png"),
                   ("an_scratch/positional_perplexity.png", "lm_smollm2_scratch_positional_perplexity.png")):
    if (logs / src).exists():
      shutil.copy(logs / src, out / dst)

  md = ["# Pretrained decoder: SmolLM2-135M (Llama) on PTB, W4 / W4A8 / W4A4 QAT+KD (issue 15)", "",
        f"GPU: {gpu}. Commits: " + "; ".join(f"{c} ({', '.join(n)})" for c, n in commits.items()) +
        ". Driver: `results/scripts/lm_smollm2_gpu.sh` "
        "(recipe: `results/lm_smollm2_recipe.md`).", "",
        "**Caveat: the checkpoint was itself stored in 4 bits** (llama.cpp Q4_1, group 32, asymmetric; embedding "
        "Q8_0). The dequantized weights are the pretrained model here; the teacher is that model fine-tuned briefly "
        "on PTB (float32 master weights, bf16 compute).", "",
        "| run | PTB valid | PTB test | WT2 valid | WT2 test | gap PTB valid | gap PTB test | gap WT2 valid | "
        "gap WT2 test | steps (best) | train wall s |", "|" + "---|" * 11]
  for r in rows:
    md.append(f"| {r['label']} | " + " | ".join(_f(r[f"{d}_{s}"]) for d, s in cells) + " | " +
              " | ".join(_f(r[f"gap_{d}_{s}"]) for d, s in cells) +
              f" | {r['steps']} ({r['best_step']}) | {_f(r['train_wall_s'])} |")
  if not scratch:  # say why, from the run's own log, instead of leaving the comparison silently out
    log = logs / "scratch_fp.log"
    why = next((l.strip() for l in reversed(log.read_text(errors="replace").splitlines()) if "Error" in l),
               "no log") if log.exists() else "not run"
    md += ["", f"Scratch vs pretrained: **not measured** in this run (scratch_fp: {why})."]
  if scratch:
    md += ["", "Scratch vs pretrained (same architecture, same steps and wall budget, W4A4 sym, same KD recipe):", "",
           "| split | scratch FP | scratch W4A4 | scratch gap | pretrained FP | pretrained W4A4 | pretrained gap |",
           "|---|---|---|---|---|---|---|"]
    for k, v in scratch.items():
      md.append(f"| {k} | {_f(v['fp'])} | {_f(v['w4a4'])} | {_f(v['gap'])} | {_f(v['pretrained_fp'])} | "
                f"{_f(v['pretrained_w4a4'])} | {_f(v['pretrained_gap'])} |")
    md += ["", "Steps run (best) of the step cap, and wall budget (compilation included): " + ", ".join(
        f"{n} {runs[n]['steps_run']} ({runs[n]['best_step']}) of {_flag(runs[n], 'num_train_steps')}, "
        f"{_flag(runs[n], 'time_budget_s')} s" + (", stopped by the budget" if runs[n].get("stopped_by_time_budget")
                                                  else "")
        for n in ("fp", "w4a4", "scratch_fp", "scratch_w4a4") if n in runs) + "."]
  if an_s:
    ls = list(an_s["runs"])
    md += ["", "Positional perplexity of the scratch pair (PTB valid):", "",
           "| positions | " + " | ".join(ls) + " | " + " | ".join(f"gap {k}" for k in ls[1:]) + " |",
           "|" + "---|" * (2 * len(ls))]
    md += [f"| {b['positions'][0]}-{b['positions'][1]} | " + " | ".join(_f(b[k]) for k in ls) + " | " +
           " | ".join(_f(b.get(f"gap_{k}")) for k in ls[1:]) + " |" for b in an_s["buckets"]]
    md += ["", "![positional, scratch](lm_smollm2_scratch_positional_perplexity.png)"]
  labels = [k for k in an["runs"]]
  md += ["", "Positional perplexity (PTB valid; position j predicted from the j tokens before it):", "",
         "| positions | " + " | ".join(labels) + " | " + " | ".join(f"gap {k}" for k in labels[1:]) + " |",
         "|" + "---|" * (2 * len(labels))]
  for b in an["buckets"]:
    md.append(f"| {b['positions'][0]}-{b['positions'][1]} | " + " | ".join(_f(b[k]) for k in labels) + " | " +
              " | ".join(_f(b.get(f"gap_{k}")) for k in labels[1:]) + " |")
  md += ["", "![positional](lm_smollm2_positional_perplexity.png)", "",
         "Activation range (max - min over features of the down_proj input), mean over positions 0-7 vs the rest:", "",
         "| run | layer | first 8 | rest |", "|---|---|---|---|"]
  for k, per in result["activation_range"].items():
    for layer, v in per.items():
      md.append(f"| {k} | {layer} | {_f(v['mean_first_8'])} | {_f(v['mean_rest'])} |")
  md += ["", "![activation range](lm_smollm2_activation_range.png)", "", "## The paper's claims on this run", ""]
  md += [f"- {claim}: {verdict}" for claim, verdict in claims.items()]
  (out / "lm_smollm2.md").write_text("\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main(*sys.argv[1:])
