"""Checkpoint reading and strict mapping (int4jax.models.hf), the registry, and tokenizers."""
import json
import logging
import shutil

import numpy as np
import pytest

from int4jax import tokenizers
from int4jax.models import get_config, hf, load_pretrained, registry
from int4jax.models import bert

def _torch():
  """torch, or a skip of the calling test only (the tests that need no reference model run without torch)."""
  return pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, make_tiny_hf_bert):
  """A tiny bare BertModel checkpoint (no "bert." prefix, no classifier)."""
  path = tmp_path_factory.mktemp("tiny_bert_base")
  make_tiny_hf_bert(path, head="base")
  return path


def _edited_copy(src, dst, edit):
  """Copies checkpoint `src` to `dst` with its tensors passed through `edit(dict) -> dict`."""
  shutil.copytree(src, dst)
  tensors = safetensors_torch.load_file(str(dst / "model.safetensors"))
  safetensors_torch.save_file(edit(dict(tensors)), str(dst / "model.safetensors"))
  return dst


def _params_equal(a, b):
  fa, fb = hf.flatten(a), hf.flatten(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_missing_tensor_is_named(base_dir, tmp_path):
  name = "encoder.layer.1.attention.self.key.weight"
  path = _edited_copy(base_dir, tmp_path / "ckpt", lambda t: {k: v for k, v in t.items() if k != name})
  with pytest.raises(ValueError, match=f"missing tensor '{name}'"):
    load_pretrained(path)


def test_unexpected_tensor_is_named(base_dir, tmp_path, caplog):
  path = _edited_copy(base_dir, tmp_path / "ckpt", lambda t: {**t, "encoder.layer.0.extra.weight": _torch().zeros(3)})
  with pytest.raises(ValueError, match="unexpected tensor 'encoder.layer.0.extra.weight'"):
    load_pretrained(path)
  # Pretraining heads (BertForPreTraining's cls.*) and id buffers are known extras: skipped, and logged.
  path = _edited_copy(base_dir, tmp_path / "pretraining", lambda t: {
      **t, "cls.predictions.bias": _torch().zeros(1000), "embeddings.position_ids": _torch().arange(64)[None]})
  with caplog.at_level(logging.INFO):
    load_pretrained(path)
  assert "cls.predictions.bias, embeddings.position_ids" in caplog.text


def test_misshaped_tensor_is_named(base_dir, tmp_path):
  name = "encoder.layer.0.intermediate.dense.weight"
  path = _edited_copy(base_dir, tmp_path / "ckpt", lambda t: {**t, name: _torch().zeros(128, 32)})
  with pytest.raises(ValueError, match=f"tensor '{name}' has shape \\(128, 32\\)"):
    load_pretrained(path)


def test_directory_without_config_is_named(base_dir, tmp_path):
  shutil.copytree(base_dir, tmp_path / "ckpt")
  (tmp_path / "ckpt" / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "ckpt")):
    load_pretrained(tmp_path / "ckpt")
  with pytest.raises(FileNotFoundError, match="does_not_exist"):
    load_pretrained(tmp_path / "does_not_exist")
  with pytest.raises(FileNotFoundError, match="not-a-cached-model"):
    hf.resolve_checkpoint_dir("org/not-a-cached-model", cache_dir=tmp_path / "hub")


def test_new_heads_are_initialised_and_logged(base_dir, tmp_path, caplog):
  # Encoder checkpoint -> classifier: new; a checkpoint without pooler (e.g. saved from a MaskedLM): new too.
  path = _edited_copy(base_dir, tmp_path / "ckpt", lambda t: {k: v for k, v in t.items() if "pooler" not in k})
  with caplog.at_level(logging.INFO):
    model, params = load_pretrained(path, task="sequence_classification", num_labels=2)
  assert isinstance(model, bert.BertForSequenceClassification)
  assert "newly initialised: classifier/bias, classifier/kernel, pooler/dense/bias, pooler/dense/kernel" in caplog.text
  assert params["classifier"]["kernel"].shape == (64, 2) and np.std(params["classifier"]["kernel"]) > 0
  ref = bert.load_params(model.config, "base", {}, safetensors_torch.load_file(str(base_dir / "model.safetensors")),
                         rng=None)
  np.testing.assert_array_equal(params["encoder"]["layer_1"]["output"]["kernel"],
                                ref["encoder"]["layer_1"]["output"]["kernel"])


def test_prefixed_checkpoint_as_encoder_drops_head_and_logs(tiny_cls_dir, caplog):
  path, torch_model = tiny_cls_dir
  with caplog.at_level(logging.INFO):
    model, params = load_pretrained(path, task="base")
  assert isinstance(model, bert.BertModel) and "classifier" not in params
  assert "ignored checkpoint tensors not used by this model: classifier.bias, classifier.weight" in caplog.text
  w = torch_model.bert.encoder.layer[0].attention.self.query.weight.detach().numpy()
  np.testing.assert_array_equal(params["encoder"]["layer_0"]["attention"]["query"]["kernel"], w.T)


def test_pytorch_bin_and_bf16_safetensors(base_dir, tmp_path):
  _, ref = load_pretrained(base_dir)
  state = safetensors_torch.load_file(str(base_dir / "model.safetensors"))
  (tmp_path / "bin").mkdir()
  shutil.copy(base_dir / "config.json", tmp_path / "bin")
  _torch().save(state, tmp_path / "bin" / "pytorch_model.bin")
  _, from_bin = load_pretrained(tmp_path / "bin")
  _params_equal(ref, from_bin)
  bf16 = hf.read_safetensors(_edited_copy(base_dir, tmp_path / "bf16", lambda t: {
      k: v.to(_torch().bfloat16) if v.is_floating_point() else v for k, v in t.items()}) / "model.safetensors")
  name = "encoder.layer.0.output.dense.weight"
  np.testing.assert_array_equal(bf16[name].astype(np.float32), state[name].to(_torch().bfloat16).float().numpy())


