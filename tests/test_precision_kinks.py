"""Kinks across precisions and non-finite parameter entries (issue 12, items 6–7).

A ReLU pre-activation that is exactly 0 in float32 but not in float64 puts
the gradient under test and the float64 finite difference on different sides
of the kink: that is a kink, never a FAIL. A NaN in a parameter entry the
loss never reads is held fixed and listed, never a FAIL. Each "must not
fail" case has a "must catch" twin.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._numerics.native_kink import at_kink_nearby, kinks_nearby
from jgradcheck._numerics.verdict import FAIL, KINK

K = np.float32(1e-3)
"""The small coefficient of ``s``: the float64 kink is pre64 / K away along s."""
X = np.array([3.0, 7.0], np.float32)


def _pre(p: dict[str, jax.Array]) -> jax.Array:
    return jnp.dot(p["w"], jnp.asarray(X)) + p["s"] * K + p["b"]


def _loss(p: dict[str, jax.Array]) -> jax.Array:
    return 3.0 * jax.nn.relu(_pre(p)) + 0.5 * jnp.sum(p["w"] ** 2)


def _at_float32_kink() -> dict[str, jax.Array]:
    """Params whose pre-activation is exactly 0 in float32, positive in float64."""
    for w0 in np.linspace(0.1, 0.2, 200).astype(np.float32):
        p = {
            "w": jnp.asarray(np.array([w0, 0.3], np.float32)),
            "s": jnp.asarray(np.float32(0.5)),
            "b": jnp.asarray(np.float32(0.0)),
        }
        p["b"] = -jax.jit(_pre)(p)
        with jax.enable_x64(True):
            p64 = {k: jnp.asarray(v, jnp.float64) for k, v in p.items()}
            pre64 = float(_pre(p64))
        if float(jax.jit(_pre)(p)) == 0.0 and pre64 > 1e-8:
            return p
    raise AssertionError("no float32 kink point found")  # pragma: no cover


@pytest.fixture(scope="module")
def kink_params() -> dict[str, jax.Array]:
    return _at_float32_kink()


def _status(report: Any, path: str) -> int:
    (leaf,) = [leaf for leaf in report.leaves if leaf.path == path]
    return int(leaf.status[0])


def test_relu_kink_across_precisions_is_a_kink(kink_params: Any) -> None:
    g = jax.grad(_loss)(kink_params)
    assert float(g["s"]) == 0.0  # float32 sits at the kink, on its flat side
    report = jgc.check_grad(_loss, kink_params)
    # Every entry of this loss sits at the kink: none fails, none is verified
    # either, so the report is not a pass (issue 13: "nothing was verified").
    assert report.n_fail == 0 and report.n_unsure == 0
    assert not report.ok and not report.verified
    assert _status(report, "['s']") == KINK
    (leaf,) = [leaf for leaf in report.leaves if leaf.path == "['s']"]
    assert leaf.note is not None and "kink across precisions" in leaf.note
    assert "isolated" not in str(report) and "FAIL" not in str(report)


@pytest.mark.parametrize("factor", [2.0, -1.0])
def test_wrong_slope_at_that_kink_still_fails(kink_params: Any, factor: float) -> None:
    g = jax.grad(_loss)(kink_params)
    wrong = {**g, "s": jnp.float32(factor * 3.0 * K)}  # matches neither side
    report = jgc.check_grad(_loss, kink_params, grad=lambda p: wrong)
    assert not report.ok
    assert _status(report, "['s']") == FAIL


def test_kink_across_precisions_in_fast_mode(kink_params: Any) -> None:
    report = jgc.check_grad(_loss, kink_params, mode="fast")
    assert report.n_fail == 0 and report.n_unsure == 0
    assert not report.verified and "nothing was verified" in str(report)


def test_float64_params_at_the_same_point_pass(kink_params: Any) -> None:
    with jax.enable_x64(True):
        p64 = {k: jnp.asarray(v, jnp.float64) for k, v in kink_params.items()}
        report = jgc.check_grad(_loss, p64)
    assert report.ok


def _layer() -> tuple[Any, dict[str, jax.Array], jax.Array]:
    """A ReLU layer whose six pre-activations are all exactly 0 in float32 and
    a mix of signs in float64 (the kinks are 1e-8 … 1e-6 off θ along W, b)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.array([3.0, 7.0, 1e-3], np.float32))
    w = jnp.asarray(rng.uniform(-1, 1, (6, 3)).astype(np.float32))
    params = {"W": w, "b": -jax.jit(lambda w: w @ x)(w)}
    v = jnp.asarray(rng.uniform(0.5, 1.5, 6).astype(np.float32))

    def loss(p: dict[str, jax.Array], v: jax.Array) -> jax.Array:
        h = jax.nn.relu(p["W"] @ x + p["b"])
        return jnp.sum(v * h) + 0.1 * jnp.sum(p["W"] ** 2)

    assert not np.any(np.asarray(jax.jit(lambda p: p["W"] @ x + p["b"])(params)))
    return loss, params, v


