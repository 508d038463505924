"""KD through a layer map (shallower students): which teacher layers pair with which student layers, bad maps."""
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.train import distill


def test_layer_map_selects_teacher_layers():
  teacher = [jnp.full((1, 2, 3), float(i)) for i in range(7)]          # hidden states: embedding + 6 layers
  student = [jnp.zeros((1, 2, 3))] * 3                                  # embedding + 2 layers
  # pairs: emb <- 0 (0), layer 0 <- teacher layer 0 (hidden 1), layer 1 <- teacher layer 5 (hidden 6)
  assert float(distill.hidden_state_mse(student, teacher, layer_map=(0, 5))) == pytest.approx(0 + 1 + 36)
  scores_t = [jnp.full((1, 1, 2, 2), float(i)) for i in range(6)]
  assert float(distill.attention_score_mse([jnp.zeros((1, 1, 2, 2))] * 2, scores_t, layer_map=(1, 3))) == \
      pytest.approx(1 + 9)
  pair = jnp.array([[1.0, 0.0], [1.0, 1.0]])                            # causal pairs only
  s = [jnp.zeros((1, 1, 2, 2))]
  t = [jnp.array([[[[2.0, 100.0], [2.0, 2.0]]]])]
  assert float(distill.pair_masked_score_mse(s, t, pair)) == pytest.approx(4.0)


def test_ends_maps_and_bad_maps():
  """BART's maps: evenly spaced with both ends (deeper students repeat layers), any order (not strictly increasing)."""
  ends = lambda s, t: distill.default_layer_map(s, t, spacing="ends")
  assert ends(6, 6) == tuple(range(6))
  assert ends(1, 6) == (5,) and ends(2, 6) == (0, 5)
  assert ends(3, 12) == (0, 6, 11)   # evenly spaced (round half to even), ends included
  assert ends(8, 6) == (0, 1, 1, 2, 3, 4, 4, 5)
  loose = dict(strictly_increasing=False, what="--decoder_layer_map")
  assert distill.validate_layer_map((5, 0, 5), 6, 3, **loose) == (5, 0, 5)
  with pytest.raises(ValueError, match=r"--decoder_layer_map \[0, 6\] names teacher layer\(s\) \[6\].*0..5"):
    distill.validate_layer_map((0, 6), 6, 2, **loose)
  with pytest.raises(ValueError, match="has 1 entries for a 2-layer student"):
    distill.validate_layer_map((0,), 6, 2, **loose)
  with pytest.raises(ValueError, match="spacing 'even' is not one of"):
    distill.default_layer_map(2, 6, spacing="even")
  with pytest.raises(ValueError, match="2 student vs 3 teacher"):
    distill.hidden_state_mse([np.zeros(1)] * 2, [np.zeros(1)] * 3)
