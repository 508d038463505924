"""BART: parity with transformers, KV cache vs full forward, quantization coverage, loader."""
import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.nn.dense import QUANT_TAPS, QDense
from int4jax.models import Taps, get_config, load_pretrained
from int4jax.models import bart
from int4jax.quant.policy import make_policy

def _torch():
  """torch, or a skip of the calling test only (the tests that need no reference model run without torch)."""
  return pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

TOL = 1e-4        # float32 parity with PyTorch, max abs
REF_TOL = 1e-5    # cache vs full forward, max abs
TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=48, max_position_embeddings=40)
PAD = 1


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def _batch(seed: int = 0):
  """Source [3, 11] and target [3, 7] ids + masks, right-padded with PAD in rows 1 and 2 of each."""
  rs = np.random.RandomState(seed)
  src = rs.randint(3, TINY["vocab_size"], (3, 11)).astype(np.int32)
  tgt = rs.randint(3, TINY["vocab_size"], (3, 7)).astype(np.int32)
  src_mask, tgt_mask = np.ones_like(src), np.ones_like(tgt)
  src_mask[1, 8:] = src_mask[2, 4:] = 0
  tgt_mask[1, 5:] = tgt_mask[2, 2:] = 0
  return np.where(src_mask == 1, src, PAD), src_mask, np.where(tgt_mask == 1, tgt, PAD), tgt_mask


def _save_hf(path, seed: int = 0, **overrides):
  # init_std 0.2 (not 0.02) so that attention is far from uniform; LayerNorms and the logits bias made non-trivial.
  cfg = transformers.BartConfig(**TINY, init_std=0.2, attn_implementation="eager", **overrides)
  _torch().manual_seed(seed)
  model = transformers.BartForConditionalGeneration(cfg).eval()
  with _torch().no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name or "layernorm" in name:
        p.add_(0.1 * _torch().randn_like(p))
    model.final_logits_bias.normal_()
  model.save_pretrained(str(path))
  return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_bart")
  return path, _save_hf(path)


@pytest.fixture(scope="module")
def loaded(hf_dir):
  return load_pretrained(hf_dir[0])


def _torch_forward(model, src, src_mask, tgt, tgt_mask):
  t = lambda a: _torch().tensor(a, dtype=_torch().long)
  with _torch().no_grad():
    return model(t(src), attention_mask=t(src_mask), decoder_input_ids=t(tgt), decoder_attention_mask=t(tgt_mask),
                 output_hidden_states=True, output_attentions=True)


def _check_per_layer(ours, theirs, n, what):
  assert len(ours) == len(theirs) == n, what
  for i, (a, b) in enumerate(zip(ours, theirs)):
    assert _max_diff(a, b.numpy()) <= TOL, f"{what} {i}"


def test_parity_with_transformers(hf_dir, loaded):
  """Every output at every position, padding included (padded query rows still see real keys in BART's masks)."""
  _, torch_model = hf_dir
  model, params = loaded
  assert isinstance(model, bart.BartForConditionalGeneration)
  src, src_mask, tgt, tgt_mask = _batch()
  ref = _torch_forward(torch_model, src, src_mask, tgt, tgt_mask)
  out = model.apply({"params": params}, src, src_mask, tgt, tgt_mask, taps=Taps.all())
  fast = model.apply({"params": params}, src, src_mask, tgt, tgt_mask)   # jax.nn.dot_product_attention path
  assert _max_diff(out.logits, ref.logits.numpy()) <= TOL
  assert _max_diff(fast.logits, ref.logits.numpy()) <= TOL
  _check_per_layer(out.encoder_hidden_states, ref.encoder_hidden_states, 3, "encoder hidden state")
  _check_per_layer(out.decoder_hidden_states, ref.decoder_hidden_states, 3, "decoder hidden state")
  _check_per_layer(out.encoder_attention_probs, ref.encoder_attentions, 2, "encoder attention")
  _check_per_layer(out.decoder_attention_probs, ref.decoder_attentions, 2, "decoder self-attention")
  _check_per_layer(out.cross_attention_probs, ref.cross_attentions, 2, "cross-attention")
  for name, q, k in (("encoder", 11, 11), ("decoder", 7, 7), ("cross", 7, 11)):
    scores = getattr(out, f"{name}_attention_scores")
    assert len(scores) == 2 and all(s.shape == (3, 4, q, k) and np.all(np.isfinite(s)) for s in scores), name


