"""N:M structured sparsity composed with fake quantization (paper_spec §5.1, the paper's "Pair-(N:M)" pruning).

Convention. "N:M" keeps N of every M consecutive weights along the reduction axis K and zeroes the other M - N,
as NVIDIA names it (2:4 = at most 2 non-zeros in every 4). Flax kernels are [K, N_out], so groups run along axis 0,
the direction Hopper's sparse tensor cores compress (each output column's K-vector, in groups of 4). Patterns:
  2:4  50% sparsity (2 zeros per group): what the hardware executes.
  1:4  75% sparsity (3 zeros per group), our choice for the paper's unnamed 75% pattern: the same 2-bit index
       metadata as 2:4 (quant/formats.compress_nm), and a 2:4 kernel runs it with one explicit zero per pair.
Masks keep exactly N per group; ties go to the lower index (a stable sort), so the count is exact. The paper
(paper_spec §5.1) counts zeros instead ("Pair-(N:M)", N zeros per M); for 2:4 both read the same, and our 1:4
(1 kept, 3 zeros) is the paper's notation "3:4".

Masks. "static": computed once from |W| of the initial (= teacher) weights and fixed for the run; the pruned
master weights are set to zero and stay zero (their gradient is masked, and `after_update` re-applies the mask).
"movement" (Sanh et al. 2020, hard movement pruning, anchored at the magnitude): a score S per weight, the mask
recomputed as top-N of S per group every `update_every` steps (after steps k*update_every), never in between.
  S_0 = W_0^2 / 2,   S <- S + W * (W_new - W)   (W the kernel before the optimizer step, W_new after it).
Why this form. Sanh et al.'s score accumulates -W * dL/dW' per step, scaled by a score learning rate: "weights
moving away from zero are kept". With an SGD step W_new - W = -lr * dL/dW' our increment is exactly that score step
at the weights' own learning rate; with Adam(W) it is the movement the optimizer actually made, so the increment
and S always share the units of W^2 (no extra learning rate, whatever the optimizer). Summed, the increments are
the change of W^2/2 (S_t = W_t^2/2 - sum of (W_new - W)^2/2), so S_0 = W_0^2/2 is the score a weight would have
collected moving from 0 to W_0: the first mask is the magnitude (static) mask, and a kept weight loses its place
only when the training actually moves it toward zero, below a pruned group-mate that grew (pruned weights keep
training under the straight-through mask below). Put plainly, a movement mask ranks the current dense master
weights by W_t^2 less the sum of their squared steps. Scores that started at 0 (our first version) collapsed GLUE
students to the majority class (results/composability.md): near the teacher's optimum a kept weight's -W * dL/dW is
noise with a spread proportional to |W|, about half of it negative, while the pruned small weights stay near 0, so
the first recompute swapped out many of the largest weights at once. Sanh et al.'s gains from movement are at high
sparsity; 2:4 keeps half the weights, where the magnitude mask is the strong start, and the anchor keeps movement
from throwing it away before the training has moved anything.

Straight-through convention. Fake quantization keeps its STE (numerics.fake_quant). For the mask:
  static:   W' = M * W, so dL/dW = M * dL/dW' (pruned weights get no gradient and stay zero).
  movement: W' = W + stop_gradient(M * W - W): the forward value is exactly M * W, the gradient is the dense
            dL/dW' (a straight-through mask), so pruned weights keep learning and can come back when their score
            rises; the optimizer's step on that dense gradient is what the movement score accumulates.

Orders (one `order` per rule), with Q the weight's fake quantizer and M the mask:
  "pq" (P=>Q): W' = Q(M * W): prune first; the quantization scales are those of the pruned weight.
  "qp" (Q=>P): W' = M * Q(W): quantize the dense weight (its scales), then prune.
They are bit-identical whenever every scale's max |W| survives pruning, which a magnitude (static) mask guarantees
for symmetric per-channel scales and for groups that hold whole M-groups: the largest |w| of a column is the
largest of its M-group, and that one is kept. They differ for movement masks (which can prune a column's largest
weight: then Q=>P keeps the larger dense scale, a coarser grid, and P=>Q re-scales to the pruned max) and for
asymmetric scales (the column's min or max can be pruned while a larger |w| of the other sign is kept).

Where it lives. QDense (nn/dense.py) asks the policy for this layer's `SparsitySpec` and then holds its mask
(and movement score) as params next to its kernel, `nm_mask` and `nm_score`, so the train state, checkpoints
(exact resume includes the scores), best/ params and the exporter all carry them without extra plumbing. The
optimizer never changes them: the forward uses them under stop_gradient, and `after_update` (called by the train
step after the optimizer, train/loop.py) writes the values this module computes. A pure param transform in the
train step could not express Q=>P (the quantizer must see the dense weight and the mask after it), hence the hook.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from int4jax.quant import numerics

MASK = "nm_mask"
SCORE = "nm_score"
KERNEL = "kernel"
METHODS = ("static", "movement")
ORDERS = ("pq", "qp")
PATTERNS = {"2:4": 0.5, "1:4": 0.75}   # the patterns the launchers name; any N:M with 0 < N < M is accepted
_PATTERN_RE = re.compile(r"^(\d+):(\d+)$")


@dataclasses.dataclass(frozen=True)
class SparsitySpec:
  """N kept of every M consecutive weights along K; how the mask is found (method) and composed (order)."""
  n: int
  m: int
  method: str = "static"
  order: str = "pq"
  update_every: int = 100    # movement: steps between mask recomputations

  def __post_init__(self):
    for f in ("n", "m", "update_every"):
      v = getattr(self, f)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"SparsitySpec.{f} must be a positive int, got {v!r}")
    if not self.n < self.m:
      raise ValueError(f"SparsitySpec {self.n}:{self.m}: N (weights kept per group) must be below M")
    if self.method not in METHODS:
      raise ValueError(f"SparsitySpec.method={self.method!r} must be one of {METHODS}")
    if self.order not in ORDERS:
      raise ValueError(f"SparsitySpec.order={self.order!r} must be one of {ORDERS} (pq: prune then quantize)")

  @property
  def pattern(self) -> str:
    return f"{self.n}:{self.m}"

  @property
  def sparsity(self) -> float:
    return 1 - self.n / self.m

  @classmethod
  def parse(cls, pattern: str, **kw) -> "SparsitySpec":
    """'2:4' -> SparsitySpec(2, 4, ...): N kept of M."""
    match = _PATTERN_RE.match(str(pattern).strip())
    if not match:
      raise ValueError(f"sparsity pattern {pattern!r} must look like 'N:M' (N kept of every M along K), e.g. 2:4")
    return cls(int(match.group(1)), int(match.group(2)), **kw)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "SparsitySpec":
    return cls(**d)


def check_divisible(k: int, spec: SparsitySpec, where: str) -> None:
  if k % spec.m:
    raise ValueError(f"sparsity {spec.pattern} at {where!r}: M={spec.m} does not divide the reduction size K={k}")


def nm_mask(scores: jax.Array, n: int, m: int, *, axis: int = 0) -> jax.Array:
  """float32 0/1 mask keeping the N largest `scores` in each group of M consecutive entries along `axis`.

  Exactly N per group (ties: the lower index wins). Jittable; scores' size along `axis` must be a multiple of M.
  """
  s = jnp.moveaxis(jnp.asarray(scores, jnp.float32), axis, -1)
  if s.shape[-1] % m:
    raise ValueError(f"nm_mask: M={m} does not divide the size {s.shape[-1]} along axis {axis}")
  g = s.reshape(s.shape[:-1] + (s.shape[-1] // m, m))
  order = jnp.argsort(-g, axis=-1, stable=True)        # positions, best first
  rank = jnp.argsort(order, axis=-1, stable=True)      # rank of each position
  keep = (rank < n).astype(jnp.float32).reshape(s.shape)
  return jnp.moveaxis(keep, -1, axis)


def magnitude_mask(kernel: jax.Array, spec: SparsitySpec) -> jax.Array:
  """The static l1 mask of a [K, N] kernel: top-N |w| per M-group along K."""
  return nm_mask(jnp.abs(kernel), spec.n, spec.m, axis=0)


def apply_mask(kernel: jax.Array, mask: jax.Array, spec: SparsitySpec) -> jax.Array:
  """M * W with the gradient convention of `spec.method` (module docstring); the mask gets no gradient."""
  mask = jax.lax.stop_gradient(mask).astype(kernel.dtype)
  if spec.method == "movement":
    return kernel + jax.lax.stop_gradient(kernel * mask - kernel)
  return kernel * mask


def sparse_weight(kernel: jax.Array, mask: jax.Array, spec: SparsitySpec,
                  w_spec: numerics.QuantSpec | None) -> jax.Array:
  """The effective weight W' of a [K, N] kernel: Q(M*W) for "pq", M*Q(W) for "qp" (Q = identity if w_spec None)."""
  quant = (lambda w: w) if w_spec is None else (lambda w: numerics.fake_quant(w, w_spec, axis=0))
  if spec.order == "pq":
    return quant(apply_mask(kernel, mask, spec))
  return apply_mask(quant(kernel), mask, spec)