def test_layer_of_float32_kinks_with_a_hand_gradient_passes() -> None:
    loss, params, v = _layer()
    g = jax.grad(loss)(params, v)  # a hand gradient: no float64 rerun to lean on
    report = jgc.check_grad(loss, params, v, grad=lambda p, v: g)
    assert report.ok and report.n_fail == 0 and report.n_kink > 0


def test_layer_of_float32_kinks_with_one_wrong_entry_is_caught() -> None:
    loss, params, v = _layer()
    g = jax.grad(loss)(params, v)
    bad = {**g, "W": g["W"].at[1, 2].set(2.0 * g["W"][1, 2] + 0.01)}
    report = jgc.check_grad(loss, params, v, grad=lambda p, v: bad)
    assert [e.where for e in report.failures()] == ["['W'][1, 2]"]


# ----------------------------------------------------- the numerics, on arrays


def _ladder(f: Any, delta: float) -> tuple[np.ndarray, ...]:
    steps = 1e-5 * 2.0 ** np.arange(10)[:, None]
    j0 = float(f(np.array([0.0]))[0])
    return j0, f(steps), f(-steps), steps, steps, np.full(steps.shape, 1e-16)


def test_kinks_nearby_finds_a_kink_a_little_way_off() -> None:
    delta = 3e-5  # the kink, off θ = 0 by delta; slopes 0 (left) and 2 (right)
    args = _ladder(lambda x: 2.0 * np.maximum(x - delta, 0.0), delta)
    kink = kinks_nearby(*args)
    assert kink.found.all()
    assert abs(kink.left[0]) < 0.25 and abs(kink.right[0] - 2.0) < 0.25
    g = np.array([0.0, 1.0, 4.0, -2.0])
    n = np.full(4, 0.0)
    k4 = kink._replace(**{f: np.repeat(getattr(kink, f), 4) for f in kink._fields})
    yes = at_kink_nearby(g, n, np.zeros(4), k4, np.zeros(4))
    assert yes.tolist() == [True, True, False, False]  # twice, or opposite: FAIL


def test_kinks_nearby_not_on_smooth_or_far_kinks() -> None:
    smooth = kinks_nearby(*_ladder(lambda x: np.sin(3.0 * x) + x**2, 0.0))
    assert not smooth.found.any()
    far = kinks_nearby(*_ladder(lambda x: 2.0 * np.maximum(x - 0.1, 0.0), 0.1))
    assert not far.found.any()


# ------------------------------------------------- non-finite parameter entries


def _masked(p: dict[str, jax.Array]) -> jax.Array:
    return jnp.sum(jnp.sin(p["w"][:3])) + jnp.sum(p["b"] ** 2)


_PADDED = {
    "w": np.array([0.1, 0.2, 0.3, np.nan], np.float32),
    "b": np.array([0.5, 1.0], np.float32),
}


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_nan_in_an_unused_entry_is_held_and_listed(mode: str) -> None:
    params = {k: jnp.asarray(v) for k, v in _PADDED.items()}
    report = jgc.check_grad(_masked, params, mode=mode)
    assert report.ok and report.n_fail == 0
    (w,) = [leaf for leaf in report.leaves if leaf.path == "['w']"]
    assert w.held is not None and w.held.tolist() == [3]
    assert "NaN or inf in params, held fixed" in str(report)
    assert "['w'][3]" in str(report)
    assert report.to_dict()["leaves"][1]["held"] == [3]


def test_wrong_entry_beside_a_nan_is_still_caught() -> None:
    params = {k: jnp.asarray(v) for k, v in _PADDED.items()}

    def bad(p: dict[str, jax.Array]) -> dict[str, jax.Array]:
        g = jax.grad(_masked)(p)
        return {**g, "w": g["w"].at[1].multiply(1.05)}

    report = jgc.check_grad(_masked, params, grad=bad)
    assert not report.ok
    assert [e.where for e in report.failures()] == ["['w'][1]"]


def test_inf_leaf_held_whole_and_nan_read_by_loss_raises() -> None:
    params = {
        "w": jnp.asarray(np.array([np.nan, np.inf], np.float32)),
        "b": jnp.asarray(np.array([0.5, 1.0], np.float32)),
    }
    report = jgc.check_grad(lambda p: jnp.sum(p["b"] ** 3), params)
    assert report.ok and report.n_checked == 2
    with pytest.raises(ValueError, match=r"not finite at: \['w'\]\[0\] = nan"):
        jgc.check_grad(lambda p: jnp.sum(p["w"]) + jnp.sum(p["b"]), params)
