"""GLUE: task specs, readers (canonical TSV, `datasets` saved to disk, `datasets.load_dataset`) and tokenization.

    examples = load_split("sst2", "train", data_dir="../shared/data/glue/SST-2")   # or data_dir=None: HF hub/cache
    arrays = encode(examples, tokenizer, max_seq_length=64)   # input_ids/attention_mask/token_type_ids/labels

Labels follow the Hugging Face `glue` builder everywhere (MNLI: entailment 0, neutral 1, contradiction 2; QNLI and
RTE: entailment 0, not_entailment 1), so TSV and `datasets` sources train interchangeable heads. MNLI's evaluation
split is matched + mismatched concatenated, with `split_ids` 0 / 1. `datasets` is imported only when used: the GPU
machine does not have it, and TSV directories need nothing beyond numpy.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys

import numpy as np


@dataclasses.dataclass(frozen=True)
class GlueTaskSpec:
  name: str                         # our key: "sst2"
  hf_name: str                      # datasets.load_dataset("glue", hf_name)
  tsv_dir: str                      # canonical GLUE folder name, e.g. "SST-2"
  num_labels: int                   # 1: regression
  text_columns: tuple[str, ...]     # TSV header names (CoLA has no header: column indices)
  label_column: str
  hf_text_keys: tuple[str, ...]
  label_names: tuple[str, ...] = ()  # TSV label strings in label-id order; () = labels are numbers
  eval_splits: tuple[str, ...] = ("validation",)

  @property
  def is_regression(self) -> bool:
    return self.num_labels == 1


TASKS: dict[str, GlueTaskSpec] = {s.name: s for s in (
    GlueTaskSpec("cola", "cola", "CoLA", 2, ("3",), "1", ("sentence",)),
    GlueTaskSpec("sst2", "sst2", "SST-2", 2, ("sentence",), "label", ("sentence",)),
    GlueTaskSpec("mrpc", "mrpc", "MRPC", 2, ("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2")),
    GlueTaskSpec("stsb", "stsb", "STS-B", 1, ("sentence1", "sentence2"), "score", ("sentence1", "sentence2")),
    GlueTaskSpec("qqp", "qqp", "QQP", 2, ("question1", "question2"), "is_duplicate", ("question1", "question2")),
    GlueTaskSpec("mnli", "mnli", "MNLI", 3, ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"),
                 ("entailment", "neutral", "contradiction"), ("validation_matched", "validation_mismatched")),
    GlueTaskSpec("qnli", "qnli", "QNLI", 2, ("question", "sentence"), "label", ("question", "sentence"),
                 ("entailment", "not_entailment")),
    GlueTaskSpec("rte", "rte", "RTE", 2, ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"),
                 ("entailment", "not_entailment")),
    GlueTaskSpec("wnli", "wnli", "WNLI", 2, ("sentence1", "sentence2"), "label", ("sentence1", "sentence2")),
)}

# Accepted spellings of task names (flag values): "SST-2", "sst-2", "sst2", "STS-B", "mnli"...
_ALIASES = {k.replace("-", "").lower(): k for k in TASKS}

_TSV_FILES = {"train": "train.tsv", "validation": "dev.tsv", "validation_matched": "dev_matched.tsv",
              "validation_mismatched": "dev_mismatched.tsv", "test": "test.tsv"}


def task_spec(name: str) -> GlueTaskSpec:
  key = name.replace("-", "").replace("_", "").lower()
  if key not in _ALIASES:
    raise ValueError(f"unknown GLUE task {name!r}; known: {sorted(TASKS)} (and 'synthetic')")
  return TASKS[_ALIASES[key]]


@dataclasses.dataclass
class GlueExamples:
  text_a: list[str]
  text_b: list[str] | None
  labels: np.ndarray                # int32 class ids, or float32 scores for STS-B
  split_ids: np.ndarray             # int32, 0 except MNLI mismatched = 1
  source: str                       # where it came from, for error messages

  def __len__(self) -> int:
    return len(self.text_a)


# ----------------------------------------------------------------------------------------------
# Readers


def _parse_label(spec: GlueTaskSpec, raw: str, where: str):
  if spec.label_names:
    if raw not in spec.label_names:
      raise ValueError(f"{where}: label {raw!r} is not one of {list(spec.label_names)}")
    return spec.label_names.index(raw)
  try:
    return float(raw) if spec.is_regression else int(raw)
  except ValueError:
    raise ValueError(f"{where}: label {raw!r} is not a {'number' if spec.is_regression else 'class id'}") from None


def read_tsv(spec: GlueTaskSpec, path: str, split_id: int = 0) -> GlueExamples:
  """A canonical GLUE TSV file (quotes are literal text, as in the GLUE release)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GLUE {spec.name} file {path!r} does not exist")
  csv.field_size_limit(sys.maxsize)
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  if spec.name == "cola":  # no header: source, label, original label, sentence
    header, body, first_line = None, rows, 1
    text_idx, label_idx = [int(c) for c in spec.text_columns], int(spec.label_column)
  else:
    if not rows:
      raise ValueError(f"{path!r} is empty (expected a header row)")
    header, body, first_line = rows[0], rows[1:], 2
    missing = [c for c in (*spec.text_columns, spec.label_column) if c not in header]
    if missing:
      raise ValueError(f"{path!r}: header {header} lacks column(s) {missing} of a GLUE {spec.name} file")
    text_idx = [header.index(c) for c in spec.text_columns]
    label_idx = header.index(spec.label_column)
  width = max(*text_idx, label_idx) + 1
  texts: list[list[str]] = [[] for _ in text_idx]
  labels = []
  for i, row in enumerate(body):
    if not row or row == [""]:
      continue
    where = f"{path}:{i + first_line}"
    if len(row) < width:
      raise ValueError(f"{where}: {len(row)} tab-separated fields, expected at least {width}")
    for t, j in zip(texts, text_idx):
      t.append(row[j])
    labels.append(_parse_label(spec, row[label_idx], where))
  dtype = np.float32 if spec.is_regression else np.int32
  return GlueExamples(texts[0], texts[1] if len(texts) > 1 else None, np.asarray(labels, dtype),
                      np.full((len(labels),), split_id, np.int32), path)


