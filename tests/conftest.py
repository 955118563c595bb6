"""Shared fixtures for the test suite (models live in helpers.py)."""

from __future__ import annotations

import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest_plugins = ["pytester"]  # tests/test_plugin.py runs pytest on small files

JAX_CACHE_ENV = "JGRADCHECK_TESTS_JAX_CACHE"
"""Where this session's JAX compilation caches live (one per xdist worker)."""


def pytest_configure(config):
    """One JAX persistent compilation cache per session, empty at the start.

    Every ``check_grad`` builds fresh jitted closures, so JAX's in-memory cache
    never sees the same function twice; the many tests that check the same
    small models with the same shapes compile identical XLA programs. The
    persistent cache, keyed by the program itself, serves those from disk
    (bench/cache.py measures the same effect). A cached executable is the one
    XLA compiled, so results are unchanged. The directory is made by the
    controlling process, handed to pytest-xdist workers through the
    environment (a name JAX does not read, so child processes do not use it),
    and removed at the end. Each worker has its own subdirectory: JAX writes
    entries without a lock unless ``filelock`` is installed, and a worker must
    never read another's half-written entry. Should an entry be unreadable
    anyway, JAX compiles afresh and warns; that warning is not a test failure.
    """
    if JAX_CACHE_ENV not in os.environ:
        path = tempfile.mkdtemp(prefix="jgradcheck-tests-jax-cache-")
        os.environ[JAX_CACHE_ENV] = path
        config.stash[_CACHE_OWNED] = path
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    cache = os.path.join(os.environ[JAX_CACHE_ENV], worker)
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    for action in ("reading", "writing"):
        config.addinivalue_line(
            "filterwarnings",
            f"ignore:Error {action} persistent compilation cache entry:UserWarning",
        )


def pytest_unconfigure(config):
    path = config.stash.get(_CACHE_OWNED, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(JAX_CACHE_ENV, None)


_CACHE_OWNED = pytest.StashKey[str]()

SLOW_FIRST = (
    "test_devices.py",
    "test_notebooks.py",
    "test_bench.py",
    "test_pallas.py",
    "test_docs.py",
)
"""Files whose tests take 5-20 s each (child processes, kernels, Pallas in
interpret mode; test_docs.py runs the low-precision guide, up to a minute),
run first.

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
