"""Shared fixtures for the test suite (models live in helpers.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest_plugins = ["pytester"]  # tests/test_plugin.py runs pytest on small files

SLOW_FIRST = ("test_devices.py", "test_notebooks.py", "test_bench.py")
"""Files whose tests take 5-20 s each (child processes, kernels), run first.

Under pytest-xdist with work stealing (`make test`), the first worker starts
with the first half of the tests and the second with the rest; each steals from
the other's end when idle. Slow tests first keeps them together on one worker
(test_devices.py's child process runs once) and leaves quick tests for the end,
where stealing balances the two workers."""


def pytest_collection_modifyitems(config, items):
    """Slowest files first; otherwise the collection order (a stable sort)."""
    items.sort(key=lambda item: item.path.name not in SLOW_FIRST)


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
