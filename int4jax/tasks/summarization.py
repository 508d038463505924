"""BART summarization behind `python -m experiments.summarize`: FP fine-tuning, W4A4 QAT + KD (with layer reduction),
BART denoising pretraining, and the eval reload (beam search + ROUGE, per-position perplexity).

Built on `int4jax.train` (train_and_evaluate + a TrainTask); `SummarizationRunConfig` is a tasks/base.py RunConfig,
so the launcher speaks experiments/flags.py's shared vocabulary, and a run directory is locked to its config
(train/rundir.py: the same command resumes, --overwrite starts afresh).

Loss terms (paper_spec.md §2.3 for encoder-decoders, all weights 1; DQ-BART's recipe):
  gt     token cross-entropy on the summary (labels != -100);
  logit  per-token soft cross-entropy against the teacher's distribution, summed over the vocabulary and averaged
         over summary tokens (as tasks/lm.py: distill.soft_cross_entropy's mean over 50k classes would vanish);
  att    Att* (pre-softmax scores) MSE on encoder self-attention (source x source pairs), decoder self-attention
         (causal summary pairs) and cross-attention (summary x source pairs);
  rep    hidden-state MSE on both stacks (embedding output first), padding excluded.
A shallower student (layer reduction) learns from the teacher layers its layer maps name (distill.py: student layer
i <- teacher layer map[i]) and is initialised from those teacher layers (`reduce_layers`).

Runs store checkpoints/{latest,best} (train/loop.py, train/rundir.py) with metadata (model config, tokenizer, maps)
and results.json: held-out loss/perplexity, per-position NLL sums (key "valid", the layout that
analysis/lm_failure.positional_perplexity reads),
the beam-search summaries, and ROUGE when `rouge-score` is installed (otherwise `collect_summarization.py` scores
the stored predictions later; the GPU machine has no rouge-score).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from int4jax import tokenizers
from int4jax.data import ArrayBatchSource, eval_batches
from int4jax.data import denoising
from int4jax.data import summarization as sum_data
from int4jax.inference import decode
from int4jax.models import bart
from int4jax.models import registry
from int4jax.models.outputs import Taps
from int4jax.quant import policy as policy_lib
from int4jax.tasks import base
from int4jax.train import checkpoint
from int4jax.train import distill
from int4jax.train import loop as train
from int4jax.train import rundir

BITS = ("fp32", "w4a16", "w4a8", "w4a4", "w8a8", "w8a16")
LOSS_TERMS = ("gt", "logit", "att", "rep")
PAPER_LOSS_TERMS = ("gt", "logit", "att", "rep")  # Table C.1, BART: ClsLoss + Logit + Att* + Rep
# DQ-BART's layer-reduction init for 6-layer teachers (paper_spec.md §2.5): student depth -> teacher layers.
DQ_BART_LAYER_MAPS = {1: (5,), 2: (0, 5), 3: (0, 2, 5), 4: (0, 2, 3, 5), 5: (0, 1, 3, 4, 5)}
# Generation defaults per dataset (DQ-BART, paper_spec.md §2.5): beams, length_penalty, max_len, min_len.
GENERATION_DEFAULTS = {"xsum": (6, 1.0, 62, 11), "cnn_dailymail": (4, 2.0, 142, 56)}
OBJECTIVES = ("summarize", "denoise")
TASK_KIND = "summarization"
ARCH_FIELDS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SummarizationRunConfig(base.RunConfig):
  """A summarization (or denoising) run: the shared RunConfig fields with BART-base's Table C.1 defaults (LR 5e-5,
  batch 16, 20 epochs, weight clip [-1, 1]; DQ-BART's 5% warmup, no weight decay) plus the task's own.

  `model` is a BART preset (random init), a Hugging Face BART directory, or an experiments.summarize run directory
  to start from (e.g. a denoising pretraining; the old --init). `validate` checks everything before any work.
  """
  workdir: str
  model: str = "bart_base"
  arch: tuple[tuple[str, int], ...] = ()    # preset overrides: (("d_model", 256), ...)
  objective: str = "summarize"
  dataset: str = "xsum"
  text_files: tuple[str, ...] = ()          # extra denoising text (one sentence per line)
  heldout_fraction: float = 0.1
  split_seed: int = 0
  tokenizer: str | None = "gpt2"
  source_max_len: int | None = None
  target_max_len: int | None = None
  weight_clip: tuple[float, float] | None = (-1.0, 1.0)   # Table C.1 BART-base clip
  encoder_layer_map: tuple[int, ...] | None = None
  decoder_layer_map: tuple[int, ...] | None = None
  dropout: float | None = 0.1
  learning_rate: float = 5e-5               # Table C.1 BART-base: LR 5e-5, batch 16, 20 epochs; DQ-BART: no decay
  batch_size: int = 16
  num_epochs: float = 20.0
  warmup_ratio: float | None = 0.05         # DQ-BART's warmup ratio
  weight_decay: float = 0.0
  grad_clip_norm: float = 1.0
  eval_every_steps: int = 500
  eval_batch_size: int = 32
  num_beams: int | None = None              # None: GENERATION_DEFAULTS of the dataset (also the next three)
  length_penalty: float | None = None
  min_length: int | None = None
  max_gen_length: int | None = None
  no_repeat_ngram_size: int = 3
  eval_examples: int | None = None          # beam-decode only the first N held-out examples
  time_budget_s: float | None = None
  max_steps_this_run: int | None = None

  RUNTIME_KEYS = ("workdir", "time_budget_s", "max_steps_this_run", "eval_examples")
  PATH_FIELDS = ("model", "teacher", "tokenizer", "data_dir", "workdir")

  @property
  def starts_from_run(self) -> bool:
    """`model` names an experiments.summarize run directory (it has train.loop's checkpoints/)."""
    return os.path.isdir(os.path.join(self.model, rundir.CHECKPOINTS))


@dataclasses.dataclass
class Plan:
  config: bart.BartConfig
  policy: policy_lib.QuantPolicy
  tokenizer: Any
  special: dict[str, int]
  source_max_len: int
  target_max_len: int
  loss_terms: tuple[str, ...]
  teacher_meta: dict | None
  encoder_layer_map: tuple[int, ...] | None
  decoder_layer_map: tuple[int, ...] | None
  decode_config: decode.DecodeConfig


# ---------------------------------------------------------------------------------------------------------------
# The TrainTask


def token_nll(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(nll [batch, tgt], mask [batch, tgt]) of the labels; -100 positions have mask 0."""
  mask = (labels != sum_data.IGNORE).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return nll * mask, mask


class Seq2SeqTask:
  """train.TrainTask for BART: cross-entropy (teacher / FP fine-tune / denoising) or KD (module docstring)."""
  metric_name = "loss"
  higher_is_better = False

  def __init__(self, model: bart.BartForConditionalGeneration, teacher_model=None,
               loss_terms: Sequence[str] = ("gt",), encoder_layer_map=None, decoder_layer_map=None):
    terms = distill.validate_loss_terms(loss_terms, has_teacher=teacher_model is not None, known=LOSS_TERMS)
    self.model, self.teacher_model, self.loss_terms = model, teacher_model, terms
    self.encoder_layer_map, self.decoder_layer_map = encoder_layer_map, decoder_layer_map
    self.taps = Taps(hidden_states="rep" in terms, attention_scores="att" in terms)

  def _forward(self, model, params, batch, **kw):
    c = model.config
    dec_in = bart.shift_tokens_right(batch["labels"], c.pad_token_id, c.decoder_start_token_id)
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], dec_in, **kw)

  def loss_fn(self, params, teacher_params, batch, rng):
    out = self._forward(self.model, params, batch, deterministic=False, taps=self.taps, rngs={"dropout": rng})
    nll, tgt = token_nll(out.logits, batch["labels"])
    n_tgt = jnp.maximum(jnp.sum(tgt), 1.0)
    parts = {}
    if "gt" in self.loss_terms:
      parts["gt"] = jnp.sum(nll) / n_tgt
    if set(self.loss_terms) - {"gt"}:
      teacher = self._forward(self.teacher_model, jax.lax.stop_gradient(teacher_params), batch, deterministic=True,
                              taps=self.taps)
      teacher = jax.tree.map(jax.lax.stop_gradient, teacher)
      src = batch["attention_mask"].astype(jnp.float32)
      if "logit" in self.loss_terms:
        soft = -jnp.sum(jax.nn.softmax(teacher.logits.astype(jnp.float32), -1) *
                        jax.nn.log_softmax(out.logits.astype(jnp.float32), -1), axis=-1)
        parts["logit"] = jnp.sum(soft * tgt) / n_tgt
      if "att" in self.loss_terms:
        q_len = tgt.shape[1]
        causal = jnp.tril(jnp.ones((q_len, q_len), jnp.float32))
        enc_pairs = src[:, None, :, None] * src[:, None, None, :]
        dec_pairs = tgt[:, None, :, None] * tgt[:, None, None, :] * causal
        cross_pairs = tgt[:, None, :, None] * src[:, None, None, :]
        emap, dmap = self.encoder_layer_map, self.decoder_layer_map
        parts["att"] = (
            distill.pair_masked_score_mse(out.encoder_attention_scores, teacher.encoder_attention_scores,
                                          enc_pairs, emap)
            + distill.pair_masked_score_mse(out.decoder_attention_scores, teacher.decoder_attention_scores,
                                            dec_pairs, dmap)
            + distill.pair_masked_score_mse(out.cross_attention_scores, teacher.cross_attention_scores,
                                            cross_pairs, dmap))
      if "rep" in self.loss_terms:
        parts["rep"] = (
            distill.hidden_state_mse(out.encoder_hidden_states, teacher.encoder_hidden_states, src,
                                     self.encoder_layer_map)
            + distill.hidden_state_mse(out.decoder_hidden_states, teacher.decoder_hidden_states, tgt,
                                       self.decoder_layer_map))
    return sum(parts.values()), parts

  def eval_batch(self, params, batch):
    out = self._forward(self.model, params, batch, deterministic=True)
    nll, tgt = token_nll(out.logits, batch["labels"])
    w = batch["weight"][:, None] if "weight" in batch else 1.0
    return {"nll_sum": jnp.sum(nll * w), "num_tokens": jnp.sum(tgt * w),
            "nll_by_position": jnp.sum(nll * w, axis=0), "tokens_by_position": jnp.sum(tgt * w, axis=0)}

  def summarize(self, accumulated):
    nll = float(sum(np.asarray(a["nll_sum"], np.float64) for a in accumulated))
    count = float(sum(np.asarray(a["num_tokens"], np.float64) for a in accumulated))
    loss = nll / max(count, 1.0)
    return {"loss": loss, "perplexity": float(np.exp(min(loss, 700.0))), "num_tokens": count}


# ---------------------------------------------------------------------------------------------------------------
# Layer reduction


def reduce_layers(teacher_params, encoder_layer_map: Sequence[int] | None, decoder_layer_map: Sequence[int] | None):
  """Student params: the teacher's, with encoder/decoder layer i taken from teacher layer map[i] (None: all)."""
  params = dict(teacher_params)
  for side, layer_map in (("encoder", encoder_layer_map), ("decoder", decoder_layer_map)):
    if layer_map is not None:
      params = distill.student_params_from_teacher(params, layer_map, stack=side, layer_prefix="layers_")
  return params


# ---------------------------------------------------------------------------------------------------------------
# Run directories

_NOT_SERIALIZED = ("policy", "dtype", "int_mode")


def model_config_to_dict(config: bart.BartConfig) -> dict[str, Any]:
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _NOT_SERIALIZED}


def read_run_metadata(workdir: str, which: str = "best") -> dict[str, Any]:
  """Metadata of a run's best/ (or latest/) checkpoint; ValueError if it is not a summarization run."""
  return checkpoint.read_run_metadata(workdir, "summarization", "experiments.summarize", which)


def abstract_params(model):
  ids = jnp.zeros((1, 4), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, None, ids))["params"]


