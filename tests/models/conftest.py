"""Shared helpers for model tests: tiny random Hugging Face BERT checkpoints written to a temp dir."""
import numpy as np
import pytest

TINY_BERT = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=64)


def save_tiny_hf_bert(path, *, head: str = "sequence_classification", num_labels: int = 3, seed: int = 0):
  """Builds a random transformers BERT (eval mode, eager attention), saves it to `path`; returns the torch model."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = transformers.BertConfig(**TINY_BERT, num_labels=num_labels, attn_implementation="eager")
  torch.manual_seed(seed)
  cls = transformers.BertModel if head == "base" else transformers.BertForSequenceClassification
  model = cls(cfg).eval()
  model.save_pretrained(str(path))
  return model


def _padded_batch(batch: int = 3, seq: int = 10, vocab: int = 1000, seed: int = 0):
  """(input_ids, attention_mask, token_type_ids) int32 numpy; row 0 full, the others right-padded."""
  rs = np.random.RandomState(seed)
  ids = rs.randint(1, vocab, (batch, seq)).astype(np.int32)
  mask = np.ones_like(ids)
  for row in range(1, batch):
    mask[row, seq - 3 * row:] = 0
  ids = np.where(mask == 1, ids, 0)
  types = np.zeros_like(ids)
  types[:, seq // 2:] = 1
  return ids, mask, types


# Helpers handed out as fixtures (test files need no import path to this conftest).
@pytest.fixture(scope="session")
def make_tiny_hf_bert():
  return save_tiny_hf_bert


@pytest.fixture(scope="session")
def padded_batch():
  return _padded_batch


@pytest.fixture(scope="session")
def tiny_cls_dir(tmp_path_factory):
  """(dir, torch model) of a tiny BertForSequenceClassification with 3 labels."""
  path = tmp_path_factory.mktemp("tiny_bert_cls")
  return path, save_tiny_hf_bert(path)
