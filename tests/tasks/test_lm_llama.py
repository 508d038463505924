"""The LM pipeline on a Llama: a pretrained checkpoint (--init) as the FP teacher, a W4A4 QAT+KD student distilled
from it, WikiText-2-style extra evaluation, the activation-range tap; and the Llama-specific flag errors."""
import dataclasses
import json
import os

import numpy as np
import pytest

from int4jax.tasks import lm as lm_pipeline
from int4jax.models import llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = "the a company said market stock shares year million new will its".split()


def _write_tokenizer(path):
  """Byte-level BPE without merges: 256 byte tokens + <|endoftext|> = 257 ids."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
  vocab["<|endoftext|>"] = len(vocab)
  tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>").save_pretrained(str(path))
  return str(path)


def _write_corpus(path, pattern, splits, lines=40):
  os.makedirs(path, exist_ok=True)
  rng = np.random.default_rng(0)
  for split in splits:
    with open(os.path.join(path, pattern.format(split=split)), "w") as f:
      f.writelines(" " + " ".join(rng.choice(WORDS, rng.integers(3, 9))) + " \n" for _ in range(lines))
  return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("lm_llama")
  cfg = transformers.LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 tie_word_embeddings=True)
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(cfg).save_pretrained(str(root / "ckpt"))
  return {"root": root, "ckpt": str(root / "ckpt"), "tok": _write_tokenizer(root / "tok"),
          "ptb": _write_corpus(root / "ptb", "ptb.{split}.txt", ("train", "valid", "test"), lines=80),
          "wt2": _write_corpus(root / "wt2", "wiki.{split}.tokens", ("valid", "test"))}


def _config(s, workdir, **kw):
  fields = dict(workdir=str(workdir), dataset="ptb", data_dir=s["ptb"], tokenizer=s["tok"], block_size=32,
                batch_size=4, eval_batch_size=4, num_train_steps=1, eval_every_steps=1, log_every_steps=1,
                weight_clip=None, dropout=0.0, extra_eval=(f"wikitext2={s['wt2']}",))
  return lm_pipeline.LMRunConfig(**dict(fields, **kw))


def test_pretrained_llama_teacher_then_w4a4_student(setup):
  s = setup
  fp = lm_pipeline.run(_config(s, s["root"] / "fp", model=s["ckpt"], learning_rate=1e-3), argv=["test"])
  assert fp["model_config"]["model_type"] == "llama" and fp["model_config"]["tie_word_embeddings"]
  assert set(fp["extra_eval"]["wikitext2"]) == {"valid", "test"}
  assert np.isfinite(fp["extra_eval"]["wikitext2"]["test"]["perplexity"])
  q = lm_pipeline.run(_config(s, s["root"] / "w4a4", bits="w4a4", quant_mode="asym", teacher=str(s["root"] / "fp")),
                      argv=["test"])
  assert q["policy"] == "w4a4_asym" and q["loss_terms"] == ["gt", "logit", "att", "rep"]
  assert q["gap"]["valid"] == pytest.approx(q["valid"]["perplexity"] - fp["valid"]["perplexity"])
  assert "gap" in q["extra_eval"]["wikitext2"]["valid"]
  model, params, meta = lm_pipeline.restore_run(str(s["root"] / "w4a4"))
  assert isinstance(model, llama.LlamaForCausalLM) and model.config.policy.name == "w4a4_asym"
  from int4jax.analysis import lm_failure
  ranges = lm_failure.ffn_out_input_range(model, params, [{"input_ids": np.ones((2, 32), np.int32),
                                                           "target_mask": np.ones((2, 32), np.float32)}], (0, 1))
  assert ranges[1].shape == (2, 32) and np.all(ranges[1] >= 0)


def test_llama_scratch_preset_and_flag_errors(setup, tmp_path):
  s = setup
  plan = lm_pipeline.validate(_config(s, tmp_path, model="llama_tiny", n_layer=3, dropout=0.1))
  assert isinstance(plan.config, llama.LlamaConfig) and plan.config.num_hidden_layers == 3
  assert plan.config.vocab_size == 257 and plan.config.attention_dropout == 0.1 and plan.config.hidden_dropout == 0.1
  with pytest.raises(ValueError, match="--post_ln is for GPT-2"):
    lm_pipeline.validate(_config(s, tmp_path, model="llama_tiny", post_ln=True))
  with pytest.raises(ValueError, match="is neither a preset"):
    lm_pipeline.validate(_config(s, tmp_path, model=str(tmp_path / "missing.gguf")))
  with pytest.raises(ValueError, match="must be dataset=data_dir"):
    lm_pipeline.validate(dataclasses.replace(_config(s, tmp_path), extra_eval=("wikitext2",)))
  with pytest.raises(FileNotFoundError, match="wiki.valid.tokens"):
    lm_pipeline.validate(dataclasses.replace(_config(s, tmp_path), extra_eval=(f"wikitext2={s['ptb']}",)))
  stored = lm_pipeline.model_config_to_dict(plan.config)
  assert json.loads(json.dumps(stored))["model_type"] == "llama"
  _, rebuilt = lm_pipeline.build_model(stored)
  assert rebuilt.num_hidden_layers == 3
