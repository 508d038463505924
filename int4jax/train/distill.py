"""Knowledge-distillation losses of the paper's BERT recipe (paper_spec.md §2.3). Pure, jittable, fp32.

Recipe (DeepSpeedExamples XTC `forward_loss`, one-stage): loss = L_logit + L_att + L_rep, all weights 1, no
temperature, and no ground-truth term for BERT.
  L_logit: soft cross-entropy mean(-softmax(t) * log_softmax(s)) over *all* batch x class elements (so it is
           divided by the number of classes, as nn.Module mean reduction does); MSE for regression (STS-B).
  L_att:   sum over layers of MSE between pre-softmax scores QK^T/sqrt(d) (the paper's Att*). Unlike DSE we drop
           every (query, key) pair that touches padding: padded scores carry no information, and the reference
           only got away with including them because the -10000 additive mask cancels in fp32.
  L_rep:   sum over hidden states 0..L (0 = embedding output) of MSE; padded tokens excluded when a mask is given.
Each function takes `weights` / `attention_mask` so padding never enters the means.

Layer maps (students with fewer layers than the teacher): `layer_map[i]` is the teacher layer that student layer i
learns from (0-based), so Att* compares student layer i with teacher layer layer_map[i], and Rep compares student
hidden state i+1 with teacher hidden state layer_map[i]+1 (hidden state 0, the embedding output, with 0).
`validate_layer_map` checks a map and `default_layer_map` chooses one (TinyBERT's uniform spacing, or evenly spaced
from the first to the last layer); both are at the end of this module, with the helpers that apply a map.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

LOSS_TERMS = ("logit", "att", "rep", "gt")
PAPER_BERT_LOSS_TERMS = ("logit", "att", "rep")


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def soft_cross_entropy(student_logits, teacher_logits):
  """[batch, classes] x2 -> scalar; mean over batch and classes of -softmax(t) log_softmax(s)."""
  t = jax.nn.softmax(_f32(teacher_logits), axis=-1)
  return jnp.mean(-t * jax.nn.log_softmax(_f32(student_logits), axis=-1))


def mse(a, b):
  return jnp.mean(jnp.square(_f32(a) - _f32(b)))


def _masked_mse(a, b, mask):
  """mean of (a-b)^2 over the elements where the broadcast mask is 1."""
  sq = jnp.square(_f32(a) - _f32(b))
  mask = jnp.broadcast_to(_f32(mask), sq.shape)
  return jnp.sum(sq * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def attention_score_mse(student_scores: Sequence[jax.Array], teacher_scores: Sequence[jax.Array],
                        attention_mask=None, layer_map: Sequence[int] | None = None):
  """Att*: sum over layers of MSE on [batch, heads, q, k] pre-softmax scores; attention_mask [batch, seq]
  (1 = token) excludes pairs whose query or key is padding; layer_map pairs a shallower student's layers with
  teacher layers (see the end of this module)."""
  teacher_scores = map_layers(teacher_scores, layer_map)
  if len(student_scores) != len(teacher_scores):
    raise ValueError(f"{len(student_scores)} student vs {len(teacher_scores)} teacher attention layers")
  if attention_mask is None:
    return sum(mse(s, t) for s, t in zip(student_scores, teacher_scores))
  m = _f32(attention_mask)
  pair = m[:, None, :, None] * m[:, None, None, :]  # [batch, 1, q, k]
  return sum(_masked_mse(s, t, pair) for s, t in zip(student_scores, teacher_scores))


def hidden_state_mse(student_hidden: Sequence[jax.Array], teacher_hidden: Sequence[jax.Array],
                     attention_mask=None, layer_map: Sequence[int] | None = None):
  """Rep: sum over [batch, seq, d] hidden states (incl. the embedding output) of MSE over real tokens; layer_map as
  in attention_score_mse."""
  teacher_hidden = map_hidden_states(teacher_hidden, layer_map)
  if len(student_hidden) != len(teacher_hidden):
    raise ValueError(f"{len(student_hidden)} student vs {len(teacher_hidden)} teacher hidden states")
  if attention_mask is None:
    return sum(mse(s, t) for s, t in zip(student_hidden, teacher_hidden))
  m = _f32(attention_mask)[:, :, None]
  return sum(_masked_mse(s, t, m) for s, t in zip(student_hidden, teacher_hidden))


def ground_truth_loss(logits, labels, *, is_regression: bool):
  """Cross-entropy with integer labels, or MSE against float targets for regression (logits [batch, 1])."""
  if is_regression:
    return mse(_f32(logits)[..., 0], labels)
  logp = jax.nn.log_softmax(_f32(logits), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1))


def validate_loss_terms(terms: Sequence[str], *, has_teacher: bool,
                        known: Sequence[str] = LOSS_TERMS) -> tuple[str, ...]:
  """`terms` as a tuple; ValueError for an empty list, a term not in `known`, or KD terms without a teacher.
  Shared by every task (GLUE, LM and summarization name the same four terms)."""
  terms = tuple(terms)
  unknown = [t for t in terms if t not in known]
  if unknown or not terms:
    raise ValueError(f"KD loss terms {list(terms)}: unknown {unknown}; choose from {tuple(known)}")
  if not has_teacher and set(terms) != {"gt"}:
    raise ValueError(f"loss terms {list(terms)} need a teacher (--teacher); without one only 'gt' applies")
  return terms


def kd_loss(student, teacher, labels, attention_mask, terms: Sequence[str], *, is_regression: bool,
            layer_map: Sequence[int] | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Sum of the selected terms. student/teacher: ModelOutput-like objects with logits, attention_scores,
  hidden_states (teacher may be None when terms == ('gt',)); `layer_map` (student layer i -> teacher layer) for
  a student with fewer layers. Returns (loss, {term: value})."""
  teacher = map_teacher_layers(teacher, layer_map)
  parts = {}
  for term in terms:
    if term == "logit":
      parts[term] = (mse(student.logits, teacher.logits) if is_regression
                     else soft_cross_entropy(student.logits, teacher.logits))
    elif term == "att":
      parts[term] = attention_score_mse(student.attention_scores, teacher.attention_scores, attention_mask)
    elif term == "rep":
      parts[term] = hidden_state_mse(student.hidden_states, teacher.hidden_states, attention_mask)
    elif term == "gt":
      parts[term] = ground_truth_loss(student.logits, labels, is_regression=is_regression)
    else:
      raise ValueError(f"unknown KD loss term {term!r}; choose from {LOSS_TERMS}")
  return sum(parts.values()), parts


