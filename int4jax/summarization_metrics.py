"""ROUGE-1/2/L/Lsum for summaries, with `rouge-score` and the sentence split of HF's `run_summarization`.

As `run_summarization.postprocess_text` does: strip each text, put every sentence on its own line (ROUGE-Lsum is the
union-LCS over newline-separated sentences; the other three ignore newlines), and score with the Porter stemmer.
Scores are F-measures in percent, averaged over examples (the mean, where `evaluate`'s default reports the bootstrap
median `mid`, which differs from the mean by resampling noise only).

Sentences are split by NLTK's Punkt: the trained English model (`nltk.sent_tokenize`, what run_summarization calls)
when its data is installed, else Punkt with default parameters (no learned abbreviation list); `sentence_splitter()`
says which one ran, and results record it.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@functools.cache
def _splitter():
  import nltk  # pylint: disable=g-import-not-at-top
  try:
    nltk.data.find("tokenizers/punkt_tab/english")
    return "nltk.sent_tokenize (punkt_tab english)", nltk.sent_tokenize
  except LookupError:
    from nltk.tokenize.punkt import PunktSentenceTokenizer  # pylint: disable=g-import-not-at-top
    return "nltk PunktSentenceTokenizer() (untrained defaults)", PunktSentenceTokenizer().tokenize


def sentence_splitter() -> str:
  return _splitter()[0]


def sentences_per_line(text: str) -> str:
  """run_summarization's postprocessing: one sentence per line."""
  return "\n".join(_splitter()[1](text.strip()))


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE F-measures x 100 over the pairs; ValueError on unequal or empty lists."""
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f"ROUGE needs equally many predictions and references, got {len(predictions)} and "
                     f"{len(references)}")
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
  totals = dict.fromkeys(ROUGE_TYPES, 0.0)
  for pred, ref in zip(predictions, references):
    scores = scorer.score(sentences_per_line(ref), sentences_per_line(pred))
    for t in ROUGE_TYPES:
      totals[t] += scores[t].fmeasure
  return {t: 100.0 * v / len(predictions) for t, v in totals.items()}
