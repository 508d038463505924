"""GPT-2: parity with transformers, Post-LN against a plain-jnp reference, KV cache, quantization coverage, loader."""
import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.nn.dense import QUANT_TAPS
from int4jax.models import Taps, get_config, load_pretrained
from int4jax.models import gpt2
from int4jax.quant.policy import make_policy

def _torch():
  """torch, or a skip of the calling test only (the tests that need no reference model run without torch)."""
  return pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

TOL = 1e-4        # float32 parity with PyTorch, max abs
REF_TOL = 1e-5    # against our own jnp reference and cache vs full forward, max abs
TINY = dict(vocab_size=99, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def _batch(batch: int = 3, seq: int = 9, seed: int = 0):
  """ids, attention_mask: row 0 full, row 1 left-padded by 3, row 2 right-padded by 4."""
  rs = np.random.RandomState(seed)
  ids = rs.randint(0, TINY["vocab_size"], (batch, seq)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, :3] = 0
  mask[2, seq - 4:] = 0
  return np.where(mask == 1, ids, 0), mask


def _save_hf(path, seed: int = 0, **overrides):
  # initializer_range 0.2 (not 0.02) so that attention is far from uniform and the comparison has signal.
  cfg = transformers.GPT2Config(**TINY, initializer_range=0.2, attn_implementation="eager", **overrides)
  _torch().manual_seed(seed)
  model = transformers.GPT2LMHeadModel(cfg).eval()
  with _torch().no_grad():  # LayerNorms away from (1, 0) so that a swapped scale/bias would show
    for name, p in model.named_parameters():
      if ".ln_" in name:
        p.add_(0.1 * _torch().randn_like(p))
  model.save_pretrained(str(path))
  return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_gpt2")
  return path, _save_hf(path)


@pytest.fixture(scope="module")
def loaded(hf_dir):
  return load_pretrained(hf_dir[0])


def test_parity_with_transformers(hf_dir, loaded):
  """Logits, every hidden state and attention probs, at every position including padding.

  A left-padding query row masks every key; both implementations then attend uniformly, so even those rows agree.
  (Should the attention module ever change that, compare `[mask == 1]` positions only: padding is outside the contract.)
  """
  _, torch_model = hf_dir
  model, params = loaded
  assert isinstance(model, gpt2.GPT2LMHeadModel) and not model.config.post_ln
  ids, mask = _batch()
  with _torch().no_grad():
    ref = torch_model(_torch().tensor(ids, dtype=_torch().long), attention_mask=_torch().tensor(mask, dtype=_torch().long),
                      output_hidden_states=True, output_attentions=True)
  out = model.apply({"params": params}, ids, mask, taps=Taps.all())
  fast = model.apply({"params": params}, ids, mask)  # no taps: jax.nn.dot_product_attention path
  assert _max_diff(out.logits, ref.logits.numpy()) <= TOL
  assert _max_diff(fast.logits, ref.logits.numpy()) <= TOL
  assert len(out.hidden_states) == len(ref.hidden_states) == 3
  for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    assert _max_diff(ours, theirs.numpy()) <= TOL, f"hidden state {i}"
  assert len(out.attention_probs) == len(ref.attentions) == 2
  for i, (ours, theirs) in enumerate(zip(out.attention_probs, ref.attentions)):
    assert _max_diff(ours, theirs.numpy()) <= TOL, f"attention probs {i}"
  valid = mask.astype(bool)
  # Att*: pre-softmax, unmasked; causal + padding mask and softmax give the probabilities.
  allowed = np.tril(np.ones((9, 9), bool))[None, None] & valid[:, None, None, :]
  for scores, probs in zip(out.attention_scores, out.attention_probs):
    assert scores.shape == (3, 4, 9, 9) and np.all(np.isfinite(scores))
    masked = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(masked, -1))[valid.nonzero()[0], :, valid.nonzero()[1]],
                               np.asarray(probs)[valid.nonzero()[0], :, valid.nonzero()[1]], atol=1e-6)