# ---------------------------------------------------------------------------------------------------------------
# Shallower students (GLUE's layer-reduced BERT, DQ-BART's layer reduction): a layer map says which teacher layer
# each student layer learns from and starts as. layer_map[i] = teacher layer (0-based) of student layer i. Hidden
# states carry the embedding output first, so hidden state 0 pairs with teacher hidden state 0 and hidden state
# i + 1 with teacher layer_map[i] + 1.

LAYER_MAP_SPACINGS = ("uniform", "ends")


def default_layer_map(student_layers: int, teacher_layers: int, spacing: str = "uniform") -> tuple[int, ...]:
  """The teacher layer of each student layer when no map is given (equal depths: the identity).
    uniform  TinyBERT's choice (GLUE students): student layer i <- teacher layer (i+1)*T/S - 1, evenly spaced and
             ending on the teacher's last layer (6 -> 3: (1, 3, 5); 12 -> 6: (1, 3, 5, 7, 9, 11)); the student may
             not be deeper than the teacher.
    ends     evenly spaced from the teacher's first layer to its last, rounded half to even (12 -> 3: (0, 6, 11);
             one layer: the last); BART's fallback where DQ-BART's table has no entry (a deeper student repeats
             layers)."""
  if spacing == "uniform":
    validate_layer_map(tuple(range(student_layers)), teacher_layers)  # student_layers <= teacher_layers, positive
    return tuple((i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers))
  if spacing != "ends":
    raise ValueError(f"layer map spacing {spacing!r} is not one of {LAYER_MAP_SPACINGS}")
  if student_layers == teacher_layers:
    return tuple(range(teacher_layers))
  if student_layers == 1:
    return (teacher_layers - 1,)
  return tuple(int(round(x)) for x in np.linspace(0, teacher_layers - 1, student_layers))