def restore_run(workdir: str, *, policy="stored", dtype=jnp.float32, which: str = "best", **overrides):
  """(model, params, metadata) of a run; policy "stored" = its own, or a QuantPolicy / None (float)."""
  meta = read_run_metadata(workdir, which)
  if policy == "stored":
    policy = policy_lib.QuantPolicy.from_json(meta["policy_json"]) if meta.get("policy_json") else None
  config = bart.BartConfig(**dict(meta["model_config"], **overrides), policy=policy, dtype=dtype)
  model = bart.BartForConditionalGeneration(config)
  restored, _ = checkpoint.restore(os.path.join(workdir, "checkpoints", which), {"params": abstract_params(model)})
  return model, restored["params"], meta


# ---------------------------------------------------------------------------------------------------------------
# Validation


def _parse_map(layer_map, n_student, n_teacher, what):
  """The given map, checked; else DQ-BART's for 6-layer teachers, evenly spaced layers otherwise."""
  if layer_map is None:
    if n_student == n_teacher:
      return None
    if n_teacher == 6 and n_student in DQ_BART_LAYER_MAPS:
      return DQ_BART_LAYER_MAPS[n_student]
    return distill.default_layer_map(n_student, n_teacher, spacing="ends")
  return distill.validate_layer_map(layer_map, n_teacher, n_student, what=what, strictly_increasing=False)


