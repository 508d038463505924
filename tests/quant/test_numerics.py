"""Properties of int4jax.quant: error bounds, level counts, DeepSpeed reference match, STE, packing, edge cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from int4jax.quant import formats
from int4jax.quant import numerics as quant
from int4jax.quant.numerics import QuantSpec

GRANS = ("tensor", "channel", "group", "token")
SHAPES = [((16,), 0), ((24,), -1), ((3, 16), -1), ((16, 3), 0), ((1, 8), 1), ((2, 8, 3), 1), ((2, 3, 24), -1),
          ((8, 2, 1), -3)]


# ------------------------------------------------------------------------------------------------------------ helpers

def to_groups(a, spec: QuantSpec, axis: int) -> np.ndarray:
  """[num_groups, elements_per_group] view of `a`, grouped as the spec says (written independently of quant.py)."""
  a = np.moveaxis(np.asarray(a), axis, -1)
  if spec.granularity == "tensor":
    return a.reshape(1, -1)
  if spec.granularity == "group":
    return a.reshape(-1, spec.group_size)
  return a.reshape(-1, a.shape[-1])


def from_groups(g: np.ndarray, shape, axis: int) -> np.ndarray:
  """Inverse of `to_groups` for a [num_groups, elements_per_group] array (or one broadcastable to it)."""
  moved = np.moveaxis(np.empty(shape, np.int8), axis, -1).shape
  return np.moveaxis(np.asarray(g).reshape(moved), -1, axis)


def ref_quantize(x: np.ndarray, spec: QuantSpec, axis: int):
  """float64 numpy DeepSpeed formulas (paper_spec.md §1.2). Per element: q, S, zp and r, the value before rounding
  (so that callers can skip exact rounding ties, where float32 and float64 may legitimately round differently).
  Constant groups give S = 0 (DeepSpeed divides by zero there); they come out as NaN and callers skip them."""
  g = to_groups(np.asarray(x, np.float64), spec, axis)
  b = spec.bits
  if spec.symmetric:
    s = np.abs(g).max(axis=1, keepdims=True) / 2.0 ** (b - 1)
    zp = np.zeros_like(s)
    r = g / s
    q = np.clip(np.round(r), -(2 ** (b - 1)), 2 ** (b - 1) - 1)
  else:
    s = (g.max(axis=1, keepdims=True) - g.min(axis=1, keepdims=True)) / 2.0 ** b
    zq = g.min(axis=1, keepdims=True) / s
    zp = np.round(zq) * s
    r = (g - zp) / s
    # If min/S itself sits on a rounding tie the whole group may shift by one step: mark all its elements as ties.
    r = np.where(np.abs(np.abs(zq - np.floor(zq)) - 0.5) < 1e-6 * (np.abs(zq) + 2.0 ** b), np.floor(r) + 0.5, r)
    q = np.clip(np.round(r), 0, 2 ** b - 1)
  back = lambda a: from_groups(np.broadcast_to(a, g.shape), np.shape(x), axis)
  s, zp = np.where(s > 0, s, np.nan), np.where(s > 0, zp, np.nan)
  q = np.where(np.isfinite(r), q, np.nan)
  return back(q), back(s), back(zp), back(r)


def per_element(a, qt: quant.QTensor) -> np.ndarray:
  """Broadcast a scale / zero point (grouped shape) to one value per element of the original shape."""
  gshape = quant.grouped_shape(qt.shape, qt.spec, qt.axis)
  return np.broadcast_to(np.asarray(a), gshape).reshape(qt.shape)


def group_absmax(x, spec, axis) -> np.ndarray:
  g = to_groups(np.abs(np.asarray(x, np.float64)), spec, axis)
  return from_groups(np.broadcast_to(g.max(axis=1, keepdims=True), g.shape), np.shape(x), axis)


def assert_error_bound(x, qt: quant.QTensor, y):
  """|x^ - x| <= S/2 inside the representable range. The top of a group is clipped one step: sym x/S in
  (2^(b-1) - 1/2, 2^(b-1)] -> error <= S; asym (x - zp)/S > 2^b - 1/2 -> error <= 1.5 S (zp = round(min/S) S can sit
  S/2 below min). Float slack: 1e-6 relative to the group's max |x|, plus 1e-6 S."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  s = per_element(qt.scale, qt).astype(np.float64)
  b = qt.spec.bits
  if qt.spec.symmetric:
    top = x / s > 2 ** (b - 1) - 0.5
    bound = np.where(top, s, 0.5 * s)
  else:
    zp = per_element(qt.zero_point, qt).astype(np.float64)
    top = (x - zp) / s > 2 ** b - 0.5
    bound = np.where(top, 1.5 * s, 0.5 * s)
  slack = 1e-6 * group_absmax(x, qt.spec, qt.axis) + 1e-6 * s
  excess = np.abs(y - x) - bound - slack
  assert np.all(excess <= 0), f"error bound exceeded by {excess.max()}"


