"""Turn summarization_gpu.sh's output into results/summarization_xsum.{md,json} and the positional-perplexity plot.

    python results/scripts/collect_summarization.py <summarization_runs.tar or its extracted folder> [results_dir]
    python results/scripts/collect_summarization.py --status <runs folder>     # gpu.json (what the GPU script writes)

ROUGE is computed here (the GPU machine has no rouge-score) from the predictions and references each run stored,
with int4jax.summarization_metrics (run_summarization's sentence split for Lsum). The plot is
experiments.lm_analysis's positional perplexity over the held-out summaries (teacher first; needs matplotlib).
`--status` needs neither: it reads walls.txt, budgets.json, gpu.txt and each run's results.json / metrics.jsonl and
says which runs finished, which the deadline killed (partial: the best held-out loss their evaluations logged) and
which never started; the table below carries those statuses and the budgets.
"""
from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile

EXPECTED = ("denoise", "fp32", "w4a4_sym", "w4a4_asym", "w4a4_6+3", "w4a4_6+1")
ORDER = EXPECTED[1:]
PAPER_XSUM = {  # paper_spec.md: BART-base XSum R1/R2/RL, Table 1 (FP, W4A4 sym, asym) and Table 3 (6+3, 6+1)
    "fp32": (42.18, 19.44, 34.36), "w4a4_sym": (41.54, 18.61, 33.69), "w4a4_asym": (41.53, 18.56, 33.62),
    "w4a4_6+3": (40.61, 17.83, 32.90), "w4a4_6+1": (38.23, 16.45, 31.49)}
KILLED_RCS = {124: "killed at the deadline", 137: "killed at the deadline", 143: "stopped (TERM)"}


def _read_json(path: str):
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _read_text(path: str) -> str:
  return open(path).read() if os.path.isfile(path) else ""


def _metrics(run_dir: str) -> list[dict]:
  path = os.path.join(run_dir, "metrics.jsonl")
  return [json.loads(line) for line in open(path) if line.strip()] if os.path.isfile(path) else []


def _walls(root: str) -> dict[str, dict]:
  """walls.txt lines `name rc=N start=Ss wall=Ws` or `name skipped start=Ss` -> {name: fields}."""
  out = {}
  for line in _read_text(os.path.join(root, "walls.txt")).splitlines():
    name, *rest = line.split()
    fields = {k: v.rstrip("s") for k, _, v in (p.partition("=") for p in rest) if v}
    fields["skipped"] = "skipped" in rest
    out[name] = fields
  return out


def run_status(root: str) -> dict:
  """gpu.json: the GPU, the budgets, and every run's status with its steps, walls and held-out loss."""
  walls = _walls(root)
  runs = {}
  for name in list(EXPECTED) + [n for n in walls if n not in EXPECTED]:
    w = walls.get(name)
    run_dir = os.path.join(root, name)
    results = _read_json(os.path.join(run_dir, "results.json"))
    rc = int(w["rc"]) if w and "rc" in w else None
    if results is not None:
      status = "done"
    elif w is None:
      status = "not started (the script ended first)"
    elif w["skipped"]:
      status = "not started (deadline)"
    else:
      status = KILLED_RCS.get(rc, "ended without results.json" if rc == 0 else f"failed (rc {rc})")
    entry = {"status": status, "rc": rc, "start_s": int(w["start"]) if w else None,
             "wall_s": int(w["wall"]) if w and "wall" in w else None}
    if results is not None:
      entry.update({k: results.get(k) for k in ("best_step", "steps_run", "num_train_steps", "stopped_by_time_budget",
                                                "train_wall_time_s", "startup_s")},
                   heldout_loss=results["valid"]["loss"])
    else:
      rows = _metrics(run_dir)
      evals = [r for r in rows if r.get("split") == "eval" and r.get("loss") is not None]
      best = min(evals, key=lambda r: r["loss"]) if evals else None
      entry.update(last_train_step=max([r["step"] for r in rows if r.get("split") == "train"], default=None),
                   best_step=best and best["step"], best_heldout_loss=best and best["loss"])
    runs[name] = entry
  real = {k: v for k, v in runs.items() if not k.startswith("warm/")}
  return {"gpu": _read_text(os.path.join(root, "gpu.txt")), "budgets": _read_json(os.path.join(root, "budgets.json")),
          "partial": any(v["status"] != "done" for v in real.values()), "runs": real,
          "warm_up": {k: v for k, v in runs.items() if k.startswith("warm/")}}


def _extracted(path: str) -> str:
  if os.path.isfile(path):
    tmp = tempfile.mkdtemp()
    with tarfile.open(path) as tar:
      tar.extractall(tmp, filter="data")
    return tmp
  return path