def test_default_decoder_inputs_are_shifted_labels(hf_dir, loaded):
  _, torch_model = hf_dir
  model, params = loaded
  labels = np.array([[5, 6, 7, 2], [8, 9, -100, -100]], np.int32)
  from transformers.models.bart.modeling_bart import shift_tokens_right as hf_shift
  expected = hf_shift(_torch().tensor(labels, dtype=_torch().long), PAD, 2).numpy()
  np.testing.assert_array_equal(bart.shift_tokens_right(labels, PAD, 2), expected)
  src, src_mask, _, _ = _batch()
  with _torch().no_grad():
    ref = torch_model(_torch().tensor(src, dtype=_torch().long), attention_mask=_torch().tensor(src_mask)).logits.numpy()
  assert _max_diff(model.apply({"params": params}, src, src_mask).logits, ref) <= TOL


# ---------------------------------------------------------------------------------------------------------------
# KV cache


def test_greedy_cache_matches_full_forward(loaded):
  model, params = loaded
  src, src_mask, _, _ = _batch()
  tokens, step_logits = bart.greedy_decode(model, params, jnp.asarray(src), jnp.asarray(src_mask), max_len=8)
  assert tokens.shape == (3, 8) and np.all(tokens[:, 0] == model.config.decoder_start_token_id)
  full = model.apply({"params": params}, src, src_mask, tokens[:, :-1]).logits
  assert _max_diff(step_logits, full) <= REF_TOL
  np.testing.assert_array_equal(np.argmax(full, -1), tokens[:, 1:])


def test_cache_with_prefill_and_padding(loaded):
  """Teacher-forced: 3 tokens at once, then one per call, with a padded target row; cache longer than needed."""
  model, params = loaded
  src, src_mask, tgt, tgt_mask = _batch()
  tgt_mask[1, 1] = 0   # a hole inside the prefix: it must stay masked in later steps
  full = np.asarray(model.apply({"params": params}, src, src_mask, tgt, tgt_mask).logits)
  enc = model.apply({"params": params}, src, src_mask, method=model.encode).last_hidden_state
  cache = bart.init_cache(model, 3, max_len=10)
  step = jax.jit(lambda cache, x, m: model.apply({"params": params, "cache": cache}, x, enc, src_mask, m,
                                                  decode=True, mutable=["cache"], method=model.decode))
  out, mut = step(cache, tgt[:, :3], tgt_mask[:, :3])
  logits = [out.logits]
  for t in range(3, tgt.shape[1]):
    out, mut = step(mut["cache"], tgt[:, t:t + 1], tgt_mask[:, t:t + 1])
    logits.append(out.logits)
  assert int(mut["cache"]["decoder"]["index"]) == tgt.shape[1]
  valid = tgt_mask.astype(bool)
  assert _max_diff(np.concatenate(logits, 1)[valid], full[valid]) <= REF_TOL


def test_cross_attention_kv_projected_only_in_the_first_decode_call(loaded):
  """The encoder_attn k_proj/v_proj run in the first decode call only; later calls read the cached K/V."""
  model, params = loaded
  src, src_mask, tgt, tgt_mask = _batch()
  enc = model.apply({"params": params}, src, src_mask, method=model.encode).last_hidden_state
  cache = bart.init_cache(model, 3, max_len=10)
  assert not any("cross" in k for k in flax.traverse_util.flatten_dict(cache, sep="/"))
  calls = []

  def count_kv_projections(next_fun, args, kwargs, context):
    m = context.module
    if context.method_name == "__call__" and isinstance(m, QDense) and m.name in ("k_proj", "v_proj"):
      calls.append("/".join(m.scope.path))
    return next_fun(*args, **kwargs)

  def step(cache, x, m):   # not jitted: the interceptor sees every call, not only traces
    calls.clear()
    with nn.intercept_methods(count_kv_projections):
      out, mut = model.apply({"params": params, "cache": cache}, x, enc, src_mask, m, decode=True,
                             mutable=["cache"], method=model.decode)
    return out, mut["cache"], sorted(calls)

  proj = lambda attn: sorted(f"decoder/layers_{i}/{attn}/{p}" for i in range(2) for p in ("k_proj", "v_proj"))
  out, cache, first = step(cache, tgt[:, :3], tgt_mask[:, :3])
  assert first == sorted(proj("self_attn") + proj("encoder_attn"))
  cross = cache["decoder"]["layers_0"]["encoder_attn"]
  assert cross["cached_cross_key"].shape == cross["cached_cross_value"].shape == (3, 11, 4, 8)
  logits = [out.logits]
  for t in range(3, 5):
    out, cache, later = step(cache, tgt[:, t:t + 1], tgt_mask[:, t:t + 1])
    assert later == proj("self_attn"), "cross-attention K/V recomputed after the first decode call"
    logits.append(out.logits)
  # The traced later step has 4 fewer GEMMs (dot_generals) than the first, which also projects the cross K/V.
  n_dots = lambda c, x, m: str(jax.make_jaxpr(lambda c: model.apply(
      {"params": params, "cache": c}, x, enc, src_mask, m, decode=True, mutable=["cache"],
      method=model.decode))(c)).count("dot_general")
  fresh = bart.init_cache(model, 3, max_len=10)
  one, ones = tgt[:, 5:6], tgt_mask[:, 5:6]
  assert n_dots(fresh, one, ones) - n_dots(cache, one, ones) == 2 * 2
  full = np.asarray(model.apply({"params": params}, src, src_mask, tgt, tgt_mask).logits)[:, :5]
  valid = tgt_mask[:, :5].astype(bool)
  assert _max_diff(np.concatenate(logits, 1)[valid], full[valid]) <= REF_TOL