@st.composite
def cases(draw, granularities=GRANS, dists=("normal", "student_t", "positive", "negative", "outlier")):
  """(x float32, spec, axis): bits 2..8, sym/asym, every granularity, rank 1..3, any reduction axis."""
  bits = draw(st.integers(2, 8))
  symmetric = draw(st.booleans())
  gran = draw(st.sampled_from(granularities))
  # A fixed menu of (shape, reduction axis), ranks 1..3, K first / middle / last: few distinct shapes keep XLA's
  # compile caches warm on a 2-core CI machine.
  shape, axis = draw(st.sampled_from(SHAPES))
  k = shape[axis]
  gs = draw(st.sampled_from([d for d in (1, 2, 4, 8) if k % d == 0])) if gran == "group" else None
  rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
  mag = draw(st.sampled_from([1e-3, 0.02, 1.0, 50.0]))
  dist = draw(st.sampled_from(dists))
  if dist == "normal":
    x = rng.normal(size=shape)
  elif dist == "student_t":
    x = rng.standard_t(2.0, size=shape)
  elif dist == "positive":
    x = rng.uniform(0.5, 3.0, size=shape)
  elif dist == "negative":
    x = -rng.uniform(0.5, 3.0, size=shape)
  else:  # a few large outliers
    x = rng.normal(size=shape) * np.where(rng.random(shape) < 0.05, 100.0, 1.0)
  spec = QuantSpec(bits=bits, symmetric=symmetric, granularity=gran, group_size=gs)
  return (x * mag).astype(np.float32), spec, axis


# ------------------------------------------------------------------------------------------------------- QuantSpec

@pytest.mark.parametrize("kwargs, field", [
    (dict(bits=1), "bits"), (dict(bits=9), "bits"), (dict(bits=4.0), "bits"), (dict(bits=True), "bits"),
    (dict(bits=4, symmetric="yes"), "symmetric"),
    (dict(bits=4, granularity="row"), "granularity"),
    (dict(bits=4, granularity="group"), "group_size"),
    (dict(bits=4, granularity="group", group_size=0), "group_size"),
    (dict(bits=4, granularity="channel", group_size=64), "group_size"),
    (dict(bits=4, clip=(1.0, -1.0)), "clip"), (dict(bits=4, clip=(1.0, 1.0)), "clip"),
    (dict(bits=4, clip=(float("nan"), 1.0)), "clip"), (dict(bits=4, clip=(1.0,)), "clip"),
])
def test_spec_validation_names_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    QuantSpec(**kwargs)


def test_spec_dict_round_trip_and_hashable():
  for spec in [QuantSpec(4), QuantSpec(8, False, "token", clip=(-5, 5)), QuantSpec(3, True, "group", 64)]:
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    assert hash(QuantSpec.from_dict(spec.to_dict())) == hash(spec)
  assert QuantSpec(4, clip=(-1, 1)).clip == (-1.0, 1.0)


def test_int_range():
  assert quant.int_range(4, True) == (-8, 7) and quant.int_range(4, False) == (0, 15)
  assert quant.int_range(8, True) == (-128, 127) and quant.int_range(2, False) == (0, 3)
  with pytest.raises(ValueError, match="bits"):
    quant.int_range(9, True)


