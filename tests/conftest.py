"""Shared pytest setup: float32 JAX on whatever platform is there (CPU in CI; the GPU kernel tests run where a GPU
exists, the others are written for the CPU), hypothesis profile."""
import os

import jax
import numpy as np
import pytest
from hypothesis import settings

jax.config.update("jax_enable_x64", False)

# CI machines have 2 cores: keep property tests small; no deadline (first call of a shape pays jit compile time).
settings.register_profile("int4jax", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "int4jax"))


# Every random input of the suite comes from these seeds (or from a seed written in the test itself); a failing
# test that drew from them names its seed in the report, so the failure can be replayed.
NP_SEED = 0
JAX_SEED = 0


@pytest.fixture
def np_rng():
  return np.random.default_rng(NP_SEED)


@pytest.fixture
def key():
  return jax.random.key(JAX_SEED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  outcome = yield
  report = outcome.get_result()
  if report.failed:
    used = [f"{name} seed={seed}" for name, seed in (("np_rng", NP_SEED), ("key", JAX_SEED))
            if name in getattr(item, "fixturenames", ())]
    if used:
      report.sections.append(("random seeds", ", ".join(used)))
