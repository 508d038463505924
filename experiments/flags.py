"""The one flag vocabulary of every launcher (the shared fields of `int4jax.tasks.base.RunConfig`).

Every shared flag defaults to None, meaning "the task's default" (the paper's Table C.1 row for GLUE, the GPT-2
recipe for LM), so a launcher passes only what the user set. Old spellings stay as deprecated aliases that print the
new name. `usage_errors()` turns the ValueErrors of config validation into one-line absl usage errors.
"""
from __future__ import annotations

import contextlib
import sys

from absl import app, flags

FLAGS = flags.FLAGS

# old flag -> (new flag, how the old value maps onto the new one)
_DEPRECATED = {
    "loss_terms": ("kd_losses", lambda v: v),
    "symmetric": ("quant_mode", lambda v: "sym" if v else "asym"),
    "init": ("model", lambda v: v),
}


def define_common(*, model_help: str, bits_choices: list[str], default_model: str | None = None) -> None:
  """Defines the shared flags (call once per launcher, before app.run)."""
  flags.DEFINE_string("model", default_model, model_help)
  flags.DEFINE_enum("bits", None, bits_choices, "Quantization preset (fp32 = the float teacher).")
  flags.DEFINE_enum("quant_mode", None, ["sym", "asym"], "Symmetric or asymmetric quantizers (default sym).")
  flags.DEFINE_string("clip", None, "Pre-quantization clip 'lo,hi' for weights and GEMM inputs, or 'none'.")
  flags.DEFINE_string("weight_clip", None, "Clip 'lo,hi' (or 'none') for weights only; overrides --clip.")
  flags.DEFINE_string("act_clip", None, "Clip 'lo,hi' (or 'none') for GEMM inputs only; overrides --clip.")
  flags.DEFINE_integer("weight_group_size", None, "Weight groups along K (default: one scale per output channel).")
  flags.DEFINE_list("gemms", None, "GEMM types to quantize (qkv, attn_out, ffn_in, ffn_out); default all four.")
  flags.DEFINE_string("teacher", None, "Run directory of the FP teacher (quantized students distill from it).")
  flags.DEFINE_list("kd_losses", None, "Loss terms: gt (ground truth), logit, att (pre-softmax Att*), rep "
                    "(hidden states).")
  flags.DEFINE_string("tokenizer", None, "Tokenizer directory or name (default: the model's own).")
  flags.DEFINE_string("data_dir", None, "Local data folder (else the `datasets` hub copy).")
  flags.DEFINE_float("learning_rate", None, "Peak learning rate (AdamW, linear warmup then linear decay).")
  flags.DEFINE_integer("num_train_steps", None, "Training steps; overrides --num_epochs.")
  flags.DEFINE_float("num_epochs", None, "Training epochs.")
  flags.DEFINE_float("warmup_ratio", None, "Fraction of the steps with linear warmup.")
  flags.DEFINE_integer("warmup_steps", None, "Warmup steps; overrides --warmup_ratio.")
  flags.DEFINE_integer("batch_size", None, "Global batch size.")
  flags.DEFINE_integer("eval_batch_size", None, "Evaluation batch size.")
  flags.DEFINE_integer("eval_every_steps", None, "Evaluate (and save best/) every N steps.")
  flags.DEFINE_integer("log_every_steps", None, "Log training metrics every N steps.")
  flags.DEFINE_integer("checkpoint_every_steps", None, "Save latest/ every N steps (default: at each evaluation).")
  flags.DEFINE_integer("seed", None, "Seed for init, data order and dropout (default 42).")
  flags.DEFINE_enum("compute_dtype", None, ["float32", "bfloat16"], "Compute dtype (master weights stay fp32).")
  flags.DEFINE_float("dropout", None, "Dropout rate (default: the model's or the task's).")
  flags.DEFINE_string("workdir", None, "Run directory; re-running the same command resumes it.")
  flags.DEFINE_bool("overwrite", False, "Start the run directory afresh, removing (and listing) what it holds.")
  flags.DEFINE_string("git_commit", None, "Commit to record in command.txt when the tree has no .git.")
  flags.DEFINE_integer("max_steps_this_run", None, "Stop after this many steps (checkpointed; rerun to resume).")
  # Multi-host data parallelism (README "Several hosts"): every process runs the same command with its own id.
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0, the same in every process "
                      "(or $JAX_COORDINATOR_ADDRESS). Unset: one process, all local devices.")
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes (one per host, usually).")
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's id, 0 .. num_processes-1.")
  flags.DEFINE_list("local_device_ids", None, "Multi-host: the local devices this process drives (default all).")
  # Deprecated spellings (kept so old commands run; each prints what to use instead).
  flags.DEFINE_list("loss_terms", None, "Deprecated: use --kd_losses.")
  flags.DEFINE_bool("symmetric", None, "Deprecated: use --quant_mode=sym|asym.")
  flags.DEFINE_string("init", None, "Deprecated: use --model=<HF checkpoint dir> (or a preset for a random init).")