def test_group_size_must_divide_k():
  with pytest.raises(ValueError, match=r"K=12.*group_size=8"):
    quant.quantize(jnp.ones((12, 4)), QuantSpec(4, granularity="group", group_size=8), axis=0)


def test_bad_axis():
  with pytest.raises(ValueError, match="axis"):
    quant.quantize(jnp.ones((4, 4)), QuantSpec(4), axis=2)


# ------------------------------------------------------------------------------------------ core numerical properties

@given(cases())
def test_error_bound(case):
  x, spec, axis = case
  qt = quant.quantize(x, spec, axis=axis)
  assert_error_bound(x, qt, quant.dequantize(qt))


@given(cases())
def test_levels_and_integer_range(case):
  """At most 2^b distinct dequantized values per group; integers inside the b-bit range; dtype int8 / uint8."""
  x, spec, axis = case
  qt = quant.quantize(x, spec, axis=axis)
  lo, hi = quant.int_range(spec.bits, spec.symmetric)
  q = np.asarray(qt.qvalue)
  assert q.dtype == (np.int8 if spec.symmetric else np.uint8) and q.shape == x.shape
  assert q.min() >= lo and q.max() <= hi
  y = to_groups(np.asarray(quant.dequantize(qt)), spec, axis)
  assert max(len(np.unique(row)) for row in y) <= 2 ** spec.bits


@given(cases())
def test_matches_float64_deepspeed_reference(case):
  """Integers equal the float64 DeepSpeed formulas exactly, except within float32 rounding of a .5 tie (where a
  difference of one step is allowed); scales and zero points agree to float32 precision."""
  x, spec, axis = case
  qt = quant.quantize(x, spec, axis=axis)
  with np.errstate(divide="ignore", invalid="ignore"):
    q_ref, s_ref, zp_ref, r = ref_quantize(x, spec, axis)
    tie = np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-6 * (np.abs(r) + 2.0 ** spec.bits)
  ok = np.isfinite(s_ref)  # constant groups: DeepSpeed's 0/0, covered by test_constant_and_zero_groups_finite
  q = np.asarray(qt.qvalue, np.int64)
  assert np.array_equal(q[ok & ~tie], q_ref[ok & ~tie])
  assert np.all(np.abs(q[ok] - q_ref[ok]) <= 1)
  np.testing.assert_allclose(per_element(qt.scale, qt)[ok], s_ref[ok], rtol=1e-6)
  if not spec.symmetric:
    np.testing.assert_allclose(per_element(qt.zero_point, qt)[ok], zp_ref[ok], rtol=1e-6,
                               atol=1e-6 * np.abs(x).max())
  else:
    assert qt.zero_point is None


def test_reference_match_bert_shapes(np_rng):
  """Exact integer match on real BERT-base weight and activation shapes, 4- and 8-bit, sym and asym."""
  w = (np_rng.normal(size=(768, 3072)) * 0.02).astype(np.float32)
  a = np_rng.standard_t(3.0, size=(128, 768)).astype(np.float32)
  for bits in (4, 8):
    for sym in (True, False):
      for x, spec, axis in [(w, QuantSpec(bits, sym, "channel"), 0), (w, QuantSpec(bits, sym, "group", 128), 0),
                            (a, QuantSpec(bits, sym, "token"), -1)]:
        q_ref, _, _, r = ref_quantize(x, spec, axis)
        q = np.asarray(quant.quantize(x, spec, axis=axis).qvalue, np.int64)
        tie = np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-6 * (np.abs(r) + 2.0 ** bits)
        assert np.array_equal(q[~tie], q_ref[~tie]) and tie.mean() < 5e-3


def test_round_half_to_even():
  # x/S = [-8, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 8] exactly (S = 1): ties go to the even integer.
  x = jnp.array([-8, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 8.0])
  q = quant.quantize(x, QuantSpec(4, granularity="tensor")).qvalue
  np.testing.assert_array_equal(q, [-8, -2, -2, 0, 0, 2, 2, 7])


