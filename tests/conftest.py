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


@pytest.fixture
def np_rng():
  return np.random.default_rng(0)


@pytest.fixture
def key():
  return jax.random.key(0)
