"""int4jax.policy: presets resolve to the documented quantizers, GEMM switches, heads stay float, JSON round trip."""
import dataclasses
import json

import pytest

from int4jax.quant.policy import GEMM_TYPES, INT_PRESETS, PRESETS, QuantPolicy, QuantRule, describe, make_policy
from int4jax.quant.numerics import QuantSpec

BITS = {"w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4), "w4a16": (4, None), "w8a16": (8, None)}
PATHS = {"qkv": "encoder/layer_3/attention/query", "attn_out": "encoder/layer_3/attention/output",
         "ffn_in": "encoder/layer_3/intermediate", "ffn_out": "h/11/mlp/c_proj"}


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("preset", [p for p in INT_PRESETS if p != "fp32"])
def test_preset_resolves_documented_quantizers(preset, symmetric):
  w_bits, a_bits = BITS[preset]
  pol = make_policy(preset, symmetric=symmetric)
  assert pol.name == f"{preset}_{'sym' if symmetric else 'asym'}" and not pol.is_float
  for gemm in GEMM_TYPES:
    w, a = pol.resolve(PATHS[gemm], gemm)
    assert w == QuantSpec(bits=w_bits, symmetric=symmetric, granularity="channel")
    assert a == (None if a_bits is None else QuantSpec(bits=a_bits, symmetric=symmetric, granularity="token"))


def test_grouped_weights_and_clips():
  pol = make_policy("w4a4", symmetric=False, weight_group_size=128, weight_clip=(-1, 1), act_clip=(-5, 5))
  w, a = pol.resolve(PATHS["qkv"], "qkv")
  assert w == QuantSpec(4, False, "group", 128, clip=(-1.0, 1.0))
  assert a == QuantSpec(4, False, "token", clip=(-5.0, 5.0))
  assert pol.name == "w4a4_asym_g128"


def test_fp32_is_float():
  pol = make_policy("fp32")
  assert pol.name == "fp32" and pol.is_float and pol.rules == ()
  assert all(pol.resolve(PATHS[g], g) == (None, None) for g in GEMM_TYPES)


@pytest.mark.parametrize("preset", PRESETS)
def test_heads_untouched(preset):
  pol = make_policy(preset)
  for path in ("classifier", "pooler/dense", "lm_head", "encoder/layer_0/attention/query"):
    assert pol.resolve(path, None) == (None, None)


@pytest.mark.parametrize("only", GEMM_TYPES)
def test_gemm_switches(only):
  for pol in (make_policy("w4a4", gemms=(only,)), make_policy("w4a4").with_gemms([only]),
              make_policy("w4a4").with_gemms(only)):
    assert pol.gemms == frozenset({only})
    for gemm in GEMM_TYPES:
      w, a = pol.resolve(PATHS[gemm], gemm)
      assert (w is not None and a is not None) == (gemm == only)
  assert make_policy("w4a4").with_gemms(()).is_float


def test_rules_first_match_wins_and_unmatched_float():
  w8, w4 = QuantSpec(8), QuantSpec(4)
  pol = QuantPolicy("custom", rules=(QuantRule(r"layer_0/", w8, None), QuantRule(r"attention", w4, w4)))
  assert pol.resolve("encoder/layer_0/attention/query", "qkv") == (w8, None)
  assert pol.resolve("encoder/layer_1/attention/query", "qkv") == (w4, w4)
  assert pol.resolve("encoder/layer_1/intermediate", "ffn_in") == (None, None)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("preset", INT_PRESETS)
def test_json_round_trip(preset, symmetric):
  for kwargs in ({}, dict(weight_group_size=64, weight_clip=(-2.5, 2.5), act_clip=(-1, 1), gemms=("ffn_in",))):
    pol = make_policy(preset, symmetric=symmetric, **kwargs)
    s = pol.to_json()
    json.loads(s)
    back = QuantPolicy.from_json(s)
    assert back == pol and hash(back) == hash(pol) and back.to_json() == s


def test_json_round_trip_custom_rules():
  pol = QuantPolicy("custom", rules=(QuantRule(r"layer_(0|11)/", QuantSpec(8), None),
                                     QuantRule(".*", QuantSpec(4, False, "group", 32), QuantSpec(4, clip=(-1, 1)))),
                    gemms=frozenset({"qkv", "ffn_out"}))
  assert QuantPolicy.from_json(pol.to_json()) == pol


def test_bad_names_raise():
  with pytest.raises(ValueError, match=r"'w3a3'.*fp32.*w4a4"):
    make_policy("w3a3")
  with pytest.raises(ValueError, match=r"'ffn'.*ffn_in"):
    make_policy("w4a4", gemms=("qkv", "ffn"))
  with pytest.raises(ValueError, match=r"'mlp'.*attn_out"):
    make_policy("w4a4").with_gemms(["mlp"])
  with pytest.raises(ValueError, match=r"'ffn'.*ffn_in"):
    make_policy("w4a4").resolve("a/b", "ffn")
  with pytest.raises(ValueError, match="pattern"):
    QuantRule("(", QuantSpec(4), None)
  with pytest.raises(ValueError, match="group_size"):
    make_policy("w4a4", weight_group_size=0)


def test_policy_is_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    make_policy("w4a4").name = "x"


def test_describe_rows():
  rows = describe()
  assert [r[0] for r in rows] == list(PRESETS)
  table = {r[0]: r[1:] for r in rows}
  assert table["fp32"] == ("float", "float")
  assert table["w4a4"] == ("int4 sym per-channel", "int4 sym per-token dynamic")
  assert table["w8a16"] == ("int8 sym per-channel", "float")
  assert describe(symmetric=False, weight_group_size=128)[3][1] == "int4 asym groups of 128 along K"
