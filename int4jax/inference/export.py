"""Packed INT4/INT8 checkpoints: a trained QAT run (or any HF checkpoint plus a policy) -> what the engine loads.

    python -m experiments.export --workdir=runs/glue/sst2_bert_base/w4a4_sym --out=packed/sst2_w4a4

A packed checkpoint is one directory, written to `<out>.tmp-*` and renamed into place (atomic: a reader never sees
a half-written one):

  params.safetensors   flat "a/b/c" names. Every GEMM the policy quantizes holds the integer params of
                       `int4jax.nn.int_gemm` (w_q packed INT4 (N, K/2) uint8 or INT8 (N, K), K contiguous, in the
                       kernels' layout of `int4jax.quant.formats`; w_scale; w_offset for asymmetric weights; w_sum
                       for asymmetric activations; bias f32). The codes are those training's fake quantization
                       computes (same clip, same rounding). Everything else (embeddings, LayerNorms, float GEMMs,
                       pooler, classifier, LM heads) in bf16. With fuse_qkv, the projections the family's
                       `Family.int_fusions` lists are concatenated along N into one GEMM each (BERT, BART, Llama
                       q/k/v -> qkv; BART cross-attention k/v -> kv_proj; Llama gate/up -> gate_up).
  packed.json          format name + version, model family (bert, gpt2, bart, llama), task and config, the policy
                       JSON, fuse_qkv, byte counts.
  tokenizer/           the run's tokenizer (save_pretrained), when it has one.

Loading (`load_packed`) reads the arrays as stored: no float copy of a quantized weight is ever made.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import tempfile
import types
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from int4jax.models import hf, registry
from int4jax.nn import int_gemm
from int4jax.nn.dense import QDense
from int4jax.quant.policy import QuantPolicy, QuantRule

FORMAT = "int4jax-packed"
FORMAT_VERSION = 1
PARAMS_FILE = "params.safetensors"
META_FILE = "packed.json"
TOKENIZER_DIR = "tokenizer"
_NOT_CONFIG = ("policy", "dtype", "int_mode")  # config fields that are not JSON (policy is stored on its own)


def engine_families() -> tuple[str, ...]:
  """The model families with an integer mode (a `Family.int_fusions`)."""
  return tuple(name for name, fam in registry.FAMILIES.items() if fam.int_fusions is not None)


def check_family(family: str) -> None:
  if family not in engine_families():
    raise ValueError(f"the integer engine runs {list(engine_families())} models; {family!r} is not supported")


@dataclasses.dataclass(frozen=True)
class GemmLayer:
  """One QDense of a model: its GEMM type (policy.GEMM_TYPES, None for heads) and input width K."""
  gemm: str | None
  k: int


def trace_int_model(family: str, config, task: str, seq_len: int = 8) -> tuple[Any, dict[str, GemmLayer]]:
  """(abstract params, {module path: GemmLayer} of every QDense) of `registry.family(family).build(config, task)`
  from one abstract init: nothing is computed. The structure depends on the policy and on int_mode.fuse_qkv only (not
  on the kernel backend or the compute dtype), so it is traced once per such model and remembered."""
  mode = config.int_mode
  canonical = dataclasses.replace(config, dtype=jnp.float32, int_mode=None if mode is None else int_gemm.IntMode(
      backend="xla", fuse_qkv=mode.fuse_qkv))
  return _trace(family, canonical, task, seq_len)


@functools.lru_cache(maxsize=64)
def _trace(family: str, config, task: str, seq_len: int):
  layers = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, QDense) and context.method_name == "__call__":
      layers[context.module.module_path] = GemmLayer(context.module.gemm, int(args[0].shape[-1]))
    return next_fun(*args, **kwargs)

  model = registry.family(family).build(config, task)
  ids = jnp.zeros((1, seq_len), jnp.int32)
  with nn.intercept_methods(record):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids)["params"])
  return shapes, types.MappingProxyType(layers)


def int_policy(policy: QuantPolicy, fusions: dict[str, tuple[str, ...]], layers: dict[str, GemmLayer]
               ) -> QuantPolicy:
  """The policy the integer-mode model resolves: a rule for each fused GEMM that gives the quantizers of its sources
  (ValueError if the sources are quantized differently)."""
  rules = []
  for fused, sources in fusions.items():
    if fused not in layers:
      raise ValueError(f"the family's int_fusions name {fused}, which its integer-mode model does not have")
    specs = {policy.resolve(src, layers[fused].gemm) for src in sources}
    if len(specs) != 1:
      raise ValueError(f"{', '.join(sources)} are quantized differently ({sorted(map(str, specs))}) but integer mode "
                       f"runs them as one GEMM {fused}; export with fuse_qkv=False")
    w, a = specs.pop()
    rules.append(QuantRule(pattern=f"^{re.escape(fused)}$", weight=w, act=a))
  return dataclasses.replace(policy, rules=tuple(rules) + policy.rules)


def config_to_dict(config) -> dict:
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _NOT_CONFIG}


def int_model(family: str, config_dict: dict, policy: QuantPolicy, task: str, int_mode: int_gemm.IntMode,
              dtype=jnp.bfloat16):
  """(module, config) of the integer-mode model for a packed checkpoint's description."""
  check_family(family)
  fam = registry.family(family)
  base = fam.presets[next(iter(fam.presets))]()
  fields = {f.name for f in dataclasses.fields(base)}
  unknown = sorted(set(config_dict) - fields)
  if unknown:
    raise ValueError(f"packed config has fields {unknown} that {family} configs do not have")
  config = dataclasses.replace(base, **config_dict)
  config = dataclasses.replace(config, policy=policy, dtype=dtype, int_mode=int_mode)
  fusions = fusions_of(family, config, int_mode.fuse_qkv)
  if fusions:  # the fused GEMMs' types come from the model itself
    _, layers = trace_int_model(family, config, task)
    config = dataclasses.replace(config, policy=int_policy(policy, fusions, layers))
  return fam.build(config, task), config


