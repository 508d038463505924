"""train.loop.Deadline: the training time budget shared by the LM and summarization pipelines."""
import time

import pytest

from int4jax.train import loop


class Source:
  num_examples = 8

  def batch_at(self, step):
    return {"step": step}

  def position(self, step):
    return step


def test_no_deadline_never_stops_and_notes_the_second_batch():
  d = loop.Deadline(Source(), None)
  assert [d.batch_at(s)["step"] for s in range(3)] == [0, 1, 2]
  assert d.stopped_at is None and d.second_batch_at is not None and d.position(5) == 5


def test_past_deadline_stops_at_the_first_step_asked():
  d = loop.Deadline(Source(), time.time() - 1)
  with pytest.raises(loop.TimeBudgetExceeded) as e:
    d.batch_at(4)
  assert e.value.args == (4,) and d.stopped_at == 4


def test_with_best_dir_it_waits_for_a_saved_checkpoint(tmp_path):
  best = tmp_path / "best"
  d = loop.Deadline(Source(), time.time() - 1, str(best))
  assert d.batch_at(0) == {"step": 0} and d.stopped_at is None   # nothing to evaluate yet: keep training
  (best / "7").mkdir(parents=True)                                 # an evaluation saved best/ at step 7
  with pytest.raises(loop.TimeBudgetExceeded):
    d.batch_at(9)
  assert d.stopped_at == 9
