"""Layer-reduced students: the layer map picks the right teacher layers for Att* / Rep, the student starts from
those teacher layers, and bad maps are clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int4jax.models import registry
from int4jax.models.outputs import ModelOutput, Taps
from int4jax.train import distill


def test_uniform_map_and_validation():
  assert distill.default_layer_map(3, 6) == (1, 3, 5) and distill.default_layer_map(6, 12) == (1, 3, 5, 7, 9, 11)
  assert distill.default_layer_map(4, 4) == (0, 1, 2, 3)
  with pytest.raises(ValueError, match="longer than the teacher's 6 layers"):
    distill.default_layer_map(7, 6)
  with pytest.raises(ValueError, match="longer than the teacher's 6 layers"):
    distill.validate_layer_map(range(7), 6)
  with pytest.raises(ValueError, match="strictly increasing"):
    distill.validate_layer_map((3, 1), 6)
  with pytest.raises(ValueError, match="0..5"):
    distill.validate_layer_map((0, 6), 6)
  with pytest.raises(ValueError, match="for a 2-layer student"):
    distill.validate_layer_map((0, 1, 2), 6, 2)
  with pytest.raises(ValueError, match="layer map is empty"):
    distill.validate_layer_map((), 6)


def test_kd_terms_compare_student_layer_i_with_teacher_layer_map_i():
  """Teacher taps tagged with their index: the mapped teacher must be hidden (0, 2, 4) and scores (1, 3)."""
  b, s, d, h = 2, 3, 4, 2
  tag = lambda v, shape: jnp.full(shape, float(v))
  teacher = ModelOutput(logits=jnp.zeros((b, 2)),
                        hidden_states=tuple(tag(i, (b, s, d)) for i in range(5)),
                        attention_scores=tuple(tag(i, (b, h, s, s)) for i in range(4)))
  mapped = distill.map_teacher_layers(teacher, (1, 3))
  assert [float(x[0, 0, 0]) for x in mapped.hidden_states] == [0, 2, 4]
  assert [float(x[0, 0, 0, 0]) for x in mapped.attention_scores] == [1, 3]
  assert [x.shape for x in mapped.hidden_states] == [(b, s, d)] * 3
  student = ModelOutput(logits=jnp.zeros((b, 2)), hidden_states=tuple(tag(0, (b, s, d)) for _ in range(3)),
                        attention_scores=tuple(tag(0, (b, h, s, s)) for _ in range(2)))
  _, parts = distill.kd_loss(student, teacher, None, jnp.ones((b, s)), ("att", "rep"), is_regression=False,
                             layer_map=(1, 3))
  assert float(parts["att"]) == 1 + 9 and float(parts["rep"]) == 0 + 4 + 16
  with pytest.raises(ValueError, match="attention layers"):
    distill.kd_loss(student, teacher, None, None, ("att",), is_regression=False)    # unmapped: 2 vs 4


def test_student_params_are_the_mapped_teacher_layers_and_its_forward_runs():
  cfg = registry.get_config("bert_tiny", num_layers=4, num_labels=2)
  teacher = registry.family("bert").build(cfg, "sequence_classification")
  ids = jnp.ones((2, 8), jnp.int32)
  t_params = teacher.init(jax.random.PRNGKey(1), ids, ids)["params"]
  s_params = distill.student_params_from_teacher(t_params, (1, 3))
  assert sorted(s_params["encoder"]) == ["layer_0", "layer_1"]
  for i, j in enumerate((1, 3)):
    jax.tree.map(np.testing.assert_array_equal, s_params["encoder"][f"layer_{i}"], t_params["encoder"][f"layer_{j}"])
  jax.tree.map(np.testing.assert_array_equal, s_params["embeddings"], t_params["embeddings"])
  student = registry.family("bert").build(registry.get_config("bert_tiny", num_layers=2, num_labels=2),
                                          "sequence_classification")
  out = student.apply({"params": s_params}, ids, ids, taps=Taps(hidden_states=True, attention_scores=True))
  t_out = teacher.apply({"params": t_params}, ids, ids, taps=Taps(hidden_states=True, attention_scores=True))
  mapped = distill.map_teacher_layers(t_out, (1, 3))
  assert [x.shape for x in out.hidden_states] == [x.shape for x in mapped.hidden_states]
  assert len(out.attention_scores) == len(mapped.attention_scores) == 2
  with pytest.raises(ValueError, match="no encoder"):
    distill.student_params_from_teacher(t_params, (1, 4))