def test_sym_top_element_clips_and_negative_max_is_exact():
  x = jnp.array([[-1.0, 0.3, 1.0]])
  qt = quant.quantize(x, QuantSpec(4))
  np.testing.assert_array_equal(qt.qvalue, [[-8, 2, 7]])
  np.testing.assert_allclose(quant.dequantize(qt), [[-1.0, 0.25, 0.875]])


@given(cases(granularities=("token", "channel", "group")), st.integers(0, 2 ** 31 - 1))
def test_groups_independent(case, seed):
  """Rewriting one group (here: one whole slice orthogonal to the groups) leaves every other group's output bitwise
  unchanged: per-token scales do not leak across tokens."""
  x, spec, axis = case
  y0 = np.asarray(quant.fake_quant(x, spec, axis=axis))
  g = to_groups(x, spec, axis).copy()
  j = np.random.default_rng(seed).integers(len(g))
  g[j] = g[j] * 1000.0 + 7.0
  x2 = from_groups(g, x.shape, axis).astype(np.float32)
  y1 = np.asarray(quant.fake_quant(x2, spec, axis=axis))
  keep = np.ones(len(g), bool)
  keep[j] = False
  np.testing.assert_array_equal(to_groups(y1, spec, axis)[keep], to_groups(y0, spec, axis)[keep])


def test_per_token_activation_rows_independent(np_rng):
  x = np_rng.standard_t(2.0, size=(2, 16, 64)).astype(np.float32)
  spec = QuantSpec(4, granularity="token")
  y0 = np.asarray(quant.fake_quant(x, spec))
  x2 = x.copy()
  x2[1, 5] *= 1e4
  y1 = np.asarray(quant.fake_quant(x2, spec))
  mask = np.ones(x.shape[:2], bool)
  mask[1, 5] = False
  np.testing.assert_array_equal(y1[mask], y0[mask])


@pytest.mark.parametrize("sign", [1.0, -1.0])
@given(cases(granularities=("channel", "group", "token"), dists=("positive",)))
def test_asym_one_signed_groups(sign, case):
  """All-positive and all-negative groups: asymmetric levels stay in [0, 2^b - 1] and the error bound holds; the
  asym scale ((max - min)/2^b) is smaller than the sym one (max|x|/2^(b-1)) for one-signed data."""
  x, spec, axis = case
  x = sign * x
  spec = QuantSpec(spec.bits, False, spec.granularity, spec.group_size)
  qt = quant.quantize(x, spec, axis=axis)
  q = np.asarray(qt.qvalue)
  assert q.min() >= 0 and q.max() <= 2 ** spec.bits - 1
  assert_error_bound(x, qt, quant.dequantize(qt))
  s_sym = quant.quantize(x, QuantSpec(spec.bits, True, spec.granularity, spec.group_size), axis=axis).scale
  assert np.all(np.asarray(qt.scale) < np.asarray(s_sym))


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("value", [0.0, 1.0, -3.5, 1e-30, -1e30, 1e37])
def test_constant_and_zero_groups_finite(sym, bits, value):
  x = jnp.full((3, 8), value, jnp.float32)
  for gran, gs in [("tensor", None), ("channel", None), ("group", 4)]:
    qt = quant.quantize(x, QuantSpec(bits, sym, gran, gs))
    y = np.asarray(quant.dequantize(qt))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(np.asarray(qt.scale)))
    if value == 0.0:
      np.testing.assert_array_equal(y, 0.0)
    if not sym:  # asym: a constant group dequantizes to itself up to float32 precision
      np.testing.assert_allclose(y, value, rtol=1e-6)
    else:  # sym: -c exact, +c lands on the clipped top level (2^(b-1) - 1) S
      expect = value if value <= 0 else value * (1 - 2.0 ** (1 - bits))
      np.testing.assert_allclose(y, expect, rtol=1e-6)