def validate(cfg: SummarizationRunConfig) -> Plan:
  """Every check before work starts (base.RunConfig.validate, then the task's own); errors name the flag."""
  cfg.validate()
  if cfg.objective not in OBJECTIVES:
    raise ValueError(f"--objective={cfg.objective!r} is not one of {OBJECTIVES}")
  if cfg.bits not in BITS:
    raise ValueError(f"--bits={cfg.bits!r} is not one of {BITS}")
  if cfg.num_beams is not None and cfg.num_beams < 1:
    raise ValueError(f"--num_beams={cfg.num_beams} must be >= 1")
  unknown = [name for name, _ in cfg.arch if name not in ARCH_FIELDS]
  if unknown:
    raise ValueError(f"--arch names {unknown}; choose from {ARCH_FIELDS}")
  if cfg.dropout is None:
    raise ValueError("--dropout must be set for summarization runs (BART-base uses 0.1)")
  if cfg.teacher and cfg.starts_from_run:
    raise ValueError(f"--teacher and --model={cfg.model!r} (a run directory) both name a starting point; a student "
                     "starts from its teacher")
  for path in [cfg.data_dir] + list(cfg.text_files):
    if path is not None and not os.path.exists(path):
      raise FileNotFoundError(f"data path {path!r} does not exist")
  spec = sum_data.spec(cfg.dataset)
  tokenizer = sum_data.bart_tokenizer(tokenizers.load_tokenizer(cfg.tokenizer))
  special = sum_data.special_ids(tokenizer)
  if cfg.objective == "denoise" and tokenizer.mask_token_id is None:
    raise ValueError(f"--objective=denoise needs a tokenizer with a <mask> token ({cfg.tokenizer!r} has none)")

  quant_policy = cfg.make_policy()
  dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
  drop = {"dropout": cfg.dropout, "attention_dropout": cfg.dropout, "activation_dropout": cfg.dropout}
  ids = {"pad_token_id": special["pad"], "bos_token_id": special["bos"], "eos_token_id": special["eos"],
         "decoder_start_token_id": special["eos"]}
  teacher_meta, emap, dmap = None, None, None
  source = cfg.teacher or (cfg.model if cfg.starts_from_run else None)
  if source is not None:
    teacher_meta = read_run_metadata(source)
    stored = dict(teacher_meta["model_config"])
    if cfg.teacher is None and (cfg.encoder_layer_map or cfg.decoder_layer_map):
      raise ValueError("--encoder_layer_map/--decoder_layer_map reduce a teacher's layers; they need --teacher")
    arch = dict(cfg.arch)
    extra = set(arch) - {"encoder_layers", "decoder_layers"}
    if extra:
      raise ValueError(f"--arch {sorted(extra)} cannot change a model started from {source!r}")
    n_enc = len(cfg.encoder_layer_map) if cfg.encoder_layer_map else arch.get("encoder_layers",
                                                                            stored["encoder_layers"])
    n_dec = len(cfg.decoder_layer_map) if cfg.decoder_layer_map else arch.get("decoder_layers",
                                                                            stored["decoder_layers"])
    emap = _parse_map(cfg.encoder_layer_map, n_enc, stored["encoder_layers"], "--encoder_layer_map")
    dmap = _parse_map(cfg.decoder_layer_map, n_dec, stored["decoder_layers"], "--decoder_layer_map")
    if stored["vocab_size"] < len(tokenizer):
      raise ValueError(f"tokenizer has {len(tokenizer)} tokens but {source!r} has vocab_size {stored['vocab_size']}")
    stored.update(encoder_layers=n_enc, decoder_layers=n_dec, **drop)
    config = bart.BartConfig(**stored, policy=quant_policy, dtype=dtype)
  else:
    if cfg.encoder_layer_map or cfg.decoder_layer_map:
      raise ValueError("--encoder_layer_map/--decoder_layer_map need --teacher (the run whose layers they name)")
    overrides = dict(cfg.arch, **drop)
    if not os.path.isdir(cfg.model):
      vocab = -(-len(tokenizer) // 64) * 64   # a multiple of 64 for the GEMMs
      overrides.update(vocab_size=overrides.get("vocab_size", vocab), **ids)
    config = registry.get_config(cfg.model, policy=quant_policy, dtype=dtype, **overrides)
    if not isinstance(config, bart.BartConfig):
      raise ValueError(f"--model={cfg.model!r} is not a BART preset or checkpoint")
    if config.vocab_size < len(tokenizer):
      raise ValueError(f"tokenizer has {len(tokenizer)} tokens but --model={cfg.model!r} has vocab_size "
                       f"{config.vocab_size}")
  for name, want in (("pad_token_id", special["pad"]), ("eos_token_id", special["eos"])):
    if getattr(config, name) != want:
      raise ValueError(f"the tokenizer's {name.split('_')[0]} id {want} differs from the model's {name}="
                       f"{getattr(config, name)}")
  src_len, tgt_len = sum_data.check_lengths(spec, cfg.source_max_len, cfg.target_max_len,
                                            config.max_position_embeddings)
  terms = cfg.kd_losses or (PAPER_LOSS_TERMS if cfg.teacher else ("gt",))
  beams, penalty, max_gen, min_len = GENERATION_DEFAULTS[cfg.dataset]
  beams = beams if cfg.num_beams is None else cfg.num_beams
  penalty = penalty if cfg.length_penalty is None else cfg.length_penalty
  max_gen = max_gen if cfg.max_gen_length is None else cfg.max_gen_length
  min_len = min_len if cfg.min_length is None else cfg.min_length
  decode_config = decode.DecodeConfig(
      max_length=max_gen, min_length=min_len, num_beams=beams, length_penalty=penalty,
      early_stopping=True, no_repeat_ngram_size=cfg.no_repeat_ngram_size, eos_token_id=special["eos"],
      pad_token_id=special["pad"], forced_bos_token_id=special["bos"], forced_eos_token_id=special["eos"])
  if max_gen > config.max_position_embeddings:
    raise ValueError(f"--max_gen_length={max_gen} exceeds max_position_embeddings={config.max_position_embeddings}")
  decode_config.validate(1)
  return Plan(config=config, policy=quant_policy, tokenizer=tokenizer, special=special, source_max_len=src_len,
              target_max_len=tgt_len, loss_terms=tuple(terms), teacher_meta=teacher_meta, encoder_layer_map=emap,
              decoder_layer_map=dmap, decode_config=decode_config)


# ---------------------------------------------------------------------------------------------------------------
# Data


def _summarization_data(cfg, plan):
  train_ex, heldout_ex, described = sum_data.load_splits(cfg.dataset, cfg.data_dir,
                                                         heldout_fraction=cfg.heldout_fraction,
                                                         split_seed=cfg.split_seed)
  enc = lambda ex: sum_data.encode(ex, plan.tokenizer, plan.source_max_len, plan.target_max_len)
  return enc(train_ex), enc(heldout_ex), heldout_ex, described


def _denoising_data(cfg, plan):
  docs = denoising.read_text_documents(cfg.text_files, plan.tokenizer)
  described = f"text files {list(cfg.text_files)}"
  if cfg.data_dir is not None:   # documents of the summarization train split only (never the held-out part)
    train_ex, _, split_desc = sum_data.load_splits(cfg.dataset, cfg.data_dir, heldout_fraction=cfg.heldout_fraction,
                                                   split_seed=cfg.split_seed)
    docs += denoising.documents_from_texts(train_ex.documents, plan.tokenizer)
    described += f" + documents of the train part of {split_desc}"
  segments = denoising.pack_segments(docs, plan.target_max_len - 2)
  rng = np.random.default_rng(cfg.split_seed)
  segments = [segments[i] for i in rng.permutation(len(segments))]
  n_eval = max(cfg.eval_batch_size, min(512, len(segments) // 50))
  kw = dict(source_max_len=plan.source_max_len, target_max_len=plan.target_max_len, bos=plan.special["bos"],
            eos=plan.special["eos"], pad=plan.special["pad"], mask=plan.tokenizer.mask_token_id, seed=cfg.seed)
  eval_arrays = denoising.DenoisingSource(segments[:n_eval], cfg.eval_batch_size, **kw).eval_arrays(n_eval)
  source = denoising.DenoisingSource(segments[n_eval:], cfg.batch_size, **kw)
  return source, eval_arrays, f"{described}: {len(segments)} segments ({n_eval} held out)"


# ---------------------------------------------------------------------------------------------------------------
# Evaluation after training


def positional_nll(task: Seq2SeqTask, params, arrays, batch_size: int) -> dict[str, Any]:
  step = jax.jit(task.eval_batch)
  acc = [jax.device_get(step(params, b)) for b in eval_batches(arrays, batch_size)]
  total = task.summarize(acc)
  by_pos = np.sum([a["nll_by_position"] for a in acc], axis=0, dtype=np.float64)
  counts = np.sum([a["tokens_by_position"] for a in acc], axis=0, dtype=np.float64)
  return dict(total, nll_sum_by_position=by_pos.tolist(), num_tokens_by_position=counts.tolist())


def beam_decode(model, params, arrays, config: decode.DecodeConfig, batch_size: int) -> list[list[int]]:
  """Generated token ids (decoder start, forced BOS and EOS stripped off) for every row of `arrays`."""
  run = jax.jit(lambda p, ids, mask: decode.generate_bart(model, p, ids, mask, config))
  n = len(arrays["input_ids"])
  out = []
  for batch in eval_batches({k: arrays[k] for k in ("input_ids", "attention_mask")}, batch_size):
    out += decode.trim(run(params, batch["input_ids"], batch["attention_mask"]))
  specials = {config.pad_token_id, config.eos_token_id, config.forced_bos_token_id, model.config.decoder_start_token_id}
  return [[t for t in row if t not in specials] for row in out[:n]]


def score_predictions(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any] | None:
  """ROUGE when rouge-score is importable (not on the GPU machine), else None."""
  try:
    from int4jax import summarization_metrics  # pylint: disable=g-import-not-at-top
    scores = summarization_metrics.rouge(predictions, references)
    return dict(scores, sentence_splitter=summarization_metrics.sentence_splitter())
  except ImportError:
    return None


# ---------------------------------------------------------------------------------------------------------------
# The run


def _initial_params(cfg, plan, model):
  if cfg.teacher or cfg.starts_from_run:
    _, params, _ = restore_run(cfg.teacher or cfg.model, policy=None)
    return reduce_layers(params, plan.encoder_layer_map, plan.decoder_layer_map)
  if os.path.isdir(cfg.model):
    _, params = registry.load_pretrained(cfg.model, policy=plan.policy, dtype=plan.config.dtype)
    return params
  ids = jnp.zeros((1, 8), jnp.int32)
  return jax.jit(model.init)(jax.random.PRNGKey(cfg.seed), ids, None, ids)["params"]


def prepare(cfg: SummarizationRunConfig, *, overwrite: bool = False) -> tuple[SummarizationRunConfig, Plan]:
  """Validation and the run-directory check, before any data or weights are read: every input error is a
  ValueError / FileNotFoundError here (the launcher turns them into one-line usage errors). Returns the config with
  absolute paths and its Plan."""
  return base.prepare_run(cfg, validate, TASK_KIND, overwrite=overwrite)


def run(cfg: SummarizationRunConfig, argv: Sequence[str] | None = None, *, overwrite: bool = False,
        prepared: tuple[SummarizationRunConfig, Plan] | None = None, git_commit: str | None = None) -> dict:
  """Validates (unless `prepared` is the result of `prepare`), trains (or resumes), reloads the best checkpoint,
  evaluates; returns results.json's dict. `git_commit`: recorded where the tree has no .git (else its HEAD)."""
  t0 = time.time()
  cfg, plan = prepared or prepare(cfg, overwrite=overwrite)
  model = bart.BartForConditionalGeneration(plan.config)
  teacher_model = teacher_params = None
  if cfg.teacher is not None:
    teacher_model, teacher_params, _ = restore_run(cfg.teacher, policy=None, dtype=plan.config.dtype)

  heldout_ex = None
  if cfg.objective == "denoise":
    source, heldout, described = _denoising_data(cfg, plan)
  else:
    train_arrays, heldout, heldout_ex, described = _summarization_data(cfg, plan)
    source = ArrayBatchSource(train_arrays, cfg.batch_size, cfg.seed)
  steps = cfg.num_train_steps or max(1, int(round(cfg.num_epochs * source.steps_per_epoch)))
  tcfg = train.TrainConfig(num_train_steps=steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                           warmup_steps=cfg.warmup_steps_for(steps), weight_decay=cfg.weight_decay,
                           grad_clip_norm=cfg.grad_clip_norm, eval_every_steps=min(cfg.eval_every_steps, steps),
                           seed=cfg.seed, compute_dtype=cfg.compute_dtype,
                           log_every_steps=min(cfg.log_every_steps, steps),
                           checkpoint_every_steps=cfg.checkpoint_every_steps)
  tcfg.validate()
  model_config = model_config_to_dict(plan.config)
  print(f"model: {plan.config.encoder_layers}+{plan.config.decoder_layers} layers x {plan.config.d_model}, policy "
        f"{plan.policy.name}, {cfg.objective} on {described}; {source.num_examples} train examples, {steps} steps; "
        f"loss {'+'.join(plan.loss_terms)}; layer maps enc {plan.encoder_layer_map} dec {plan.decoder_layer_map}",
        flush=True)

  params = _initial_params(cfg, plan, model)
  task = Seq2SeqTask(model, teacher_model, plan.loss_terms, plan.encoder_layer_map, plan.decoder_layer_map)
  meta = {"task": "summarization", "objective": cfg.objective, "model_config": model_config,
          "dataset": cfg.dataset, "tokenizer": cfg.tokenizer, "tokenizer_vocab_size": len(plan.tokenizer),
          "bits": cfg.bits, "symmetric": cfg.symmetric, "quant_mode": cfg.quant_mode, "teacher": cfg.teacher,
          "encoder_layer_map": plan.encoder_layer_map, "decoder_layer_map": plan.decoder_layer_map}
  run_info = {"config": dict(cfg.run_section(TASK_KIND), model_config=model_config, kd_losses=list(plan.loss_terms)),
              "metadata": meta, "policy_json": plan.policy.to_json(), "argv": list(argv or sys.argv),
              "runtime_keys": cfg.RUNTIME_KEYS, "git_commit": git_commit}
  train_src = train.Deadline(source, None if cfg.time_budget_s is None else t0 + cfg.time_budget_s,
                             rundir.RunDir(cfg.workdir).best_dir)
  stopped_at = None
  try:
    summary = train.train_and_evaluate(task, params, teacher_params, train_src,
                                       lambda: eval_batches(heldout, cfg.eval_batch_size), tcfg, cfg.workdir,
                                       run_info, max_steps_this_run=cfg.max_steps_this_run)
  except train.TimeBudgetExceeded as e:
    stopped_at = int(e.args[0])
    print(f"--time_budget_s={cfg.time_budget_s} reached at step {stopped_at} of {steps}", flush=True)
    summary = {"step": stopped_at, "wall_time_s": time.time() - t0}
  if summary.get("interrupted"):
    return summary
  if train_src.second_batch_at is not None:
    summary["startup_s"] = train_src.second_batch_at - t0
  return evaluate_run(cfg, plan, summary, stopped_at, steps, heldout, heldout_ex, argv, t0, git_commit)


def evaluate_run(cfg, plan, summary, stopped_at, steps, heldout, heldout_ex, argv, t0, git_commit=None) -> dict:
  """Eval reload: best checkpoint, float32 compute; held-out loss by position, beam search + ROUGE."""
  model, params, best_meta = restore_run(cfg.workdir)
  task = Seq2SeqTask(model)
  results = {
      "workdir": os.path.abspath(cfg.workdir), "objective": cfg.objective, "dataset": cfg.dataset,
      "bits": cfg.bits, "symmetric": cfg.symmetric, "quant_mode": cfg.quant_mode, "policy": plan.policy.name,
      "model_config": best_meta["model_config"], "teacher": cfg.teacher, "loss_terms": list(plan.loss_terms),
      "encoder_layer_map": plan.encoder_layer_map, "decoder_layer_map": plan.decoder_layer_map,
      "source_max_len": plan.source_max_len, "target_max_len": plan.target_max_len,
      "best_step": best_meta["step"], "num_train_steps": steps, "steps_run": stopped_at or steps,
      "stopped_by_time_budget": stopped_at is not None, "batch_size": cfg.batch_size,
      "learning_rate": cfg.learning_rate, "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
      "train_wall_time_s": summary.get("wall_time_s"), "startup_s": summary.get("startup_s"),
      "device_kind": jax.devices()[0].device_kind, "command": " ".join(argv or sys.argv),
      "git_commit": git_commit or rundir.git_commit(),
      "valid": positional_nll(task, params, heldout, cfg.eval_batch_size),
  }
  if cfg.objective == "summarize":
    n = len(heldout_ex) if cfg.eval_examples is None else min(cfg.eval_examples, len(heldout_ex))
    t = time.time()
    ids = beam_decode(model, params, {k: v[:n] for k, v in heldout.items()}, plan.decode_config,
                      cfg.eval_batch_size)
    predictions = [plan.tokenizer.decode(r, skip_special_tokens=True).strip() for r in ids]
    references = heldout_ex.summaries[:n]
    results["generation"] = {**dataclasses.asdict(plan.decode_config), "num_examples": n,
                             "wall_time_s": time.time() - t}
    results["predictions"] = predictions
    results["references"] = references
    results["rouge"] = score_predictions(predictions, references)
  results["wall_time_s"] = time.time() - t0
  with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  rouge = results.get("rouge")
  rouge_s = "" if not rouge else " ROUGE-1/2/L/Lsum " + "/".join(f"{rouge[k]:.2f}" for k in
                                                                  ("rouge1", "rouge2", "rougeL", "rougeLsum"))
  print(f"RESULT {plan.policy.name} {cfg.objective}: best step {results['best_step']}, held-out loss "
        f"{results['valid']['loss']:.4f}{rouge_s}, wall {results['wall_time_s']:.0f}s", flush=True)
  return results
