"""GLUE readers (TSV and saved `datasets`), tokenization, batch sources and the synthetic task."""


import numpy as np
import pytest

from int4jax.data import ArrayBatchSource, eval_batches, glue, synthetic

# One tiny canonical-format file per task: (file name, content). Labels in the TSV spelling.
FIXTURES = {
    "cola": ("train.tsv", "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more books.\n"),
    "sst2": ("train.tsv", "sentence\tlabel\nit 's charming \t1\nbleak \t0\n"),
    "mrpc": ("train.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA b.\tA b c.\n0\t3\t4\tX.\tY.\n"),
    "stsb": ("train.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                          "0\tmain\tf\t2012\t1\tnone\tnone\tA man.\tA guy.\t4.25\n"
                          "1\tmain\tf\t2012\t4\tnone\tnone\tA cat.\tRain.\t0.5\n"),
    "qqp": ("train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tHow \"x\"?\tWhy?\t0\n"
                         "2\t3\t4\tA?\tA?\t1\n"),
    "mnli": ("train.tsv", "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                          "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
                          "0\t1\t1n\tgov\tb\tb\tp\tp\tP one.\tH one.\tneutral\tneutral\n"
                          "1\t2\t2c\tgov\tb\tb\tp\tp\tP two.\tH two.\tcontradiction\tcontradiction\n"),
    "qnli": ("train.tsv", "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n1\tWhy?\tNo.\tnot_entailment\n"),
    "rte": ("train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tnot_entailment\n1\tC.\tC.\tentailment\n"),
    "wnli": ("train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t1\n1\tC.\tD.\t0\n"),
}
EXPECTED_LABELS = {"cola": [1, 0], "sst2": [1, 0], "mrpc": [1, 0], "stsb": [4.25, 0.5], "qqp": [0, 1],
                   "mnli": [1, 2], "qnli": [0, 1], "rte": [1, 0], "wnli": [1, 0]}


def write_task(tmp_path, task, train=None, dev=None):
  name, content = FIXTURES[task]
  d = tmp_path / task
  d.mkdir(exist_ok=True)
  (d / name).write_text(content if train is None else train)
  dev_names = ["dev_matched.tsv", "dev_mismatched.tsv"] if task == "mnli" else ["dev.tsv"]
  for n in dev_names:
    (d / n).write_text(content if dev is None else dev)
  return str(d)


@pytest.mark.parametrize("task", sorted(FIXTURES))
def test_every_task_reads_its_tsv(tmp_path, task):
  d = write_task(tmp_path, task)
  ex = glue.load_split(task, "train", d)
  np.testing.assert_allclose(ex.labels, EXPECTED_LABELS[task])
  assert (ex.text_b is None) == (task in ("cola", "sst2"))
  assert ex.text_a[0].strip()
  dev = glue.load_split(task, "validation", d)
  if task == "mnli":  # matched + mismatched, told apart by split_ids
    assert len(dev) == 4 and dev.split_ids.tolist() == [0, 0, 1, 1]
  if task == "qqp":
    assert ex.text_a[0] == 'How "x"?'   # quotes are text in GLUE TSVs


def test_task_name_spellings():
  assert glue.task_spec("SST-2").name == "sst2" and glue.task_spec("STS-B").name == "stsb"
  with pytest.raises(ValueError, match="unknown GLUE task"):
    glue.task_spec("squad")


