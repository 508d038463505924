"""Turn summarization_gpu.sh's output into results/summarization_xsum.{md,json} and the positional-perplexity plot.

    python results/scripts/collect_summarization.py <summarization_runs.tar or its extracted folder> [results_dir]

ROUGE is computed here (the GPU machine has no rouge-score) from the predictions and references each run stored,
with int4jax.summarization_metrics (run_summarization's sentence split for Lsum). The plot is
experiments.lm_analysis's positional perplexity over the held-out summaries (teacher first).
"""
from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile

from int4jax.analysis import lm_failure as lm_analysis
from int4jax import summarization_metrics

ORDER = ("fp32", "w4a4_sym", "w4a4_asym", "w4a4_6+3", "w4a4_6+1")
PAPER_XSUM = {  # paper_spec.md: BART-base XSum R1/R2/RL, Table 1 (FP, W4A4 sym, asym) and Table 3 (6+3, 6+1)
    "fp32": (42.18, 19.44, 34.36), "w4a4_sym": (41.54, 18.61, 33.69), "w4a4_asym": (41.53, 18.56, 33.62),
    "w4a4_6+3": (40.61, 17.83, 32.90), "w4a4_6+1": (38.23, 16.45, 31.49)}


def _runs(path: str) -> tuple[dict, str]:
  if os.path.isfile(path):
    tmp = tempfile.mkdtemp()
    with tarfile.open(path) as tar:
      tar.extractall(tmp, filter="data")
    path = tmp
  runs = {}
  for name in sorted(os.listdir(path)):
    f = os.path.join(path, name, "results.json")
    if os.path.isfile(f):
      with open(f) as fh:
        runs[name] = json.load(fh)
  gpu = open(os.path.join(path, "gpu.txt")).read() if os.path.isfile(os.path.join(path, "gpu.txt")) else ""
  return runs, gpu


def collect(path: str, out_dir: str) -> dict:
  runs, gpu = _runs(path)
  if "fp32" not in runs:
    raise ValueError(f"{path}: no fp32 teacher results.json (runs found: {sorted(runs)})")
  rows = {}
  for name in [n for n in ORDER if n in runs] + [n for n in runs if n not in ORDER and n != "denoise"]:
    r = runs[name]
    rouge = summarization_metrics.rouge(r["predictions"], r["references"])
    mc = r["model_config"]
    rows[name] = {
        "policy": r["policy"], "layers": f"{mc['encoder_layers']}+{mc['decoder_layers']}",
        "decoder_layer_map": r.get("decoder_layer_map"), "rouge": rouge,
        "heldout_loss": r["valid"]["loss"], "heldout_perplexity": r["valid"]["perplexity"],
        "best_step": r["best_step"], "steps_run": r["steps_run"], "stopped_by_time_budget": r["stopped_by_time_budget"],
        "train_wall_time_s": r["train_wall_time_s"], "num_params": r["num_params"],
        "num_examples": r["generation"]["num_examples"], "example_predictions": r["predictions"][:3]}
  teacher_rl = rows["fp32"]["rouge"]["rougeL"]
  for row in rows.values():
    row["rougeL_gap_to_teacher"] = row["rouge"]["rougeL"] - teacher_rl
  den = runs.get("denoise", {})
  fp = runs["fp32"]
  out = {
      "what": "small BART (denoising-pretrained here, no pretrained BART offline) fine-tuned on a 1000-example XSum "
              "subset, W4A4 QAT+KD students; ROUGE on the held-out part",
      "gpu": gpu, "git_commit": fp.get("git_commit"), "device_kind": fp.get("device_kind"),
      "model_config": fp["model_config"], "generation": fp["generation"],
      "sentence_splitter": summarization_metrics.sentence_splitter(),
      "pretraining": {k: den.get(k) for k in ("steps_run", "best_step", "train_wall_time_s", "command")} | {
          "heldout_denoising_loss": den.get("valid", {}).get("loss")},
      "runs": rows, "paper_bart_base_xsum_r1_r2_rl": PAPER_XSUM,
      "commands": {k: runs[k]["command"] for k in runs}}
  os.makedirs(out_dir, exist_ok=True)
  plot_dir = os.path.join(out_dir, "summarization_xsum_positional")
  pos = lm_analysis.positional_perplexity({k: runs[k] for k in rows}, plot_dir, split="valid", zoom=62)
  out["positional_perplexity"] = {"plot": os.path.relpath(os.path.join(plot_dir, "positional_perplexity.png"),
                                                          out_dir), "buckets": pos.get("buckets")}
  with open(os.path.join(out_dir, "summarization_xsum.json"), "w") as f:
    json.dump(out, f, indent=1)
  with open(os.path.join(out_dir, "summarization_xsum.md"), "w") as f:
    f.write(markdown(out))
  return out


def markdown(out: dict) -> str:
  mc, gen = out["model_config"], out["generation"]
  lines = [
      "# BART summarization on XSum: W4A4 and layer reduction (issue 13)", "",
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
      f"(DQ-BART's XSum settings). ROUGE F x100, mean over {next(iter(out['runs'].values()))['num_examples']} "
      f"held-out examples, Lsum split: {out['sentence_splitter']}.",
      f"Pretraining: {out['pretraining'].get('steps_run')} steps, held-out denoising loss "
      f"{out['pretraining'].get('heldout_denoising_loss')}. GPU: {out['device_kind']}; commit {out['git_commit']}.",
      "", "| run | enc+dec | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | RL gap | held-out ppl | steps (best) | "
      "train s | paper R1/R2/RL (BART-base) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in out["runs"].items():
    g = r["rouge"]
    paper = out["paper_bart_base_xsum_r1_r2_rl"].get(name)
    lines.append(f"| {name} | {r['layers']} | {g['rouge1']:.2f} | {g['rouge2']:.2f} | {g['rougeL']:.2f} | "
                 f"{g['rougeLsum']:.2f} | {r['rougeL_gap_to_teacher']:+.2f} | {r['heldout_perplexity']:.2f} | "
                 f"{r['steps_run']} ({r['best_step']}) | {r['train_wall_time_s'] or 0:.0f} | "
                 f"{'/'.join(f'{v:.2f}' for v in paper) if paper else '-'} |")
  lines += ["", f"Positional perplexity of the decoder (held-out summaries): `{out['positional_perplexity']['plot']}`.",
            "", "Commands:", ""] + [f"    {c}" for c in out["commands"].values()] + [""]
  return "\n".join(lines)


if __name__ == "__main__":
  if len(sys.argv) not in (2, 3):
    raise SystemExit(__doc__)
  result = collect(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "results")
  print(json.dumps({k: v["rouge"] for k, v in result["runs"].items()}, indent=1))
