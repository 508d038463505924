"""Reading and writing Hugging Face-format checkpoints, mapping them strictly onto and from Flax param trees.

Shared by every model family. A family describes its checkpoint as a flat dict
``{flax_path: Ref(hf_names, transform)}`` covering every Flax param; `assign_params` then fills the
tree tensor by tensor and refuses anything it cannot account for:

- a Flax param with no checkpoint tensor            -> ValueError naming the tensor (unless it is a new head),
- a checkpoint tensor nobody consumed               -> ValueError naming it (unless the family ignores it by regex),
- a tensor whose transformed shape is not the param's -> ValueError naming both.

Heads that are legitimately new (a classifier on an encoder checkpoint) keep their fresh init and are
logged by name. Flax paths are "/"-joined param tree keys, e.g. ``encoder/layer_0/attention/query/kernel``.

Writing (export) runs the same table backwards, for every family at once: `export_tensors` sends each Flax param to
the first name of its Ref through the inverse of its transform (`Ref.inverse`, known for the transforms defined
here), and `write_checkpoint` stores config.json + model.safetensors that transformers loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from absl import logging

from int4jax.models import gguf

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_NAME = "pytorch_model.bin"


# ----------------------------------------------------------------------------------------------
# Locating and reading a checkpoint


def resolve_checkpoint_dir(path_or_name: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
                           ) -> pathlib.Path:
  """A local directory, or a hub name (``"bert-base-uncased"``) found in the local HF cache (never downloads).

  cache_dir: the hub cache to look in (default: huggingface_hub's, i.e. $HF_HUB_CACHE or ~/.cache/huggingface/hub).
  """
  path = pathlib.Path(path_or_name).expanduser()
  if path.is_dir():
    if not (path / CONFIG_NAME).is_file():
      raise FileNotFoundError(f"checkpoint directory {str(path)!r} has no {CONFIG_NAME}")
    return path
  if path.exists():
    raise NotADirectoryError(f"checkpoint path {str(path)!r} is a file; expected a directory with {CONFIG_NAME}")
  name = str(path_or_name)
  # Hub ids look like "name" or "org/name"; anything else is a local path that does not exist.
  if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) or name.startswith((".", "/")):
    raise FileNotFoundError(f"checkpoint directory {name!r} does not exist")
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    snapshot = huggingface_hub.snapshot_download(name, local_files_only=True, cache_dir=cache_dir)
  except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ImportError, ...
    raise FileNotFoundError(
        f"checkpoint {name!r} is neither a local directory nor in the Hugging Face cache "
        f"({cache_dir or os.environ.get('HF_HUB_CACHE', '~/.cache/huggingface/hub')}): {e}") from e
  path = pathlib.Path(snapshot)
  if not (path / CONFIG_NAME).is_file():
    raise FileNotFoundError(f"cached snapshot {str(path)!r} of {name!r} has no {CONFIG_NAME}")
  return path


class ConfigDict(dict):
  """A config.json as a dict whose missing fields raise ValueError naming the file and the field (instead of a bare
  KeyError deep inside a family's config_from_hf)."""

  def __init__(self, values: Mapping[str, Any], source: str):
    super().__init__(values)
    self.source = source

  def __missing__(self, key):
    raise ValueError(f"{self.source}: missing field {key!r}")


def read_config(ckpt_dir: str | os.PathLike) -> ConfigDict:
  path = pathlib.Path(ckpt_dir) / CONFIG_NAME
  if not path.is_file():
    raise FileNotFoundError(f"{str(path)!r} does not exist")
  try:
    with open(path) as f:
      values = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON ({e})") from None
  if not isinstance(values, dict):
    raise ValueError(f"{path}: expected a JSON object, got {type(values).__name__}")
  return ConfigDict(values, str(path))


_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def _st_dtype(code: str, name: str):
  if code == "BF16":
    import ml_dtypes  # pylint: disable=g-import-not-at-top  (ships with jax)
    return ml_dtypes.bfloat16
  if code not in _ST_DTYPES:
    raise ValueError(f"tensor {name!r}: unsupported safetensors dtype {code}")
  return _ST_DTYPES[code]


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a .safetensors file into numpy (bf16 via ml_dtypes, which the `safetensors.numpy` API lacks)."""
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f"{path}: truncated safetensors file ({len(head)} bytes, no header)")
    (header_len,) = struct.unpack("<Q", head)
    raw = f.read(header_len)
    if len(raw) < header_len:
      raise ValueError(f"{path}: truncated safetensors header ({len(raw)} of {header_len} bytes)")
    try:
      header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    data = f.read()
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    begin, end = info["data_offsets"]
    if end > len(data):
      raise ValueError(f"{path}: tensor {name!r} needs bytes [{begin}, {end}) of the data section, which has only "
                       f"{len(data)}: the file is truncated")
    dtype = _st_dtype(info["dtype"], name)
    try:
      out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"])
    except ValueError as e:
      raise ValueError(f"{path}: tensor {name!r} ({info['dtype']}, shape {info['shape']}) does not match its "
                       f"{end - begin} bytes ({e})") from None
  return out


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading {str(path)!r} needs torch (pip install torch); safetensors checkpoints do not") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  out = {}
  for name, t in state.items():
    t = t.detach()
    if t.dtype == torch.bfloat16:
      t = t.float()
    out[name] = t.numpy()
  return out


def _fix_legacy_name(name: str) -> str:
  # Old TF-converted BERT checkpoints name LayerNorm params gamma/beta (transformers renames them too).
  if name.endswith("LayerNorm.gamma"):
    return name[: -len("gamma")] + "weight"
  if name.endswith("LayerNorm.beta"):
    return name[: -len("beta")] + "bias"
  return name


def read_state_dict(ckpt_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of a checkpoint directory: model.safetensors (single or sharded), else pytorch_model.bin."""
  ckpt_dir = pathlib.Path(ckpt_dir)
  if gguf.is_qblocks_dir(ckpt_dir):   # a GGUF file's blocks re-encoded in parts (models/gguf.py)
    return gguf.read_qblocks(ckpt_dir)
  if (ckpt_dir / SAFETENSORS_NAME).is_file():
    tensors = read_safetensors(ckpt_dir / SAFETENSORS_NAME)
  elif (ckpt_dir / SAFETENSORS_INDEX_NAME).is_file():
    with open(ckpt_dir / SAFETENSORS_INDEX_NAME) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for shard in shards:
      tensors.update(read_safetensors(ckpt_dir / shard))
  elif (ckpt_dir / TORCH_NAME).is_file():
    tensors = read_torch_bin(ckpt_dir / TORCH_NAME)
  else:
    raise FileNotFoundError(
        f"checkpoint directory {str(ckpt_dir)!r} has neither {SAFETENSORS_NAME} nor {TORCH_NAME}")
  return {_fix_legacy_name(k): v for k, v in tensors.items()}


def load_checkpoint(path_or_name: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
                    ) -> tuple[pathlib.Path, dict[str, Any], dict[str, np.ndarray]]:
  """(directory, config.json dict, tensors) for a local dir, a cached hub name or a .gguf file (models/gguf.py)."""
  if gguf.is_gguf(path_or_name):
    return (pathlib.Path(path_or_name), *gguf.read_gguf(path_or_name))
  ckpt_dir = resolve_checkpoint_dir(path_or_name, cache_dir=cache_dir)
  return ckpt_dir, read_config(ckpt_dir), read_state_dict(ckpt_dir)


# ----------------------------------------------------------------------------------------------
# Strict mapping


def identity(w: np.ndarray) -> np.ndarray:
  return w


def linear_kernel(w: np.ndarray) -> np.ndarray:
  """torch nn.Linear weight (out, in) -> Flax Dense kernel (in, out); its own inverse."""
  return w.T


def row_to_vector(w: np.ndarray) -> np.ndarray:
  """A [1, n] buffer (BART's final_logits_bias) -> [n]."""
  return w.reshape(-1)


def vector_to_row(w: np.ndarray) -> np.ndarray:
  return w.reshape(1, -1)


# checkpoint -> Flax transform: its inverse (Flax -> checkpoint), used when writing. A family that needs another
# transform passes `inverse=` to its Ref (or adds the pair here); export refuses a Ref without one.
INVERSES: dict[Callable, Callable] = {identity: identity, linear_kernel: linear_kernel, row_to_vector: vector_to_row}


@dataclasses.dataclass(frozen=True)
class Ref:
  """Where one Flax param comes from: the first of `names` present in the checkpoint, then `transform`.

  Several names cover aliases (BART's `model.shared` vs `model.encoder.embed_tokens`); several Flax
  params may point at the same tensor (tied embeddings). Every alias present counts as consumed.
  Writing uses `names[0]` (the canonical name) and `inverse` (default: INVERSES[transform], else None).
  """
  names: tuple[str, ...]
  transform: Callable[[np.ndarray], np.ndarray] = identity
  inverse: Callable[[np.ndarray], np.ndarray] | None = None

  def __init__(self, names: str | Iterable[str], transform: Callable[[np.ndarray], np.ndarray] = identity,
               inverse: Callable[[np.ndarray], np.ndarray] | None = None):
    object.__setattr__(self, "names", (names,) if isinstance(names, str) else tuple(names))
    object.__setattr__(self, "transform", transform)
    object.__setattr__(self, "inverse", inverse if inverse is not None else INVERSES.get(transform))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested param dict -> {"a/b/c": leaf}."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, key))
    else:
      out[key] = v
  return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for key, v in flat.items():
    node = out
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def assign_params(
    target: Mapping[str, Any],
    mapping: Mapping[str, Ref],
    tensors: Mapping[str, np.ndarray],
    *,
    init_fn: Callable[[], Mapping[str, Any]] | None = None,
    new_ok: Iterable[str] = (),
    ignore: Iterable[str] = (),
    source: str = "checkpoint",
) -> dict[str, Any]:
  """Fills the param tree `target` from `tensors` through `mapping`.

  Args:
    target: the model's param tree: arrays, or shapes only (`jax.eval_shape(model.init, ...)`).
    mapping: flax path -> Ref for every param that the checkpoint may provide.
    init_fn: returns freshly initialised params; called once, only if a `new_ok` param is absent from the
      checkpoint (default: take the values from `target`, which must then be arrays).
    tensors: checkpoint tensors by their HF name.
    new_ok: regexes over flax paths that may be absent from the checkpoint (kept as initialised, logged).
    ignore: regexes over HF names that may be present and unused (buffers, pretraining heads; logged).
    source: checkpoint name for messages.
  Returns:
    a new nested param dict of float32 numpy arrays.
  Raises:
    ValueError naming the tensor on missing, unexpected or mis-shaped tensors.
  """
  new_ok = [re.compile(p) for p in new_ok]
  ignore = [re.compile(p) for p in ignore]
  flat = flatten(target)
  fresh_values: dict[str, Any] | None = None
  unmapped = sorted(set(mapping) - set(flat))
  if unmapped:  # a family bug, not a checkpoint problem
    raise ValueError(f"mapping names Flax params the model does not have: {unmapped[:5]}")
  consumed: set[str] = set()
  out, fresh = {}, []
  for path, init in flat.items():
    ref = mapping.get(path)
    name = None if ref is None else next((n for n in ref.names if n in tensors), None)
    if name is None:
      if any(p.search(path) for p in new_ok):
        if fresh_values is None:
          fresh_values = flat if init_fn is None else flatten(init_fn())
        out[path] = np.asarray(fresh_values[path], np.float32)
        fresh.append(path)
        continue
      wanted = ref.names[0] if ref is not None else "<no mapping>"
      raise ValueError(f"{source}: missing tensor {wanted!r} (for Flax param {path!r}, shape {tuple(init.shape)})")
    consumed.update(n for n in ref.names if n in tensors)
    value = np.asarray(ref.transform(np.asarray(tensors[name])), np.float32)
    if value.shape != tuple(init.shape):
      raise ValueError(f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, which maps to "
                       f"{value.shape} but Flax param {path!r} has shape {tuple(init.shape)}")
    out[path] = value
  leftover = sorted(set(tensors) - consumed)
  ignored = [n for n in leftover if any(p.search(n) for p in ignore)]
  unexpected = [n for n in leftover if n not in ignored]
  if unexpected:
    more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
    raise ValueError(f"{source}: unexpected tensor {unexpected[0]!r}{more}: {unexpected[:10]}")
  if ignored:
    logging.info("%s: ignored checkpoint tensors not used by this model: %s", source, ", ".join(ignored))
  if fresh:
    logging.warning("%s: newly initialised: %s", source, ", ".join(fresh))
  return unflatten(out)


def check_tied(tensors: Mapping[str, np.ndarray], names: tuple[str, ...], source: str) -> None:
  """Tied tensors stored under several names must be equal: the Flax models keep one copy."""
  present = [n for n in names if n in tensors]
  for n in present[1:]:
    a, b = np.asarray(tensors[present[0]]), np.asarray(tensors[n])
    if a.shape != b.shape or not np.array_equal(a, b):
      raise ValueError(f"{source}: tensor {n!r} differs from {present[0]!r}; this model ties them")


# ----------------------------------------------------------------------------------------------
# Writing (export): the strict mapping run backwards


def export_tensors(params: Mapping[str, Any], mapping: Mapping[str, Ref], *, source: str = "params"
                   ) -> dict[str, np.ndarray]:
  """{HF name: float32 tensor} from a Flax param tree through `mapping` inverted (the family's read table).

  Every Flax param must be mapped and every mapped path must exist (a family bug otherwise); tied params
  (several Flax paths -> one HF name) must hold equal values. Each written tensor is checked to map back to the
  param exactly (transform(inverse(x)) == x), so a wrong inverse cannot go unnoticed.
  """
  flat = flatten(params)
  unmapped = sorted(set(flat) - set(mapping))
  if unmapped:
    raise ValueError(f"{source}: Flax params with no checkpoint name (cannot export): {unmapped[:5]}")
  absent = sorted(set(mapping) - set(flat))
  if absent:
    raise ValueError(f"{source}: the tensor map names Flax params the model does not have: {absent[:5]}")
  out: dict[str, np.ndarray] = {}
  for path, value in flat.items():
    ref = mapping[path]
    if ref.inverse is None:
      raise ValueError(f"{source}: Flax param {path!r} maps through a transform with no inverse; give its Ref "
                       "an inverse= (or add the pair to hf.INVERSES)")
    value = np.asarray(value, np.float32)
    tensor = np.ascontiguousarray(ref.inverse(value), dtype=np.float32)
    if not np.array_equal(ref.transform(tensor), value):
      raise ValueError(f"{source}: the inverse transform of {path!r} does not round-trip")
    name = ref.names[0]
    if name in out and not np.array_equal(out[name], tensor):
      raise ValueError(f"{source}: {name!r} is tied to several Flax params whose values differ")
    out[name] = tensor
  return out


def write_checkpoint(out_dir: str | os.PathLike, hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]
                     ) -> pathlib.Path:
  """Writes config.json and model.safetensors (float32, metadata format=pt) into an existing directory."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out_dir = pathlib.Path(out_dir)
  with open(out_dir / CONFIG_NAME, "w") as f:
    json.dump(dict(hf_config), f, indent=2, sort_keys=True)
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out_dir / SAFETENSORS_NAME),
            metadata={"format": "pt"})
  return out_dir