def test_bad_inputs(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a directory"):
    glue.load_split("sst2", "train", str(tmp_path / "nope"))
  d = tmp_path / "sst2"
  d.mkdir()
  with pytest.raises(FileNotFoundError, match="train.tsv"):
    glue.load_split("sst2", "train", str(d))
  (d / "train.tsv").write_text("text\tlabel\nx\t1\n")
  with pytest.raises(ValueError, match="lacks column"):
    glue.load_split("sst2", "train", str(d))
  (d / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\n")
  with pytest.raises(ValueError, match="train.tsv:3"):
    glue.load_split("sst2", "train", str(d))
  (d / "train.tsv").write_text("sentence\tlabel\ngood\tpositive\n")
  with pytest.raises(ValueError, match="not a class id"):
    glue.load_split("sst2", "train", str(d))
  (d / "train.tsv").write_text("sentence\tlabel\n")
  with pytest.raises(ValueError, match="no examples"):
    glue.load_split("sst2", "train", str(d))
  (d / "train.tsv").write_text("sentence\tlabel\ngood\t2\n")
  with pytest.raises(ValueError, match="outside"):
    glue.load_split("sst2", "train", str(d))
  (d / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
  with pytest.raises(FileNotFoundError, match="dev.tsv"):
    glue.load_split("sst2", "validation", str(d))
  m = tmp_path / "mnli"
  m.mkdir()
  (m / "train.tsv").write_text("sentence1\tsentence2\tgold_label\na\tb\tmaybe\n")
  with pytest.raises(ValueError, match="'maybe' is not one of"):
    glue.load_split("mnli", "train", str(m))


def test_saved_dataset_dir(tmp_path):
  datasets = pytest.importorskip("datasets")
  dd = datasets.DatasetDict({
      "train": datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0, 1]}),
      "validation": datasets.Dataset.from_dict({"sentence1": ["e"], "sentence2": ["f"], "label": [1]})})
  dd.save_to_disk(str(tmp_path / "rte"))
  ex = glue.load_split("rte", "validation", str(tmp_path / "rte"))
  assert ex.text_a == ["e"] and ex.text_b == ["f"] and ex.labels.tolist() == [1]


def test_encode_pairs_with_a_wordpiece_tokenizer():
  from int4jax.tokenizers import load_tokenizer, shared_tokenizer_dir
  if not shared_tokenizer_dir("bert-base-uncased").is_dir():
    pytest.skip("../shared/data/tokenizers/bert-base-uncased is absent")
  tok = load_tokenizer("bert-base-uncased")
  ex = glue.GlueExamples(["a b .", "c"], ["d", "a a a a a a"], np.array([1, 0], np.int32), np.zeros(2, np.int32), "t")
  out = glue.encode(ex, tok, max_seq_length=8)
  assert out["input_ids"].shape == (2, 8) and out["input_ids"].dtype == np.int32
  assert out["input_ids"][0].tolist() == [101, 1037, 1038, 1012, 102, 1040, 102, 0]   # [CLS] a b . [SEP] d [SEP]
  assert out["token_type_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 0]
  assert out["attention_mask"][0].tolist() == [1] * 7 + [0]
  assert out["attention_mask"][1].sum() == 8   # truncated to max length
  assert "split_ids" not in out


def test_batch_source_is_deterministic_and_covers_epochs():
  arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
  src = ArrayBatchSource(arrays, batch_size=3, seed=7)
  assert src.steps_per_epoch == 3 and src.position(4) == (1, 1)
  epoch0 = np.concatenate([src.batch_at(k)["x"] for k in range(3)])
  assert len(set(epoch0.tolist())) == 9
  again = ArrayBatchSource(arrays, batch_size=3, seed=7)
  for step in (5, 0, 3):
    np.testing.assert_array_equal(src.batch_at(step)["x"], again.batch_at(step)["x"])
  b = src.batch_at(4)
  np.testing.assert_array_equal(b["y"], 2 * b["x"])
  with pytest.raises(ValueError, match="smaller than"):
    ArrayBatchSource(arrays, batch_size=11)


def test_eval_batches_pad_with_zero_weight():
  batches = list(eval_batches({"x": np.arange(5)}, 4))
  assert [b["x"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 0, 0, 0]]
  assert batches[1]["weight"].tolist() == [1, 0, 0, 0]


def test_synthetic_is_deterministic_balanced_and_follows_its_rule():
  a, b = synthetic.make_split("train", 300), synthetic.make_split("train", 300)
  np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
  assert 0.35 < a["labels"].mean() < 0.65
  for ids, label in zip(a["input_ids"][:50], a["labels"][:50]):
    tokens = ids[1:ids.tolist().index(synthetic.SEP_ID)]
    assert synthetic.label_of(tokens) == label
  assert synthetic.label_of(np.array([30, 15, 5, 31])) == 0    # tie, negative first
  assert synthetic.label_of(np.array([5, 5, 15])) == 1
  assert not np.array_equal(synthetic.make_split("validation", 300)["input_ids"], a["input_ids"])