# ---------------------------------------------------------------------------------------------------------------
# Quantization coverage


def _levels_per_slice(x: np.ndarray, axis: int) -> int:
  x = np.moveaxis(np.asarray(x), axis, -1).reshape(-1, np.shape(x)[axis])
  return max(len(np.unique(row)) for row in x)


def test_w4a4_quantizes_exactly_the_four_gemm_types_in_all_attention_kinds(loaded):
  model, params = loaded
  qmodel = bart.BartForConditionalGeneration(dataclasses.replace(model.config, policy=make_policy("w4a4")))
  src, src_mask, tgt, tgt_mask = _batch()
  out, state = qmodel.apply({"params": params}, src, src_mask, tgt, tgt_mask, taps=Taps(hidden_states=True),
                            mutable=[QUANT_TAPS])
  sown = flax.traverse_util.flatten_dict(state[QUANT_TAPS], sep="/")
  layers = {k.rsplit("/", 1)[0] for k in sown}
  projs = ("q_proj", "k_proj", "v_proj", "out_proj")
  expected = set()
  for side, attns in (("encoder", ("self_attn",)), ("decoder", ("self_attn", "encoder_attn"))):
    for i in range(2):
      expected |= {f"{side}/layers_{i}/{a}/{p}" for a in attns for p in projs}
      expected |= {f"{side}/layers_{i}/fc1", f"{side}/layers_{i}/fc2"}
  assert layers == expected and len(expected) == 2 * 6 + 2 * 10
  flat_params = flax.traverse_util.flatten_dict(params, sep="/")
  for layer in expected:
    (x,), (kernel,) = sown[f"{layer}/input"], sown[f"{layer}/kernel"]
    assert _levels_per_slice(kernel, axis=0) <= 16, layer
    assert _levels_per_slice(x, axis=-1) <= 16, layer
    assert _levels_per_slice(flat_params[f"{layer}/kernel"], axis=0) > 16
  # Embeddings and LM head stay float.
  float_out = model.apply({"params": params}, src, src_mask, tgt, tgt_mask, taps=Taps(hidden_states=True))
  np.testing.assert_array_equal(out.encoder_hidden_states[0], float_out.encoder_hidden_states[0])
  np.testing.assert_array_equal(out.decoder_hidden_states[0], float_out.decoder_hidden_states[0])
  head = out.decoder_hidden_states[-1] @ params["shared"]["embedding"].T + params["final_logits_bias"]
  np.testing.assert_allclose(out.logits, head, atol=1e-5)
  assert _max_diff(out.logits, float_out.logits) > 1e-3


def test_fp32_policy_is_bit_exact_float(loaded):
  model, params = loaded
  fp = bart.BartForConditionalGeneration(dataclasses.replace(model.config, policy=make_policy("fp32")))
  src, src_mask, tgt, tgt_mask = _batch()
  np.testing.assert_array_equal(fp.apply({"params": params}, src, src_mask, tgt, tgt_mask).logits,
                                model.apply({"params": params}, src, src_mask, tgt, tgt_mask).logits)