@pytest.mark.parametrize("mag", [1e-39, 1e-30, 1e30, 1e37])
@pytest.mark.parametrize("sym", [True, False])
def test_huge_and_tiny_magnitudes(mag, sym, np_rng):
  """Scale computations neither underflow nor overflow: outputs finite, error bound holds (mag 1e-39 is subnormal:
  the scale floor takes over and every |error| is below the floor)."""
  x = (np_rng.normal(size=(4, 32)) * mag).astype(np.float32)
  for spec in [QuantSpec(4, sym, "token"), QuantSpec(8, sym, "group", 8), QuantSpec(4, sym, "tensor")]:
    qt = quant.quantize(x, spec)
    y = np.asarray(quant.dequantize(qt))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(np.asarray(qt.scale)))
    assert_error_bound(x, qt, y)
    if mag >= 1e-30:  # relative error as good as at magnitude 1
      rel = np.linalg.norm((y - x).astype(np.float64)) / np.linalg.norm(x.astype(np.float64))
      assert rel < (0.2 if spec.bits == 4 else 0.02)


# ------------------------------------------------------------------------------------------------------ NaN / inf

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_concrete_raises(bad):
  x = np.ones((2, 8), np.float32)
  x[1, 3] = bad
  with pytest.raises(ValueError, match="NaN/inf"):
    quant.quantize(x, QuantSpec(4))
  with pytest.raises(ValueError, match="NaN/inf"):
    quant.fake_quant(jnp.asarray(x), QuantSpec(4, False))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("sym", [True, False])
def test_nonfinite_traced_poisons_only_its_group(bad, sym, np_rng):
  x = np_rng.normal(size=(3, 8)).astype(np.float32)
  xb = x.copy()
  xb[1, 3] = bad
  spec = QuantSpec(4, sym, "token")
  f = jax.jit(lambda a: quant.fake_quant(a, spec))
  y = np.asarray(f(xb))
  assert np.all(np.isnan(y[1]))
  np.testing.assert_array_equal(y[[0, 2]], np.asarray(f(x))[[0, 2]])
  qt = jax.jit(lambda a: quant.quantize(a, spec))(xb)
  assert np.all(np.isnan(np.asarray(qt.scale)[1])) and np.all(np.asarray(qt.qvalue)[1] == 0)


# ----------------------------------------------------------------------------------------------------- fake_quant / STE

def test_fake_quant_forward_matches_the_float64_reference(np_rng):
  """fake_quant's forward against the float64 DeepSpeed formulas (q * S + zp computed in float64 from the reference
  integers), eagerly and under jit: within float32 rounding of the dequantized value, except at exact .5 ties."""
  x = np_rng.normal(size=(8, 64)).astype(np.float32)
  for spec in [QuantSpec(4), QuantSpec(4, False, "group", 16), QuantSpec(8, clip=(-1.0, 1.0))]:
    xc = np.clip(x, *spec.clip) if spec.clip else x
    q_ref, s_ref, zp_ref, r = ref_quantize(xc, spec, -1)
    y_ref = q_ref * s_ref + zp_ref
    tie = np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-6 * (np.abs(r) + 2.0 ** spec.bits)
    atol = 4e-7 * np.abs(xc).max()        # a few float32 ulps of the largest value (q*S+zp rounding, FMA)
    for y in (quant.fake_quant(x, spec), jax.jit(lambda a, spec=spec: quant.fake_quant(a, spec))(x)):
      np.testing.assert_allclose(np.asarray(y, np.float64)[~tie], y_ref[~tie], rtol=0, atol=atol)


def test_fake_quant_keeps_dtype():
  x = jnp.linspace(-1, 1, 32, dtype=jnp.bfloat16).reshape(2, 16)
  assert quant.fake_quant(x, QuantSpec(4)).dtype == jnp.bfloat16


def test_clip_is_a_pre_clamp(np_rng):
  x = (np_rng.normal(size=(4, 32)) * 3).astype(np.float32)
  for sym in (True, False):
    got = quant.fake_quant(x, QuantSpec(4, sym, clip=(-2.0, 1.5)))
    want = quant.fake_quant(np.clip(x, -2.0, 1.5), QuantSpec(4, sym))
    np.testing.assert_array_equal(got, want)


