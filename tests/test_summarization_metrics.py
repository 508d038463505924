"""ROUGE against hand-counted examples (unigram/bigram overlaps and LCS worked out in the comments)."""
import pytest

from int4jax import summarization_metrics as sm


def test_identical_texts_score_100():
  assert sm.rouge(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(
      dict.fromkeys(sm.ROUGE_TYPES, 100.0))


def test_hand_counted_overlaps():
  # pred 7 tokens, ref 6: unigram overlap {the x2, cat, was, under, bed} = 6 -> F1 = 2*(6/7)*1/(6/7+1) = 12/13.
  # bigrams: pred 6, ref 5, shared {the cat, cat was, under the, the bed} = 4 -> F = 2*(4/6)(4/5)/(4/6+4/5) = 8/11.
  # LCS = "the cat was under the bed" = 6 -> same as ROUGE-1; one sentence each, so Lsum = L.
  got = sm.rouge(["the cat was found under the bed"], ["the cat was under the bed"])
  assert got == pytest.approx({"rouge1": 1200 / 13, "rouge2": 800 / 11, "rougeL": 1200 / 13,
                               "rougeLsum": 1200 / 13})


def test_lsum_uses_the_sentence_split():
  # Swapped sentences: LCS over the whole text is 3 of 6 tokens (50), but each reference sentence is found whole in
  # some prediction sentence, so the summary-level union-LCS is 6/6 (100). Without the split Lsum would equal L.
  got = sm.rouge(["The dog barked. The cat ran."], ["The cat ran. The dog barked."])
  assert got["rougeL"] == pytest.approx(50.0) and got["rougeLsum"] == pytest.approx(100.0)
  assert sm.sentences_per_line(" The dog barked. The cat ran. ") == "The dog barked.\nThe cat ran."


def test_mean_over_examples_and_bad_input():
  got = sm.rouge(["a b", "c d"], ["a b", "x y"])
  assert got["rouge1"] == pytest.approx(50.0)
  with pytest.raises(ValueError, match="equally many"):
    sm.rouge(["a"], [])
