"""GLUE metrics (sklearn / scipy), the paper's GLUE average, perplexity helpers.

All scores are in percent points (accuracy 0.9312 -> 93.12; correlations x 100), as the paper reports them, so
"within 1.0 point" means a difference of 1.0 in these units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import scipy.stats
import sklearn.metrics

# task -> (metric names reported, primary metric used to pick the best checkpoint). The primary is the number
# the paper's GLUE average uses (paper_spec.md §5.1): MRPC/QQP accuracy, STS-B Pearson, MNLI matched.
TASK_METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "cola": (("mcc",), "mcc"),
    "sst2": (("accuracy",), "accuracy"),
    "mrpc": (("f1", "accuracy"), "accuracy"),
    "stsb": (("pearson", "spearman"), "pearson"),
    "qqp": (("f1", "accuracy"), "accuracy"),
    "mnli": (("accuracy_m", "accuracy_mm"), "accuracy_m"),
    "qnli": (("accuracy",), "accuracy"),
    "rte": (("accuracy",), "accuracy"),
    "wnli": (("accuracy",), "accuracy"),
    "synthetic": (("accuracy",), "accuracy"),
}

# The nine numbers of the paper's "Avg" (Tables C.3 / C.5), as (task, metric); WNLI is not in it.
GLUE_AVERAGE_TERMS = (("cola", "mcc"), ("mnli", "accuracy_m"), ("mnli", "accuracy_mm"), ("mrpc", "accuracy"),
                      ("qnli", "accuracy"), ("qqp", "accuracy"), ("rte", "accuracy"), ("sst2", "accuracy"),
                      ("stsb", "pearson"))


def accuracy(preds, labels) -> float:
  return 100.0 * float(sklearn.metrics.accuracy_score(labels, preds))


def f1(preds, labels) -> float:
  return 100.0 * float(sklearn.metrics.f1_score(labels, preds))


def matthews(preds, labels) -> float:
  return 100.0 * float(sklearn.metrics.matthews_corrcoef(labels, preds))


def pearson(preds, labels) -> float:
  return 100.0 * float(scipy.stats.pearsonr(preds, labels)[0])


def spearman(preds, labels) -> float:
  return 100.0 * float(scipy.stats.spearmanr(preds, labels)[0])


_FNS = {"accuracy": accuracy, "f1": f1, "mcc": matthews, "pearson": pearson, "spearman": spearman}


def glue_metrics(task: str, preds: np.ndarray, labels: np.ndarray, split_ids: np.ndarray | None = None
                 ) -> dict[str, float]:
  """All metrics of a task. preds: [n] class ids (or scores for STS-B); MNLI needs split_ids (0 m, 1 mm)."""
  if task not in TASK_METRICS:
    raise ValueError(f"unknown task {task!r}; known: {sorted(TASK_METRICS)}")
  preds, labels = np.asarray(preds), np.asarray(labels)
  if preds.shape != labels.shape or preds.ndim != 1 or len(preds) == 0:
    raise ValueError(f"preds {preds.shape} and labels {labels.shape} must be equal non-empty 1-D arrays")
  if task == "mnli":
    if split_ids is None:
      raise ValueError("mnli metrics need split_ids (0 = matched, 1 = mismatched)")
    split_ids = np.asarray(split_ids)
    out = {}
    for sid, suffix in ((0, "m"), (1, "mm")):
      sel = split_ids == sid
      if sel.any():
        out[f"accuracy_{suffix}"] = accuracy(preds[sel], labels[sel])
    return out
  return {name: _FNS[name](preds, labels) for name in TASK_METRICS[task][0]}


def primary_metric(task: str) -> str:
  return TASK_METRICS[task][1]


def glue_average(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """The paper's GLUE average: mean of 9 numbers (CoLA Mcc, MNLI-m, MNLI-mm, MRPC Acc, QNLI, QQP Acc, RTE,
  SST-2, STS-B Pearson), and the same without CoLA. scores: task -> glue_metrics dict. Reverse-engineered in
  paper_spec.md §5.1; it fits every row of Tables C.3 and C.5 to within 0.01."""
  missing = [f"{t}/{m}" for t, m in GLUE_AVERAGE_TERMS if m not in scores.get(t, {})]
  if missing:
    raise ValueError(f"GLUE average needs {missing}")
  values = {(t, m): float(scores[t][m]) for t, m in GLUE_AVERAGE_TERMS}
  without_cola = [v for (t, _), v in values.items() if t != "cola"]
  return {"avg": sum(values.values()) / len(values), "avg_wo_cola": sum(without_cola) / len(without_cola)}


def perplexity(total_nll: float, num_tokens: int) -> float:
  """exp(mean token negative log-likelihood); nll in nats."""
  if num_tokens <= 0:
    raise ValueError(f"{num_tokens=} must be positive")
  return math.exp(total_nll / num_tokens)
