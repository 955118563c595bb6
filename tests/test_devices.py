"""Sweeps split over several devices give the results of one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import jax
import jax.numpy as jnp
import pytest

import jgradcheck as jgc
from helpers import once_per_session
from jgradcheck._engine.devices import resolve_devices

# Runs in a fresh process with four forced host (CPU) devices: the device
# count is fixed when JAX starts, so it cannot be changed in this process.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import jgradcheck as jgc
    from helpers import data, mlp_loss, mlp_params

    facts = {
        "device_count": jax.device_count(),
        "names": [str(d) for d in jax.devices()],
    }
    params = mlp_params([5, 12, 7, 3])
    x, y = data((4, 5), (4, 3))

    def wrong(p, x, y):
        g = jax.grad(mlp_loss)(p, x, y)
        g[1]["w"] = g[1]["w"].at[2, 3].multiply(1.01)
        return g

    def same(a, b):
        return all(
            np.array_equal(u.idx, v.idx)
            and np.array_equal(u.numeric, v.numeric)
            and np.array_equal(u.error_bar, v.error_bar)
            and np.array_equal(u.tolerance, v.tolerance)
            and np.array_equal(u.status, v.status)
            for u, v in zip(a.leaves, b.leaves)
        ) and len(a.leaves) == len(b.leaves)

    for name, grad in (("right", None), ("wrong", wrong)):
        one = jgc.check_grad(mlp_loss, params, x, y, grad=grad, devices=1)
        # Three devices for the right gradient, two named ones for the wrong.
        other = 3 if grad is None else jax.devices()[2:]
        runs = {
            "all": jgc.check_grad(mlp_loss, params, x, y, grad=grad),
            "other": jgc.check_grad(mlp_loss, params, x, y, grad=grad, devices=other),
        }
        facts[name] = {
            "ok": [one.ok] + [r.ok for r in runs.values()],
            "failures": sorted(
                [e.path, list(e.index)] for e in one.failures()
            ),
            "one_ran_on": list(one.timing.devices),
            "ran_on": {k: list(r.timing.devices) for k, r in runs.items()},
            "identical": {k: same(r, one) for k, r in runs.items()},
        }

    def same_directions(a, b):
        return all(
            (u.directions is None) == (v.directions is None)
            and (
                u.directions is None
                or all(np.array_equal(p, q) for p, q in zip(u.directions, v.directions))
            )
            for u, v in zip(a.leaves, b.leaves)
        )

    # Fast mode: the directional sweep is split over the devices too. The right
    # gradient passes along every direction (only the directional sweep runs);
    # the wrong one also sweeps its failing leaf entry by entry.
    facts["fast"] = {}
    for name, grad in (("right", None), ("wrong", wrong)):
        one = jgc.check_grad(mlp_loss, params, x, y, grad=grad, mode="fast", devices=1)
        runs = {"all": jgc.check_grad(mlp_loss, params, x, y, grad=grad, mode="fast")}
        if grad is None:
            runs["other"] = jgc.check_grad(
                mlp_loss, params, x, y, mode="fast", devices=jax.devices()[1:3]
            )
        facts["fast"][name] = {
            "ok": [one.ok] + [r.ok for r in runs.values()],
            "failures": sorted([e.path, list(e.index)] for e in one.failures()),
            "swept": [leaf.checked for leaf in one.leaves],
            "one_ran_on": list(one.timing.devices),
            "ran_on": {k: list(r.timing.devices) for k, r in runs.items()},
            "identical": {
                k: same(r, one) and same_directions(r, one) for k, r in runs.items()
            },
        }

    @jax.custom_vjp
    def layer(x, w):
        return jnp.tanh(x @ w)

    def layer_bwd(res, g):
        x, w = res
        d = g * (1 - jnp.tanh(x @ w) ** 2)
        return d @ w.T, 1.5 * (x.T @ d)  # wrong by 1.5 on w

    layer.defvjp(lambda x, w: (layer(x, w), (x, w)), layer_bwd)
    rep = jgc.check_vjp(layer, 0.3 * jnp.ones((3, 4)), 0.5 * jnp.eye(4, 5))
    facts["vjp"] = {
        "ok": rep.ok,
        "ran_on": [list(r.timing.devices) for _, r in rep.localized],
        "failing_paths": sorted({e.path for _, r in rep.localized for e in r.failures()}),
    }
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    def numpy_bwd(x, g):  # NumPy on a residual: fails wherever it is traced
        return (g * np.asarray(jax.nn.sigmoid(x)),)

    facts["grid"] = {}
    for name, bwd in [("right", lambda x, g: (g * jax.nn.sigmoid(x),)),
                      ("numpy", numpy_bwd)]:
        softplus.defvjp(lambda x: (softplus(x), x), bwd)
        grid = jgc.check_compositions(softplus, jnp.array([-1.5, 0.25, 2.0]))
        row = grid.row("shard_map")
        facts["grid"][name] = [grid.points, row.name, row.status, row.detail]
    try:
        jgc.check_grad(mlp_loss, params, x, y, devices=5)
    except ValueError as e:
        facts["too_many"] = str(e)
    print(json.dumps(facts))
    """
)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    return once_per_session("four_devices", _run_four_devices, tmp_path_factory)


