"""The integer engine: integer GEMM layer vs an exact reference, tiny BERT integer vs fake-quant logits, packed
checkpoint round trip and byte count, bad input. CPU: XLA's integer dots, and the Pallas kernels in interpret mode."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.inference import check, engine, export
from int4jax.models import bert, hf
from int4jax.nn import int_gemm
from int4jax.quant.formats import unpack_int4
from int4jax.quant.numerics import QuantSpec
from int4jax.quant.policy import make_policy

U32 = 2.0 ** -24
XLA = int_gemm.IntMode(backend="xla")
INTERPRET = int_gemm.IntMode(interpret=True)


def _codes(q, bits):
  return np.asarray(unpack_int4(q) if bits == 4 else q).astype(np.int64)


@pytest.mark.parametrize("w_bits,a_bits,sym,group", [(4, 4, True, None), (4, 4, False, None), (8, 8, True, None),
                                                     (8, 8, False, 64), (4, 8, True, None), (4, 4, False, 64)])
def test_int_dense_matches_exact_int64_reference(w_bits, a_bits, sym, group):
  """y = S_x S_w sum(q_x q_w) [int64] + zero-point terms + bias, in float64; the layer may differ only by the f32
  rounding of its epilogue: <= 8u of the sum of the terms' magnitudes, below half an integer unit S_x S_w."""
  seed = 1000 * w_bits + 10 * a_bits + sym + (group or 0)
  rng = np.random.default_rng(seed)
  m, k, n = 8, 256, 64
  x = jnp.asarray(rng.normal(size=(m, k)) + (0 if sym else 0.7), jnp.float32)
  kernel = rng.normal(size=(k, n)).astype(np.float32) * 0.05 + (0 if sym else 0.01)
  w_spec = QuantSpec(bits=w_bits, symmetric=sym, granularity="group" if group else "channel", group_size=group)
  a_spec = QuantSpec(bits=a_bits, symmetric=sym, granularity="token")
  p = {kk: jnp.asarray(v) for kk, v in int_gemm.pack_weight(kernel, w_spec, a_spec).items()}
  p["bias"] = jnp.asarray(rng.normal(size=n), jnp.float32)
  for mode in (XLA, INTERPRET):
    y = np.asarray(int_gemm.int_dense(x, p, w_spec, a_spec, mode, gelu=False, out_dtype=jnp.float32), np.float64)
    xq, xs, x_off = int_gemm.quantize_tokens(x, a_spec, mode)
    qx, qw = _codes(xq, a_bits), _codes(p["w_q"], w_bits)
    g = k // (group or k)
    sw = np.asarray(p["w_scale"], np.float64).reshape(n, g)
    cw = np.asarray(p.get("w_offset", np.zeros((n, g))), np.float64).reshape(n, g)
    parts = np.einsum("mgk,ngk->mng", qx.reshape(m, g, -1), qw.reshape(n, g, -1))  # exact int64 group sums
    xs64 = np.asarray(xs, np.float64)[:, None]
    terms = [xs64 * np.einsum("mng,ng->mn", parts.astype(np.float64), sw),
             xs64 * (qx.reshape(m, g, -1).sum(-1) @ cw.T),
             np.asarray(p["bias"], np.float64)[None]]
    if x_off is not None:
      terms.append(np.asarray(x_off, np.float64)[:, None] * np.asarray(p["w_sum"], np.float64)[None])
    ref = sum(terms)
    bound = 8 * U32 * sum(np.abs(t) for t in terms) + 1e-30
    unit = xs64 * sw.min(axis=1)[None]
    assert np.all(bound < 0.5 * unit), f"seed {seed}: the bound would not see a one-unit integer error"
    err = np.abs(y - ref)
    assert np.all(err <= bound), f"seed {seed} {mode.backend}: max err {err.max():.3g} vs bound {bound.max():.3g}"


def _tiny(policy, **kw):
  return bert.bert_tiny(policy=policy, num_labels=3, num_layers=kw.pop("num_layers", 2), **kw)


@pytest.mark.parametrize("preset,sym,gemms,mode", [
    ("w4a4", True, None, INTERPRET), ("w4a4", False, None, XLA), ("w8a8", True, None, XLA),
    ("w4a4", True, ("ffn_in",), XLA), ("w4a16", True, None, XLA)])
