"""GLUE metrics against sklearn / scipy and hand-computed cases; the paper's GLUE average."""

import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from int4jax import metrics

PREDS = np.array([1, 0, 1, 1, 0, 1, 0, 0])
LABELS = np.array([1, 0, 0, 1, 0, 1, 1, 0])   # TP 3, TN 3, FP 1, FN 1


def test_hand_computed_binary():
  assert metrics.accuracy(PREDS, LABELS) == pytest.approx(75.0)
  assert metrics.f1(PREDS, LABELS) == pytest.approx(75.0)           # P = R = 3/4
  assert metrics.matthews(PREDS, LABELS) == pytest.approx(50.0)     # (9 - 1) / sqrt(4*4*4*4)
  assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(100.0)
  assert metrics.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(80.0)  # 1 - 6*2/(4*15)


@pytest.mark.parametrize("task", sorted(metrics.TASK_METRICS))
def test_every_task_matches_sklearn_scipy(task):
  rng = np.random.default_rng(0)
  n = 50
  if task == "stsb":
    labels = rng.uniform(0, 5, n)
    preds = labels + rng.normal(0, 1, n)
    expected = {"pearson": 100 * scipy.stats.pearsonr(preds, labels)[0],
                "spearman": 100 * scipy.stats.spearmanr(preds, labels)[0]}
    got = metrics.glue_metrics(task, preds, labels)
  elif task == "mnli":
    labels, preds = rng.integers(0, 3, n), rng.integers(0, 3, n)
    split = (np.arange(n) >= 30).astype(int)
    expected = {"accuracy_m": 100 * sklearn.metrics.accuracy_score(labels[:30], preds[:30]),
                "accuracy_mm": 100 * sklearn.metrics.accuracy_score(labels[30:], preds[30:])}
    got = metrics.glue_metrics(task, preds, labels, split)
  else:
    labels, preds = rng.integers(0, 2, n), rng.integers(0, 2, n)
    ref = {"accuracy": sklearn.metrics.accuracy_score, "f1": sklearn.metrics.f1_score,
           "mcc": sklearn.metrics.matthews_corrcoef}
    expected = {m: 100 * ref[m](labels, preds) for m in metrics.TASK_METRICS[task][0]}
    got = metrics.glue_metrics(task, preds, labels)
  assert got.keys() == expected.keys()
  for k in expected:
    assert got[k] == pytest.approx(expected[k], abs=1e-9), k
  assert metrics.primary_metric(task) in got


def test_bad_metric_input():
  with pytest.raises(ValueError, match="unknown task"):
    metrics.glue_metrics("squad", PREDS, LABELS)
  with pytest.raises(ValueError, match="non-empty"):
    metrics.glue_metrics("sst2", np.array([]), np.array([]))
  with pytest.raises(ValueError, match="split_ids"):
    metrics.glue_metrics("mnli", PREDS, LABELS)


def _scores(cola, mnli_m, mnli_mm, mrpc_acc, qnli, qqp_acc, rte, sst2, stsb_p):
  return {"cola": {"mcc": cola}, "mnli": {"accuracy_m": mnli_m, "accuracy_mm": mnli_mm},
          "mrpc": {"f1": 0.0, "accuracy": mrpc_acc}, "qnli": {"accuracy": qnli},
          "qqp": {"f1": 0.0, "accuracy": qqp_acc}, "rte": {"accuracy": rte}, "sst2": {"accuracy": sst2},
          "stsb": {"pearson": stsb_p, "spearman": 0.0}, "wnli": {"accuracy": 0.0}}


@pytest.mark.parametrize("row, avg, avg_wo_cola", [
    # Table C.5 BERT-base FP32 and BERT-large FP32; Table C.3 teacher (paper_spec.md §5.1), F1/spearman ignored.
    ((59.7, 84.9, 85.6, 86.3, 92.1, 91.5, 72.2, 93.2, 90.1), 83.95, 86.98),
    ((63.4, 85.4, 85.4, 88.0, 92.2, 91.05, 74.0, 93.6, 90.3), 84.81, 87.50),
    ((57.4, 84.4, 84.8, 86.5, 91.4, 91.4, 73.3, 93.3, 89.5), 83.56, None),
])
def test_glue_average_reproduces_paper_rows(row, avg, avg_wo_cola):
  got = metrics.glue_average(_scores(*row))
  assert got["avg"] == pytest.approx(avg, abs=0.011)
  if avg_wo_cola is not None:
    assert got["avg_wo_cola"] == pytest.approx(avg_wo_cola, abs=0.011)


def test_glue_average_needs_all_terms():
  s = _scores(*range(9))
  del s["rte"]
  with pytest.raises(ValueError, match="rte/accuracy"):
    metrics.glue_average(s)


def test_perplexity():
  assert metrics.perplexity(2 * math.log(3.0), 2) == pytest.approx(3.0)