def test_hub_name_resolves_through_cache(base_dir, tmp_path):
  # The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}.
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = tmp_path / "hub" / "models--org--tiny-bert"
  shutil.copytree(base_dir, repo / "snapshots" / commit)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(commit)
  assert hf.resolve_checkpoint_dir("org/tiny-bert", cache_dir=tmp_path / "hub") == repo / "snapshots" / commit
  model, _ = load_pretrained("org/tiny-bert", cache_dir=tmp_path / "hub")
  assert isinstance(model, bert.BertModel)


def test_registry_configs_and_errors(tiny_cls_dir, tmp_path):
  path, _ = tiny_cls_dir
  config = get_config(path, num_labels=1)
  assert isinstance(config, bert.BertConfig) and config.problem_type == "regression" and config.num_layers == 2
  assert get_config("bert_tiny", num_labels=1).problem_type == "regression"
  assert registry.presets()["bert_base"] == "bert"
  with pytest.raises(ValueError, match="no-such-preset"):
    get_config("no-such-preset")
  (tmp_path / "odd").mkdir()
  (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "mamba"}))
  with pytest.raises(ValueError, match="'mamba' is not supported"):
    get_config(tmp_path / "odd")
  with pytest.raises(ValueError, match="task 'lm'"):
    load_pretrained(path, task="lm")


def test_assign_params_flags_mapping_bugs():
  target = {"a": {"kernel": np.zeros((2, 3), np.float32)}}
  with pytest.raises(ValueError, match="does not have"):
    hf.assign_params(target, {"b/kernel": hf.Ref("b")}, {})
  out = hf.assign_params(target, {"a/kernel": hf.Ref(("alias", "a.weight"), hf.linear_kernel)},
                         {"a.weight": np.ones((3, 2), np.float16)})
  assert out["a"]["kernel"].dtype == np.float32 and out["a"]["kernel"].shape == (2, 3)


# ---------------------------------------------------------------------------------------------- tokenizers


def _shared_tokenizer(name):
  if not tokenizers.shared_tokenizer_dir(name).is_dir():
    pytest.skip(f"offline tokenizer files absent: {tokenizers.shared_tokenizer_dir(name)}")
  return tokenizers.load_tokenizer(name)


def test_offline_gpt2_tokenizer():
  tok = _shared_tokenizer("gpt2")
  assert len(tok) == 50257
  assert tok(" hello world\n")["input_ids"] == [23748, 995, 198]


def test_offline_bert_tokenizer():
  tok = _shared_tokenizer("bert-base-uncased")
  assert len(tok) == 30522
  assert tok("Hello world!")["input_ids"] == [101, 7592, 2088, 999, 102]


def test_tokenizer_from_checkpoint_dir_and_errors(tmp_path):
  tok = _shared_tokenizer("bert-base-uncased")
  tok.save_pretrained(str(tmp_path / "ckpt"))  # writes tokenizer.json: the AutoTokenizer route
  again = tokenizers.load_tokenizer(tmp_path / "ckpt")
  assert again("Hello world!")["input_ids"] == tok("Hello world!")["input_ids"]
  with pytest.raises(FileNotFoundError, match="no_such_dir"):
    tokenizers.load_tokenizer(tmp_path / "no_such_dir")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="empty"):
    tokenizers.load_tokenizer(tmp_path / "empty")


# ------------------------------------------------------------------------------------------------ loader messages

def _bert_config_json(path, **drop):
  cfg = {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}
  for k in drop:
    cfg.pop(k)
  path.mkdir(exist_ok=True)
  (path / "config.json").write_text(json.dumps(cfg))
  return path


def test_config_missing_field_names_file_and_field(tmp_path):
  from int4jax.models import registry
  d = _bert_config_json(tmp_path / "ckpt", hidden_size=None)
  with pytest.raises(ValueError, match=r"config\.json: missing field 'hidden_size'"):
    registry.get_config(str(d))


def test_config_invalid_json_names_file(tmp_path):
  from int4jax.models import registry
  d = tmp_path / "ckpt"
  d.mkdir()
  (d / "config.json").write_text('{"model_type": "bert", ')
  with pytest.raises(ValueError, match=r"config\.json: invalid JSON"):
    registry.get_config(str(d))


def test_bert_config_override_of_unknown_field_is_refused(tmp_path):
  from int4jax.models import registry
  d = _bert_config_json(tmp_path / "ckpt")
  with pytest.raises(ValueError, match=r"unknown config field\(s\) \['hidden_dim'\] for BERT config\.json"):
    registry.get_config(str(d), hidden_dim=8)


def test_truncated_safetensors_names_file_and_tensor(tmp_path):
  from safetensors.numpy import save_file
  path = tmp_path / "model.safetensors"
  save_file({"a.weight": np.ones((4, 4), np.float32), "b.weight": np.ones((64, 64), np.float32)}, str(path))
  size = path.stat().st_size
  with open(path, "r+b") as f:
    f.truncate(size - 100)
  with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'b\.weight' needs bytes .* truncated"):
    hf.read_safetensors(str(path))
  with open(path, "r+b") as f:
    f.truncate(20)
  with pytest.raises(ValueError, match=r"model\.safetensors: truncated safetensors header"):
    hf.read_safetensors(str(path))
