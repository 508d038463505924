"""TinyBERT-style data augmentation for distilling small GLUE tasks, built offline from the teacher itself.

    nb = build_neighbours(tokenizer, word_embeddings, corpus_texts, spec)      # word -> candidate replacements
    texts = augment_examples(examples, nb, spec)                               # N copies of every example
    aug = load_or_build(spec, examples, tokenizer, word_embeddings, cache)     # the same, cached on disk

Why and what. The paper trains its small-task students (CoLA, MRPC, QNLI, RTE, SST-2, STS-B; Table C.4) on
TinyBERT's augmented data (Jiao et al. 2020, §3.1): every example yields N_a copies in which each word is, with
probability p_t = 0.4, replaced by one of K = 15 candidates; the candidates of a single-wordpiece word come from
BERT's masked-LM predictions, those of a multi-piece word from its GloVe nearest neighbours. Neither BERT's MLM
head nor GloVe is reachable offline, so the candidates here come from the teacher's own input embeddings:

  * single-wordpiece words: the K nearest whole-word vocabulary entries by cosine of the teacher's word
    embedding rows (no `##` pieces, no special or `[unused]` tokens, not the word itself);
  * multi-piece words (`corpus_words=True`, the stand-in for GloVe): each alphabetic word of the training corpus
    is embedded as the mean of its wordpiece rows and joins the candidate pool, so multi-piece words get
    neighbours too (and may be proposed as replacements); with `corpus_words=False` they are never replaced;
  * words are whitespace tokens; punctuation attached to a word ('brother,') is kept around the replacement;
    numbers, mixed tokens and the few words that map to [UNK] are never replaced.

Input-embedding neighbours are mostly morphological variants and near-synonyms ("good" -> "great", "nice",
"goods"), sometimes antonyms ("good" -> "bad"). That is acceptable because augmented examples are labelled by
the teacher only: the student is trained on them with the KD terms (Logit + Att* + Rep), never with a
ground-truth loss (a run that asks for the `gt` term together with augmentation is refused; the copies keep
their source's label only so the arrays have one shape). Pairs (MRPC, RTE, ...) perturb both sentences
independently. Cost: one cosine top-K over (unique corpus words) x (pool) — seconds for SST-2 / MRPC — plus
the python replacement loop, about 1 s per 100k words written; TinyBERT's MLM pass costs a BERT forward per
word and GloVe a 1 GB download.

The result (texts, not token ids: readable and small) is cached as gzip JSON lines, one file per (task,
tokenizer, seed, N, p, K, corpus_words) whose header holds that key plus a fingerprint of the source examples;
a cache that was built for another tokenizer, task or source is refused with the differing keys named.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re

import numpy as np

from int4jax.data.glue import GlueExamples

FORMAT = "int4jax-augment/1"
REPLACE_PROB = 0.4     # TinyBERT p_t
NUM_CANDIDATES = 15    # TinyBERT K (the M of its data_augmentation.py)
PAPER_COPIES = 20      # TinyBERT N_a (paper; its script's default is 30)

_WORD = re.compile(r"^[A-Za-z]+$")
_TOKEN = re.compile(r"^([^A-Za-z]*)([A-Za-z]+)([^A-Za-z]*)$")   # a word with punctuation attached: 'brother,' 


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """What defines an augmented set (all of it goes into the cache key)."""
  task: str
  copies: int                       # N: augmented copies per example (the originals are kept besides)
  seed: int = 0
  replace_prob: float = REPLACE_PROB
  num_candidates: int = NUM_CANDIDATES
  corpus_words: bool = True

  def validate(self) -> None:
    if self.copies <= 0:
      raise ValueError(f"--augment={self.copies}: the number of augmented copies must be positive")
    if not 0 < self.replace_prob <= 1:
      raise ValueError(f"augmentation replace_prob={self.replace_prob} must be in (0, 1]")
    if self.num_candidates <= 0:
      raise ValueError(f"augmentation num_candidates={self.num_candidates} must be positive")


# ----------------------------------------------------------------------------------------------
# Fingerprints


def _sha(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
  """Vocabulary + normalisation: two tokenizers with equal fingerprints split every text the same way."""
  lower = getattr(tokenizer, "do_lower_case", None)
  return _sha({"vocab": sorted(tokenizer.get_vocab().items()), "lower": lower, "cls": type(tokenizer).__name__})


def examples_fingerprint(ex: GlueExamples) -> str:
  return _sha({"a": ex.text_a, "b": ex.text_b, "labels": np.asarray(ex.labels).tolist()})


# ----------------------------------------------------------------------------------------------
# Candidates


def words_of(texts) -> list[str]:
  """The distinct replaceable words (alphabetic whitespace tokens) of some texts, sorted."""
  return sorted({m.group(2) for t in texts if t for w in t.split() if (m := _TOKEN.match(w))})


def _whole_word_ids(tokenizer) -> tuple[list[str], np.ndarray]:
  """Vocabulary entries that are whole alphabetic words (no ## continuation, special or unused tokens)."""
  special = set(tokenizer.all_special_tokens)
  items = sorted((i, t) for t, i in tokenizer.get_vocab().items() if _WORD.match(t) and t not in special)
  return [t for _, t in items], np.asarray([i for i, _ in items], np.int64)


def _unit_rows(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def build_neighbours(tokenizer, word_embeddings: np.ndarray, corpus_texts, spec: AugmentSpec
                     ) -> dict[str, list[str]]:
  """word (as written in the corpus, case-folded by the tokenizer) -> up to K replacement words, nearest first.

  word_embeddings: [vocab, hidden], the teacher's input embedding table (rows indexed by token id)."""
  emb = np.asarray(word_embeddings, np.float32)
  vocab_size = len(tokenizer.get_vocab())
  if emb.ndim != 2 or emb.shape[0] < vocab_size:
    raise ValueError(f"word embeddings {emb.shape} do not cover the tokenizer's {vocab_size} ids: "
                     f"is the teacher from another tokenizer?")
  unk = tokenizer.unk_token_id
  pool_words, pool_ids = _whole_word_ids(tokenizer)
  pool_vecs = [emb[pool_ids]]
  query_words, query_vecs, single = [], [], []
  known = set(pool_words)
  extra = []
  for word in words_of(corpus_texts):
    ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
    if not ids or unk in ids:
      continue
    if len(ids) > 1 and not spec.corpus_words:
      continue
    vec = emb[ids].mean(axis=0)
    query_words.append(word)
    query_vecs.append(vec)
    single.append(len(ids) == 1)
    if len(ids) > 1 and word.lower() not in known:
      extra.append(word.lower())
      known.add(word.lower())
      pool_vecs.append(vec[None])
  if not query_words:
    return {}
  pool = _unit_rows(np.concatenate(pool_vecs))
  pool_names = pool_words + extra
  queries = _unit_rows(np.stack(query_vecs))
  k = min(spec.num_candidates + 1, len(pool_names))
  single = np.asarray(single)
  out: dict[str, list[str]] = {}
  for start in range(0, len(queries), 1024):
    sims = queries[start:start + 1024] @ pool.T
    # Single-piece words draw from whole-word vocabulary entries only (TinyBERT's MLM candidates are single
    # pieces); multi-piece words from the whole pool, corpus words included (its GloVe stand-in).
    sims[np.ix_(single[start:start + 1024], np.arange(len(pool_words), len(pool_names)))] = -np.inf
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    for row, word in enumerate(query_words[start:start + 1024]):
      order = top[row][np.argsort(-sims[row, top[row]], kind="stable")]
      cands = [pool_names[j] for j in order if pool_names[j] != word.lower()][:spec.num_candidates]
      if cands:
        out[word] = cands
  return out


# ----------------------------------------------------------------------------------------------
# Augmentation


def _match_case(source: str, replacement: str) -> str:
  if source.isupper() and len(source) > 1:
    return replacement.upper()
  if source[:1].isupper():
    return replacement[:1].upper() + replacement[1:]
  return replacement


def perturb(text: str, neighbours: dict[str, list[str]], replace_prob: float, rng: np.random.Generator) -> str:
  """Each whitespace word with candidates is replaced with probability replace_prob by a uniform candidate."""
  words = text.split(" ")
  for i, w in enumerate(words):
    m = _TOKEN.match(w)
    cands = (neighbours.get(m.group(2)) or neighbours.get(m.group(2).lower())) if m else None
    if cands and rng.random() < replace_prob:
      pre, core, post = m.groups()
      words[i] = pre + _match_case(core, cands[int(rng.integers(len(cands)))]) + post
  return " ".join(words)


def augment_examples(ex: GlueExamples, neighbours: dict[str, list[str]], spec: AugmentSpec
                     ) -> tuple[np.ndarray, list[str], list[str] | None]:
  """(source index [n * N], text_a, text_b): N perturbed copies of each example, in example order."""
  rng = np.random.default_rng([spec.seed, 0xA06])
  src, a_out, b_out = [], [], None if ex.text_b is None else []
  for i, a in enumerate(ex.text_a):
    for _ in range(spec.copies):
      src.append(i)
      a_out.append(perturb(a, neighbours, spec.replace_prob, rng))
      if b_out is not None:
        b_out.append(perturb(ex.text_b[i], neighbours, spec.replace_prob, rng))
  return np.asarray(src, np.int64), a_out, b_out


def as_examples(ex: GlueExamples, src: np.ndarray, text_a: list[str], text_b: list[str] | None,
                source: str) -> GlueExamples:
  """The augmented copies as GlueExamples; labels are the source's (unused: the teacher labels them)."""
  return GlueExamples(text_a, text_b, np.asarray(ex.labels)[src], np.asarray(ex.split_ids)[src], source)


# ----------------------------------------------------------------------------------------------
# Cache


def cache_header(spec: AugmentSpec, tokenizer, ex: GlueExamples) -> dict:
  return {"format": FORMAT, **dataclasses.asdict(spec), "tokenizer": tokenizer_fingerprint(tokenizer),
          "source": examples_fingerprint(ex), "num_source": len(ex)}


def cache_path(cache: str, header: dict) -> str:
  """cache: a directory (file name derived from the key) or a .jsonl.gz file."""
  if cache.endswith(".jsonl.gz"):
    return cache
  name = (f"{header['task']}_n{header['copies']}_seed{header['seed']}_p{header['replace_prob']}"
          f"_k{header['num_candidates']}{'_corpus' if header['corpus_words'] else ''}_tok{header['tokenizer'][:8]}"
          f".jsonl.gz")
  return os.path.join(cache, name)


def read_header(path: str) -> dict:
  with gzip.open(path, "rt", encoding="utf-8") as f:
    first = f.readline()
  try:
    header = json.loads(first)
  except json.JSONDecodeError:
    header = None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise ValueError(f"{path!r} is not an int4jax augmentation cache (format {FORMAT})")
  return header


def check_header(path: str, found: dict, expected: dict) -> None:
  differ = sorted(k for k in expected if found.get(k) != expected[k])
  if differ:
    what = ", ".join(f"{k}: cache {found.get(k)!r} vs this run {expected[k]!r}" for k in differ)
    raise ValueError(f"augmentation cache {path!r} was built for another setting ({what}); delete it or point "
                     f"--augment_cache elsewhere")


def write_cache(path: str, header: dict, src: np.ndarray, text_a: list[str], text_b: list[str] | None) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with gzip.open(tmp, "wt", encoding="utf-8") as f:
    f.write(json.dumps(header, sort_keys=True) + "\n")
    for j, i in enumerate(src.tolist()):
      f.write(json.dumps([i, text_a[j], None if text_b is None else text_b[j]], ensure_ascii=False) + "\n")
  os.replace(tmp, path)  # atomic: concurrent runs building the same cache never see half a file


def read_cache(path: str) -> tuple[dict, np.ndarray, list[str], list[str] | None]:
  header = read_header(path)
  with gzip.open(path, "rt", encoding="utf-8") as f:
    f.readline()
    rows = [json.loads(line) for line in f if line.strip()]
  src = np.asarray([r[0] for r in rows], np.int64)
  text_b = None if not rows or rows[0][2] is None else [r[2] for r in rows]
  return header, src, [r[1] for r in rows], text_b


def load_or_build(spec: AugmentSpec, ex: GlueExamples, tokenizer, word_embeddings: np.ndarray,
                  cache: str | None) -> GlueExamples:
  """The augmented copies of `ex` (not including `ex`), from `cache` when it holds them, else built (and
  written there when cache is given). A cache file for another key is refused."""
  spec.validate()
  header = cache_header(spec, tokenizer, ex)
  path = None if cache is None else cache_path(cache, header)
  if path is not None and os.path.exists(path):
    check_header(path, read_header(path), header)
    _, src, text_a, text_b = read_cache(path)
    return as_examples(ex, src, text_a, text_b, path)
  corpus = list(ex.text_a) + list(ex.text_b or [])
  neighbours = build_neighbours(tokenizer, word_embeddings, corpus, spec)
  src, text_a, text_b = augment_examples(ex, neighbours, spec)
  if path is not None:
    write_cache(path, header, src, text_a, text_b)
  return as_examples(ex, src, text_a, text_b, path or f"augment({ex.source})")


def default_cache_dir() -> str:
  """$INT4JAX_CACHE/augment, default ~/.cache/int4jax/augment."""
  root = os.environ.get("INT4JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "int4jax")
  return os.path.join(root, "augment")