def test_last_hidden_state_is_after_ln_f(loaded):
  model, params = loaded
  ids, mask = _batch()
  out = model.apply({"params": params}, ids, mask, taps=Taps(hidden_states=True))
  np.testing.assert_allclose(out.logits, out.hidden_states[-1] @ params["wte"]["embedding"].T, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Post-LN against an independent plain-jnp reference


def _reference_forward(params, ids, mask, config, post_ln: bool):
  """GPT-2 written from the definition with jax.numpy only: returns (logits, hidden states)."""
  def ln(p, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + config.layer_norm_epsilon) * p["scale"] + p["bias"]

  def gelu_tanh(x):
    return 0.5 * x * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))

  def dense(p, x):
    return x @ p["kernel"] + p["bias"]

  b, t = ids.shape
  nh, hd = config.n_head, config.n_embd // config.n_head
  allowed = np.tril(np.ones((t, t), bool))[None, None] & mask.astype(bool)[:, None, None, :]

  def attn(p, x):
    q, k, v = np.split(np.arange(3 * config.n_embd), 3)
    qkv = dense(p["c_attn"], x)
    heads = lambda idx: qkv[..., idx].reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
    s = heads(q) @ heads(k).transpose(0, 1, 3, 2) / np.sqrt(hd)
    s = jnp.where(allowed, s, -1e30)
    pr = jnp.exp(s - s.max(-1, keepdims=True))
    pr = pr / pr.sum(-1, keepdims=True)
    o = (pr @ heads(v)).transpose(0, 2, 1, 3).reshape(b, t, config.n_embd)
    return dense(p["c_proj"], o)

  def mlp(p, x):
    return dense(p["c_proj"], gelu_tanh(dense(p["c_fc"], x)))

  x = params["wte"]["embedding"][ids] + params["wpe"]["embedding"][np.arange(t)][None]
  hidden = [x]
  for i in range(config.n_layer):
    p = params[f"h_{i}"]
    if post_ln:
      x = ln(p["ln_1"], x + attn(p["attn"], x))
      x = ln(p["ln_2"], x + mlp(p["mlp"], x))
    else:
      x = x + attn(p["attn"], ln(p["ln_1"], x))
      x = x + mlp(p["mlp"], ln(p["ln_2"], x))
    hidden.append(x)
  if not post_ln:
    x = hidden[-1] = ln(params["ln_f"], x)
  return x @ params["wte"]["embedding"].T, hidden


def _random_params(model, seed: int = 0, scale: float = 0.3):
  """Init, then every leaf replaced by N(0, scale) noise (+1 on LayerNorm scales): no zeros or ones to hide bugs."""
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))["params"]
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(flat))
  out = {k: scale * jax.random.normal(r, v.shape) + (1.0 if k.endswith("/scale") else 0.0)
         for r, (k, v) in zip(keys, flat.items())}
  return flax.traverse_util.unflatten_dict(out, sep="/")


@pytest.mark.parametrize("post_ln", [True, False])
def test_against_jnp_reference(post_ln):
  config = dataclasses.replace(gpt2.gpt2_tiny(), post_ln=post_ln)
  model = gpt2.GPT2LMHeadModel(config)
  params = _random_params(model)
  assert ("ln_f" in params) == (not post_ln)
  ids, mask = _batch()
  out = model.apply({"params": params}, ids, mask, taps=Taps(hidden_states=True))
  reference = jax.jit(_reference_forward, static_argnums=(3, 4))   # jit: eager op-by-op dispatch is slow on CI
  ref_logits, ref_hidden = reference(params, ids, mask, config, post_ln)
  valid = mask.astype(bool)
  assert _max_diff(out.logits[valid], ref_logits[valid]) <= REF_TOL
  assert len(out.hidden_states) == len(ref_hidden) == config.n_layer + 1
  for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref_hidden)):
    assert _max_diff(ours[valid], theirs[valid]) <= REF_TOL, f"hidden state {i}"


# ---------------------------------------------------------------------------------------------------------------
# KV cache


