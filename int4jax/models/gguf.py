"""Llama-family checkpoints from GGUF files (llama.cpp), and a lossless block-packed copy that needs no `gguf` package.

Two readers hand the Llama family (llama.py) the same thing an HF checkpoint gives: a config.json-style dict and
float32 tensors under HF names (`model.layers.0.self_attn.q_proj.weight`, (out, in) layout).

1. `read_gguf(path)`: metadata and tensors through the `gguf` package (`GGUFReader`, `gguf.quants.dequantize`).
   Tensor types Q4_0, Q4_1, Q8_0, F16 and F32 are read; any other type raises ValueError naming the tensor and type.
   llama.cpp's converter permutes the rows of attn_q / attn_k so that its rotary kernel sees interleaved (even, odd)
   pairs; `unpermute_rotary` undoes it (HF's rotate_half pairs dimension i with i + head_dim/2).
2. A "qblocks" directory (`convert_gguf`): config.json, the tokenizer files, `qblocks.json` (the index) and the
   weights split over several `.npz` parts, so that a 98 MB GGUF travels in pieces of a size the caller picks. The
   blocks are re-encoded, not dequantized, so the copy is exactly as large as the GGUF and exactly as precise:
     Q4_1 (w = d * q + m, q in [0, 15], 32 weights per block)  -> "q4" uint8 [N, K/2] (formats.pack_uint4 along K),
                                                                  "scale" float16 [N, K/32] (d), "min" float16 (m);
     Q4_0 (w = d * (q - 8))                                    -> "i4" uint8 [N, K/2] (formats.pack_int4 of q - 8),
                                                                  "scale" float16 [N, K/32];
     Q8_0 (w = d * q, q int8)                                  -> "i8" int8 [N, K], "scale" float16 [N, K/32];
     F16 / F32                                                 -> "f" as stored.
   `read_qblocks` dequantizes in float32 exactly as ggml does (d * q + m with d, m widened from float16), so the
   result equals `gguf.quants.dequantize` bit for bit (tests). Rows are stored already un-permuted (a row
   permutation commutes with per-row blocks). Nothing here imports `gguf`: the GPU machine does not have it.

GGML block layouts (ggml-common.h): Q4_0 = [d f16][16 bytes: element j in the low nibble of byte j, j+16 in its high
nibble]; Q4_1 = [d f16][m f16][same 16 bytes]; Q8_0 = [d f16][32 x int8].
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from int4jax.quant import formats

BLOCK = 32                       # weights per block in Q4_0 / Q4_1 / Q8_0
SUPPORTED_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
QBLOCKS_INDEX = "qblocks.json"

_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
_LAYER_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def is_gguf(path: str | os.PathLike) -> bool:
  return str(path).endswith(".gguf") and pathlib.Path(path).is_file()


def hf_name(gguf_name: str) -> str:
  """GGUF tensor name -> HF Llama name; ValueError for tensors the Llama family has no place for."""
  if gguf_name in _GLOBAL_NAMES:
    return _GLOBAL_NAMES[gguf_name]
  m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
  if m is None or m.group(2) not in _LAYER_NAMES:
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Llama counterpart (rope_freqs, MoE and other extras are "
                     "not supported)")
  return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"


def unpermute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverse of llama.cpp's `permute` (convert_hf_to_gguf.py) along axis 0: rows (head, pair, 2) -> (head, 2, pair).

  `n_head` is the number of heads of the tensor: attention heads for attn_q, K/V heads for attn_k.
  """
  rows = w.shape[0]
  if rows % (2 * n_head):
    raise ValueError(f"cannot un-permute {rows} rows into {n_head} heads of rotary pairs")
  return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rotary_heads(name: str, config: Mapping[str, Any]) -> int | None:
  if name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.q_proj.bias"):
    return config["num_attention_heads"]
  if name.endswith("self_attn.k_proj.weight") or name.endswith("self_attn.k_proj.bias"):
    return config["num_key_value_heads"]
  return None


# ------------------------------------------------------------------------------------------------- GGUF metadata

def _field(reader, key: str, default: Any = None, required: bool = True):
  f = reader.fields.get(key)
  if f is None:
    if required and default is None:
      raise ValueError(f"GGUF file has no metadata key {key!r}")
    return default
  return f.contents()