def test_dropout_uses_rng_and_flag(loaded):
  model, params = loaded
  src, src_mask, tgt, tgt_mask = _batch()
  run = lambda seed: model.apply({"params": params}, src, src_mask, tgt, tgt_mask, deterministic=False,
                                 rngs={"dropout": jax.random.PRNGKey(seed)}).logits
  np.testing.assert_array_equal(run(0), run(0))
  assert _max_diff(run(0), run(1)) > 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Loader and presets


def _rewrite(src, dst, edit):
  tensors = safetensors_numpy.load_file(str(src / "model.safetensors"))
  edit(tensors)
  dst.mkdir(exist_ok=True)
  (dst / "config.json").write_text((src / "config.json").read_text())
  safetensors_numpy.save_file(tensors, str(dst / "model.safetensors"))
  return dst


def test_loader_rejects_misshaped_tensor(hf_dir, tmp_path):
  name = "model.decoder.layers.1.fc1.weight"   # [48, 32]; transposed it would map to the wrong kernel shape
  def edit(t):
    t[name] = np.ascontiguousarray(t[name].T)
  with pytest.raises(ValueError, match=name.replace(".", r"\.")):
    load_pretrained(_rewrite(hf_dir[0], tmp_path / "bad", edit))


def test_loader_rejects_missing_and_untied(hf_dir, tmp_path):
  src = hf_dir[0]
  missing = _rewrite(src, tmp_path / "missing", lambda t: t.pop("model.decoder.layers.0.encoder_attn.k_proj.bias"))
  with pytest.raises(ValueError, match=r"model\.decoder\.layers\.0\.encoder_attn\.k_proj\.bias"):
    load_pretrained(missing)
  untied = _rewrite(src, tmp_path / "untied", lambda t: t.update(
      {"model.decoder.embed_tokens.weight": t["model.shared.weight"] + 1}))
  with pytest.raises(ValueError, match=r"model\.decoder\.embed_tokens\.weight"):
    load_pretrained(untied)


def test_loader_accepts_bart_model_layout(hf_dir, loaded, tmp_path):
  """BartModel-style names (no "model." prefix), embed_tokens aliases, version buffers, no final_logits_bias."""
  def edit(t):
    t.pop("final_logits_bias")
    for k in list(t):
      t[k.removeprefix("model.")] = t.pop(k)
    t["encoder.embed_tokens.weight"] = t["decoder.embed_tokens.weight"] = t["shared.weight"].copy()
    t["encoder.version"] = t["decoder.version"] = np.array([2.0], np.float32)
  _, params = load_pretrained(_rewrite(hf_dir[0], tmp_path / "bart_model", edit))
  np.testing.assert_array_equal(params["final_logits_bias"], 0.0)
  params["final_logits_bias"] = loaded[1]["final_logits_bias"]
  jax.tree.map(np.testing.assert_array_equal, params, loaded[1])


def test_config_from_hf():
  hf = dict(TINY, scale_embedding=True, dropout=0.0, pad_token_id=1)
  config = bart.config_from_hf(hf, dropout=0.05)
  assert config.scale_embedding and config.dropout == 0.05 and config.embed_scale == np.sqrt(32)
  with pytest.raises(ValueError, match="normalize_before"):
    bart.config_from_hf(dict(hf, normalize_before=True))
  with pytest.raises(ValueError, match="activation_function"):
    bart.config_from_hf(dict(hf, activation_function="swish"))


def test_scale_embedding_parity(tmp_path):
  torch_model = _save_hf(tmp_path, seed=1, scale_embedding=True)
  model, params = load_pretrained(tmp_path)
  assert model.config.scale_embedding
  src, src_mask, tgt, tgt_mask = _batch(seed=1)
  ref = _torch_forward(torch_model, src, src_mask, tgt, tgt_mask)
  out = model.apply({"params": params}, src, src_mask, tgt, tgt_mask)
  assert _max_diff(out.logits, ref.logits.numpy()) <= TOL


def test_presets():
  base, large = get_config("bart_base"), get_config("bart_large", dropout=0.0)
  assert (base.d_model, base.encoder_layers, base.decoder_layers, base.encoder_attention_heads) == (768, 6, 6, 12)
  assert (large.d_model, large.encoder_layers, large.encoder_ffn_dim, large.dropout) == (1024, 12, 4096, 0.0)
  assert base.vocab_size == 50265 and base.max_position_embeddings == 1024
  model = bart.BartForConditionalGeneration(get_config("bart_tiny"))
  ids = jnp.zeros((1, 4), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, None, ids))["params"]
  assert shapes["encoder"]["embed_positions"]["embedding"].shape == (64 + 2, 32)   # BART's +2 offset rows