# ----------------------------------------------------------------------------------------------
# The param tree: which layers are sparse, initial masks, the post-optimizer update.


def _get(tree, path: str):
  for key in path.split("/"):
    tree = tree[key]
  return tree


def _set(tree: dict, path: str, leaf_dict: dict) -> dict:
  """Copy of nested dict `tree` with the dict at `path` replaced."""
  head, _, rest = path.partition("/")
  new = dict(tree)
  new[head] = leaf_dict if not rest else _set(tree[head], rest, leaf_dict)
  return new


def layer_specs(init_fn: Callable[[], Any]) -> dict[str, SparsitySpec]:
  """{module path: SparsitySpec} of every sparse QDense that `init_fn` (e.g. an eval_shape'd model.init) visits.

  QDense modules expose `sparsity_spec()`; this intercepts their calls, so it needs no registry of layer names.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  found: dict[str, SparsitySpec] = {}

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and hasattr(module, "sparsity_spec"):
      spec = module.sparsity_spec()
      if spec is not None:
        found["/".join(str(p) for p in module.scope.path)] = spec
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    init_fn()
  return found


def initial_score(kernel: jax.Array) -> jax.Array:
  """Movement score of a kernel at the start of pruning: W^2 / 2 (module docstring: the units of the increments,
  and top-N of it is the magnitude mask)."""
  kernel = jnp.asarray(kernel, jnp.float32)
  return 0.5 * kernel * kernel


def init_state(params: dict, specs: dict[str, SparsitySpec]) -> dict:
  """Adds (or overwrites) each sparse layer's mask from |kernel|, movement scores `initial_score(kernel)`, and
  zeroes the pruned kernel entries of static layers. `params` may come from a dense teacher (no mask leaves yet)."""
  for path, spec in specs.items():
    layer = dict(_get(params, path))
    kernel = jnp.asarray(layer[KERNEL], jnp.float32)
    check_divisible(kernel.shape[0], spec, path)
    mask = magnitude_mask(kernel, spec)
    layer[MASK] = mask
    if spec.method == "movement":
      layer[SCORE] = initial_score(kernel)
    else:
      layer[KERNEL] = kernel * mask
      layer.pop(SCORE, None)
    params = _set(params, path, layer)
  return params


def after_update(old_params: dict, new_params: dict, grads: dict, step: jax.Array,
                 specs: dict[str, SparsitySpec]) -> dict:
  """The sparse layers' state after optimizer step `step` (0-based): masks and scores are never the optimizer's.

  static: mask unchanged; kernel <- M * kernel (a no-op in exact arithmetic, kept as the invariant's guard).
  movement: S <- S + W * (W_new - W) (W the pre-update kernel, W_new the optimizer's; module docstring: with SGD
            this is -lr * W * dL/dW, Sanh et al.'s score step); the mask becomes top-N of S per group after steps
            update_every, 2*update_every, ... and is unchanged otherwise. `grads` is part of the train loop's
            hook signature; the optimizer's step already holds what the score needs.
  """
  del grads
  for path, spec in specs.items():
    old, layer = _get(old_params, path), dict(_get(new_params, path))
    if spec.method == "static":
      layer[MASK] = old[MASK]
      layer[KERNEL] = layer[KERNEL] * old[MASK].astype(layer[KERNEL].dtype)
    else:
      w = old[KERNEL].astype(jnp.float32)
      score = old[SCORE] + w * (layer[KERNEL].astype(jnp.float32) - w)
      refresh = (step + 1) % spec.update_every == 0
      layer[SCORE] = score
      layer[MASK] = jnp.where(refresh, nm_mask(score, spec.n, spec.m, axis=0), old[MASK])
    new_params = _set(new_params, path, layer)
  return new_params


def mask_stats(params: dict, specs: dict[str, SparsitySpec]) -> dict[str, float]:
  """Fraction of zeros in the masks of the sparse layers (host side, for logs and results)."""
  zeros = total = 0
  for path in specs:
    mask = np.asarray(_get(params, path)[MASK])
    zeros, total = zeros + int((mask == 0).sum()), total + mask.size
  return {"sparse_layers": len(specs), "mask_zero_fraction": zeros / max(total, 1)}


def quantized_sparse_weight(layer: dict, spec: SparsitySpec, w_spec: numerics.QuantSpec) -> numerics.QTensor:
  """The integer form of a sparse QDense's effective weight, for export (quant/formats.compress_nm):
  P=>Q quantizes M*W (scales of the pruned weight); Q=>P quantizes W and zeroes the pruned qvalues (dense scales).
  `dequantize` of the result equals QDense's forward weight. Symmetric quantizers only (zero stays zero)."""
  if not w_spec.symmetric:
    raise ValueError("quantized_sparse_weight: an asymmetric quantizer maps 0 to a zero point, not to 0; "
                     "sparse export is defined for symmetric weights")
  kernel, mask = jnp.asarray(layer[KERNEL], jnp.float32), jnp.asarray(layer[MASK], jnp.float32)
  if spec.order == "pq":
    return numerics.quantize(kernel * mask, w_spec, axis=0)
  qt = numerics.quantize(kernel, w_spec, axis=0)
  return qt.replace(qvalue=(qt.qvalue * mask.astype(qt.qvalue.dtype)).astype(qt.qvalue.dtype))