@pytest.mark.parametrize("post_ln", [False, True])
def test_cache_matches_full_forward(loaded, post_ln):
  """Prefill 4 tokens (with left padding in row 1), then one token per call: same logits as one full forward."""
  model, params = loaded
  if post_ln:
    model = gpt2.GPT2LMHeadModel(dataclasses.replace(model.config, post_ln=True))
    params = _random_params(model, scale=0.2)
  ids, mask = _batch()
  mask[2] = 1   # decoding appends tokens: right padding has no meaning here
  full = model.apply({"params": params}, ids, mask).logits
  cache = gpt2.init_cache(model, ids.shape[0], max_len=12)   # longer than the sequence: empty slots stay masked
  assert int(cache["h_0"]["attn"]["cache_index"]) == 0
  step = jax.jit(lambda cache, x, m: model.apply({"params": params, "cache": cache}, x, m, decode=True,
                                                  mutable=["cache"]))
  steps = []
  out, mut = step(cache, ids[:, :4], mask[:, :4])
  steps.append(out.logits)
  for t in range(4, ids.shape[1]):
    out, mut = step(mut["cache"], ids[:, t:t + 1], mask[:, t:t + 1])
    steps.append(out.logits)
  assert int(mut["cache"]["index"]) == ids.shape[1] == int(mut["cache"]["h_1"]["attn"]["cache_index"])
  decoded = np.concatenate(steps, axis=1)
  valid = mask.astype(bool)
  assert _max_diff(decoded[valid], np.asarray(full)[valid]) <= REF_TOL


def test_cache_longer_than_positions_is_rejected(loaded):
  model, _ = loaded
  with pytest.raises(ValueError, match="n_positions"):
    gpt2.init_cache(model, 1, max_len=model.config.n_positions + 1)


# ---------------------------------------------------------------------------------------------------------------
# Quantization coverage


def _levels_per_slice(x: np.ndarray, axis: int) -> int:
  x = np.moveaxis(np.asarray(x), axis, -1).reshape(-1, np.shape(x)[axis])
  return max(len(np.unique(row)) for row in x)