def collect(path: str, out_dir: str) -> dict:
  from int4jax import summarization_metrics  # pylint: disable=g-import-not-at-top  (rouge-score, nltk)
  from int4jax.analysis import lm_failure  # pylint: disable=g-import-not-at-top  (matplotlib)
  root = _extracted(path)
  status = _read_json(os.path.join(root, "gpu.json")) or run_status(root)
  results = {n: _read_json(os.path.join(root, n, "results.json")) for n in status["runs"]}
  done = {n: r for n, r in results.items() if r is not None and n != "denoise"}
  if not done:
    raise ValueError(f"{path}: no finished summarization run (statuses: "
                     f"{ {n: s['status'] for n, s in status['runs'].items()} })")
  rows = {}
  for name in [n for n in ORDER if n in status["runs"]] + [n for n in status["runs"] if n not in EXPECTED]:
    st, r = status["runs"][name], results.get(name)
    if r is None:   # cut by the deadline (or failed): what its evaluations logged, no ROUGE
      rows[name] = {"status": st["status"], "rouge": None, "best_step": st.get("best_step"),
                    "heldout_loss": st.get("best_heldout_loss"), "steps_run": st.get("last_train_step")}
      continue
    mc = r["model_config"]
    rows[name] = {
        "status": "done", "policy": r["policy"], "layers": f"{mc['encoder_layers']}+{mc['decoder_layers']}",
        "decoder_layer_map": r.get("decoder_layer_map"),
        "rouge": summarization_metrics.rouge(r["predictions"], r["references"]),
        "heldout_loss": r["valid"]["loss"], "heldout_perplexity": r["valid"]["perplexity"],
        "best_step": r["best_step"], "steps_run": r["steps_run"], "stopped_by_time_budget": r["stopped_by_time_budget"],
        "train_wall_time_s": r["train_wall_time_s"], "startup_s": r.get("startup_s"), "num_params": r["num_params"],
        "num_examples": r["generation"]["num_examples"], "example_predictions": r["predictions"][:3]}
  teacher = rows.get("fp32", {}).get("rouge")
  for row in rows.values():
    row["rougeL_gap_to_teacher"] = (row["rouge"]["rougeL"] - teacher["rougeL"]
                                    if row["rouge"] and teacher else None)
  den = results.get("denoise") or {}
  ref = results.get("fp32") or next(iter(done.values()))
  out = {
      "what": "small BART (denoising-pretrained here, no pretrained BART offline) fine-tuned on a 1000-example XSum "
              "subset, W4A4 QAT+KD students; ROUGE on the held-out part",
      "partial": status["partial"], "budgets_s": status["budgets"], "gpu": status["gpu"],
      "git_commit": ref.get("git_commit"), "device_kind": ref.get("device_kind"), "model_config": ref["model_config"],
      "generation": ref["generation"], "sentence_splitter": summarization_metrics.sentence_splitter(),
      "pretraining": {k: den.get(k) for k in ("steps_run", "best_step", "train_wall_time_s", "command")} | {
          "heldout_denoising_loss": den.get("valid", {}).get("loss"), "status": status["runs"]["denoise"]["status"]},
      "runs": rows, "claims": claims(rows), "run_status": status["runs"], "paper_bart_base_xsum_r1_r2_rl": PAPER_XSUM,
      "commands": {k: r["command"] for k, r in results.items() if r is not None}}
  os.makedirs(out_dir, exist_ok=True)
  plot_dir = os.path.join(out_dir, "summarization_xsum_positional")
  ordered = {k: done[k] for k in rows if k in done}   # the teacher first when it finished
  pos = lm_failure.positional_perplexity(ordered, plot_dir, split="valid", zoom=62)
  out["positional_perplexity"] = {"plot": os.path.relpath(os.path.join(plot_dir, "positional_perplexity.png"),
                                                          out_dir), "reference": next(iter(ordered)),
                                  "buckets": pos.get("buckets")}
  with open(os.path.join(out_dir, "summarization_xsum.json"), "w") as f:
    json.dump(out, f, indent=1)
  with open(os.path.join(out_dir, "summarization_xsum.md"), "w") as f:
    f.write(markdown(out))
  return out


def claims(rows: dict) -> dict:
  """The paper's two XSum claims, judged from this run's ROUGE-L gaps (None where a run has no ROUGE)."""
  gap = lambda n: rows.get(n, {}).get("rougeL_gap_to_teacher")
  paper_gap = lambda n: PAPER_XSUM[n][2] - PAPER_XSUM["fp32"][2]
  out = {}
  for n in ("w4a4_sym", "w4a4_asym"):
    out[f"{n} within 1 ROUGE-L of its teacher"] = (
        "not measured" if gap(n) is None else
        f"{'**reproduces**' if gap(n) >= -1.0 else '**contradicts**'}: gap {gap(n):+.2f} (paper {paper_gap(n):+.2f})")
  if gap("w4a4_6+3") is not None and gap("w4a4_6+1") is not None:
    ordered = gap("w4a4_6+1") < gap("w4a4_6+3")
    out["fewer decoder layers cost more (Table 3: 6+1 below 6+3)"] = (
        f"{'**reproduces**' if ordered else '**contradicts**'}: 6+3 {gap('w4a4_6+3'):+.2f}, 6+1 "
        f"{gap('w4a4_6+1'):+.2f} (paper {paper_gap('w4a4_6+3'):+.2f}, {paper_gap('w4a4_6+1'):+.2f})")
  else:
    out["fewer decoder layers cost more (Table 3: 6+1 below 6+3)"] = "not measured"
  return out


