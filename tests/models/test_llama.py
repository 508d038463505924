"""Llama: parity with transformers' LlamaForCausalLM (GQA, rotary, padded batches), KV cache, GEMM labels, loader."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.nn.dense import QUANT_TAPS
from int4jax.models import Taps, get_config, load_pretrained
from int4jax.models import llama
from int4jax.quant.policy import make_policy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4        # float32 parity with PyTorch, max abs
REF_TOL = 1e-5    # cache vs full forward (same arithmetic, other shapes)
TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=500.0)


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def _batch(batch: int = 3, seq: int = 11, seed: int = 0):
  """ids, attention_mask: row 0 full, row 1 left-padded by 3, row 2 right-padded by 4."""
  rs = np.random.RandomState(seed)
  ids = rs.randint(0, TINY["vocab_size"], (batch, seq)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, :3] = 0
  mask[2, seq - 4:] = 0
  return np.where(mask == 1, ids, 0), mask


def save_tiny_hf_llama(path, seed: int = 0, **overrides):
  """A random transformers LlamaForCausalLM (eager attention) saved to `path`; returns the torch model."""
  # initializer_range 0.2 so that attention is far from uniform; RMSNorm weights away from 1 so a missed one shows.
  cfg = transformers.LlamaConfig(**dict(TINY, **overrides), initializer_range=0.2, attn_implementation="eager")
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.3 * torch.randn_like(p))
  model.save_pretrained(str(path))
  return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_llama")
  return path, save_tiny_hf_llama(path)


@pytest.fixture(scope="module")
def loaded(hf_dir):
  return load_pretrained(hf_dir[0])


def _torch_forward(torch_model, ids, mask):
  with torch.no_grad():
    return torch_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                       output_hidden_states=True, output_attentions=True)


def test_parity_with_transformers(hf_dir, loaded):
  """Logits, every hidden state and the attention probabilities of a padded batch (left and right padding).

  Padding positions are outside the contract (what a query that may attend to nothing computes differs between
  implementations), so only real tokens are compared.
  """
  _, torch_model = hf_dir
  model, params = loaded
  assert isinstance(model, llama.LlamaForCausalLM)
  assert model.config.kv_heads == 2 and not model.config.tie_word_embeddings
  ids, mask = _batch()
  ref = _torch_forward(torch_model, ids, mask)
  out = model.apply({"params": params}, ids, mask, taps=Taps.all())
  fast = model.apply({"params": params}, ids, mask)  # no taps: jax.nn.dot_product_attention path
  valid = mask.astype(bool)
  assert _max_diff(out.logits[valid], ref.logits.numpy()[valid]) <= TOL
  assert _max_diff(fast.logits[valid], ref.logits.numpy()[valid]) <= TOL
  assert len(out.hidden_states) == len(ref.hidden_states) == 3
  for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    assert _max_diff(np.asarray(ours)[valid], theirs.numpy()[valid]) <= TOL, f"hidden state {i}"
  for i, (ours, theirs) in enumerate(zip(out.attention_probs, ref.attentions)):
    rows, cols = valid.nonzero()
    assert _max_diff(np.asarray(ours)[rows, :, cols], theirs.numpy()[rows, :, cols]) <= TOL, f"attention {i}"
  # the last hidden state is after the final norm and feeds the (untied) head
  np.testing.assert_allclose(out.logits, out.hidden_states[-1] @ params["lm_head"], atol=1e-5)


def test_tied_embeddings_and_mha(tmp_path):
  """tie_word_embeddings (SmolLM2's setting) with plain multi-head attention (num_key_value_heads = heads)."""
  torch_model = save_tiny_hf_llama(tmp_path, seed=1, tie_word_embeddings=True, num_key_value_heads=4)
  model, params = load_pretrained(tmp_path)
  assert model.config.tie_word_embeddings and model.config.kv_heads == 4 and "lm_head" not in params
  ids, mask = _batch(seed=1)
  ref = _torch_forward(torch_model, ids, mask)
  out = model.apply({"params": params}, ids, mask)
  valid = mask.astype(bool)
  assert _max_diff(out.logits[valid], ref.logits.numpy()[valid]) <= TOL


def test_position_ids_are_honoured(hf_dir, loaded):
  """Explicit position_ids (e.g. positions that skip left padding) agree with transformers too."""
  _, torch_model = hf_dir
  model, params = loaded
  ids, mask = _batch()
  pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
  with torch.no_grad():
    ref = torch_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                      position_ids=torch.tensor(pos, dtype=torch.long)).logits.numpy()
  out = model.apply({"params": params}, ids, mask, position_ids=pos).logits
  valid = mask.astype(bool)
  assert _max_diff(np.asarray(out)[valid], ref[valid]) <= TOL


