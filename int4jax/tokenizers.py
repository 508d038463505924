"""Tokenizers from transformers: a checkpoint directory, the offline vocabulary files, or the HF cache.

    tok = load_tokenizer("/path/to/checkpoint")          # AutoTokenizer from the same directory
    tok = load_tokenizer("bert-base-uncased")            # ../shared/data/tokenizers/bert-base-uncased/vocab.txt
    tok = load_tokenizer("gpt2")                         # ../shared/data/tokenizers/gpt2/{encoder.json,vocab.bpe}

The offline folder holds bare vocabulary files (no tokenizer_config.json), so those are built directly as
BertTokenizerFast and GPT2TokenizerFast (encoder.json + vocab.bpe) from the files.
"""

from __future__ import annotations

import inspect
import os
import pathlib

# Where ../shared/data lives relative to the repository; INT4JAX_SHARED_DATA overrides it.
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("INT4JAX_SHARED_DATA", _REPO_ROOT.parent / "shared" / "data"))


def shared_tokenizer_dir(name: str) -> pathlib.Path:
  return shared_data_dir() / "tokenizers" / name


_AUTO_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_tokenizer(name_or_path: str | os.PathLike, *, do_lower_case: bool | None = None):
  """A transformers fast tokenizer.

  Args:
    name_or_path: a directory (checkpoint dir with tokenizer files, or a bare vocab folder), a .gguf file (the
      tokenizer in its metadata), a folder name under ``<shared data>/tokenizers`` ("bert-base-uncased", "gpt2"),
      or a hub id present in the local HF cache.
    do_lower_case: for bare WordPiece vocabularies only; default: True unless the folder name says "cased".
  Raises:
    FileNotFoundError naming the path when nothing usable is found.
  """
  path = pathlib.Path(name_or_path).expanduser()
  if not path.is_dir() and not path.is_absolute() and shared_tokenizer_dir(str(name_or_path)).is_dir():
    path = shared_tokenizer_dir(str(name_or_path))
  if path.is_dir():
    return _from_dir(path, do_lower_case)
  if path.is_file() and path.suffix == ".gguf":   # transformers' GGUF tokenizer loader (needs the gguf package)
    from int4jax.models import gguf  # pylint: disable=g-import-not-at-top
    return gguf.load_tokenizer(path)
  if path.exists():
    raise NotADirectoryError(f"tokenizer path {str(path)!r} is a file; pass its directory")
  name = str(name_or_path)
  if path.is_absolute() or name.startswith("."):
    raise FileNotFoundError(f"tokenizer directory {name!r} does not exist")
  import transformers  # pylint: disable=g-import-not-at-top
  try:
    return transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
  except (OSError, ValueError) as e:
    raise FileNotFoundError(
        f"tokenizer {name!r}: no such directory, not under {str(shared_data_dir() / 'tokenizers')!r}, "
        f"and not in the Hugging Face cache") from e


def _from_dir(path: pathlib.Path, do_lower_case: bool | None):
  import transformers  # pylint: disable=g-import-not-at-top
  if any((path / f).is_file() for f in _AUTO_FILES):
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
  for vocab, merges in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
    if (path / vocab).is_file() and (path / merges).is_file():
      return _construct(transformers.GPT2TokenizerFast, vocab=path / vocab, merges=path / merges)
  if (path / "vocab.txt").is_file():
    if do_lower_case is None:
      do_lower_case = "uncased" in path.name or "cased" not in path.name
    return _construct(transformers.BertTokenizerFast, vocab=path / "vocab.txt", do_lower_case=do_lower_case)
  raise FileNotFoundError(
      f"tokenizer directory {str(path)!r} has none of tokenizer.json, tokenizer_config.json, vocab.txt, "
      f"encoder.json+vocab.bpe, vocab.json+merges.txt")


def _construct(cls, *, vocab: pathlib.Path, merges: pathlib.Path | None = None, **kwargs):
  """transformers 4 takes `vocab_file`/`merges_file`; 5 takes `vocab`/`merges` (and ignores the old names)."""
  params = inspect.signature(cls.__init__).parameters
  v4 = "vocab_file" in params
  kwargs["vocab_file" if v4 else "vocab"] = str(vocab)
  if merges is not None:
    kwargs["merges_file" if v4 else "merges"] = str(merges)
  return cls(**kwargs)