def _budgets_line(b: dict | None) -> str:
  if not b:
    return "Budgets: not recorded."
  return (f"Budgets (s, each from the start of the run's training program, compilation included; training stops at "
          f"the first step after it once best/ exists): pretraining {b['pretrain_s']}, fine-tune {b['finetune_s']}, "
          f"each of the 4 concurrent students {b['student_s']}; hard deadline {b['deadline_s']} s after the start "
          "kills what still runs.")


def markdown(out: dict) -> str:
  mc, gen = out["model_config"], out["generation"]
  n_examples = next((r["num_examples"] for r in out["runs"].values() if r["status"] == "done"), "?")
  lines = [
      "# BART summarization on XSum: W4A4 and layer reduction (issue 13)", "",
      "**Partial run**: the deadline cut at least one run (status column)." if out["partial"] else
      "All runs finished before the deadline.", "",
      f"Model: BART {mc['encoder_layers']}+{mc['decoder_layers']} layers x {mc['d_model']} "
      f"({mc['encoder_attention_heads']} heads, FFN {mc['encoder_ffn_dim']}), GPT-2 BPE + BART's 4 specials. "
      "No pretrained BART is reachable offline: the teacher was pretrained here with BART's denoising objective "
      "(text infilling, Poisson(3) spans over 30% of tokens, + sentence permutation) on PTB train, WikiText-2 "
      "valid/test and the XSum documents of our train part, then fine-tuned on that train part (900 of the 1000-"
      "example XSum subset; held-out: the other 100, split seed 0). Students: W4A4 QAT with KD "
      "(ClsLoss + Logit + Att* on encoder self/decoder self/cross attention + Rep on both stacks) from the "
      "fine-tuned teacher; layer-reduced students initialised from DQ-BART's teacher-layer map.",
      f"Decoding: {gen['num_beams']} beams, length_penalty {gen['length_penalty']}, max_length {gen['max_length']}, "
      f"min_length {gen['min_length']}, no_repeat_ngram_size {gen['no_repeat_ngram_size']} "
      f"(DQ-BART's XSum settings). ROUGE F x100, mean over {n_examples} held-out examples, Lsum split: "
      f"{out['sentence_splitter']}.",
      _budgets_line(out["budgets_s"]),
      f"Pretraining ({out['pretraining']['status']}): {out['pretraining'].get('steps_run')} steps, held-out "
      f"denoising loss {out['pretraining'].get('heldout_denoising_loss')}. GPU: {out['device_kind']}; commit "
      f"{out['git_commit']}.",
      "", "| run | status | enc+dec | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | RL gap | held-out loss | "
      "steps (best) | train s | start-up s | paper R1/R2/RL (BART-base) |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  fmt = lambda v, spec=".2f": "-" if v is None else format(v, spec)
  for name, r in out["runs"].items():
    g = r["rouge"] or {}
    paper = out["paper_bart_base_xsum_r1_r2_rl"].get(name)
    lines.append(f"| {name} | {r['status']} | {r.get('layers', '-')} | {fmt(g.get('rouge1'))} | "
                 f"{fmt(g.get('rouge2'))} | {fmt(g.get('rougeL'))} | {fmt(g.get('rougeLsum'))} | "
                 f"{fmt(r['rougeL_gap_to_teacher'], '+.2f')} | {fmt(r['heldout_loss'], '.4f')} | "
                 f"{fmt(r['steps_run'], 'd')} ({fmt(r['best_step'], 'd')}) | "
                 f"{fmt(r.get('train_wall_time_s'), '.0f')} | "
                 f"{fmt(r.get('startup_s'), '.0f')} | {'/'.join(f'{v:.2f}' for v in paper) if paper else '-'} |")
  lines += ["", "Start-up s: from the start of the run's training program to its first compiled step (a few seconds "
            "when the warm-up had filled the compilation cache).", "",
            f"Positional perplexity of the decoder (held-out summaries, reference "
            f"{out['positional_perplexity']['reference']}): `{out['positional_perplexity']['plot']}`.", "",
            "The paper's claims on this run (ROUGE-L gap to the teacher; paper: BART-base, full XSum):", ""] + [
            f"- {claim}: {verdict}" for claim, verdict in out["claims"].items()] + [
            "", "Commands:", ""] + [f"    {c}" for c in out["commands"].values()] + [""]
  return "\n".join(lines)


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--status":
    print(json.dumps(run_status(sys.argv[2]), indent=1))
  elif len(sys.argv) in (2, 3):
    result = collect(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "results")
    print(json.dumps({k: v["rouge"] for k, v in result["runs"].items()}, indent=1))
  else:
    raise SystemExit(__doc__)