def define_budget_flags() -> None:
  """--weight_decay and --time_budget_s, for the launchers whose tasks take them (LM, summarization)."""
  flags.DEFINE_float("weight_decay", None, "AdamW weight decay (default: the task's; LM 0.01 on matrices, "
                     "summarization 0 as DQ-BART).")
  flags.DEFINE_float("time_budget_s", None, "Stop training this many seconds after the run starts (compilation "
                     "included), at the first step once an evaluation has saved best/; best/ is then evaluated "
                     "(train.loop.Deadline).")


def define_jax_cache_dir() -> None:
  """--jax_cache_dir, for launchers that turn on JAX's persistent compilation cache (train/compile_cache.py)."""
  flags.DEFINE_string("jax_cache_dir", None, "JAX persistent compilation cache folder (default "
                      "$INT4JAX_JAX_CACHE or ~/.cache/int4jax/jax); 'none' turns it off.")


def parse_clip(value: str | None, flag: str):
  """'lo,hi' -> (lo, hi); 'none' -> 'none' (explicitly no clip); None -> None (the task's default)."""
  if value is None:
    return None
  if value.strip().lower() in ("", "none"):
    return "none"
  try:
    lo, hi = (float(v) for v in value.split(","))
  except ValueError:
    raise app.UsageError(f"--{flag}={value!r} must be 'lo,hi' (e.g. -5,5) or 'none'") from None
  if lo >= hi:
    raise app.UsageError(f"--{flag}={value!r}: lo must be below hi")
  return lo, hi


def apply_deprecated(f=FLAGS) -> None:
  """Moves deprecated flag values onto their new names, printing the new spelling once."""
  for old, (new, convert) in _DEPRECATED.items():
    if old in f and f[old].present:
      if old == "init" and f[old].value == "scratch":
        print("--init=scratch is deprecated: a preset --model already starts from random weights", file=sys.stderr)
        continue
      if f[new].present:
        raise app.UsageError(f"--{old} is a deprecated alias of --{new}; give only --{new}")
      print(f"--{old} is deprecated: use --{new}={convert(f[old].value)!s}".replace("[", "").replace("]", "")
            .replace("'", ""), file=sys.stderr)
      f[new].value = convert(f[old].value)


def common_overrides(f=FLAGS) -> dict:
  """The shared flags the user set, as RunConfig field values (None = the task's default)."""
  names = ("bits", "quant_mode", "weight_group_size", "teacher", "tokenizer", "data_dir", "learning_rate",
           "num_train_steps", "num_epochs", "warmup_ratio", "warmup_steps", "batch_size", "eval_batch_size",
           "eval_every_steps", "log_every_steps", "checkpoint_every_steps", "seed", "compute_dtype", "dropout")
  o = {n: f[n].value for n in names}
  o["kd_losses"] = tuple(f.kd_losses) if f.kd_losses else None
  o["gemms"] = tuple(f.gemms) if f.gemms else None
  clip = parse_clip(f.clip, "clip")
  o["weight_clip"] = parse_clip(f.weight_clip, "weight_clip") or clip
  o["act_clip"] = parse_clip(f.act_clip, "act_clip") or clip
  if o["warmup_steps"] is not None and o["warmup_ratio"] is not None:
    raise app.UsageError("give --warmup_ratio or --warmup_steps, not both")
  return o


def run_config_values(task_values: dict, f=FLAGS) -> dict:
  """The keyword arguments of a task's RunConfig: the shared flags the user set plus the task's own values, without
  the unset ones (None: the config's default); a clip given as 'none' becomes None (explicitly no clip)."""
  values = {k: v for k, v in dict(common_overrides(f), **task_values).items() if v is not None}
  for name in ("weight_clip", "act_clip"):
    if values.get(name) == "none":
      values[name] = None
  return values


def init_distributed(f=FLAGS) -> None:
  """Joins the multi-process job named by --coordinator_address/--num_processes/--process_id (or the JAX_*
  environment variables); a no-op for a single process. Call at the top of main(), before JAX picks devices."""
  from int4jax.train import distributed  # pylint: disable=g-import-not-at-top
  ids = None if f.local_device_ids is None else [int(i) for i in f.local_device_ids]
  try:
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id, ids)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


@contextlib.contextmanager
def usage_errors():
  """Config and input errors (ValueError, FileNotFoundError) become one-line absl usage errors, not tracebacks."""
  try:
    yield
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