@given(cases())
def test_ste_identity_without_clip(case):
  x, spec, axis = case
  w = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
  g = jax.grad(lambda a: jnp.sum(quant.fake_quant(a, spec, axis=axis) * w))(x)
  np.testing.assert_array_equal(g, w)


CLIP_X = np.array([-1.5, -1.0 - 1e-6, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 1.0 + 1e-6, 1.5, 100.0], np.float32)
CLIP_G = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0], np.float32)  # closed interval [lo, hi]


@pytest.mark.parametrize("sym", [True, False])
def test_ste_clip_mask_at_edges(sym):
  spec = QuantSpec(4, sym, "tensor", clip=(-1.0, 1.0))
  f = lambda a: jnp.sum(quant.fake_quant(a, spec) * 3.0)
  np.testing.assert_array_equal(jax.grad(f)(CLIP_X), 3.0 * CLIP_G)
  np.testing.assert_array_equal(jax.jit(jax.grad(f))(CLIP_X), 3.0 * CLIP_G)
  # forward mode (custom_jvp): d/dx diag
  jac = jax.jacfwd(lambda a: quant.fake_quant(a, spec))(CLIP_X)
  np.testing.assert_array_equal(np.diag(jac), CLIP_G)
  np.testing.assert_array_equal(jac - np.diag(np.diag(jac)), 0.0)


def test_ste_under_vmap_jit_grad(np_rng):
  x = np_rng.normal(size=(5, 4, 16)).astype(np.float32) * 2
  spec = QuantSpec(4, False, "token", clip=(-1.0, 1.0))
  per_example = lambda a: jnp.sum(quant.fake_quant(a, spec) ** 2)
  g_vmap = jax.jit(jax.vmap(jax.grad(per_example)))(x)
  g_full = jax.grad(lambda a: jnp.sum(jax.vmap(per_example)(a)))(x)
  y = np.asarray(quant.fake_quant(x, spec))
  inside = (x >= -1) & (x <= 1)
  np.testing.assert_array_equal(g_vmap, np.where(inside, 2 * y, 0.0))
  np.testing.assert_array_equal(g_full, g_vmap)
  # vmap over a batch axis gives the same forward as quantizing the stacked array (per-token is per row).
  np.testing.assert_array_equal(jax.vmap(lambda a: quant.fake_quant(a, spec))(x), y)


def test_qtensor_is_a_pytree_through_jit(np_rng):
  x = np_rng.normal(size=(64, 32)).astype(np.float32)
  spec = QuantSpec(4, False, "group", 16)
  qt = jax.jit(lambda a: quant.quantize(a, spec, axis=0))(x)
  assert qt.spec == spec and qt.axis == 0 and qt.shape == (64, 32) and qt.scale.shape == (4, 1, 32)
  assert len(jax.tree.leaves(qt)) == 3
  # The QTensor that came out of one jit goes into another: its dequantized value is the float64 reference's.
  q_ref, s_ref, zp_ref, r = ref_quantize(x, spec, 0)
  tie = np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-6 * (np.abs(r) + 2.0 ** spec.bits)
  y = np.asarray(jax.jit(quant.dequantize)(qt), np.float64)
  np.testing.assert_allclose(y[~tie], (q_ref * s_ref + zp_ref)[~tie], rtol=0, atol=4e-7 * np.abs(x).max())


# ---------------------------------------------------------------------------------------------------------- packing

def _sext4(n):
  n = np.asarray(n, np.int64) & 0xF
  return np.where(n >= 8, n - 16, n)