def config_from_reader(reader) -> dict[str, Any]:
  """An HF LlamaConfig-style dict from GGUF metadata (`{arch}.block_count`, ...); ValueError for non-Llama files."""
  arch = _field(reader, "general.architecture")
  if arch != "llama":
    raise ValueError(f"GGUF general.architecture={arch!r} is not supported (only 'llama')")
  scaling = _field(reader, f"{arch}.rope.scaling.type", "none", required=False)
  if scaling not in ("none", None):
    raise ValueError(f"GGUF {arch}.rope.scaling.type={scaling!r} is not supported (only unscaled rotary)")
  heads = int(_field(reader, f"{arch}.attention.head_count"))
  hidden = int(_field(reader, f"{arch}.embedding_length"))
  head_dim = int(_field(reader, f"{arch}.rope.dimension_count", hidden // heads, required=False))
  if head_dim != hidden // heads:
    raise ValueError(f"GGUF {arch}.rope.dimension_count={head_dim} differs from embedding_length / head_count "
                     f"= {hidden // heads}: partial rotary is not supported")
  vocab = _field(reader, f"{arch}.vocab_size", None, required=False)
  if vocab is None:
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
  names = {t.name for t in reader.tensors}
  return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": int(vocab),
          "hidden_size": hidden, "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
          "num_hidden_layers": int(_field(reader, f"{arch}.block_count")), "num_attention_heads": heads,
          "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv", heads, required=False)),
          "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 2048, required=False)),
          "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
          "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0, required=False)),
          "tie_word_embeddings": "output.weight" not in names, "hidden_act": "silu",
          "attention_bias": "blk.0.attn_q.bias" in names}


def _open(path: str | os.PathLike):
  try:
    import gguf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading {str(path)!r} needs the `gguf` package (pip install gguf); a qblocks directory "
                      "(int4jax.models.gguf.convert_gguf) does not") from e
  return gguf.GGUFReader(str(path))


def _check_types(reader) -> None:
  """ValueError naming the first tensor of an unsupported type, before anything is dequantized."""
  for t in reader.tensors:
    if t.tensor_type.name not in SUPPORTED_TYPES:
      raise ValueError(f"GGUF tensor {t.name!r} has type {t.tensor_type.name}, which is not supported "
                       f"(supported: {', '.join(SUPPORTED_TYPES)})")


def read_config(path: str | os.PathLike) -> dict[str, Any]:
  return config_from_reader(_open(path))