def _from_hf(spec: GlueTaskSpec, ds, split_id: int, source: str) -> GlueExamples:
  missing = [k for k in (*spec.hf_text_keys, "label") if k not in ds.column_names]
  if missing:
    raise ValueError(f"{source}: columns {ds.column_names} lack {missing} of GLUE {spec.name}")
  cols = [list(ds[k]) for k in spec.hf_text_keys]
  dtype = np.float32 if spec.is_regression else np.int32
  labels = np.asarray(ds["label"], dtype)
  return GlueExamples(cols[0], cols[1] if len(cols) > 1 else None, labels,
                      np.full((len(labels),), split_id, np.int32), source)


def _is_saved_dataset(data_dir: str) -> bool:
  return any(os.path.isfile(os.path.join(data_dir, f)) for f in ("dataset_dict.json", "dataset_info.json",
                                                                 "state.json"))


def _concat(parts: list[GlueExamples]) -> GlueExamples:
  if len(parts) == 1:
    return parts[0]
  b = None if parts[0].text_b is None else [t for p in parts for t in p.text_b]
  return GlueExamples([t for p in parts for t in p.text_a], b, np.concatenate([p.labels for p in parts]),
                      np.concatenate([p.split_ids for p in parts]), " + ".join(p.source for p in parts))


def _tsv_path(data_dir: str, split: str) -> str:
  """A split name (train, validation, test, ...) -> its canonical GLUE file; any other name is a file in data_dir
  (e.g. a held-out labelled `heldout.tsv` in the task's column layout)."""
  path = os.path.join(data_dir, _TSV_FILES.get(split, split))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"split {split!r}: {path!r} does not exist (splits: {sorted(_TSV_FILES)} or a file name "
                            f"in {data_dir!r})")
  return path


def load_split(task: str, split: str, data_dir: str | None = None) -> GlueExamples:
  """split: "train", "validation" (MNLI: matched + mismatched), "test", or a TSV file name in data_dir. data_dir: a
  GLUE TSV folder, a dataset saved with `datasets.save_to_disk`, or None for `datasets.load_dataset("glue", task)`
  (online or HF cache)."""
  spec = task_spec(task)
  hf_splits = spec.eval_splits if split == "validation" else (split,)
  if data_dir is not None:
    if not os.path.isdir(data_dir):
      raise FileNotFoundError(f"--data_dir {data_dir!r} is not a directory")
    if _is_saved_dataset(data_dir):
      import datasets  # pylint: disable=g-import-not-at-top
      dd = datasets.load_from_disk(data_dir)
      parts = []
      for sid, s in enumerate(hf_splits):
        if s not in dd:
          raise ValueError(f"saved dataset {data_dir!r} has splits {list(dd)}, not {s!r}")
        parts.append(_from_hf(spec, dd[s], sid, f"{data_dir}[{s}]"))
      out = _concat(parts)
    else:
      out = _concat([read_tsv(spec, _tsv_path(data_dir, s), sid) for sid, s in enumerate(hf_splits)])
  else:
    import datasets  # pylint: disable=g-import-not-at-top
    out = _concat([_from_hf(spec, datasets.load_dataset("glue", spec.hf_name, split=s), sid, f"glue/{spec.hf_name}[{s}]")
                   for sid, s in enumerate(hf_splits)])
  check_examples(spec, out, split)
  return out


def check_examples(spec: GlueTaskSpec, ex: GlueExamples, split: str) -> None:
  """Empty splits and labels the head cannot represent are errors (before any training)."""
  if len(ex) == 0:
    raise ValueError(f"GLUE {spec.name} {split} split from {ex.source} has no examples")
  if spec.is_regression:
    if not np.all(np.isfinite(ex.labels)):
      raise ValueError(f"GLUE {spec.name} {split} ({ex.source}) has non-finite scores")
    return
  bad = (ex.labels < 0) | (ex.labels >= spec.num_labels)
  if bad.any():
    raise ValueError(f"GLUE {spec.name} {split} ({ex.source}) has labels {sorted(set(ex.labels[bad].tolist()))} "
                     f"outside [0, {spec.num_labels}) (unlabeled test split?)")


# ----------------------------------------------------------------------------------------------
# Tokenization


def encode(ex: GlueExamples, tokenizer, max_seq_length: int) -> dict[str, np.ndarray]:
  """Pads/truncates to max_seq_length (the paper pads to max length). tokenizer: a transformers tokenizer."""
  args = (ex.text_a,) if ex.text_b is None else (ex.text_a, ex.text_b)
  enc = tokenizer(*args, truncation=True, max_length=max_seq_length, padding="max_length",
                  return_token_type_ids=True, return_attention_mask=True)
  out = {k: np.asarray(enc[k], np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
  out["labels"] = ex.labels
  if ex.split_ids.any():
    out["split_ids"] = ex.split_ids
  return out
