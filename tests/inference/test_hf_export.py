"""Hugging Face export: our model -> HF directory -> transformers' PyTorch model gives the same logits.

Params are the models' inits plus seeded noise on every tensor (biases and LayerNorm scales included), so a
missing transpose, a swapped name or a dropped tensor changes the logits far beyond the 1e-4 tolerance (float32
forward passes of these tiny models agree to ~1e-6).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from int4jax.inference import hf_export
from int4jax.models import bart, bert, gpt2, hf, registry
from int4jax.quant.policy import make_policy

TOL = 1e-4
SEED = 0


def _noisy(params, seed=SEED):
  leaves, tree = jax.tree.flatten(params)
  rs = np.random.RandomState(seed)
  return jax.tree.unflatten(tree, [np.asarray(x) + 0.05 * rs.standard_normal(x.shape).astype(np.float32)
                                   for x in leaves])


def _ids(vocab, batch=2, seq=9, seed=SEED):
  return np.random.RandomState(seed + 1).randint(3, vocab, (batch, seq)).astype(np.int64)


def _max_diff(ours, theirs):
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs.detach().numpy().astype(np.float64))))


def test_bert_sequence_classification_round_trip(tmp_path):
  config = bert.bert_tiny(num_labels=3)
  model = bert.build(config, "sequence_classification")
  ids = _ids(config.vocab_size)
  mask = np.ones_like(ids)
  mask[1, -3:] = 0
  params = _noisy(model.init(jax.random.PRNGKey(SEED), jnp.asarray(ids, jnp.int32))["params"])
  out = hf_export.export_model(tmp_path / "bert", config, "sequence_classification", params,
                               policy=make_policy("w4a4"))
  theirs = transformers.AutoModelForSequenceClassification.from_pretrained(str(out), attn_implementation="eager")
  assert type(theirs).__name__ == "BertForSequenceClassification"
  ours = model.apply({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)).logits
  with torch.no_grad():
    ref = theirs.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
  assert _max_diff(ours, ref) <= TOL, f"seed {SEED}"
  # and back into int4jax: the same params, and the policy that travelled with them
  model2, params2, policy = hf_export.load_exported(out)
  assert policy == make_policy("w4a4") and model2.config.policy == policy
  jax.tree.map(np.testing.assert_array_equal, params2, jax.tree.map(np.asarray, params))


def test_gpt2_lm_head_round_trip(tmp_path):
  config = gpt2.gpt2_tiny()
  model = gpt2.GPT2LMHeadModel(config)
  ids = _ids(config.vocab_size)
  params = _noisy(model.init(jax.random.PRNGKey(SEED), jnp.asarray(ids, jnp.int32))["params"])
  out = hf_export.export_model(tmp_path / "gpt2", config, "lm", params)
  theirs = transformers.AutoModelForCausalLM.from_pretrained(str(out), attn_implementation="eager")
  assert type(theirs).__name__ == "GPT2LMHeadModel"
  ours = model.apply({"params": params}, jnp.asarray(ids, jnp.int32)).logits
  with torch.no_grad():
    ref = theirs.eval()(input_ids=torch.tensor(ids)).logits
  assert _max_diff(ours, ref) <= TOL, f"seed {SEED}"


def test_bart_conditional_generation_round_trip(tmp_path):
  config = bart.bart_tiny()
  model = bart.BartForConditionalGeneration(config)
  ids, dec = _ids(config.vocab_size), _ids(config.vocab_size, seq=6, seed=SEED + 7)
  j = lambda x: jnp.asarray(x, jnp.int32)
  params = _noisy(model.init(jax.random.PRNGKey(SEED), j(ids), None, j(dec))["params"])
  out = hf_export.export_model(tmp_path / "bart", config, "conditional_generation", params)
  theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(out), attn_implementation="eager")
  assert type(theirs).__name__ == "BartForConditionalGeneration"
  ours = model.apply({"params": params}, j(ids), None, j(dec)).logits
  with torch.no_grad():
    ref = theirs.eval()(input_ids=torch.tensor(ids), decoder_input_ids=torch.tensor(dec)).logits
  assert _max_diff(ours, ref) <= TOL, f"seed {SEED}"


def test_export_tensors_refuses_unmapped_params_and_missing_inverse():
  with pytest.raises(ValueError, match="no checkpoint name"):
    hf.export_tensors({"a": np.zeros(2), "b": np.zeros(2)}, {"a": hf.Ref("x")})
  with pytest.raises(ValueError, match="no inverse"):
    hf.export_tensors({"a": np.zeros(2)}, {"a": hf.Ref("x", lambda w: w * 2)})
  with pytest.raises(ValueError, match="tied"):
    hf.export_tensors({"a": np.zeros(2), "b": np.ones(2)}, {"a": hf.Ref("x"), "b": hf.Ref("x")})


def test_post_ln_gpt2_and_unexportable_family_are_refused(tmp_path):
  config = gpt2.gpt2_tiny()
  params = gpt2.GPT2LMHeadModel(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))["params"]
  with pytest.raises(ValueError, match="Post-LN"):
    registry.save_pretrained(tmp_path, gpt2.gpt2_tiny().__class__(**{**gpt2.gpt2_tiny().__dict__, "post_ln": True}),
                             "lm", params)


@pytest.mark.parametrize("name", sorted(registry.FAMILIES))
def test_every_family_exports_and_its_config_round_trips(name):
  """The hook for new families (Llama): each registered family defines config_to_hf and export_mapping, and
  config_from_hf(config_to_hf(c)) == c on its tiny preset. A new family also gets a logits round trip above."""
  fam = registry.FAMILIES[name]
  assert fam.config_to_hf is not None and fam.export_mapping is not None, f"{name}: FAMILY has no HF export"
  tiny = [p for p in fam.presets if p.endswith("_tiny")]
  assert tiny, f"{name} has no *_tiny preset"
  config = fam.presets[tiny[0]]()
  for task in fam.tasks:
    hf_config = fam.config_to_hf(config, task)
    assert hf_config["model_type"] == name and fam.default_task(hf_config) == task
    assert fam.config_from_hf(hf_config) == config