def _run_four_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(
        [tests] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    # Like the tests in this process (conftest.py), the child gets a JAX
    # persistent compilation cache, its own and empty at the start: its twelve
    # checks compile many identical programs (the right and the wrong gradient
    # sweep the same loss). Cached executables are the ones XLA compiled, so the
    # results, and the bitwise comparisons below, are unchanged; the child's
    # CPU time drops by about a quarter.
    with tempfile.TemporaryDirectory(prefix="jgradcheck-four-devices-") as cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_forced_host_devices_are_visible(four_devices):
    assert four_devices["device_count"] == 4


@pytest.mark.parametrize("name", ["right", "wrong"])
def test_split_sweeps_are_bitwise_identical_to_one_device(four_devices, name):
    facts = four_devices[name]
    assert facts["identical"] == {"all": True, "other": True}
    assert facts["ok"] == [name == "right"] * 3
    if name == "wrong":
        assert facts["failures"] == [["[1]['w']", [2, 3]]]


@pytest.mark.parametrize("name", ["right", "wrong"])
def test_sweeps_ran_on_the_devices_asked_for(four_devices, name):
    facts, d = four_devices[name], four_devices["names"]
    assert facts["one_ran_on"] == d[:1]
    assert facts["ran_on"] == {
        "all": d,
        "other": d[:3] if name == "right" else d[2:],
    }


def test_check_vjp_localises_on_every_device(four_devices):
    vjp = four_devices["vjp"]
    assert vjp["ok"] is False
    assert vjp["ran_on"] and all(len(d) == 4 for d in vjp["ran_on"])
    assert vjp["failing_paths"] == ["[1]"]


def test_composition_grid_runs_shard_map_over_the_devices(four_devices):
    right, numpy_bwd = four_devices["grid"]["right"], four_devices["grid"]["numpy"]
    # batch=3 points rounded up to a multiple of the 4 devices
    assert right[:3] == [4, "shard_map over 4 devices", "ok"]
    assert numpy_bwd[2] == "FAIL" and "TracerArrayConversionError" in numpy_bwd[3]


@pytest.mark.parametrize("name", ["right", "wrong"])
def test_fast_mode_splits_its_directions_over_the_devices(four_devices, name):
    facts, d = four_devices["fast"][name], four_devices["names"]
    assert facts["identical"] == dict.fromkeys(facts["ran_on"], True)
    assert facts["ok"] == [name == "right"] * len(facts["ok"])
    assert facts["one_ran_on"] == d[:1]
    if name == "right":  # only the directional sweep ran: no entry swept
        assert facts["swept"] == [0] * 6
        assert facts["ran_on"] == {"all": d, "other": d[1:3]}
    else:
        assert facts["failures"] == [["[1]['w']", [2, 3]]]
        assert facts["ran_on"] == {"all": d}


def test_too_many_devices_in_the_child(four_devices):
    assert "`devices` must be between 1 and 4" in four_devices["too_many"]


def _quad(p):
    return jnp.sum(jnp.sin(p) ** 2)


@pytest.mark.parametrize(
    "devices, error, match",
    [
        (0, ValueError, "between 1 and"),
        (jax.local_device_count() + 1, ValueError, "between 1 and"),
        ([], ValueError, "empty"),
        ("cpu", TypeError, "sequence of jax.Device"),
        (True, TypeError, "None, an int"),
        ([0, 1], TypeError, "jax.Device objects"),
        (jax.local_devices()[:1] * 2, ValueError, "more than once"),
        (2.5, TypeError, "sequence of jax.Device"),
    ],
)
def test_bad_devices(devices, error, match):
    with pytest.raises(error, match=match):
        jgc.check_grad(_quad, jnp.array([0.1, 0.2]), devices=devices)


def test_resolve_devices():
    local = tuple(jax.local_devices())
    assert resolve_devices(None) == local
    assert resolve_devices(1) == local[:1]
    assert resolve_devices(local[0]) == local[:1]
    assert resolve_devices(list(local)) == local


def test_one_device_report_names_it():
    r = jgc.check_grad(_quad, jnp.array([0.1, 0.2]), devices=1)
    assert r.ok and r.timing.devices == (str(jax.local_devices()[0]),)


def test_fast_mode_report_names_its_device():
    # Every direction agrees, so only the directional sweep ran.
    r = jgc.check_grad(_quad, jnp.array([0.1, 0.2]), mode="fast", devices=1)
    assert r.ok and r.leaves[0].checked == 0
    assert r.timing.devices == (str(jax.local_devices()[0]),)