def test_w4a4_quantizes_exactly_the_four_gemm_types(loaded):
  model, params = loaded
  qmodel = gpt2.GPT2LMHeadModel(dataclasses.replace(model.config, policy=make_policy("w4a4")))
  ids, mask = _batch()
  out, state = qmodel.apply({"params": params}, ids, mask, taps=Taps(hidden_states=True), mutable=[QUANT_TAPS])
  sown = flax.traverse_util.flatten_dict(state[QUANT_TAPS], sep="/")
  layers = {k.rsplit("/", 1)[0] for k in sown}
  expected = {f"h_{i}/{d}" for i in range(2) for d in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")}
  assert layers == expected
  for layer in expected:
    (x,), (kernel,) = sown[f"{layer}/input"], sown[f"{layer}/kernel"]
    raw = flax.traverse_util.flatten_dict(params, sep="/")[f"{layer}/kernel"]
    assert kernel.shape == raw.shape
    assert _levels_per_slice(kernel, axis=0) <= 16, layer   # per output channel
    assert _levels_per_slice(x, axis=-1) <= 16, layer       # per token
    assert _levels_per_slice(raw, axis=0) > 16
  # Embeddings and the tied LM head stay float: the embedding output and the logits are what float computes.
  float_out = model.apply({"params": params}, ids, mask, taps=Taps(hidden_states=True))
  np.testing.assert_array_equal(out.hidden_states[0], float_out.hidden_states[0])
  np.testing.assert_allclose(out.logits, out.hidden_states[-1] @ params["wte"]["embedding"].T, atol=1e-5)
  assert _max_diff(out.logits, float_out.logits) > 1e-3   # and the GEMMs really were quantized


def test_fp32_policy_is_bit_exact_float(loaded):
  model, params = loaded
  fp = gpt2.GPT2LMHeadModel(dataclasses.replace(model.config, policy=make_policy("fp32")))
  ids, mask = _batch()
  np.testing.assert_array_equal(fp.apply({"params": params}, ids, mask).logits,
                                model.apply({"params": params}, ids, mask).logits)


def test_dropout_uses_rng_and_flag(loaded):
  model, params = loaded
  ids, mask = _batch()
  run = lambda seed: model.apply({"params": params}, ids, mask, deterministic=False,
                                 rngs={"dropout": jax.random.PRNGKey(seed)}).logits
  np.testing.assert_array_equal(run(0), run(0))
  assert _max_diff(run(0), run(1)) > 1e-4
  assert _max_diff(run(0), model.apply({"params": params}, ids, mask).logits) > 1e-4


def test_ffn_out_input_is_sown(loaded):
  model, params = loaded
  ids, mask = _batch()
  _, state = model.apply({"params": params}, ids, mask, mutable=["intermediates"])
  (h,) = state["intermediates"]["h_1"]["mlp"]["ffn_out_input"]
  assert h.shape == (3, 9, 4 * TINY["n_embd"])


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
  name = "transformer.h.1.mlp.c_fc.weight"
  def edit(t):
    t[name] = np.ascontiguousarray(t[name].T)   # an nn.Linear-oriented (out, in) weight
  path = _rewrite(hf_dir[0], tmp_path / "bad", edit)
  with pytest.raises(ValueError, match=name.replace(".", r"\.")):
    load_pretrained(path)


def test_loader_rejects_missing_unexpected_and_untied(hf_dir, tmp_path):
  src = hf_dir[0]
  missing = _rewrite(src, tmp_path / "missing", lambda t: t.pop("transformer.ln_f.bias"))
  with pytest.raises(ValueError, match=r"transformer\.ln_f\.bias"):
    load_pretrained(missing)
  extra = _rewrite(src, tmp_path / "extra", lambda t: t.update({"transformer.h.0.attn.q_attn.weight": t[
      "transformer.h.0.attn.c_proj.weight"]}))
  with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.q_attn\.weight"):
    load_pretrained(extra)
  untied = _rewrite(src, tmp_path / "untied", lambda t: t.update({"lm_head.weight": t["transformer.wte.weight"] + 1}))
  with pytest.raises(ValueError, match=r"lm_head\.weight"):
    load_pretrained(untied)


def test_loader_accepts_old_layout(hf_dir, loaded, tmp_path):
  """GPT2Model-style names without "transformer.", causal-mask buffers and an explicit tied lm_head."""
  def edit(t):
    for k in list(t):
      t[k.removeprefix("transformer.")] = t.pop(k)
    t["lm_head.weight"] = t["wte.weight"].copy()
    for i in range(TINY["n_layer"]):
      t[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
      t[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
  _, params = load_pretrained(_rewrite(hf_dir[0], tmp_path / "old", edit))
  jax.tree.map(np.testing.assert_array_equal, params, loaded[1])


def test_config_from_hf_rejects_unsupported():
  base = dict(vocab_size=99, n_positions=32, n_embd=32, n_layer=2, n_head=4)
  with pytest.raises(ValueError, match="activation_function"):
    gpt2.config_from_hf({**base, "activation_function": "relu"})
  with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
    gpt2.config_from_hf({**base, "scale_attn_by_inverse_layer_idx": True})
  assert gpt2.config_from_hf(base, post_ln=True, embd_pdrop=0.05).post_ln


def test_presets_and_param_paths():
  base, medium = get_config("gpt2_base"), get_config("gpt2_medium", post_ln=True)
  assert (base.n_layer, base.n_embd, base.n_head, base.vocab_size, base.n_positions) == (12, 768, 12, 50257, 1024)
  assert (medium.n_layer, medium.n_embd, medium.n_head, medium.post_ln) == (24, 1024, 16, True)
  model = gpt2.GPT2LMHeadModel(get_config("gpt2_tiny"))
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))["params"]
  n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  # GPT-2 small has 124,439,808 params; the formula below gives it for the base config.
  d, v, p, L = 32, 99, 64, 2
  assert n == v * d + p * d + L * (12 * d * d + 13 * d) + 2 * d
