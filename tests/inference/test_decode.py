"""decode.py against transformers' `generate`: token-for-token equal sequences for BART and GPT-2 (greedy and beam
search, several settings), plus the processors' edge rules and bad settings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.inference import decode
from int4jax.models import load_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, PAD, BOS, EOS = 64, 1, 0, 2
BART = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=48, max_position_embeddings=40,
            pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS)
GPT2 = dict(vocab_size=VOCAB, n_positions=40, n_embd=32, n_layer=2, n_head=4, bos_token_id=BOS, eos_token_id=EOS)


def _sharpen_eos(model, bias):
  """Random tiny models rarely emit EOS; a bias on its logit makes beams finish at different lengths."""
  with torch.no_grad():
    if hasattr(model, "final_logits_bias"):
      model.final_logits_bias[0, EOS] += bias
    else:
      model.transformer.wte.weight[EOS] *= bias


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
  path = tmp_path_factory.mktemp("bart")
  torch.manual_seed(0)
  model = transformers.BartForConditionalGeneration(
      transformers.BartConfig(**BART, init_std=0.1, attn_implementation="eager")).eval()
  _sharpen_eos(model, 2.0)
  model.save_pretrained(str(path))
  ours, params = load_pretrained(path)
  return model, ours, params


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
  path = tmp_path_factory.mktemp("gpt2")
  torch.manual_seed(1)
  model = transformers.GPT2LMHeadModel(
      transformers.GPT2Config(**GPT2, initializer_range=0.1, attn_implementation="eager")).eval()
  _sharpen_eos(model, 3.0)
  model.save_pretrained(str(path))
  ours, params = load_pretrained(path)
  return model, ours, params


def _source(seed=0, batch=3, length=9):
  rs = np.random.RandomState(seed)
  ids = rs.randint(3, VOCAB, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  mask[2, 3:] = 0
  return np.where(mask == 1, ids, PAD), mask


def _hf_generate(model, config: decode.DecodeConfig, **inputs):
  gen = transformers.GenerationConfig(
      do_sample=False, num_beams=config.num_beams, max_length=config.max_length, min_length=config.min_length,
      length_penalty=config.length_penalty, early_stopping=config.early_stopping,
      no_repeat_ngram_size=config.no_repeat_ngram_size, forced_bos_token_id=config.forced_bos_token_id,
      forced_eos_token_id=config.forced_eos_token_id, eos_token_id=config.eos_token_id,
      pad_token_id=config.pad_token_id, bos_token_id=BOS, decoder_start_token_id=EOS, num_return_sequences=1,
      use_cache=True)
  with torch.no_grad():
    out = model.generate(**{k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()}, generation_config=gen)
  return out.numpy()


def _ours_padded(out: decode.Generated, width: int, pad: int) -> np.ndarray:
  rows = decode.trim(out)
  return np.array([row + [pad] * (width - len(row)) for row in rows])


SETTINGS = [
    dict(num_beams=4, max_length=14),
    dict(num_beams=3, max_length=12, length_penalty=2.0, no_repeat_ngram_size=2, min_length=5, early_stopping=True),
    dict(num_beams=2, max_length=10, length_penalty=0.5, early_stopping="never", no_repeat_ngram_size=3,
         forced_bos_token_id=BOS, forced_eos_token_id=EOS),
    dict(num_beams=1, max_length=12, no_repeat_ngram_size=2, min_length=4),
]
_ID = lambda s: "-".join(f"{k}={v}" for k, v in s.items())


@pytest.mark.parametrize("setting", SETTINGS, ids=_ID)
def test_bart_matches_transformers_generate(tiny_bart, setting):
  torch_model, model, params = tiny_bart
  config = decode.DecodeConfig(eos_token_id=EOS, pad_token_id=PAD, **setting)
  src, mask = _source()
  expected = _hf_generate(torch_model, config, input_ids=src, attention_mask=mask)
  out = jax.jit(lambda p, s, m: decode.generate_bart(model, p, s, m, config))(params, src, mask)
  lengths = [len(r) for r in decode.trim(out)]
  np.testing.assert_array_equal(_ours_padded(out, expected.shape[1], PAD), expected, err_msg=f"setting {setting}")
  assert max(lengths) == expected.shape[1]
  if setting is SETTINGS[0]:   # EOS before max_length in some row, so the finished-set logic is exercised
    assert min(lengths) < setting["max_length"]


@pytest.mark.parametrize("setting", [SETTINGS[1], SETTINGS[3]], ids=_ID)
def test_gpt2_matches_transformers_generate(tiny_gpt2, setting):
  torch_model, model, params = tiny_gpt2
  setting = dict(setting, max_length=setting["max_length"] + 4)
  config = decode.DecodeConfig(eos_token_id=EOS, pad_token_id=EOS, **setting)
  prompt = np.random.RandomState(2).randint(3, VOCAB, (2, 5)).astype(np.int32)
  expected = _hf_generate(torch_model, config, input_ids=prompt, attention_mask=np.ones_like(prompt))
  out = jax.jit(lambda p, ids: decode.generate_gpt2(model, p, ids, config))(params, prompt)
  np.testing.assert_array_equal(_ours_padded(out, expected.shape[1], EOS), expected, err_msg=f"setting {setting}")


def test_no_repeat_ngram_bans_completions():
  seq = jnp.array([[5, 6, 7, 5, 6, 0, 0]])
  cfg = decode.DecodeConfig(max_length=7, no_repeat_ngram_size=3)
  scores = decode.process_scores(jnp.zeros((1, 10)), seq, jnp.array(5), cfg)
  assert np.isneginf(scores[0, 7]) and np.isfinite(np.delete(np.asarray(scores[0]), 7)).all()
  cfg2 = decode.DecodeConfig(max_length=7, no_repeat_ngram_size=2)   # prefix (6,) was followed by 7
  scores = decode.process_scores(jnp.zeros((1, 10)), seq, jnp.array(5), cfg2)
  assert np.isneginf(np.asarray(scores[0])).nonzero()[0].tolist() == [7]


def test_sampling_is_seeded_and_respects_top_k(tiny_gpt2):
  _, model, params = tiny_gpt2
  prompt = np.full((4, 3), 7, np.int32)
  sample = lambda cfg: jax.jit(lambda p, ids, key: decode.generate_gpt2(model, p, ids, cfg, key))
  greedy = decode.generate_gpt2(model, params, prompt, decode.DecodeConfig(max_length=10, pad_token_id=EOS))
  top1 = sample(decode.DecodeConfig(max_length=10, do_sample=True, temperature=0.7, top_k=1, pad_token_id=EOS))
  np.testing.assert_array_equal(top1(params, prompt, jax.random.PRNGKey(3)).sequences, greedy.sequences)
  hot = sample(decode.DecodeConfig(max_length=10, do_sample=True, temperature=5.0, pad_token_id=EOS))
  a, b = hot(params, prompt, jax.random.PRNGKey(3)), hot(params, prompt, jax.random.PRNGKey(3))
  np.testing.assert_array_equal(a.sequences, b.sequences)
  assert len({tuple(r) for r in np.asarray(a.sequences)}) > 1          # hot samples differ across rows


@pytest.mark.parametrize("bad, match", [(dict(num_beams=0), "num_beams"), (dict(max_length=1), "max_length"),
                                        (dict(early_stopping="sometimes"), "early_stopping")])
def test_bad_settings(bad, match):
  with pytest.raises(ValueError, match=match):
    decode.DecodeConfig(**{"max_length": 8, **bad}).validate(1)
