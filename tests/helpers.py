"""Small models and utilities shared by the tests."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np


def normal(seed, shape, dtype=jnp.float32):
    """Standard normal test data from NumPy's generator, as a JAX array.

    Not ``jax.random.normal``: on CPU its threefry program takes ~0.8 s to
    compile for every new shape, and the suite builds data of dozens of shapes.
    """
    draw = np.random.default_rng(seed).standard_normal(shape)
    return jnp.asarray(draw.astype(np.float32)).astype(dtype)


def mlp_params(widths, dtype=jnp.float32, seed=0):
    params = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        w = normal([seed, k, 0], (a, b), dtype) / np.sqrt(a)
        params.append({"w": w, "b": 0.1 * normal([seed, k, 1], (b,), dtype)})
    return params


def mlp_loss(params, x, y):
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = jnp.tanh(h)
    return jnp.mean((h - y) ** 2)


def data(shape_x, shape_y, dtype=jnp.float32, seed=1):
    return normal([seed, 0], shape_x, dtype), normal([seed, 1], shape_y, dtype)


def failing_places(report):
    """Set of (path, index) of failing entries."""
    return {(e.path, e.index) for e in report.failures()}


def linear_problem(dtype=jnp.float32, n_in=8, n_out=8, batch=16):
    params = {
        "w": normal([0, 0], (n_in, n_out), dtype) / np.sqrt(n_in),
        "b": 0.1 * normal([0, 1], (n_out,), dtype),
    }
    x, y = data((batch, n_in), (batch, n_out), dtype)
    return params, x, y


def linear_loss(p, x, y):
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


def linear_grad(p, x, y, *, transpose=False, scale=1.0, sign=1.0):
    """The exact gradient of ``linear_loss``, optionally broken."""
    r = 2 * (x @ p["w"] + p["b"] - y) / y.size
    gw = x.T @ r
    return {"w": sign * scale * (gw.T if transpose else gw), "b": sign * r.sum(0)}


def once_per_session(
    name: str, produce: Callable[[], Any], tmp_path_factory: Any
) -> Any:
    """``produce()`` once per test session, even under pytest-xdist.

    Each xdist worker is its own process, so a module-scoped fixture runs once
    per worker that runs one of its tests. Here the first worker to ask runs
    ``produce`` (which must return JSON) under a lock in the session's shared
    temporary directory, and the others read its result. Without xdist it just
    calls ``produce``.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return produce()
    shared = Path(tmp_path_factory.getbasetemp()).parent  # one per session
    result = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(produce()))
        return json.loads(result.read_text())