def test_unpack_every_byte_and_repack():
  p = np.arange(256, dtype=np.uint8)
  u = np.asarray(formats.unpack_int4(p))
  assert u.dtype == np.int8 and u.shape == (512,)
  np.testing.assert_array_equal(u[0::2], _sext4(p))       # element 2i: low nibble
  np.testing.assert_array_equal(u[1::2], _sext4(p >> 4))  # element 2i+1: high nibble
  np.testing.assert_array_equal(formats.pack_int4(u), p)
  uu = np.asarray(formats.unpack_uint4(p))
  assert uu.dtype == np.uint8
  np.testing.assert_array_equal(uu[0::2], p & 0xF)
  np.testing.assert_array_equal(uu[1::2], p >> 4)
  np.testing.assert_array_equal(formats.pack_uint4(uu), p)


def test_pack_worked_examples():
  assert int(formats.pack_int4(np.array([-8, 7], np.int8))[0]) == 0x78
  assert int(formats.pack_int4(np.array([1, -1], np.int32))[0]) == 0xF1
  assert int(formats.pack_int4(np.array([7, -8], np.int64))[0]) == 0x87
  np.testing.assert_array_equal(formats.pack_int4(np.array([[-8, -8], [7, 7]]), axis=0), [[0x78, 0x78]])
  assert int(formats.pack_uint4(np.array([0, 15], np.uint8))[0]) == 0xF0


_pack = jax.jit(formats.pack_int4, static_argnames="axis")
_unpack = jax.jit(formats.unpack_int4, static_argnames="axis")


@given(st.sampled_from([(2, 1, 1), (8, 3, 2), (4, 5, 6), (64, 2, 2), (6, 4, 2)]), st.booleans(),
       st.integers(0, 2 ** 31 - 1))
def test_pack_round_trip_under_jit(dims, along_first, seed):
  axis = 0 if along_first else -1
  shape = dims if along_first else dims[::-1]
  q = np.random.default_rng(seed).integers(-8, 8, size=shape).astype(np.int8)
  p = _pack(q, axis=axis)
  assert p.dtype == jnp.uint8 and p.shape[axis] == q.shape[axis] // 2
  qm = np.moveaxis(q, axis, -1)
  want = ((qm[..., 0::2].astype(np.int64) & 0xF) | ((qm[..., 1::2].astype(np.int64) & 0xF) << 4)).astype(np.uint8)
  np.testing.assert_array_equal(p, np.moveaxis(want, -1, axis))
  np.testing.assert_array_equal(_unpack(p, axis=axis), q)


def test_pack_boundaries_and_quantized_values(np_rng):
  q = np.array([[-8, 7, 7, -8, 0, -1, 1, 0]], np.int8)
  np.testing.assert_array_equal(formats.unpack_int4(formats.pack_int4(q)), q)
  qt = quant.quantize(np_rng.normal(size=(768, 64)).astype(np.float32), QuantSpec(4), axis=0)
  np.testing.assert_array_equal(formats.unpack_int4(formats.pack_int4(qt.qvalue, axis=0), axis=0), qt.qvalue)
  qa = quant.quantize(np_rng.normal(size=(16, 768)).astype(np.float32), QuantSpec(4, False, "token"))
  np.testing.assert_array_equal(formats.unpack_uint4(formats.pack_uint4(qa.qvalue)), qa.qvalue)


def test_pack_errors():
  with pytest.raises(ValueError, match="size 3 along axis 1"):
    formats.pack_int4(np.zeros((2, 3), np.int8))
  with pytest.raises(ValueError, match="size 5 along axis 0"):
    jax.jit(lambda v: formats.pack_int4(v, axis=0))(np.zeros((5, 2), np.int8))
  with pytest.raises(ValueError, match=r"min=-9, max=7"):
    formats.pack_int4(np.array([-9, 7]))
  with pytest.raises(ValueError, match=r"min=0, max=8"):
    formats.pack_int4(np.array([0, 8], np.int8))
  with pytest.raises(ValueError, match=r"min=-1, max=3"):
    formats.pack_uint4(np.array([-1, 3]))
  with pytest.raises(ValueError, match="integer"):
    formats.pack_int4(np.zeros(4, np.float32))
  with pytest.raises(ValueError, match="uint8"):
    formats.unpack_int4(np.zeros(4, np.int8))