def fusions_of(family: str, config, fuse_qkv: bool) -> dict[str, tuple[str, ...]]:
  """{fused module: source modules} that integer mode runs as one GEMM ({} without fuse_qkv)."""
  return dict(registry.family(family).int_fusions(config)) if fuse_qkv else {}


def pack_params(params, config, task: str, family: str | None = None, *, fuse_qkv: bool = True,
                float_dtype=jnp.bfloat16) -> dict[str, np.ndarray]:
  """Float params of a fake-quant model -> flat {path: array} of its integer-mode model (see the module docstring).
  `family` defaults to the config's own."""
  policy = config.policy
  if policy is None or policy.is_float:
    raise ValueError(f"policy {getattr(policy, 'name', None)!r} quantizes no GEMM: a float model has nothing to pack "
                     "(export a run trained with --bits=w4a4, w8a8, ...)")
  family = family or registry.family_of(config).name
  mode = int_gemm.IntMode(backend="xla", fuse_qkv=fuse_qkv)  # only traced for the param structure
  _, icfg = int_model(family, config_to_dict(config), policy, task, mode)
  shapes, layers = trace_int_model(family, icfg, task)
  want = hf.flatten(shapes)
  fusions = fusions_of(family, icfg, fuse_qkv)
  src = {k: np.asarray(v) for k, v in hf.flatten(jax.device_get(params)).items()}
  out, done = {}, set()
  for path in sorted(want):
    module, _, leaf = path.rpartition("/")
    if module in done:
      continue
    names = fusions.get(module, (module,))

    def source(lf):
      keys = [f"{m}/{lf}" if m else lf for m in names]
      if any(k not in src for k in keys):
        raise ValueError(f"pack_params: the params have no {[k for k in keys if k not in src][0]!r}: not the float "
                         f"params of a {family} {task!r} model")
      arrs = [src[k] for k in keys]
      return arrs[0] if len(arrs) == 1 else np.concatenate(arrs, axis=-1)

    if leaf in int_gemm.INT_PARAM_NAMES and f"{module}/w_q" in want:
      w_spec, a_spec = icfg.policy.resolve(module, layers[module].gemm)
      packed = int_gemm.pack_weight(source("kernel"), w_spec, a_spec)
      if f"{module}/bias" in want:
        packed["bias"] = source("bias").astype(np.float32)
      for lf, arr in packed.items():
        out[f"{module}/{lf}"] = arr
      done.add(module)
    else:
      out[path] = source(leaf).astype(float_dtype)
  missing = sorted(set(want) - set(out))
  if missing:
    raise ValueError(f"pack_params: no value for {missing[:5]}")
  return out


