"""experiments.lm / lm_analysis / generate on tiny data: bad input, teacher -> student, analysis, decoding."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import generate as generate_lib
from absl import app

from experiments import flags as common_flags
from int4jax.tasks import lm as lm_pipeline
from int4jax.models import gpt2
from int4jax.quant import policy as policy_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = "the a company said market stock shares year million new will its".split()


def write_tokenizer(path, extra_tokens=0):
  """A byte-level BPE tokenizer folder (tokenizer.json, 257 + extra_tokens ids), like GPT-2's without merges."""
  import transformers
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
  for i in range(extra_tokens):
    vocab[f"<extra_{i}>"] = len(vocab)
  vocab["<|endoftext|>"] = len(vocab)
  tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>").save_pretrained(str(path))
  return str(path)


def write_ptb(path, splits=("train", "valid", "test")):
  os.makedirs(path, exist_ok=True)
  rng = np.random.default_rng(0)
  for split in splits:
    lines = [" " + " ".join(rng.choice(WORDS, rng.integers(3, 9))) + " \n" for _ in range(120 if split == "train"
                                                                                       else 30)]
    with open(os.path.join(path, f"ptb.{split}.txt"), "w") as f:
      f.writelines(lines)
  return str(path)


def cli(module, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


TINY = ["--model=gpt2_tiny", "--block_size=32", "--batch_size=4", "--eval_batch_size=4", "--num_train_steps=300",
        "--eval_every_steps=150", "--log_every_steps=50"]


def unigram_perplexity(data_dir, tok_dir, split="valid"):
  """exp(cross-entropy) on `split` of an add-one-smoothed unigram model of the train tokens: the perplexity a model
  gets from token frequencies alone, which any LM that learned something from context must beat."""
  from int4jax import tokenizers
  tok = tokenizers.load_tokenizer(tok_dir)
  ids = lambda s: np.asarray(tok(open(os.path.join(data_dir, f"ptb.{s}.txt")).read())["input_ids"])
  counts = np.bincount(ids("train"), minlength=len(tok)) + 1.0
  logp = np.log(counts / counts.sum())
  return float(np.exp(-logp[ids(split)].mean()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("lm")
  data, tok = write_ptb(root / "data"), write_tokenizer(root / "tok")
  common = [f"--data_dir={data}", f"--tokenizer={tok}"] + TINY
  out_fp = cli("experiments.lm", *common, "--bits=fp32", "--learning_rate=3e-3", f"--workdir={root / 'fp'}")
  out_q = cli("experiments.lm", *common, "--bits=w4a4", "--quant_mode=asym", f"--teacher={root / 'fp'}",
              f"--workdir={root / 'w4a4'}")
  return {"root": root, "data": data, "tok": tok, "out_fp": out_fp, "out_q": out_q}


def test_teacher_then_student(runs):
  root = runs["root"]
  assert "RESULT fp32" in runs["out_fp"] and "RESULT w4a4_asym" in runs["out_q"]
  for name in ("fp", "w4a4"):
    for f in ("config.json", "command.txt", "metrics.jsonl", "policy.json", "summary.json", "results.json"):
      assert os.path.isfile(root / name / f), (name, f)
  fp = json.loads((root / "fp" / "results.json").read_text())
  q = json.loads((root / "w4a4" / "results.json").read_text())
  assert fp["model_config"]["vocab_size"] == 257 and fp["loss_terms"] == ["gt"]
  assert q["loss_terms"] == ["gt", "logit", "att", "rep"] and q["policy"] == "w4a4_asym"
  assert q["model_config"]["resid_pdrop"] == 0.05  # the paper's GPT-2 dropout
  unigram = unigram_perplexity(runs["data"], runs["tok"])
  for r in (fp, q):   # both learned from context: better than token frequencies alone
    assert r["valid"]["perplexity"] < 0.9 * unigram, (r["valid"]["perplexity"], unigram)
    assert len(r["valid"]["nll_sum_by_position"]) == 32
  np.testing.assert_allclose(q["gap"]["test"], q["test"]["perplexity"] - fp["test"]["perplexity"])
  # The eval-reload of best/ agrees with the validation logged during training (both float32 on the CPU).
  evals = [json.loads(l) for l in (root / "fp" / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
  best = min(evals, key=lambda r: r["perplexity"])
  np.testing.assert_allclose(best["perplexity"], fp["valid"]["perplexity"], rtol=1e-4)


def test_rerun_resumes_to_the_same_result(runs):
  root = runs["root"]
  before = json.loads((root / "fp" / "results.json").read_text())["valid"]["perplexity"]
  common = [f"--data_dir={runs['data']}", f"--tokenizer={runs['tok']}"] + TINY
  out = cli("experiments.lm", *common, "--bits=fp32", "--learning_rate=3e-3", f"--workdir={root / 'fp'}")
  assert "resuming from step 300" in out
  after = json.loads((root / "fp" / "results.json").read_text())["valid"]["perplexity"]
  np.testing.assert_allclose(after, before, rtol=1e-6)
  # experiments.eval works for LM runs too: best/ reproduces the logged validation perplexity, and evaluates test.
  assert "identical" in cli("experiments.eval", f"--workdir={root / 'fp'}")
  out = cli("experiments.eval", f"--workdir={root / 'fp'}", "--split=test")
  test_ppl = float(out.rsplit("perplexity=", 1)[1].split()[0])
  fp_results = json.loads((root / "fp" / "results.json").read_text())
  np.testing.assert_allclose(test_ppl, fp_results["test"]["perplexity"], rtol=1e-4)


def test_analysis_writes_json_and_png(runs):
  root = runs["root"]
  out = cli("experiments.lm_analysis", "--analysis=positional,act_range,sensitivity", f"--output_dir={root / 'an'}",
            f"--runs=fp={root / 'fp'},w4a4={root / 'w4a4'}", "--num_batches=2", "--batch_size=2")
  assert "gap_w4a4" in out
  for name in ("positional_perplexity", "activation_range", "sensitivity"):
    assert (root / "an" / f"{name}.png").stat().st_size > 1000
    json.loads((root / "an" / f"{name}.json").read_text())
  act = json.loads((root / "an" / "activation_range.json").read_text())
  assert set(act["runs"]["fp"]) == {"layer_1", "layer_2"}   # first/middle/last of 2 layers
  assert len(act["runs"]["fp"]["layer_1"]["mean"]) == 32
  ln = subprocess.run([sys.executable, "-m", "experiments.lm_analysis", "--analysis=ln", f"--runs=fp={root / 'fp'}"],
                      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"), capture_output=True,
                      text=True, timeout=300)
  assert ln.returncode != 0 and "pre_w4a4" in ln.stderr


def test_generate_prints_text(runs):
  out = cli("experiments.generate", f"--workdir={runs['root'] / 'w4a4'}", "--prompt= the market",
            "--max_new_tokens=5")
  assert "policy w4a4_asym, greedy" in out and " the market" in out
  out = cli("experiments.generate", f"--workdir={runs['root'] / 'fp'}", "--prompt= the", "--max_new_tokens=4",
            "--temperature=1.0", "--top_k=5", "--num_samples=2")
  samples = [block.strip("\n") for block in out.split("-" * 40)[:-1]]
  samples[0] = samples[0].split("\n", 1)[1]        # drop the header line
  assert len(samples) == 2, out
  for text in samples:   # each: the prompt, then 4 new tokens (byte-level: 4 characters) decoded after it
    assert text.startswith(" the") and len(text) == len(" the") + 4, repr(text)


def test_cached_greedy_decoding_matches_full_forward():
  config = dataclasses.replace(gpt2.gpt2_tiny(), n_positions=16)
  model = gpt2.GPT2LMHeadModel(config)
  params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32))["params"]
  prompt = np.array([[5, 17, 3], [40, 2, 8]], np.int32)
  new = generate_lib.generate(model, params, prompt, 6)
  seq = prompt
  for _ in range(6):  # reference: the whole sequence through the model each step, no cache
    nxt = np.argmax(np.asarray(model.apply({"params": params}, jnp.asarray(seq)).logits[:, -1]), -1)
    seq = np.concatenate([seq, nxt[:, None].astype(np.int32)], 1)
  np.testing.assert_array_equal(new, seq[:, 3:])
  with pytest.raises(ValueError, match="n_positions"):
    generate_lib.generate(model, params, prompt, 14)


# ------------------------------------------------------------------------------------------------- bad input

def base_config(tmp_path, **kw):
  data = write_ptb(tmp_path / "data")
  tok = write_tokenizer(tmp_path / "tok")
  return lm_pipeline.LMRunConfig(workdir=str(tmp_path / "run"), model="gpt2_tiny", data_dir=data, tokenizer=tok,
                        block_size=32, **kw)


def test_missing_token_file(tmp_path):
  cfg = base_config(tmp_path)
  os.remove(os.path.join(cfg.data_dir, "ptb.valid.txt"))
  with pytest.raises(FileNotFoundError, match=r"ptb\.valid\.txt"):
    lm_pipeline.validate(cfg)


def test_block_size_larger_than_positions(tmp_path):
  with pytest.raises(ValueError, match=r"--block_size=128 is larger .* 64"):
    lm_pipeline.validate(dataclasses.replace(base_config(tmp_path), block_size=128))


def test_tokenizer_vocab_must_match_checkpoint(tmp_path):
  ckpt = tmp_path / "hf"
  ckpt.mkdir()
  (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 300, "n_positions": 64,
                                                "n_embd": 32, "n_layer": 2, "n_head": 4}))
  with pytest.raises(ValueError, match=r"257 tokens but the checkpoint .* vocab_size 300"):
    lm_pipeline.validate(dataclasses.replace(base_config(tmp_path), model=str(ckpt)))


def test_tokenizer_vocab_must_match_teacher(runs, tmp_path):
  cfg = lm_pipeline.LMRunConfig(workdir=str(tmp_path / "s"), data_dir=runs["data"], teacher=str(runs["root"] / "fp"),
                       tokenizer=write_tokenizer(tmp_path / "tok2", extra_tokens=3), block_size=32, bits="w4a4")
  with pytest.raises(ValueError, match=r"was trained with tokenizer .*/tok'; this run has --tokenizer=.*/tok2'"):
    lm_pipeline.validate(cfg)


def test_flag_errors(tmp_path):
  with pytest.raises(ValueError, match="need a teacher"):
    lm_pipeline.validate(dataclasses.replace(base_config(tmp_path), bits="w4a4", kd_losses=("gt", "logit")))
  with pytest.raises(ValueError, match="--eval_stride"):
    lm_pipeline.validate(dataclasses.replace(base_config(tmp_path), eval_stride=64))
  with pytest.raises(app.UsageError, match="--weight_clip"):
    common_flags.parse_clip("1", "weight_clip")
  assert common_flags.parse_clip("none", "act_clip") == "none" and common_flags.parse_clip("-1,1", "x") == (-1.0, 1.0)
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    lm_pipeline.validate(dataclasses.replace(base_config(tmp_path), bits="w4a4", teacher=str(tmp_path / "nothing")))


def test_format_presets_validate(tmp_path):
  """--bits takes every format preset of the zoo (issue 17) and names it in the policy; the formats are symmetric by
  construction, so --quant_mode=asym is refused before any work."""
  cfg = base_config(tmp_path)
  for preset in policy_lib.FORMAT_PRESETS:
    assert preset in lm_pipeline.BITS
    assert lm_pipeline.validate(dataclasses.replace(cfg, bits=preset)).policy.name == preset
  with pytest.raises(ValueError, match="quant_mode=asym"):
    lm_pipeline.validate(dataclasses.replace(cfg, bits="w4a4_mxfp4", quant_mode="asym"))


def test_integer_engine_perplexity_of_a_packed_student(runs, tmp_path):
  """The W4A4 (asym) GPT-2 student packed as experiments.export packs a run (runs.packed_source + export.export), and
  its validation perplexity through the integer engine (XLA's integer dots), as experiments.eval --engine=int
  computes it: packed in memory at float32 it is the fake-quant one up to float rounding (check.float_tolerance:
  8 GEMMs x K 128 x 2^-24 x 4 = 2.4e-4 of the largest logit, and log-perplexity moves by at most 2 max|d logit|:
  asserted 1e-3, measured ~1e-7); from the packed checkpoint (embeddings and LayerNorms in bf16) within 2%."""
  from int4jax.inference import engine, export
  from int4jax.tasks import engine_eval, runs as run_lib
  student, packed = runs["root"] / "w4a4", tmp_path / "packed"
  params, config, task, family, tok, _ = run_lib.packed_source(str(student))
  meta = export.export(str(packed), params, config, task, family, tokenizer=tok, source=str(student))
  assert meta["family"] == "gpt2" and meta["task"] == "lm" and meta["policy"]["name"] == "w4a4_asym"
  assert (packed / "tokenizer" / "tokenizer.json").is_file()
  fake = json.loads((student / "results.json").read_text())["valid"]["perplexity"]
  mode = engine.default_mode(backend="xla")
  now, meta = engine_eval.evaluate_run(str(student), dtype=jnp.float32, int_mode=mode, time_runs=2)
  np.testing.assert_allclose(now["perplexity"], fake, rtol=1e-3)
  # --time_runs: one evaluation batch timed through the same compiled step (no CUPTI device time on a CPU)
  timing = meta["timing"]
  assert timing["runs"] == 2 and 0 < timing["wall_min_ms"] <= timing["wall_ms"] and "device_ms" not in timing
  assert timing["batch_shape"]["input_ids"] == [4, 32]   # TINY's --eval_batch_size x --block_size
  now, _ = engine_eval.evaluate_run(str(student), str(packed), int_mode=mode)
  np.testing.assert_allclose(now["perplexity"], fake, rtol=2e-2)
  with pytest.raises(ValueError, match="--split='dev' is not one of"):
    engine_eval.evaluate_run(str(student), split="dev", int_mode=mode)
  with pytest.raises(ValueError, match="float run .*nothing to pack"):
    run_lib.packed_source(str(runs["root"] / "fp"))


def test_time_budget_stops_only_once_a_best_checkpoint_exists(runs, tmp_path):
  # A budget of 0 s has run out before the first step; training still goes on to the first evaluation (step 20),
  # which saves best/, stops there and evaluates that checkpoint (instead of failing with nothing to evaluate).
  common = [f"--data_dir={runs['data']}", f"--tokenizer={runs['tok']}"] + TINY
  out = cli("experiments.lm", *common, "--bits=fp32", "--learning_rate=3e-3", "--eval_every_steps=20",
            "--time_budget_s=0", f"--workdir={tmp_path / 'budget'}")
  assert "--time_budget_s=0.0 reached: stopped at step 20 of 300" in out, out[-2000:]
  res = json.loads((tmp_path / "budget" / "results.json").read_text())
  assert res["best_step"] == 20 and np.isfinite(res["valid"]["perplexity"])