def read_gguf(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(config dict, {HF name: float32 array}) of a Llama GGUF file, dequantized with `gguf.quants.dequantize`."""
  import gguf  # pylint: disable=g-import-not-at-top
  reader = _open(path)
  config = config_from_reader(reader)
  _check_types(reader)
  tensors = {}
  for t in reader.tensors:
    name = hf_name(t.name)
    w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    w = w.reshape(tuple(int(n) for n in reversed(t.shape)))   # GGML shape is (ne0 = in, ne1 = out)
    heads = _rotary_heads(name, config)
    tensors[name] = w if heads is None else unpermute_rotary(w, heads)
  return config, tensors


# ------------------------------------------------------------------------------------------ block re-encoding

def _blocks(t, bytes_per_block: int) -> np.ndarray:
  """Raw bytes of a quantized GGUF tensor as uint8 [rows, blocks, bytes_per_block]."""
  data = np.asarray(t.data, np.uint8)
  rows = int(np.prod([int(n) for n in t.shape[1:]]))
  return data.reshape(rows, -1, bytes_per_block)


def _f16(b: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(b).view(np.float16)[..., 0]


def _nibbles(qs: np.ndarray) -> np.ndarray:
  """[rows, blocks, 16] bytes -> [rows, blocks * 32] values in [0, 15], in ggml's element order."""
  q = np.concatenate([qs & 0xF, qs >> 4], axis=-1)   # element j: low nibble of byte j; j + 16: its high nibble
  return q.reshape(q.shape[0], -1)


def encode_tensor(t) -> dict[str, np.ndarray]:
  """One GGUF tensor as qblocks fields (see the module docstring), rows in GGUF order."""
  kind = t.tensor_type.name
  if kind in ("F32", "F16"):
    return {"f": np.asarray(t.data).reshape(tuple(int(n) for n in reversed(t.shape)))}
  if kind == "Q8_0":
    b = _blocks(t, 2 + BLOCK)
    return {"i8": b[..., 2:].view(np.int8).reshape(b.shape[0], -1), "scale": _f16(b[..., :2])}
  if kind == "Q4_1":
    b = _blocks(t, 4 + BLOCK // 2)
    q = _nibbles(b[..., 4:])
    return {"q4": np.asarray(formats.pack_uint4(q, axis=-1)), "scale": _f16(b[..., :2]), "min": _f16(b[..., 2:4])}
  if kind == "Q4_0":
    b = _blocks(t, 2 + BLOCK // 2)
    q = _nibbles(b[..., 2:]).astype(np.int8) - 8
    return {"i4": np.asarray(formats.pack_int4(q, axis=-1)), "scale": _f16(b[..., :2])}
  raise ValueError(f"GGUF tensor {t.name!r} has type {kind}, which is not supported "
                   f"(supported: {', '.join(SUPPORTED_TYPES)})")


def decode_tensor(fields: Mapping[str, np.ndarray]) -> np.ndarray:
  """qblocks fields -> float32 weights, the same arithmetic as ggml's dequantization."""
  if "f" in fields:
    return np.asarray(fields["f"], np.float32)
  scale = np.repeat(np.asarray(fields["scale"], np.float32), BLOCK, axis=-1)
  if "i8" in fields:
    return scale * np.asarray(fields["i8"], np.float32)
  if "i4" in fields:
    return scale * np.asarray(formats.unpack_int4(fields["i4"], axis=-1), np.float32)
  q = np.asarray(formats.unpack_uint4(fields["q4"], axis=-1), np.float32)
  return scale * q + np.repeat(np.asarray(fields["min"], np.float32), BLOCK, axis=-1)


def _sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike, *, max_part_bytes: int = 50 << 20,
                 tokenizer: bool = True) -> dict[str, Any]:
  """Writes the qblocks directory of a Llama GGUF file (see the module docstring); returns the index.

  Tensors are written in file order and a new part starts when the next tensor would push the current one past
  `max_part_bytes` (a single larger tensor gets a part of its own). `tokenizer`: also save the tokenizer that
  transformers' GGUF loader builds from the file's metadata (tokenizer.json, tokenizer_config.json).
  """
  path, out_dir = pathlib.Path(path), pathlib.Path(out_dir)
  reader = _open(path)
  config = config_from_reader(reader)
  _check_types(reader)
  out_dir.mkdir(parents=True, exist_ok=True)
  parts: list[dict[str, np.ndarray]] = [{}]
  sizes = [0]
  tensor_part: dict[str, int] = {}
  for t in reader.tensors:
    name = hf_name(t.name)
    fields = encode_tensor(t)
    heads = _rotary_heads(name, config)
    if heads is not None:
      fields = {k: unpermute_rotary(v, heads) for k, v in fields.items()}
    size = sum(v.nbytes for v in fields.values())
    if sizes[-1] and sizes[-1] + size > max_part_bytes:
      parts.append({})
      sizes.append(0)
    parts[-1].update({f"{name}::{k}": v for k, v in fields.items()})
    sizes[-1] += size
    tensor_part[name] = len(parts) - 1
  files = [f"qblocks-{i:05d}-of-{len(parts):05d}.npz" for i in range(len(parts))]
  for fname, arrays in zip(files, parts):
    np.savez(out_dir / fname, **arrays)
  index = {"format": "int4jax-qblocks-v1", "source": path.name, "source_sha256": _sha256(path),
           "parts": {f: {"bytes": (out_dir / f).stat().st_size, "sha256": _sha256(out_dir / f)} for f in files},
           "tensors": {n: files[i] for n, i in tensor_part.items()}}
  with open(out_dir / QBLOCKS_INDEX, "w") as f:
    json.dump(index, f, indent=1)
  with open(out_dir / "config.json", "w") as f:
    json.dump(config, f, indent=1)
  if tokenizer:
    load_tokenizer(path).save_pretrained(str(out_dir))
  return index


def read_qblocks(ckpt_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """{HF name: float32} from a qblocks directory; FileNotFoundError naming any missing or altered part."""
  ckpt_dir = pathlib.Path(ckpt_dir)
  with open(ckpt_dir / QBLOCKS_INDEX) as f:
    index = json.load(f)
  missing = [p for p in index["parts"] if not (ckpt_dir / p).is_file()]
  if missing:
    raise FileNotFoundError(f"qblocks checkpoint {str(ckpt_dir)!r} lacks part(s) {missing}: copy every file listed "
                            f"in {QBLOCKS_INDEX}")
  fields: dict[str, dict[str, np.ndarray]] = {}
  for part, info in index["parts"].items():
    if (ckpt_dir / part).stat().st_size != info["bytes"]:
      raise FileNotFoundError(f"qblocks part {str(ckpt_dir / part)!r} has {(ckpt_dir / part).stat().st_size} "
                              f"bytes, the index says {info['bytes']} (truncated copy?)")
    with np.load(ckpt_dir / part) as z:
      for key in z.files:
        name, field = key.split("::")
        fields.setdefault(name, {})[field] = z[key]
  absent = sorted(set(index["tensors"]) - set(fields))
  if absent:
    raise ValueError(f"qblocks checkpoint {str(ckpt_dir)!r}: tensors {absent[:5]} are listed but not stored")
  return {name: decode_tensor(f) for name, f in fields.items()}


def is_qblocks_dir(path: str | os.PathLike) -> bool:
  return (pathlib.Path(path) / QBLOCKS_INDEX).is_file()


def load_tokenizer(path: str | os.PathLike):
  """The tokenizer transformers builds from a GGUF file's metadata (needs the `gguf` package; offline)."""
  import transformers  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


# ------------------------------------------------------------------------------------------------- writing

def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's `permute` of attn_q / attn_k rows (the inverse of `unpermute_rotary`)."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: str | os.PathLike, hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *,
               matrix_type: str = "Q4_1", embedding_type: str = "Q8_0") -> None:
  """A Llama GGUF file as llama.cpp lays it out (q/k rows permuted), quantized with `gguf.quants.quantize`: 2-D
  layer weights as `matrix_type`, the embedding as `embedding_type`, norms F32. For smoke runs and fixtures."""
  import gguf  # pylint: disable=g-import-not-at-top
  c = hf_config
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_block_count(c["num_hidden_layers"])
  writer.add_context_length(c["max_position_embeddings"])
  writer.add_embedding_length(c["hidden_size"])
  writer.add_feed_forward_length(c["intermediate_size"])
  writer.add_head_count(c["num_attention_heads"])
  writer.add_head_count_kv(c.get("num_key_value_heads") or c["num_attention_heads"])
  writer.add_rope_freq_base(float(c.get("rope_theta", 10000.0)))
  writer.add_layer_norm_rms_eps(float(c["rms_norm_eps"]))
  writer.add_rope_dimension_count(c["hidden_size"] // c["num_attention_heads"])
  writer.add_vocab_size(c["vocab_size"])
  inverse = {v: k for k, v in _GLOBAL_NAMES.items()}
  inverse.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{g}.weight" for i in range(c["num_hidden_layers"])
                  for g, hf in _LAYER_NAMES.items()})
  kv_heads = c.get("num_key_value_heads") or c["num_attention_heads"]
  for name, w in tensors.items():
    if name == "lm_head.weight" and c.get("tie_word_embeddings"):
      continue
    w = np.asarray(w, np.float32)
    heads = _rotary_heads(name, {"num_attention_heads": c["num_attention_heads"], "num_key_value_heads": kv_heads})
    if heads is not None:
      w = permute_rotary(w, heads)
    kind = embedding_type if name == "model.embed_tokens.weight" else matrix_type if w.ndim == 2 else "F32"
    if kind == "F32":
      writer.add_tensor(inverse[name], w)
    elif kind == "F16":
      writer.add_tensor(inverse[name], w.astype(np.float16))
    else:
      qtype = gguf.GGMLQuantizationType[kind]
      writer.add_tensor(inverse[name], gguf.quants.quantize(w, qtype), raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
