"""Shared attention: fast path vs explicit path, and the KV cache vs the full forward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.nn.attention import MultiHeadAttention, attention_core, causal_mask, padding_mask

ATOL = 1e-5  # float32, same arithmetic up to summation order


def _qkv(rng, b=2, t=7, h=3, d=8):
  ks = jax.random.split(rng, 3)
  return [jax.random.normal(k, (b, t, h, d), jnp.float32) for k in ks]


def test_fast_and_explicit_paths_agree_with_padding_and_causal_mask():
  q, k, v = _qkv(jax.random.PRNGKey(np.random.randint(1 << 30)))
  attn_mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3])
  mask = jnp.logical_and(padding_mask(attn_mask), causal_mask(7, 7))
  fast, s0, p0 = attention_core(q, k, v, mask, dropout_rate=0.0, deterministic=True, want_scores=False,
                                want_probs=False)
  slow, scores, probs = attention_core(q, k, v, mask, dropout_rate=0.0, deterministic=True, want_scores=True,
                                       want_probs=True)
  assert s0 is None and p0 is None
  np.testing.assert_allclose(fast, slow, atol=ATOL)
  # probabilities are zero at masked keys and sum to one
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  assert float(jnp.abs(jnp.where(mask, 0.0, probs)).max()) == 0.0
  # scores are the unmasked QK^T / sqrt(d)
  ref = np.einsum("bqhd,bkhd->bhqk", np.float64(q), np.float64(k)) / np.sqrt(8)
  np.testing.assert_allclose(scores, ref, atol=1e-5)


@pytest.mark.parametrize("proj_names", [("query", "key", "value", "output"), ("c_attn", "c_proj")])
def test_cache_decoding_matches_full_forward(proj_names):
  b, t, d = 2, 6, 16
  mha = MultiHeadAttention(num_heads=4, head_dim=4, proj_names=proj_names, causal=True)
  x = jax.random.normal(jax.random.PRNGKey(np.random.randint(1 << 30)), (b, t, d))
  params = mha.init(jax.random.PRNGKey(0), x)["params"]
  full, _, _ = mha.apply({"params": params}, x)
  cache = mha.init(jax.random.PRNGKey(0), x, decode=True)["cache"]
  # first a 2-token prefix, then one token at a time
  outs = []
  pieces = [x[:, :2]] + [x[:, i:i + 1] for i in range(2, t)]
  for piece in pieces:
    (out, _, _), mut = mha.apply({"params": params, "cache": cache}, piece, decode=True, mutable=["cache"])
    cache = mut["cache"]
    outs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=ATOL)


def test_cross_attention_with_fused_projection_is_an_error():
  mha = MultiHeadAttention(num_heads=2, head_dim=4, proj_names=("c_attn", "c_proj"))
  x = jnp.ones((1, 3, 8))
  with pytest.raises(ValueError, match="fused qkv"):
    mha.init(jax.random.PRNGKey(0), x, kv=x)


def test_cross_attention_decode_projects_kv_once_and_reads_the_cache():
  b, t, s, d = 2, 5, 7, 16
  mha = MultiHeadAttention(num_heads=4, head_dim=4)
  kx, ke = jax.random.split(jax.random.PRNGKey(np.random.randint(1 << 30)))
  x, enc = jax.random.normal(kx, (b, t, d)), jax.random.normal(ke, (b, s, d))
  mask = padding_mask(jnp.array([[1] * s, [1] * 4 + [0] * (s - 4)]))
  params = mha.init(jax.random.PRNGKey(0), x, enc)["params"]
  full, _, _ = mha.apply({"params": params}, x, enc, mask)
  # the decode-mode init allocates nothing for cross-attention (its kv is a placeholder of any length)
  assert "cache" not in mha.init(jax.random.PRNGKey(0), x, enc[:, :1], decode=True)
  (out, _, _), mut = mha.apply({"params": params}, x[:, :2], enc, mask, decode=True, mutable=["cache"])
  cache = mut["cache"]
  assert cache["cached_cross_key"].shape == cache["cached_cross_value"].shape == (b, s, 4, 4)
  outs = [out]
  for i in range(2, t):   # later calls read the cached K/V: a zeroed encoder output changes nothing
    (out, _, _), mut = mha.apply({"params": params, "cache": cache}, x[:, i:i + 1], jnp.zeros_like(enc), mask,
                                 decode=True, mutable=["cache"])
    cache = mut["cache"]
    outs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=ATOL)
  with pytest.raises(ValueError, match="start a new cache"):
    mha.apply({"params": params, "cache": cache}, x[:, :1], enc[:, :3], None, decode=True, mutable=["cache"])
