"""The 4-bit format comparison (issue 17): which students exist, reading their run directories, one table + plot.

Every student is a QAT+KD run distilled from the same FP32 teacher, with the same steps, batch, learning rate,
clip, KD terms and seeds; only `--bits` / `--quant_mode` differ (STUDENTS). Two kinds of run are compared:
  GLUE  `experiments.glue` runs, one teacher per task, dev-set accuracy (higher is better): `read_run`, `summarize`;
  LM    `experiments.lm` runs, one teacher per "setting" (a model on a corpus, e.g. ptb_gpt2), perplexity of the
        best-validation checkpoint re-evaluated in float32 (lower is better): `read_lm_run`, `collect_lm`,
        `summarize_lm`.
This module knows nothing about running them (experiments/formats.py and results/scripts/formats_lm_gpu.sh do): it
turns run directories into records, records into per-format statistics over seeds, and statistics into
`<prefix>.json/.md/.png` (`write_results`): the GLUE table, the LM table, which format wins where, and how that
compares with what the published comparisons claim (`claims_vs_numbers`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Iterable

import numpy as np

from int4jax.quant import policy as policy_lib


@dataclasses.dataclass(frozen=True)
class Student:
  bits: str        # a quant.policy preset
  quant_mode: str  # sym | asym (asym only for integer presets)
  label: str


TEACHER = Student("fp32", "sym", "FP32 teacher")
STUDENTS = (Student("w4a4", "sym", "INT4 sym"), Student("w4a4", "asym", "INT4 asym"),
            Student("w4a4_mxfp4", "sym", "MXFP4"), Student("w4a4_nvfp4", "sym", "NVFP4"),
            Student("w1.58a8", "sym", "ternary W + INT8 A"))

# What the published comparisons claim (qualitative; no numbers copied), shown next to our table.
PUBLISHED_CLAIMS = """\
- OCP MX / Rouhani et al. 2023 ("Microscaling Data Formats for Deep Learning", arXiv:2310.10537): direct-cast
  MXFP4 for weights *and* activations loses noticeable accuracy; with quantization-aware fine-tuning MXFP4 weights
  (with wider activations) come close to FP32.
- NVIDIA's NVFP4 material (2025) and follow-up LLM studies (e.g. Egiazarian et al. 2025, "Bridging the Gap Between
  Promise and Performance for Microscaling FP4 Quantization"): NVFP4 is clearly more accurate than MXFP4 at 4 bits,
  attributed to the smaller block (16 vs 32) and the finer E4M3 scale vs MXFP4's power-of-two scale.
