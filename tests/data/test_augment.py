"""TinyBERT-style augmentation: teacher-embedding neighbours, replacement statistics, cache keys and refusals."""

import gzip
import json

import numpy as np
import pytest

from int4jax.data import augment
from int4jax.data.glue import GlueExamples
from int4jax.tokenizers import load_tokenizer

SEED = 1234


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer("bert-base-uncased")


@pytest.fixture(scope="module")
def embeddings(tokenizer):
  """Random rows, except 'great' ~ 'good', 'film' ~ 'movie' and the pieces of 'unfathomable' near 'strange'."""
  rng = np.random.default_rng(SEED)
  emb = rng.normal(size=(len(tokenizer.get_vocab()), 16)).astype(np.float32)
  ids = lambda w: tokenizer.convert_tokens_to_ids(tokenizer.tokenize(w))
  (good,), (great,), (movie,), (film,), (strange,) = (ids(w) for w in ("good", "great", "movie", "film", "strange"))
  emb[great] = emb[good] + 0.01 * rng.normal(size=16)
  emb[film] = emb[movie] + 0.01 * rng.normal(size=16)
  for piece in ids("unfathomable"):
    emb[piece] = emb[strange] + 0.05 * rng.normal(size=16)
  return emb


def examples(pairs=False):
  a = ["a good movie , truly unfathomable .", "Good acting; the movie is good."]
  return GlueExamples(a * 5, (a[::-1] * 5) if pairs else None, np.asarray([1, 0] * 5, np.int32),
                      np.zeros(10, np.int32), "test")


def test_teacher_embedding_neighbours(tokenizer, embeddings):
  ex = examples()
  spec = augment.AugmentSpec("sst2", copies=2, seed=SEED)
  nb = augment.build_neighbours(tokenizer, embeddings, ex.text_a, spec)
  assert nb["good"][0] == "great" and nb["movie"][0] == "film"             # nearest by cosine, self excluded
  assert all(len(c) == augment.NUM_CANDIDATES and w.lower() not in c for w, c in nb.items())
  specials = set(tokenizer.all_special_tokens)
  assert not any(c.startswith("##") or c in specials or c.startswith("[") for cs in nb.values() for c in cs)
  assert "unfathomable" in nb and nb["unfathomable"][0] == "strange"      # multi-piece: mean of its pieces
  no_corpus = augment.build_neighbours(tokenizer, embeddings, ex.text_a,
                                       augment.AugmentSpec("sst2", 2, SEED, corpus_words=False))
  assert "unfathomable" not in no_corpus and no_corpus["good"] == nb["good"]
  with pytest.raises(ValueError, match="do not cover"):
    augment.build_neighbours(tokenizer, embeddings[:1000], ex.text_a, spec)


def test_replacement_rate_case_and_punctuation(tokenizer, embeddings):
  nb = {"good": ["great"], "movie": ["film"]}
  rng = np.random.default_rng(SEED)
  text = "Good, good movie."
  assert augment.perturb(text, nb, 1.0, rng) == "Great, great film."      # case and punctuation kept
  # Each replaceable word is replaced independently with p = 0.4: binomial, 5 sd tolerance.
  n, p = 3000, augment.REPLACE_PROB
  out = [augment.perturb("good", nb, p, rng) for _ in range(n)]
  rate = out.count("great") / n
  assert abs(rate - p) < 5 * np.sqrt(p * (1 - p) / n), (rate, SEED)
  assert augment.perturb("123 , ;", nb, 1.0, rng) == "123 , ;"


def test_copies_are_seeded_and_pairs_perturb_both_sides(tokenizer, embeddings):
  ex = examples(pairs=True)
  spec = augment.AugmentSpec("mrpc", copies=3, seed=SEED, replace_prob=1.0)
  nb = augment.build_neighbours(tokenizer, embeddings, ex.text_a + ex.text_b, spec)
  src, a, b = augment.augment_examples(ex, nb, spec)
  assert src.tolist() == [i for i in range(10) for _ in range(3)] and len(a) == len(b) == 30
  assert all(x != ex.text_a[i] for x, i in zip(a, src)) and all(x != ex.text_b[i] for x, i in zip(b, src))
  again = augment.augment_examples(ex, nb, spec)
  other = augment.augment_examples(ex, nb, augment.AugmentSpec("mrpc", 3, SEED + 1, replace_prob=1.0))
  assert again[1] == a and other[1] != a


def test_cache_is_reused_and_foreign_caches_are_refused(tokenizer, embeddings, tmp_path, monkeypatch):
  ex = examples()
  spec = augment.AugmentSpec("sst2", copies=2, seed=SEED)
  built = augment.load_or_build(spec, ex, tokenizer, embeddings, str(tmp_path))
  files = list(tmp_path.glob("*.jsonl.gz"))
  assert len(files) == 1 and len(built) == 20 and built.labels.tolist() == np.repeat(ex.labels, 2).tolist()
  monkeypatch.setattr(augment, "build_neighbours", lambda *a, **k: pytest.fail("cache not used"))
  cached = augment.load_or_build(spec, ex, tokenizer, embeddings, str(tmp_path))
  assert cached.text_a == built.text_a
  # A cache built for another tokenizer or task, given as an explicit file, is refused with the key named.
  header, *rows = gzip.open(files[0], "rt").read().splitlines()
  for key, value in (("tokenizer", "0" * 16), ("task", "mrpc")):
    bad = tmp_path / f"bad_{key}.jsonl.gz"
    with gzip.open(bad, "wt") as f:
      f.write("\n".join([json.dumps({**json.loads(header), key: value}), *rows]) + "\n")
    with pytest.raises(ValueError, match=f"another setting.*{key}"):
      augment.load_or_build(spec, ex, tokenizer, embeddings, str(bad))
  not_a_cache = tmp_path / "x.jsonl.gz"
  with gzip.open(not_a_cache, "wt") as f:
    f.write("hello\n")
  with pytest.raises(ValueError, match="not an int4jax augmentation cache"):
    augment.load_or_build(spec, ex, tokenizer, embeddings, str(not_a_cache))
  with pytest.raises(ValueError, match="must be positive"):
    augment.load_or_build(augment.AugmentSpec("sst2", copies=0), ex, tokenizer, embeddings, None)
