"""Shared fixtures for the test suite (models live in helpers.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest_plugins = ["pytester"]  # tests/test_plugin.py runs pytest on small files


@pytest.fixture(autouse=True)
def _fixed_seeds():
    np.random.seed(0)
    yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test with float32 params and with float64 params (x64 scoped on)."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield jnp.float64
    else:
        yield jnp.float32