- Fine-grained INT vs FP studies (e.g. Chen et al. 2025, "INT v.s. FP") report that integer formats with the same
  block size and scale can match or beat the FP4 formats, so "FP4 beats INT4" depends on the granularity compared.
  Our INT4 rows are per-channel weights / per-token activations (the paper's), a coarser granularity than MX/NV.
- BitNet b1.58 (Ma et al. 2024, arXiv:2402.17764) matches FP16 LLaMA from about 3B parameters when trained from
  scratch with ternary weights; converting a small pretrained model to ternary weights by short fine-tuning is
  reported to lose accuracy (e.g. BitDistill, 2025), which our short-budget QAT+KD setting tests directly.
"""


def run_name(task: str, student: Student, seed: int | None) -> str:
  """Run directory name: the teacher has one per task, students one per (format, seed)."""
  if student == TEACHER:
    return f"{task}_fp32"
  return f"{task}_{student.bits}_{student.quant_mode}_s{seed}"


def label_of(bits: str, quant_mode: str) -> str:
  for s in (TEACHER,) + STUDENTS:
    if (s.bits, s.quant_mode) == (bits, quant_mode) or (bits == "fp32" and s == TEACHER):
      return s.label
  return f"{bits} {quant_mode}"


def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def read_run(workdir: str) -> dict:
  """A run directory of experiments.glue -> one flat record (status "ok", or "missing" with the reason)."""
  rec: dict[str, Any] = {"name": os.path.basename(os.path.normpath(workdir)), "status": "missing"}
  cfg_path, summary_path = os.path.join(workdir, "config.json"), os.path.join(workdir, "summary.json")
  if not os.path.isfile(cfg_path):
    return {**rec, "reason": "no config.json (the run did not start)"}
  stored = _read_json(cfg_path)
  glue = stored.get("run", stored.get("glue", {}))  # train.rundir's {"kind", "run"}; "glue" before the tasks layer
  rec.update({k: glue.get(k) for k in ("task", "model", "bits", "quant_mode", "seed", "num_train_steps",
                                        "batch_size", "learning_rate", "max_train_examples", "kd_losses",
                                        "max_seq_length")})
  cmd_path = os.path.join(workdir, "command.txt")
  if os.path.isfile(cmd_path):
    with open(cmd_path) as f:
      rec["command"] = f.read().strip()
  evals = []
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if os.path.isfile(metrics_path):
    with open(metrics_path) as f:
      evals = [row for row in map(json.loads, filter(str.strip, f)) if row.get("split") == "eval"]
  rec["evals"] = evals
  if not os.path.isfile(summary_path):
    if not evals:
      return {**rec, "reason": "no summary.json and no evaluation (the run was stopped early)"}
    from int4jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    name = metrics_lib.primary_metric(rec["task"]) if rec["task"] != "synthetic" else "accuracy"
    best = max(evals, key=lambda row: row[name])
    keep = lambda row: {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
    rec.update(status="partial", reason=f"stopped after step {evals[-1]['step']}; evaluations so far used",
               metric_name=name, best=keep(best), final=keep(evals[-1]), best_step=best["step"],
               steps=evals[-1]["step"], wall_time_s=None, examples_per_s=None, epochs=None)
    return rec
  s = _read_json(summary_path)
  rec.update(status="ok", metric_name=s["metric_name"], best=s["best"], final=s["final"], best_step=s["best_step"],
             steps=s.get("step"), wall_time_s=s.get("wall_time_s"), examples_per_s=s.get("examples_per_s"),
             epochs=s.get("epochs"))
  return rec


def collect(root: str) -> list[dict]:
  """Records of every run directory directly under `root` (sorted by name)."""
  return [read_run(os.path.join(root, d)) for d in sorted(os.listdir(root))
          if os.path.isfile(os.path.join(root, d, "config.json"))]


def _stats(values: list[float]) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()) if v.size else None, "std": float(v.std(ddof=1)) if v.size > 1 else None,
          "n": int(v.size), "values": [float(x) for x in v]}


def summarize(records: Iterable[dict]) -> dict:
  """Per task and format: the primary metric of the best checkpoint and of the final step, over seeds; the gap of
  each student's mean to its teacher; the winner per task. Missing runs are listed, never averaged in; partial
  runs (stopped early: a deadline, a timeout or a kill) count with their evaluations so far (best and last) and
  are listed."""
  records = list(records)
  ok = [r for r in records if r["status"] in ("ok", "partial")]
  tasks = list(dict.fromkeys(r["task"] for r in ok))  # in the order of the runs (the command's --tasks)
  out: dict[str, Any] = {"tasks": {}, "missing": [r["name"] for r in records if r["status"] == "missing"],
                         "partial": [f"{r['name']} (step {r['steps']})" for r in records if r["status"] == "partial"]}
  for task in tasks:
    rows = [r for r in ok if r["task"] == task]
    metric = rows[0]["metric_name"]
    teacher = [r for r in rows if r["bits"] == "fp32"]
    t_best = _stats([r["best"][metric] for r in teacher])
    entries = []
    for st in (TEACHER,) + STUDENTS:
      runs = _runs_of(rows, st)
      if not runs:
        continue
      best = _stats([r["best"][metric] for r in runs])
      final = _stats([r["final"][metric] for r in runs])
      gap = None if st == TEACHER or t_best["mean"] is None else best["mean"] - t_best["mean"]
      entries.append({"label": st.label, "bits": st.bits, "quant_mode": st.quant_mode, "best": best,
                      "final": final, "gap_to_teacher": gap, "seeds": sorted(r["seed"] for r in runs),
                      "steps": sorted({r["steps"] for r in runs}), "wall_time_s": _stats([r["wall_time_s"] or 0
                                                                                          for r in runs])["mean"]})
    out["tasks"][task] = {"metric": metric, "rows": entries, "verdict": _verdict(entries, metric)}
  return out


def _runs_of(rows: list[dict], st: Student) -> list[dict]:
  """The records of one format (the teacher: every fp32 record, whatever its quant_mode)."""
  return [r for r in rows if r["bits"] == st.bits and (st == TEACHER or r["quant_mode"] == st.quant_mode)]


def _spreads(*stats: dict) -> list[float]:
  """The seed standard deviations that exist (runs with one seed have none)."""
  return [s["std"] for s in stats if s["std"] is not None]


def _verdict(entries: list[dict], metric: str, key: str = "best", higher_is_better: bool = True) -> str:
  """One plain sentence: the best student by mean `key` statistic, and whether its lead exceeds the seed spread."""
  sign = 1.0 if higher_is_better else -1.0
  students = sorted([e for e in entries if e["bits"] != "fp32" and e[key]["mean"] is not None],
                    key=lambda e: -sign * e[key]["mean"])
  if not students:
    return "no student finished"
  top = students[0]
  text = f"{top['label']} has the {'highest' if higher_is_better else 'lowest'} mean {metric} ({top[key]['mean']:.2f})"
  if len(students) > 1:
    second = students[1]
    lead = sign * (top[key]["mean"] - second[key]["mean"])
    spreads = _spreads(top[key], second[key])
    if lead == 0:
      text += f", tied with {second['label']}"
    elif not spreads:
      text += f", {lead:.2f} ahead of {second['label']} (one seed: no spread to compare with)"
    elif lead > max(spreads):
      text += f", {lead:.2f} ahead of {second['label']}, more than the seed spread (sd <= {max(spreads):.2f})"
    else:
      text += (f", but only {lead:.2f} ahead of {second['label']}, within the seed spread "
               f"(sd up to {max(spreads):.2f}): a tie")
  last = students[-1]
  return text + f"; last: {last['label']} ({last[key]['mean']:.2f})."


# ------------------------------------------------------------------------------------------------------------------
# Decoder LMs: experiments.lm run directories (results/scripts/formats_lm_gpu.sh trains them). A "setting" is one FP32
# teacher and its students, named like a GLUE task (run_name(setting, student, seed)), e.g. ptb_gpt2.

LM_SPLITS = ("valid", "test")
# Which split ranks the LM students: test, which neither training nor checkpoint selection (on valid) has seen.
LM_RANK_SPLIT = "test"


def model_label(model_config: dict | None) -> str:
  """'GPT-2 6x512' / 'Llama 30x576' from a stored model_config (layers x width)."""
  if not model_config:
    return "?"
  kind = model_config.get("model_type", "gpt2")  # runs stored before model_type was recorded are GPT-2
  layers = model_config.get("n_layer", model_config.get("num_hidden_layers"))
  width = model_config.get("n_embd", model_config.get("hidden_size"))
  return f"{ {'gpt2': 'GPT-2', 'llama': 'Llama'}.get(kind, kind)} {layers}x{width}"


def read_lm_run(workdir: str, setting: str) -> dict:
  """A run directory of experiments.lm -> one flat record: "ok" with results.json (best-validation checkpoint
  re-evaluated in float32 on valid and test), "partial" with only validations logged during training (stopped before
  its re-evaluation: best valid perplexity in the training compute dtype, no test), else "missing" with the reason."""
  rec: dict[str, Any] = {"name": os.path.basename(os.path.normpath(workdir)), "setting": setting,
                         "status": "missing", "valid_ppl": None, "test_ppl": None}
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.isfile(cfg_path):
    return {**rec, "reason": "no config.json (the run did not start)"}
  stored = _read_json(cfg_path)
  run = stored.get("run", {})
  rec.update({k: run.get(k) for k in ("model", "dataset", "bits", "quant_mode", "seed", "num_train_steps",
                                       "batch_size", "learning_rate", "block_size", "weight_clip", "dropout",
                                       "compute_dtype", "teacher")})
  rec.update(kd_losses=stored.get("kd_losses"), model_label=model_label(stored.get("model_config")))
  cmd_path = os.path.join(workdir, "command.txt")
  if os.path.isfile(cmd_path):
    with open(cmd_path) as f:
      rec["command"] = f.read().strip()
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  evals = []
  if os.path.isfile(metrics_path):
    with open(metrics_path) as f:
      evals = [{"step": row["step"], "perplexity": row.get("perplexity")}
               for row in map(json.loads, filter(str.strip, f)) if row.get("split") == "eval"]
  rec["evals"] = evals
  results_path = os.path.join(workdir, "results.json")
  if os.path.isfile(results_path):
    res = _read_json(results_path)
    return {**rec, "status": "ok", "valid_ppl": res["valid"]["perplexity"], "test_ppl": res["test"]["perplexity"],
            "best_step": res["best_step"], "steps": res["steps_run"],
            "stopped_by_time_budget": res["stopped_by_time_budget"], "train_wall_time_s": res["train_wall_time_s"],
            "wall_time_s": res["wall_time_s"], "num_params": res.get("num_params"),
            "device_kind": res.get("device_kind"), "policy": res.get("policy")}
  scored = [e for e in evals if e["perplexity"] is not None]  # null: a diverged validation (inf)
  if not scored:
    return {**rec, "reason": "no results.json and no finite validation (stopped before its first evaluation)"}
  best = min(scored, key=lambda e: e["perplexity"])
  return {**rec, "status": "partial", "valid_ppl": best["perplexity"], "best_step": best["step"],
          "steps": evals[-1]["step"], "stopped_by_time_budget": True, "train_wall_time_s": None, "wall_time_s": None,
          "reason": f"no results.json: stopped after step {evals[-1]['step']}; best validation during training "
                    f"({rec['compute_dtype']}), no test"}


def collect_lm(root: str, setting: str, students: Iterable[Student], seeds: Iterable[int]) -> list[dict]:
  """Records of one setting: every experiments.lm run directory directly under `root` (whatever its name), then a
  "missing" record for the teacher and each (student, seed) that none of them is."""
  found = []
  for d in sorted(os.listdir(root)):
    cfg_path = os.path.join(root, d, "config.json")
    if os.path.isfile(cfg_path) and _read_json(cfg_path).get("kind") == "lm":
      found.append(read_lm_run(os.path.join(root, d), setting))
  have = {(r["bits"], r["quant_mode"], r["seed"]) for r in found}
  have_teacher = any(r["bits"] == TEACHER.bits for r in found)
  missing = [] if have_teacher else [(TEACHER, None)]
  missing += [(st, seed) for seed in seeds for st in students if (st.bits, st.quant_mode, seed) not in have]
  return found + [{"name": run_name(setting, st, seed), "setting": setting, "status": "missing", "bits": st.bits,
                   "quant_mode": st.quant_mode, "seed": seed, "valid_ppl": None, "test_ppl": None,
                   "reason": "no run directory (not run, or killed before it started)"} for st, seed in missing]


def summarize_lm(records: Iterable[dict]) -> dict:
  """Per setting and format: valid and test perplexity over seeds, each mean's gap to the teacher (positive: worse),
  the steps run (a run stopped by the wall-clock budget had fewer), the winner by test perplexity. Missing runs are
  listed, never averaged in; partial runs count with their validation so far (no test) and are listed."""
  records = list(records)
  ok = [r for r in records if r["status"] in ("ok", "partial")]
  out: dict[str, Any] = {"settings": {}, "missing": [r["name"] for r in records if r["status"] == "missing"],
                         "partial": [f"{r['name']} (step {r['steps']})" for r in records if r["status"] == "partial"]}
  for setting in dict.fromkeys(r["setting"] for r in ok):  # in the order of the runs
    rows = [r for r in ok if r["setting"] == setting]
    entries = []
    for st in (TEACHER,) + STUDENTS:
      runs = _runs_of(rows, st)
      if runs:
        entries.append({"label": st.label, "bits": st.bits, "quant_mode": st.quant_mode,
                        **{split: _stats([r[f"{split}_ppl"] for r in runs if r[f"{split}_ppl"] is not None])
                           for split in LM_SPLITS},
                        "seeds": sorted(r["seed"] for r in runs), "steps": sorted({r["steps"] for r in runs}),
                        "planned_steps": sorted({r["num_train_steps"] for r in runs}),
                        "stopped_by_time_budget": any(r.get("stopped_by_time_budget") for r in runs),
                        "wall_time_s": _stats([r["wall_time_s"] for r in runs if r.get("wall_time_s")])["mean"]})
    teacher = next((e for e in entries if e["bits"] == TEACHER.bits), None)
    for e in entries:
      e["gap_to_teacher"] = None if teacher is None or e is teacher else {
          split: None if e[split]["mean"] is None or teacher[split]["mean"] is None
          else e[split]["mean"] - teacher[split]["mean"] for split in LM_SPLITS}
    # The comparison is only fair at one budget: students planned with different step counts (runs of different
    # driver settings collected together) are flagged, not silently averaged.
    planned = sorted({n for e in entries if e is not teacher for n in e["planned_steps"]})
    out["settings"][setting] = {
        "metric": "perplexity", "model": rows[0].get("model_label"), "dataset": rows[0].get("dataset"),
        "rows": entries, "verdict": _verdict(entries, f"{LM_RANK_SPLIT} perplexity", LM_RANK_SPLIT, False),
        "unequal_planned_steps": planned if len(planned) > 1 else None}
  return out


def lm_setup(records: list[dict]) -> str:
  """A setup sentence from the LM records themselves (model, corpus, teacher and student recipe, seeds)."""
  done = [r for r in records if r["status"] in ("ok", "partial")]
  teacher = next((r for r in done if r["bits"] == TEACHER.bits), None)
  students = [r for r in done if r["bits"] != TEACHER.bits]
  if teacher is None:
    return "no teacher run finished"
  # A preset name is a random init; a checkpoint directory or .gguf file (a path) is pretrained weights.
  init = f"from {os.path.basename(teacher['model'])}" if os.sep in teacher["model"] else "from scratch"
  text = (f"{teacher['model_label']} {init} on {teacher['dataset']} (block {teacher['block_size']}, "
          f"{teacher['compute_dtype']} compute); FP32 teacher {teacher['num_train_steps']} planned steps (batch "
          f"{teacher['batch_size']}, lr {teacher['learning_rate']:g}, dropout {teacher['dropout']:g})")
  if students:
    s = students[0]
    clip = s["weight_clip"]
    text += (f"; every student initialised from it and distilled from it ({' + '.join(s['kd_losses'] or [])}, "
             f"weight clip {f'[{clip[0]:g}, {clip[1]:g}]' if clip else 'none'}, lr {s['learning_rate']:g}, batch "
             f"{s['batch_size']}, dropout {s['dropout']:g}) for {s['num_train_steps']} planned steps each; seeds "
             f"{sorted({r['seed'] for r in students})}")
  return text + "."


def merge_lm(old: dict | None, new: dict | None) -> dict | None:
  """The LM part of a results JSON ({"meta": {setting: meta}, "runs": [...]}) with `new`'s settings replacing
  `old`'s, so a SmolLM2 run added later keeps the GPT-2 rows."""
  if not new:
    return old
  if not old:
    return new
  replaced = set(new["meta"]) | {r["setting"] for r in new["runs"]}
  return {"meta": {**{k: v for k, v in old["meta"].items() if k not in replaced}, **new["meta"]},
          "runs": [r for r in old["runs"] if r["setting"] not in replaced] + new["runs"]}


# ------------------------------------------------------------------------------------------------------------------
# Which format wins where, against the published claims: every compared setting (GLUE task or LM setting) seen the
# same way, so the statements are computed from the numbers, never written in.

@dataclasses.dataclass(frozen=True)
class _Setting:
  name: str
  metric: str                 # what the scores are, e.g. "accuracy", "test perplexity"
  higher_is_better: bool
  score: dict[str, dict]      # label -> _stats of the ranked score
  gap: dict[str, float]       # student label -> mean score minus the teacher's


def _all_settings(summary: dict, lm_summary: dict | None) -> list[_Setting]:
  out = []
  for task, info in summary["tasks"].items():
    out.append(_Setting(task, info["metric"], True, {e["label"]: e["best"] for e in info["rows"]},
                        {e["label"]: e["gap_to_teacher"] for e in info["rows"] if e["gap_to_teacher"] is not None}))
  for name, info in (lm_summary or {}).get("settings", {}).items():
    rank = LM_RANK_SPLIT
    out.append(_Setting(name, f"{rank} perplexity", False,
                        {e["label"]: e[rank] for e in info["rows"] if e[rank]["mean"] is not None},
                        {e["label"]: e["gap_to_teacher"][rank] for e in info["rows"]
                         if e["gap_to_teacher"] and e["gap_to_teacher"][rank] is not None}))
  return out


def _better_by(st: _Setting, a: str, b: str) -> float:
  """How much format `a`'s mean is better than `b`'s (negative: worse), in the setting's unit."""
  diff = st.score[a]["mean"] - st.score[b]["mean"]
  return diff if st.higher_is_better else -diff


def _conclusion(ahead: int, decisive: int, n: int, what: str) -> str:
  """Whether n settings bear a claim out: `ahead` point its way, `decisive` of them by more than the seed spread."""
  if ahead == n:
    return (f"consistent with the claim ({what})" if decisive == n else
            f"in the claim's direction everywhere ({what}), but beyond the seed spread in {decisive} of {n} only")
  if ahead == 0:
    return f"the opposite of the claim ({what})" + ("" if decisive else ", though never beyond the seed spread")
  return f"mixed ({what}, beyond the seed spread in {decisive}): the claim holds in some settings, not in others"


def _nvfp4_vs_mxfp4(settings: list[_Setting]) -> str:
  nv, mx = label_of("w4a4_nvfp4", "sym"), label_of("w4a4_mxfp4", "sym")
  both = [st for st in settings if nv in st.score and mx in st.score]
  claim = ("**NVFP4 vs MXFP4.** Claim (NVIDIA's NVFP4 material and Egiazarian et al. 2025, against MXFP4 as the OCP "
           "MX v1.0 spec defines it): NVFP4's smaller 16-element blocks with FP8 E4M3 scales are more accurate than "
           "MXFP4's 32-element blocks with power-of-two E8M0 scales.")
  if not both:
    return claim + " Here: no setting has both formats."
  parts, ahead, decisive = [], 0, 0
  for st in both:
    lead = _better_by(st, nv, mx)
    spread = _spreads(st.score[nv], st.score[mx])
    beyond = bool(spread) and abs(lead) > max(spread)
    ahead, decisive = ahead + (lead > 0), decisive + beyond
    where = ("one seed each: no spread" if not spread else
             f"{'beyond' if beyond else 'within'} the seed spread, sd {'<=' if beyond else 'up to'} {max(spread):.2f}")
    side = (f"ahead by {lead:.2f} {st.metric}" if lead > 0 else f"behind by {-lead:.2f} {st.metric}" if lead < 0
            else f"tied in {st.metric}")
    parts.append(f"{st.name} {side} ({where})")
  what = f"NVFP4 ahead in {ahead} of {len(both)} settings"
  return claim + f" Here NVFP4 vs MXFP4: {'; '.join(parts)}: {_conclusion(ahead, decisive, len(both), what)}."


def _ternary_vs_teacher(settings: list[_Setting]) -> str:
  tern = label_of("w1.58a8", "sym")
  have = [st for st in settings if tern in st.gap]
  claim = ("**Ternary weights.** Claim (BitNet b1.58, Ma et al. 2024, arXiv:2402.17764): ternary weights match full "
           "precision when the model is trained from scratch with them at scale (from about 3B parameters); it makes "
           "no such claim for converting a small trained model by short fine-tuning, which is what happens here.")
  if not have:
    return claim + " Here: no ternary student finished."
  parts, behind, last = [], 0, 0
  for st in have:
    worse = -st.gap[tern] if st.higher_is_better else st.gap[tern]  # > 0: worse than the teacher
    students = [lab for lab in st.gap if lab in st.score]
    is_last = all(_better_by(st, lab, tern) >= 0 for lab in students)
    behind, last = behind + (worse > 0), last + is_last
    parts.append(f"{st.name} {st.gap[tern]:+.2f} {st.metric}{' (the last student)' if is_last else ''}")
  n = len(have)
  if behind == n:
    verdict = (f"ternary W + INT8 A stays behind its FP32 teacher in {n} of {n} settings and is the last student "
               f"in {last}: what the claim's conditions (training from scratch, at scale) lead one to expect when "
               "they are not met; short QAT+KD of a small model does not reach full precision with ternary weights")
  elif behind == 0:
    verdict = (f"ternary W + INT8 A matches or beats its teacher in {n} of {n} settings, more than the claim leads one "
               "to expect from short fine-tuning of a small model")
  else:
    verdict = f"ternary W + INT8 A is behind its teacher in {behind} of {n} settings (last student in {last})"
  return claim + f" Here, gap to the teacher: {'; '.join(parts)}: {verdict}."


def claims_vs_numbers(summary: dict, lm_summary: dict | None = None) -> list[str]:
  """Markdown bullets: each published claim (with its source) next to what our numbers say about it."""
  settings = _all_settings(summary, lm_summary)
  return [f"- {_nvfp4_vs_mxfp4(settings)}", f"- {_ternary_vs_teacher(settings)}"]


def _fmt(s: dict) -> str:
  if s["mean"] is None:
    return "–"
  return f"{s['mean']:.2f}" + ("" if s["std"] is None else f" ± {s['std']:.2f}")


def _quantizer_cells(st: Student, describe: dict) -> tuple[str, str]:
  """(weights, activations) descriptions of a format for the tables."""
  w, a = describe.get(st.bits, ("?", "?"))
  if st.quant_mode == "asym":
    w, a = w.replace(" sym ", " asym "), a.replace(" sym ", " asym ")
  return w, a


def _glue_table(summary: dict, describe: dict) -> list[str]:
  """Rows: formats; columns: per task the best-checkpoint metric, its gap to the teacher, the final-step metric."""
  tasks = list(summary["tasks"])
  head = "| format | weights | activations | " + " | ".join(
      f"{t} {summary['tasks'][t]['metric']} best | Δ teacher | final" for t in tasks) + " |"
  lines = [head, "|" + "---|" * (3 + 3 * len(tasks))]
  for st in (TEACHER,) + STUDENTS:
    cells = []
    found = False
    for t in tasks:
      e = next((e for e in summary["tasks"][t]["rows"] if e["label"] == st.label), None)
      if e is None:
        cells += ["–", "–", "–"]
        continue
      found = True
      gap = "–" if e["gap_to_teacher"] is None else f"{e['gap_to_teacher']:+.2f}"
      cells += [_fmt(e["best"]) + f" (n={e['best']['n']})", gap, _fmt(e["final"])]
    if found:
      w, a = _quantizer_cells(st, describe)
      lines.append(f"| {st.label} | {w} | {a} | " + " | ".join(cells) + " |")
  return lines + ["", "Metric values are dev-set percentages, mean ± sample sd over seeds (n = number of seeds); "
                  "'best' is the best evaluated checkpoint (the paper's convention), 'final' the last step.", ""]


def _steps_cell(e: dict) -> str:
  steps = "/".join(str(x) for x in e["steps"] if x is not None) or "–"
  return steps + ("*" if e["stopped_by_time_budget"] else "")


def _lm_section(lm_summary: dict, lm_meta: dict, describe: dict) -> list[str]:
  """The decoder table: per setting valid and test perplexity, each gap to the teacher, and the steps run."""
  names = list(lm_summary["settings"])
  lines = ["## Decoder LMs: perplexity (lower is better)", ""]
  for name in names:
    info = lm_summary["settings"][name]
    setup = (lm_meta.get(name) or {}).get("setup") or f"{info['model']} on {info['dataset']}."
    lines.append(f"- **{name}**: {setup.strip()}")
  head = "| format | weights | activations | " + " | ".join(
      f"{n} valid ppl | Δ teacher | test ppl | Δ teacher | steps" for n in names) + " |"
  lines += ["", head, "|" + "---|" * (3 + 5 * len(names))]
  for st in (TEACHER,) + STUDENTS:
    entries = [next((e for e in lm_summary["settings"][n]["rows"] if e["label"] == st.label), None) for n in names]
    if not any(entries):
      continue
    cells = []
    for e in entries:
      if e is None:
        cells += ["–"] * 5
        continue
      gap = lambda split: "–" if not e["gap_to_teacher"] or e["gap_to_teacher"][split] is None else (
          f"{e['gap_to_teacher'][split]:+.2f}")
      cells += [_fmt(e["valid"]) + f" (n={e['valid']['n']})", gap("valid"), _fmt(e["test"]), gap("test"),
                _steps_cell(e)]
    w, a = _quantizer_cells(st, describe)
    lines.append(f"| {st.label} | {w} | {a} | " + " | ".join(cells) + " |")
  lines += ["", "Perplexity of each run's best-validation checkpoint re-evaluated in float32, mean ± sample sd "
            "over seeds (n = number of seeds); Δ teacher: the mean minus the FP32 teacher's (positive: worse). "
            "steps: optimizer steps run; * = a run stopped by its wall-clock budget before its planned steps "
            "(it trained less than the others, and its learning rate had not decayed to zero).", ""]
  for name in names:
    if lm_summary["settings"][name].get("unequal_planned_steps"):
      lines += [f"**Warning, {name}: the students were planned with different step counts "
                f"({lm_summary['settings'][name]['unequal_planned_steps']}), so they did not train at one budget.**",
                ""]
  return lines


def render_markdown(summary: dict, meta: dict, lm_summary: dict | None = None, lm_meta: dict | None = None) -> str:
  """results/formats.md: setup, the GLUE table (rows: formats; columns: tasks), the decoder table (columns: LM
  settings), which format wins where, our numbers against the published claims, the claims, commands."""
  describe = {p: (w, a) for p, w, a in policy_lib.describe()}
  lm_settings = (lm_summary or {}).get("settings", {})
  lines = ["# The 4-bit format zoo: INT4 vs MXFP4 vs NVFP4 vs ternary under one QAT+KD recipe (issue 17)", ""]
  lines += [meta.get("setup", "").strip(), ""] if meta.get("setup") else []
  if summary["tasks"]:
    lines += _glue_table(summary, describe)
  if lm_settings:
    lines += _lm_section(lm_summary, lm_meta or {}, describe)
  lines += ["## Which format wins where", ""]
  lines += [f"- **{t}**: {info['verdict']}" for t, info in summary["tasks"].items()]
  lines += [f"- **{n}** ({info['model']}, {info['dataset']}): {info['verdict']}" for n, info in lm_settings.items()]
  if summary["missing"]:
    lines += [f"- Missing runs (not averaged in): {', '.join(summary['missing'])}"]
  if summary["partial"]:
    lines += [f"- Partial runs (stopped before their last step; their best evaluation so far is averaged in): "
              f"{', '.join(summary['partial'])}"]
  if lm_settings and lm_summary["missing"]:
    lines += [f"- Missing LM runs (not averaged in): {', '.join(lm_summary['missing'])}"]
  if lm_settings and lm_summary["partial"]:
    lines += [f"- Partial LM runs (no float32 re-evaluation: their best validation during training is averaged "
              f"into valid, nothing into test): {', '.join(lm_summary['partial'])}"]
  lines += ["", "Our numbers against the published claims (computed from the tables above):", ""]
  lines += claims_vs_numbers(summary, lm_summary)
  lines += ["", "## What the published comparisons claim", "", PUBLISHED_CLAIMS.strip(), ""]
  lines += ["## Run", ""]
  for key in ("gpu", "commit", "date", "device_minutes", "command"):
    if meta.get(key):
      lines.append(f"- {key.replace('_', ' ')}: `{meta[key]}`" if key in ("commit", "command") else
                   f"- {key.replace('_', ' ')}: {meta[key]}")
  if summary["tasks"]:
    lines += ["- every run's exact command (with its git SHA) is in `formats.json` under `runs[].command`."]
  for name in lm_settings:
    m = (lm_meta or {}).get(name) or {}
    said = "; ".join(f"{k}: {m[k]}" for k in ("gpu", "date", "wall_s") if m.get(k))
    lines.append(f"- LM {name}" + (f" ({said})" if said else "") + (f", commit `{m['commit']}`" if m.get("commit")
                                                                     else "") +
                 (f": `{m['command']}`" if m.get("command") else "") +
                 "; every run's command is in `formats.json` under `lm.runs[].command`.")
  lines.append("")
  return "\n".join(lines)


def _panels(summary: dict, lm_summary: dict | None) -> list[dict]:
  """One bar panel per GLUE task (best dev metric, %) and per LM setting (test perplexity)."""
  panels = []
  for task, info in summary["tasks"].items():
    panels.append({"title": f"{task}: dev {info['metric']} (best checkpoint)", "ylabel": f"{info['metric']} (%)",
                   "rows": info["rows"], "key": "best", "higher_is_better": True})
  for name, info in (lm_summary or {}).get("settings", {}).items():
    panels.append({"title": f"{name}: {LM_RANK_SPLIT} perplexity (lower is better)",
                   "ylabel": f"{LM_RANK_SPLIT} perplexity", "rows": [e for e in info["rows"]
                                                                   if e[LM_RANK_SPLIT]["mean"] is not None],
                   "key": LM_RANK_SPLIT, "higher_is_better": False})
  return panels


def plot(summary: dict, path: str, lm_summary: dict | None = None) -> None:
  """One panel per task / LM setting: a bar per format (mean over seeds), a dot per seed, the teacher as a line."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = _panels(summary, lm_summary)
  fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4), squeeze=False)
  for ax, p in zip(axes[0], panels):
    key = p["key"]
    students = [e for e in p["rows"] if e["bits"] != "fp32"]
    xs = np.arange(len(students))
    ax.bar(xs, [e[key]["mean"] for e in students], color="#8fb3d9")
    for x, e in zip(xs, students):
      ax.plot([x] * e[key]["n"], e[key]["values"], "k.", ms=6)
    teacher = next((e for e in p["rows"] if e["bits"] == "fp32"), None)
    if teacher is not None:
      ax.axhline(teacher[key]["mean"], color="#c0392b", ls="--", label="FP32 teacher")
      ax.legend(loc="lower left" if p["higher_is_better"] else "upper left")
    values = [v for e in p["rows"] for v in e[key]["values"] if math.isfinite(v)]
    if values and p["higher_is_better"]:  # percentages
      ax.set_ylim(max(0.0, min(values) - 5), min(100.0, max(values) + 2))
    elif values:  # perplexities: zoom on the differences, which are small next to the values
      pad = 0.15 * (max(values) - min(values)) + 0.5
      ax.set_ylim(max(0.0, min(values) - pad), max(values) + 2 * pad)
    ax.set_xticks(xs, [e["label"].replace(" + ", "\n+ ") for e in students], fontsize=8)
    ax.set_title(p["title"])
    ax.set_ylabel(p["ylabel"])
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_results(records: list[dict], prefix: str, meta: dict, lm: dict | None = None) -> list[str]:
  """<prefix>.json (meta, summary, every run record; the LM part under "lm"), <prefix>.md, <prefix>.png from the
  GLUE records and `lm` = {"meta": {setting: meta}, "runs": LM records} (merge_lm). Returns the paths."""
  summary = summarize(records)
  lm_summary = summarize_lm(lm["runs"]) if lm else None
  if not summary["tasks"] and not (lm_summary and lm_summary["settings"]):
    missing = summary["missing"] + (lm_summary["missing"] if lm_summary else [])
    raise ValueError(f"no finished run among {len(records) + len(lm['runs'] if lm else [])} records: nothing to "
                     f"tabulate (missing: {missing})")
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  paths = [prefix + ".json", prefix + ".md", prefix + ".png"]
  data = {"meta": meta, "summary": summary, "runs": records}
  if lm:
    data["lm"] = {"meta": lm["meta"], "summary": lm_summary, "runs": lm["runs"]}
  with open(paths[0], "w") as f:
    json.dump(data, f, indent=1, sort_keys=True,
              default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o))
  with open(paths[1], "w") as f:
    f.write(render_markdown(summary, meta, lm_summary, lm["meta"] if lm else None))
  plot(summary, paths[2], lm_summary)
  return paths