def byte_report(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  """Bytes of the quantized GEMM weights (codes + scales + offsets) per parameter, and of the whole checkpoint
  against fp32 and bf16 copies of the same model."""
  q_bytes = q_params = other_bytes = other_params = 0
  for path, a in flat.items():
    leaf = path.rpartition("/")[2]
    if leaf in ("w_q", "w_scale", "w_offset", "w_sum"):
      q_bytes += a.nbytes
      if leaf == "w_q":
        q_params += a.size * (2 if a.dtype == np.uint8 else 1)
    else:
      other_bytes += a.nbytes
      other_params += a.size
  total = q_params + other_params
  return {"quantized_gemm_params": q_params, "quantized_gemm_bytes": q_bytes,
          "quantized_gemm_bytes_per_param": q_bytes / max(q_params, 1),
          "float_params": other_params, "float_bytes": other_bytes, "total_params": total,
          "packed_bytes": q_bytes + other_bytes, "fp32_bytes": 4 * total, "bf16_bytes": 2 * total}


def write_packed(out_dir: str, flat: dict[str, np.ndarray], *, family: str, task: str, config, policy: QuantPolicy,
                 fuse_qkv: bool = True, tokenizer=None, source: str = "") -> dict:
  """Writes the checkpoint atomically (temp dir + rename); returns its packed.json contents."""
  if os.path.exists(out_dir):
    raise ValueError(f"--out={out_dir!r} exists; choose a new directory (a packed checkpoint is never overwritten)")
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
  try:
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in flat.items()},
                                os.path.join(tmp, PARAMS_FILE))
    if tokenizer is not None:
      tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_DIR))
    report = byte_report(flat)
    report["file_bytes"] = os.path.getsize(os.path.join(tmp, PARAMS_FILE))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **describe(config, task, family=family, policy=policy,
                                                                         fuse_qkv=fuse_qkv, source=source),
            "float_dtype": "bfloat16", "bytes": report}
    with open(os.path.join(tmp, META_FILE), "w") as f:
      json.dump(meta, f, indent=2, sort_keys=True)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def describe(config, task: str, *, family: str | None = None, policy: QuantPolicy | None = None,
             fuse_qkv: bool = True, source: str = "") -> dict:
  """What packed.json says of the model (family, task, config, policy, fuse_qkv, source): all `engine.from_params`
  needs besides the params. family and policy default to the config's own."""
  policy = policy or config.policy
  return {"family": family or registry.family_of(config).name, "task": task, "config": config_to_dict(config),
          "policy": json.loads(policy.to_json()), "fuse_qkv": fuse_qkv, "source": source}


def read_meta(path: str, *, family: str | None = None) -> dict:
  """packed.json of a checkpoint, after checking format, version and (optionally) the model family."""
  meta_path = os.path.join(path, META_FILE)
  if not os.path.isfile(meta_path):
    raise ValueError(f"{path!r} is not a packed checkpoint: no {META_FILE} (write one with experiments.export)")
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r}; this int4jax reads version "
                     f"{FORMAT_VERSION} only (re-export the run)")
  if family is not None and meta.get("family") != family:
    raise ValueError(f"{meta_path}: holds a {meta.get('family')!r} model, expected {family!r}")
  check_family(meta.get("family"))
  return meta


def load_packed(path: str, *, family: str | None = None) -> tuple[dict, dict]:
  """(packed.json, nested params) as stored (uint8/int8 codes, f32 scales, bf16 floats)."""
  meta = read_meta(path, family=family)
  flat = safetensors.numpy.load_file(os.path.join(path, PARAMS_FILE))
  return meta, hf.unflatten(flat)


def as_policy(meta: dict) -> QuantPolicy:
  return QuantPolicy.from_json(json.dumps(meta["policy"]))


# ------------------------------------------------------------------ sources


def from_hf(path: str, policy: QuantPolicy, task: str | None = None):
  """(params, config, task, family, tokenizer or None) of an HF checkpoint quantized post-training by `policy`."""
  if policy.is_float:
    raise ValueError(f"--bits gives the float policy {policy.name!r}: nothing to pack; pass --bits=w4a4, w8a8, ...")
  hf_config = hf.read_config(hf.resolve_checkpoint_dir(path))
  family = hf_config.get("model_type")
  check_family(family)
  task = task or registry.family(family).default_task(hf_config)
  model, params = registry.load_pretrained(path, policy=policy, task=task)
  tok = None
  try:
    from int4jax.tokenizers import load_tokenizer  # pylint: disable=g-import-not-at-top
    tok = load_tokenizer(path)
  except (OSError, ValueError) as e:
    logging.warning("no tokenizer saved: %s", e)
  return params, model.config, task, family, tok


def export(out_dir: str, params, config, task: str, family: str, *, tokenizer=None, source: str = "",
           fuse_qkv: bool = True) -> dict:
  """pack_params + write_packed; returns packed.json."""
  check_family(family)
  flat = pack_params(params, config, task, family, fuse_qkv=fuse_qkv)
  return write_packed(out_dir, flat, family=family, task=task, config=config, policy=config.policy,
                      fuse_qkv=fuse_qkv, tokenizer=tokenizer, source=source)

