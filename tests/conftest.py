"""Shared pytest setup: JAX on CPU in float32 (override with JAX_PLATFORMS=cuda for GPU tests), hypothesis profile."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_enable_x64", False)

# CI machines have 2 cores: keep property tests small; no deadline (first call of a shape pays jit compile time).
settings.register_profile("int4jax", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "int4jax"))


@pytest.fixture
def np_rng():
  return np.random.default_rng(0)


@pytest.fixture
def key():
  return jax.random.key(0)
