"""Which GEMM gets which quantizer: regex rules over module paths plus GEMM-type switches, presets, JSON round trip.

A `QuantPolicy` answers `resolve(path, gemm) -> (weight_spec, act_spec)` for every `QDense`. `gemm` is one of the
paper's four quantized GEMM types (paper_spec.md §1.4) or None for layers that stay float (pooler, classifier,
LM head, embeddings are not Dense-quantized at all). Rules are tried in order; the first whose regex `re.search`es the
path wins. `gemms` switches whole GEMM types on/off (e.g. quantize only `ffn_in`).

Presets `w{W}a{A}`: weights W-bit per output channel (one scale per column of the Flax kernel [K, N], reducing over
K), or per contiguous group of `weight_group_size` along K; activations A-bit per token, dynamic (reducing over the
last axis); `a16` keeps activations float. Weights and activations share the `symmetric` flag. "fp32" has no rules.

Format presets (numerics module doc has the definitions), for weights and activations alike, blocks along K:
  w4a4_mxfp4  MXFP4: E2M1, blocks of 32, E8M0 power-of-two scale;
  w4a4_nvfp4  NVFP4: E2M1, blocks of 16, E4M3 block scale x fp32 tensor scale;
  w1.58a8     BitNet b1.58 ternary weights (absmean, one scale per weight matrix), INT8 per-token activations.
They are symmetric by construction and fix their own blocks: `symmetric=False` (--quant_mode=asym) and
`weight_group_size` raise ValueError for them.

N:M sparsity (quant/sparsity.py) rides on a rule: `QuantRule.sparsity` prunes the weights the rule quantizes, and
`QuantRule.gemms` (None = any) restricts a rule to some GEMM types. One string names a sparse preset:
`w4a4+2:4` (all four GEMM types), `w4a4+2:4@ffn` (ffn_in and ffn_out only; other scopes: attn = qkv + attn_out,
all, or one GEMM type name), parsed by `parse_preset` and built by `make_policy_from_string`. Method (static /
movement) and order (pq / qp) are keyword arguments (the launcher's --prune / --order). A sparse rule without a
weight quantizer, or whose GEMM types the policy leaves float, is an error: sparsity here is INT weights + masks.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Iterable

from int4jax.quant.numerics import QuantSpec, mxfp4_spec, nvfp4_spec, ternary_spec
from int4jax.quant.sparsity import SparsitySpec

GEMM_TYPES = ("qkv", "attn_out", "ffn_in", "ffn_out")
INT_PRESETS = ("fp32", "w8a8", "w4a8", "w4a4", "w4a16", "w8a16")
FORMAT_PRESETS = ("w4a4_mxfp4", "w4a4_nvfp4", "w1.58a8")
PRESETS = INT_PRESETS + FORMAT_PRESETS
_PRESET_BITS = {"fp32": (None, None), "w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4), "w4a16": (4, None),
                "w8a16": (8, None)}


def _check_gemms(gemms: Iterable[str] | str) -> frozenset[str]:
  if isinstance(gemms, str):
    gemms = (gemms,)
  gemms = frozenset(gemms)
  bad = sorted(gemms - set(GEMM_TYPES))
  if bad:
    raise ValueError(f"unknown GEMM type(s) {bad}; valid: {list(GEMM_TYPES)}")
  return gemms


@dataclasses.dataclass(frozen=True)
class QuantRule:
  pattern: str               # regex, re.search against the module path "a/b/c"
  weight: QuantSpec | None
  act: QuantSpec | None
  sparsity: SparsitySpec | None = None   # N:M pruning of this rule's weights (quant/sparsity.py)
  gemms: frozenset[str] | None = None    # GEMM types this rule applies to; None: any

  def __post_init__(self):
    if self.gemms is not None:
      object.__setattr__(self, "gemms", _check_gemms(self.gemms))
    if self.sparsity is not None and not isinstance(self.sparsity, SparsitySpec):
      raise ValueError(f"QuantRule.sparsity must be a SparsitySpec or None, got {type(self.sparsity).__name__}")
    if self.sparsity is not None and self.weight is None:
      raise ValueError(f"QuantRule {self.pattern!r}: sparsity {self.sparsity.pattern} on a float GEMM (no weight "
                       f"quantizer); N:M sparsity is only defined here together with integer weights")
    try:
      re.compile(self.pattern)
    except re.error as e:
      raise ValueError(f"QuantRule.pattern {self.pattern!r} is not a valid regex: {e}") from None
    for field in ("weight", "act"):
      v = getattr(self, field)
      if v is not None and not isinstance(v, QuantSpec):
        raise ValueError(f"QuantRule.{field} must be a QuantSpec or None, got {type(v).__name__}")

  def to_dict(self) -> dict:
    d = {"pattern": self.pattern, "weight": None if self.weight is None else self.weight.to_dict(),
         "act": None if self.act is None else self.act.to_dict()}
    if self.sparsity is not None:
      d["sparsity"] = self.sparsity.to_dict()
    if self.gemms is not None:
      d["gemms"] = [g for g in GEMM_TYPES if g in self.gemms]
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "QuantRule":
    spec = lambda v: None if v is None else QuantSpec.from_dict(v)
    sparsity = None if d.get("sparsity") is None else SparsitySpec.from_dict(d["sparsity"])
    gemms = None if d.get("gemms") is None else frozenset(d["gemms"])
    return cls(pattern=d["pattern"], weight=spec(d["weight"]), act=spec(d["act"]), sparsity=sparsity, gemms=gemms)

  def matches(self, path: str, gemm: str) -> bool:
    return (self.gemms is None or gemm in self.gemms) and re.search(self.pattern, path) is not None


@dataclasses.dataclass(frozen=True)
class QuantPolicy:
  name: str
  rules: tuple[QuantRule, ...] = ()              # first match wins
  gemms: frozenset[str] = frozenset(GEMM_TYPES)  # GEMM types that are quantized at all

  def __post_init__(self):
    object.__setattr__(self, "rules", tuple(self.rules))
    object.__setattr__(self, "gemms", _check_gemms(self.gemms))
    for rule in self.rules:
      if rule.sparsity is not None and not (rule.gemms or frozenset(GEMM_TYPES)) & self.gemms:
        raise ValueError(f"policy {self.name!r}: sparsity {rule.sparsity.pattern} on GEMM types "
                         f"{sorted(rule.gemms or GEMM_TYPES)}, which this policy keeps float (gemms="
                         f"{sorted(self.gemms)}); sparsity needs integer weights")

  def _rule(self, path: str, gemm: str | None) -> QuantRule | None:
    if gemm is None:
      return None
    if gemm not in GEMM_TYPES:  # a typo would otherwise silently leave a layer float
      raise ValueError(f"unknown GEMM type {gemm!r} at {path!r}; valid: {list(GEMM_TYPES)} or None")
    if gemm not in self.gemms:
      return None
    return next((rule for rule in self.rules if rule.matches(path, gemm)), None)

  def resolve_sparsity(self, path: str, gemm: str | None) -> SparsitySpec | None:
    """The N:M sparsity of the Dense at `path` (None: dense)."""
    rule = self._rule(path, gemm)
    return None if rule is None else rule.sparsity

  @property
  def is_sparse(self) -> bool:
    return any(r.sparsity is not None for r in self.rules)

  def resolve(self, path: str, gemm: str | None) -> tuple[QuantSpec | None, QuantSpec | None]:
    """(weight_spec, act_spec) for the Dense at `path`; (None, None) when it stays float."""
    rule = self._rule(path, gemm)
    return (None, None) if rule is None else (rule.weight, rule.act)

  @property
  def is_float(self) -> bool:
    return not self.gemms or all(r.weight is None and r.act is None for r in self.rules)

  def with_gemms(self, gemms: Iterable[str] | str) -> "QuantPolicy":
    return dataclasses.replace(self, gemms=_check_gemms(gemms))

  def to_json(self) -> str:
    return json.dumps({"name": self.name, "rules": [r.to_dict() for r in self.rules],
                       "gemms": [g for g in GEMM_TYPES if g in self.gemms]}, indent=2)

  @classmethod
  def from_json(cls, s: str) -> "QuantPolicy":
    d = json.loads(s)
    return cls(name=d["name"], rules=tuple(QuantRule.from_dict(r) for r in d["rules"]), gemms=frozenset(d["gemms"]))


def _format_preset_specs(preset: str, symmetric: bool, weight_group_size: int | None, weight_clip, act_clip):
  if not symmetric:
    raise ValueError(f"preset {preset!r} is symmetric by construction: asymmetric quantization (--quant_mode=asym) "
                     f"applies to the integer presets {list(INT_PRESETS[1:])} only")
  if weight_group_size is not None:
    raise ValueError(f"preset {preset!r} fixes its own blocks (MXFP4 32, NVFP4 16, ternary one scale per tensor); "
                     f"weight_group_size={weight_group_size} applies to the integer presets only")
  if preset == "w4a4_mxfp4":
    return mxfp4_spec(clip=weight_clip), mxfp4_spec(clip=act_clip)
  if preset == "w4a4_nvfp4":
    return nvfp4_spec(clip=weight_clip), nvfp4_spec(clip=act_clip)
  return ternary_spec(clip=weight_clip), QuantSpec(bits=8, granularity="token", clip=act_clip)


def _preset_specs(preset: str, symmetric: bool, weight_group_size: int | None, weight_clip, act_clip):
  if preset in FORMAT_PRESETS:
    return _format_preset_specs(preset, symmetric, weight_group_size, weight_clip, act_clip)
  if preset not in _PRESET_BITS:
    raise ValueError(f"unknown preset {preset!r}; valid: {list(PRESETS)}")
  w_bits, a_bits = _PRESET_BITS[preset]
  w = a = None
  if w_bits is not None:
    w = QuantSpec(bits=w_bits, symmetric=symmetric, granularity="channel" if weight_group_size is None else "group",
                  group_size=weight_group_size, clip=weight_clip)
  if a_bits is not None:
    a = QuantSpec(bits=a_bits, symmetric=symmetric, granularity="token", clip=act_clip)
  return w, a


def make_policy(preset: str, *, symmetric: bool = True, gemms: Iterable[str] | str = GEMM_TYPES,
                weight_group_size: int | None = None, weight_clip: tuple[float, float] | None = None,
                act_clip: tuple[float, float] | None = None, sparsity: SparsitySpec | None = None,
                sparsity_gemms: Iterable[str] | None = None) -> QuantPolicy:
  """Policy for one of PRESETS. Name: "fp32", a format preset's own name, or f"{preset}_{sym|asym}" plus
  "_g{group_size}" when grouped, plus "_{N}of{M}{static|movement}-{pq|qp}" (and "@gemm,..." when scoped) when
  `sparsity` prunes the weights of `sparsity_gemms` (None: every quantized GEMM type)."""
  w, a = _preset_specs(preset, symmetric, weight_group_size, weight_clip, act_clip)
  gemms = _check_gemms(gemms)
  if sparsity is not None and w is None:
    raise ValueError(f"sparsity {sparsity.pattern} on preset {preset!r}, whose GEMMs have float weights; "
                     f"N:M sparsity needs integer weights (e.g. w4a4)")
  if w is None and a is None:
    return QuantPolicy(name="fp32", rules=(), gemms=gemms)
  if preset in FORMAT_PRESETS:
    if sparsity is not None:
      raise ValueError(f"N:M sparsity is implemented for integer weights; preset {preset!r} is a 4-bit float or "
                       "ternary format")
    return QuantPolicy(name=preset, rules=(QuantRule(pattern=".*", weight=w, act=a),), gemms=gemms)
  name = f"{preset}_{'sym' if symmetric else 'asym'}"
  if weight_group_size is not None:
    name += f"_g{weight_group_size}"
  rules = (QuantRule(pattern=".*", weight=w, act=a),)
  if sparsity is not None:
    scope = None if sparsity_gemms is None else _check_gemms(sparsity_gemms)
    name += f"_{sparsity.n}of{sparsity.m}{sparsity.method}-{sparsity.order}"
    if scope is not None:
      name += "@" + ",".join(g for g in GEMM_TYPES if g in scope)
    sparse_rule = QuantRule(pattern=".*", weight=w, act=a, sparsity=sparsity, gemms=scope)
    rules = (sparse_rule,) if scope is None else (sparse_rule,) + rules
  return QuantPolicy(name=name, rules=rules, gemms=gemms)


SPARSITY_SCOPES = {"all": None, "ffn": ("ffn_in", "ffn_out"), "attn": ("qkv", "attn_out"),
                   **{g: (g,) for g in GEMM_TYPES}}
_PRESET_STRING_RE = re.compile(r"^(?P<preset>[a-z0-9]+)(\+(?P<pattern>[^@]+))?(@(?P<scope>.+))?$")


def parse_preset(text: str) -> tuple[str, str | None, str]:
  """'w4a4+2:4@ffn' -> ('w4a4', '2:4', 'ffn'); 'w4a4' -> ('w4a4', None, 'all'). Checks each part."""
  match = _PRESET_STRING_RE.match(str(text).strip().lower())
  if not match:
    raise ValueError(f"preset {text!r} must look like PRESET[+N:M][@SCOPE], e.g. w4a4+2:4@ffn")
  preset, pattern, scope = match.group("preset"), match.group("pattern"), match.group("scope") or "all"
  if preset not in _PRESET_BITS:
    raise ValueError(f"unknown preset {preset!r} in {text!r}; valid: {list(PRESETS)}")
  if scope not in SPARSITY_SCOPES:
    raise ValueError(f"unknown sparsity scope {scope!r} in {text!r}; valid: {sorted(SPARSITY_SCOPES)}")
  if pattern is None and match.group("scope"):
    raise ValueError(f"preset {text!r} names a scope but no N:M pattern")
  if pattern is not None:
    SparsitySpec.parse(pattern)
  return preset, pattern, scope


def make_policy_from_string(text: str, *, method: str = "static", order: str = "pq", update_every: int = 100,
                            **kwargs) -> QuantPolicy:
  """`make_policy` for a preset string PRESET[+N:M][@SCOPE] (module docstring); kwargs as make_policy."""
  preset, pattern, scope = parse_preset(text)
  sparsity = None if pattern is None else SparsitySpec.parse(pattern, method=method, order=order,
                                                             update_every=update_every)
  return make_policy(preset, sparsity=sparsity, sparsity_gemms=SPARSITY_SCOPES[scope], **kwargs)


def spec_summary(spec: QuantSpec | None) -> str:
  """Short human description of a quantizer, e.g. "int4 sym per-channel"."""
  if spec is None:
    return "float"
  gran = {"tensor": "per-tensor", "channel": "per-channel", "token": "per-token dynamic",
          "group": f"groups of {spec.group_size} along K"}[spec.granularity]
  if spec.format == "ternary":
    s = f"ternary absmean {gran}"
  elif spec.format == "fp4_e2m1":
    s = {"e8m0": f"mxfp4 e2m1, e8m0 scale per {spec.group_size} along K",
         "e4m3": f"nvfp4 e2m1, e4m3 scale per {spec.group_size} along K x fp32 tensor scale",
         "fp32": f"fp4 e2m1 {gran}"}[spec.scale_format]
  else:
    s = f"int{spec.bits} {'sym' if spec.symmetric else 'asym'} {gran}"
  return s if spec.clip is None else s + f", clip [{spec.clip[0]:g}, {spec.clip[1]:g}]"


def describe(*, symmetric: bool = True, weight_group_size: int | None = None) -> list[tuple[str, str, str]]:
  """Rows (preset, weight quantizer, activation quantizer) for the README table (format presets ignore the
  arguments: they are symmetric and fix their blocks)."""
  rows = []
  for preset in PRESETS:
    fmt = preset in FORMAT_PRESETS
    w, a = _preset_specs(preset, symmetric or fmt, None if fmt else weight_group_size, None, None)
    rows.append((preset, spec_summary(w), spec_summary(a)))
  return rows
