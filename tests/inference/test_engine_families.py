"""The integer engine on GPT-2, BART and Llama: tiny models' logits in integer mode vs fake-quant mode (w4a4 sym,
w4a4 asym, w8a8, the per-GEMM switch), a packed checkpoint round trip per family, bad input. CPU: XLA's integer dots
(the Pallas kernels in interpret mode for one model; BERT's tests cover them further)."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.inference import check, engine, export
from int4jax.models import bart, gpt2, hf, llama, registry
from int4jax.nn import int_gemm
from int4jax.quant.policy import QuantRule, make_policy
from int4jax.quant.numerics import QuantSpec
from int4jax.tasks import engine_eval

XLA = int_gemm.IntMode(backend="xla")
INTERPRET = int_gemm.IntMode(interpret=True)


def _tiny(family, policy, layers=1):
  """Width 64 (a multiple of the portable kernels' K tile), 4 heads; Llama with grouped-query attention."""
  if family == "gpt2":
    return dataclasses.replace(gpt2.gpt2_tiny(), n_embd=64, n_head=4, n_layer=layers, policy=policy)
  if family == "bart":
    return dataclasses.replace(bart.bart_tiny(), d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128,
                               encoder_layers=layers, decoder_layers=layers, policy=policy)
  return dataclasses.replace(llama.llama_tiny(), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                             policy=policy)


# (family, preset, symmetric, gemms, layers, mode): every family under w4a4 sym (two layers: the LayerNorm handed from
# one layer to the next one's quantizer), w4a4 asym and w8a8 (one layer), and the paper's per-GEMM switch.
CASES = [(f, "w4a4", True, None, 2, INTERPRET if f == "gpt2" else XLA) for f in ("gpt2", "bart", "llama")]
CASES += [(f, p, s, None, 1, XLA) for f in ("gpt2", "bart", "llama") for p, s in (("w4a4", False), ("w8a8", True))]
CASES += [("llama", "w4a4", True, ("ffn_in",), 1, XLA), ("gpt2", "w8a8", False, ("attn_out", "ffn_in"), 1, XLA)]


@pytest.mark.parametrize("family,preset,sym,gemms,layers,mode", CASES, ids=[
    f"{f}-{p}-{'sym' if s else 'asym'}-{'+'.join(g) if g else 'all'}-L{n}-{'interpret' if m.interpret else m.backend}"
    for f, p, s, g, n, m in CASES])
def test_integer_logits_match_fake_quant(family, preset, sym, gemms, layers, mode):
  """Tolerance: check.float_tolerance, G K_max u (x4) relative to the largest logit (check.py's docstring); the
  comparison must resolve far below the quantization noise (fake-quant vs float logits) and keep every argmax."""
  kw = {"gemms": gemms} if gemms else {}
  cfg = _tiny(family, make_policy(preset, symmetric=sym, **kw), layers)
  r = check.compare(cfg, seed=3, seq=8, int_mode=mode, init_std=0.1)
  assert r["family"] == family and r["within_tolerance"], r
  assert r["quant_noise_rel"] > 20 * r["rel_diff"], r
  assert r["argmax_agree"] == 1.0, r


# The quantized GEMMs in the packed layout, fused where the family fuses them: module -> (N, K / 2) for 4-bit.
FUSED = {"gpt2": {"h_0/attn/c_attn": (192, 32), "h_0/mlp/c_fc": (256, 32)},
         "bart": {"encoder/layers_0/self_attn/qkv": (192, 32), "decoder/layers_0/encoder_attn/q_proj": (64, 32),
                  "decoder/layers_0/encoder_attn/kv_proj": (128, 32), "decoder/layers_0/fc2": (64, 64)},
         "llama": {"layers_0/self_attn/qkv": (64 + 2 * 32, 32), "layers_0/mlp/gate_up": (256, 32),
                   "layers_0/mlp/down_proj": (64, 64)}}
FLOAT = {"gpt2": "wte/embedding", "bart": "final_logits_bias", "llama": "lm_head"}


TASKS = {"gpt2": "lm", "llama": "lm", "bart": "conditional_generation"}


def _params(family, cfg):
  """(random params, example inputs) of the family's model."""
  inputs = check.example_inputs(family, cfg, seq=8)
  return check.model_params(registry.family(family).build(cfg, TASKS[family]), inputs, init_std=0.1), inputs


def _packed(tmp_path, family):
  cfg = _tiny(family, make_policy("w4a4"))
  params, inputs = _params(family, cfg)
  meta = export.export(str(tmp_path / family), params, cfg, TASKS[family], family)
  return cfg, TASKS[family], params, inputs, meta


@pytest.mark.parametrize("family", ["gpt2", "bart", "llama"])
def test_packed_round_trip(tmp_path, family):
  cfg, task, params, inputs, meta = _packed(tmp_path, family)
  d = tmp_path / family
  assert sorted(p.name for p in d.iterdir()) == ["packed.json", "params.safetensors"]
  stored = json.loads((d / "packed.json").read_text())
  assert stored["family"] == family and stored["task"] == task and stored["fuse_qkv"] is True
  eng = engine.load(str(d), family=family, int_mode=XLA, dtype=jnp.float32)
  flat = hf.flatten(eng.params)
  for module, shape in FUSED[family].items():
    assert flat[f"{module}/w_q"].dtype == jnp.uint8 and flat[f"{module}/w_q"].shape == shape, module
  assert flat[FLOAT[family]].dtype == jnp.bfloat16        # float tensors in bf16, no float copy of a GEMM weight
  assert not [p for p in flat if p.endswith("/kernel")]
  # what was written is what pack_params computes, bit for bit, and the loaded engine runs it
  for path, arr in export.pack_params(params, cfg, task).items():
    np.testing.assert_array_equal(np.asarray(flat[path]), arr, err_msg=path)
  logits = np.asarray(eng(**inputs))
  vocab = cfg.vocab_size
  want = (2, 4, vocab) if family == "bart" else (2, 8, vocab)
  assert logits.shape == want and np.all(np.isfinite(logits))
  assert meta["bytes"]["quantized_gemm_params"] == sum(
      a.size * 2 for p, a in export.pack_params(params, cfg, task).items() if p.endswith("/w_q"))


def test_bad_input(tmp_path):
  with pytest.raises(ValueError, match="quantizes no GEMM"):
    export.pack_params({}, _tiny("gpt2", make_policy("fp32")), "lm")
  cfg, task, params, _, _ = _packed(tmp_path, "llama")
  with pytest.raises(ValueError, match="holds a 'llama' model, expected 'gpt2'"):
    engine.load(str(tmp_path / "llama"), family="gpt2")
  with pytest.raises(ValueError, match="the params have no 'h_0/attn/c_attn/kernel': not the float params of a gpt2"):
    export.pack_params(params, _tiny("gpt2", make_policy("w4a4")), "lm")
  with pytest.raises(ValueError, match=r"integer engine runs \['bert', 'gpt2', 'bart', 'llama'\] models; 't5'"):
    export.check_family("t5")
  (tmp_path / "summ").mkdir()   # a summarization run: packed by experiments.export, not evaluated by the engine
  (tmp_path / "summ" / "config.json").write_text(json.dumps({"kind": "summarization", "run": {}}))
  with pytest.raises(ValueError, match="--engine=int evaluates experiments.glue and experiments.lm runs"):
    engine_eval.evaluate_run(str(tmp_path / "summ"))
  # BART's k_proj 8-bit while q_proj / v_proj are 4-bit: one fused QKV GEMM cannot hold both; unfused it packs.
  w8 = QuantRule(pattern="k_proj$", weight=QuantSpec(bits=8, granularity="channel"),
                 act=QuantSpec(bits=8, granularity="token"))
  mixed = make_policy("w4a4")
  mixed = dataclasses.replace(mixed, rules=(w8,) + mixed.rules)
  bcfg = _tiny("bart", mixed)
  bparams, _ = _params("bart", bcfg)
  with pytest.raises(ValueError, match="q_proj, encoder/layers_0/self_attn/k_proj, .* quantized differently"):
    export.pack_params(bparams, bcfg, "conditional_generation")
  flat = export.pack_params(bparams, bcfg, "conditional_generation", fuse_qkv=False)
  assert flat["encoder/layers_0/self_attn/k_proj/w_q"].dtype == np.int8
  assert flat["encoder/layers_0/self_attn/q_proj/w_q"].dtype == np.uint8