@pytest.mark.parametrize("chunks", [(1,) * 11, (4, 1, 3, 3)])
def test_cache_decoding_matches_full_forward(loaded, chunks):
  """Feeding the sequence in chunks through the KV cache gives the full forward's logits (padding included)."""
  model, params = loaded
  ids, mask = _batch()
  full = model.apply({"params": params}, ids, mask).logits
  cache = llama.init_cache(model, ids.shape[0], 16)
  assert cache["layers_0"]["self_attn"]["cached_key"].shape == (3, 16, 2, 8)   # K/V heads, not query heads
  step = jax.jit(lambda c, x, m: model.apply({"params": params, "cache": c}, x, m, decode=True, mutable=["cache"]))
  start, pieces = 0, []
  for n in chunks:
    out, mut = step(cache, ids[:, start:start + n], mask[:, start:start + n])
    cache = mut["cache"]
    pieces.append(out.logits)
    start += n
  valid = mask.astype(bool)
  assert _max_diff(np.concatenate(pieces, axis=1)[valid], np.asarray(full)[valid]) <= REF_TOL


def test_every_gemm_is_quantized_with_its_paper_label(loaded):
  """Under W4A4 each of the 7 projections per layer sows a quantized input and kernel; the labels are the paper's."""
  model, params = loaded
  qmodel = llama.LlamaForCausalLM(dataclasses.replace(model.config, policy=make_policy("w4a4")))
  ids, mask = _batch()
  _, state = qmodel.apply({"params": params}, ids, mask, mutable=[QUANT_TAPS])
  taps = state[QUANT_TAPS]
  expected = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}
  for i in range(2):
    for block, names in expected.items():
      for n in names:
        assert set(taps[f"layers_{i}"][block][n]) == {"input", "kernel"}, (i, n)
        kernel = np.asarray(taps[f"layers_{i}"][block][n]["kernel"][0])
        assert len(np.unique(kernel[:, 0])) <= 16   # int4 per output channel
  assert "lm_head" not in taps   # the head stays float
  only_ffn_in = llama.LlamaForCausalLM(dataclasses.replace(model.config, policy=make_policy("w4a4",
                                                                                           gemms="ffn_in")))
  _, state = only_ffn_in.apply({"params": params}, ids, mask, mutable=[QUANT_TAPS])
  quantized = {n for layer in state[QUANT_TAPS].values() for block in layer.values() for n in block}
  assert quantized == {"gate_proj", "up_proj"}
  for gemm, names in (("qkv", {"q_proj", "k_proj", "v_proj"}), ("attn_out", {"o_proj"}), ("ffn_out", {"down_proj"})):
    m = llama.LlamaForCausalLM(dataclasses.replace(model.config, policy=make_policy("w4a4", gemms=gemm)))
    _, state = m.apply({"params": params}, ids, mask, mutable=[QUANT_TAPS])
    assert {n for layer in state[QUANT_TAPS].values() for block in layer.values() for n in block} == names, gemm


def test_ffn_out_input_is_sown(loaded):
  model, params = loaded
  ids, mask = _batch()
  _, state = model.apply({"params": params}, ids, mask, mutable=["intermediates"])
  h = state["intermediates"]["layers_1"]["mlp"]["ffn_out_input"][0]
  assert h.shape == (3, 11, 64)


def test_presets_and_config_round_trip():
  config = get_config("smollm2_135m")
  assert (config.num_hidden_layers, config.hidden_size, config.kv_heads, config.head_size) == (30, 576, 3, 64)
  assert config.n_positions == 8192 and config.n_layer == 30 and not config.post_ln
  back = llama.config_from_hf(json.loads(json.dumps(llama.config_to_hf(config))))
  assert back == config
  tiny = get_config("llama_tiny", num_hidden_layers=3)
  assert tiny.num_hidden_layers == 3


def test_loader_is_strict(hf_dir, tmp_path):
  from int4jax.models import hf
  path, _ = hf_dir
  hf_config = hf.read_config(path)
  tensors = hf.read_state_dict(path)
  config = llama.config_from_hf(hf_config)
  with pytest.raises(ValueError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
    llama.params_from_hf(config, {k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"})
  with pytest.raises(ValueError, match="unexpected tensor 'model.layers.9.extra'"):
    llama.params_from_hf(config, dict(tensors, **{"model.layers.9.extra": np.zeros(3, np.float32)}))
  with pytest.raises(ValueError, match="rope_type='llama3' is not supported"):
    llama.config_from_hf(dict(hf_config, rope_parameters={"rope_type": "llama3", "rope_theta": 1e4}))
  with pytest.raises(ValueError, match="hidden_act='swish2' is not one of"):
    llama.config_from_hf(dict(hf_config, hidden_act="swish2"))
  with pytest.raises(ValueError, match="must be a multiple of num_key_value_heads"):
    llama.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=3)