def test_tiny_bert_integer_logits_match_fake_quant(preset, sym, gemms, mode):
  kw = {"gemms": gemms} if gemms else {}
  cfg = _tiny(make_policy(preset, symmetric=sym, weight_clip=(-0.05, 0.05), act_clip=(-4.0, 4.0), **kw))
  r = check.compare(cfg, seed=3, int_mode=mode, init_std=0.1)
  # w4a16 feeds the activations to the kernel in bf16 (the W4A16 kernels' input type): a 2^-9 relative rounding
  # of each GEMM input, summed over the L x 4 GEMMs.
  tol = 8 * cfg.num_layers * 2.0 ** -9 if preset == "w4a16" else r["float_tolerance_rel"]
  assert r["rel_diff"] <= tol, r
  assert r["quant_noise_rel"] > 20 * r["rel_diff"], r  # the comparison resolves far below quantization noise
  assert r["argmax_agree"] == 1.0, r


def _packed_tiny(tmp_path, policy=None):
  cfg = _tiny(policy or make_policy("w4a4"), hidden_size=128, num_heads=2, intermediate_size=256, num_layers=1)
  model = bert.build(cfg)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 1000, (2, 16)), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), ids)["params"]
  meta = export.export(str(tmp_path / "packed"), params, cfg, "sequence_classification", "bert")
  return cfg, params, ids, meta


def test_export_round_trip_and_bytes(tmp_path):
  cfg, params, ids, meta = _packed_tiny(tmp_path)
  d = tmp_path / "packed"
  assert sorted(p.name for p in d.iterdir()) == ["packed.json", "params.safetensors"]
  assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
  b = meta["bytes"]
  # per-channel INT4: 0.5 byte per weight + one f32 scale per output row of K weights (K = 128 or 256 here)
  n_q = {128: 3 * 128 * 128 + 128 * 128 + 128 * 256, 256: 256 * 128}
  assert b["quantized_gemm_params"] == sum(n_q.values())
  assert b["quantized_gemm_bytes"] == sum(v // 2 + 4 * v // k for k, v in n_q.items())
  eng = engine.load(str(d), int_mode=XLA, dtype=jnp.float32)
  flat = hf.flatten(eng.params)
  assert flat["encoder/layer_0/attention/qkv/w_q"].dtype == jnp.uint8          # no float copy of a quantized weight
  assert flat["encoder/layer_0/attention/qkv/w_q"].shape == (3 * 128, 64)     # (N, K/2), K contiguous
  assert flat["embeddings/word_embeddings/embedding"].dtype == jnp.bfloat16
  mem = engine.from_params(meta, hf.unflatten(export.pack_params(params, cfg, "sequence_classification")),
                           int_mode=XLA, dtype=jnp.float32)
  np.testing.assert_array_equal(np.asarray(eng(ids)), np.asarray(mem(ids)))


def test_bad_input(tmp_path):
  with pytest.raises(ValueError, match="quantizes no GEMM"):
    export.pack_params({}, _tiny(make_policy("fp32")), "sequence_classification")
  _, _, ids, _ = _packed_tiny(tmp_path)
  d = tmp_path / "packed"
  with pytest.raises(ValueError, match="holds a 'bert' model, expected 'gpt2'"):
    engine.load(str(d), family="gpt2")
  with pytest.raises(ValueError, match="exists"):
    _packed_tiny(tmp_path)
  meta = json.loads((d / "packed.json").read_text())
  (d / "packed.json").write_text(json.dumps(dict(meta, format_version=99)))
  with pytest.raises(ValueError, match="format_version 99"):
    engine.load(str(d))
  with pytest.raises(ValueError, match="not a packed checkpoint"):
    engine.load(str(tmp_path))
  # K = 48 is no multiple of the portable kernel's K tile: a clear error, unless XLA may take the shape.
  cfg = _tiny(make_policy("w4a4"), hidden_size=48, num_heads=2, intermediate_size=96, num_layers=1)
  params = bert.build(cfg).init(jax.random.PRNGKey(0), ids)["params"]
  flat = hf.unflatten(export.pack_params(params, cfg, "sequence_classification"))
  meta = {"family": "bert", "task": "sequence_classification", "config": export.config_to_dict(cfg),
          "policy": json.loads(cfg.policy.to_json()), "fuse_qkv": True}
  with pytest.raises(ValueError, match="k=48"):
    engine.from_params(meta, flat, int_mode=INTERPRET)(ids)
  out = engine.from_params(meta, flat, int_mode=int_gemm.IntMode(interpret=True, allow_xla_fallback=True))(ids)
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