def validate_layer_map(layer_map: Sequence[int], teacher_layers: int, student_layers: int | None = None, *,
                       what: str = "layer map", strictly_increasing: bool = True) -> tuple[int, ...]:
  """The map as a tuple of ints, checked: not empty, one entry per student layer (when `student_layers` is given),
  only teacher layers that exist; with `strictly_increasing` (GLUE: the student keeps a subset of the teacher's
  layers in order) also no longer than the teacher and strictly increasing. BART passes False: its students may
  repeat or reorder teacher layers. `what` names the map in the errors (e.g. the flag)."""
  layer_map = tuple(int(i) for i in layer_map)
  if not layer_map:
    raise ValueError(f"the {what} is empty: a student needs at least one layer")
  if strictly_increasing and len(layer_map) > teacher_layers:
    raise ValueError(f"{what} {list(layer_map)} has {len(layer_map)} entries, longer than the teacher's "
                     f"{teacher_layers} layers")
  if student_layers is not None and len(layer_map) != student_layers:
    raise ValueError(f"{what} {list(layer_map)} has {len(layer_map)} entries for a {student_layers}-layer student")
  bad = [i for i in layer_map if not 0 <= i < teacher_layers]
  if bad:
    raise ValueError(f"{what} {list(layer_map)} names teacher layer(s) {bad}, but the teacher has layers "
                     f"0..{teacher_layers - 1}")
  if strictly_increasing and any(b <= a for a, b in zip(layer_map, layer_map[1:])):
    raise ValueError(f"{what} {list(layer_map)} must be strictly increasing")
  return layer_map


def map_layers(teacher_layers: Sequence, layer_map: Sequence[int] | None) -> list:
  """Per-layer teacher tensors (attention) picked by the map (None: all, one-to-one)."""
  return list(teacher_layers) if layer_map is None else [teacher_layers[i] for i in layer_map]


def map_hidden_states(teacher_hidden: Sequence, layer_map: Sequence[int] | None) -> list:
  """Teacher hidden states (embedding output first) matching a student's, by the layer map."""
  if layer_map is None:
    return list(teacher_hidden)
  return [teacher_hidden[0]] + [teacher_hidden[i + 1] for i in layer_map]


def map_teacher_layers(teacher, layer_map: Sequence[int] | None):
  """The teacher's per-layer taps (ModelOutput: hidden_states incl. the embedding output, attention_scores,
  attention_probs) restricted to the mapped layers, so they line up with a student's."""
  if teacher is None or layer_map is None:
    return teacher
  pick = lambda layers: None if layers is None else tuple(map_layers(layers, layer_map))
  hidden = teacher.hidden_states
  if hidden is not None:
    hidden = tuple(map_hidden_states(hidden, layer_map))
  return teacher.replace(hidden_states=hidden, attention_scores=pick(teacher.attention_scores),
                         attention_probs=pick(teacher.attention_probs))


def pair_masked_score_mse(student_scores: Sequence[jax.Array], teacher_scores: Sequence[jax.Array],
                          pair_mask: jax.Array, layer_map: Sequence[int] | None = None):
  """Att* with an explicit (query, key) mask broadcastable to [batch, heads, q, k] (causal, cross-attention):
  sum over student layers of the MSE against the mapped teacher layer over the pairs where the mask is 1."""
  teacher_scores = map_layers(teacher_scores, layer_map)
  if len(student_scores) != len(teacher_scores):
    raise ValueError(f"{len(student_scores)} student vs {len(teacher_scores)} teacher attention layers")
  return sum(_masked_mse(s, t, pair_mask) for s, t in zip(student_scores, teacher_scores))


def student_params_from_teacher(teacher_params: dict, layer_map: Sequence[int], *, stack: str = "encoder",
                                layer_prefix: str = "layer_") -> dict:
  """A layer-reduced student's initial params: everything of the teacher except `stack`'s layers, and student
  layer i a copy of teacher layer layer_map[i] (BERT: params["encoder"]["layer_{i}"]; BART: stack "encoder" or
  "decoder", layer_prefix "layers_")."""
  layers = teacher_params[stack]
  missing = [f"{layer_prefix}{j}" for j in layer_map if f"{layer_prefix}{j}" not in layers]
  if missing:
    raise ValueError(f"teacher params have no {stack}/{missing}; teacher layers: {sorted(layers)}")
  new_stack = {k: v for k, v in layers.items() if not k.startswith(layer_prefix)}
  new_stack.update({f"{layer_prefix}{i}": layers[f"{layer_prefix}{j}"] for i, j in enumerate(layer_map)})
  return {**teacher_params, stack: new_stack}
