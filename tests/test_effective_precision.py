"""The precision a computation ran at: float64 arrays while x64 is off.

Arrays made inside ``with jax.enable_x64(True):`` keep their float64 dtype
after the block, but JAX then computes with them in float32 (every primitive
that asks for its dtype gets float32, with a "truncated to dtype float32"
warning). Their gradient is a float32 computation and must be judged as one:

* a float64 allowance (16 ulps of float64, 3.6e-15 of the entry's scale) is
  2^29 times below a float32 computation's unit roundoff, and a correct
  ``jax.grad`` failed on thousands of entries at relative errors of 1e-7;
* at float32 the allowance is 16 ulps of float32 (1.9e-6 of the scale) or the
  gradient's rounding measured against its float64 re-run (capped at 2^-10),
  which is what any float32 gradient gets, so an error of 1e-3 relative in one
  entry is still 500 times the allowance and is caught.

Every "must pass" case here has a "must catch" twin; no test may leak JAX's
truncation warning (pytest turns warnings into errors).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import failing_places, mlp_loss

pytestmark = pytest.mark.skipif(
    jax.config.jax_enable_x64,
    reason="float64 arrays checked with x64 off need x64 off (JAX's default)",
)


def _in_x64(make):
    """``make()`` inside ``jax.enable_x64(True)``: float64 arrays, then x64 off."""
    with jax.enable_x64(True):
        return make()


def _mlp64():
    def make():
        rng = np.random.default_rng(0)
        params = [
            {"w": jnp.asarray(rng.normal(size=(6, 8)) / 2.5), "b": jnp.zeros(8)},
            {"w": jnp.asarray(rng.normal(size=(8, 3)) / 3.0), "b": jnp.zeros(3)},
        ]
        x = jnp.asarray(rng.normal(size=(16, 6)))
        y = jnp.asarray(rng.normal(size=(16, 3)))
        return params, x, y

    return _in_x64(make)


def _high_frequency(p, x):
    return jnp.sum(jnp.sin(37.0 * (x @ p)))


def _large(p, x):
    return jnp.sum((x @ p) ** 2)


CASES = {
    "mlp": lambda: (mlp_loss, *_mlp64()),
    "high_frequency": lambda: (
        _high_frequency,
        *_in_x64(
            lambda: (
                jnp.asarray(np.random.default_rng(2).normal(size=(5, 4)) / 5),
                jnp.asarray(np.random.default_rng(3).normal(size=(7, 5))),
            )
        ),
    ),
    "large_magnitude": lambda: (
        _large,
        *_in_x64(
            lambda: (
                jnp.asarray(1e4 * np.random.default_rng(4).normal(size=(5, 4))),
                jnp.asarray(np.random.default_rng(5).normal(size=(7, 5))),
            )
        ),
    ),
}


def _params_and_path(case):
    """The params of a case, and one (path, index) to break."""
    loss, params, *args = CASES[case]()
    where = ("[1]['w']", (2, 1)) if case == "mlp" else ("", (3, 2))
    return loss, params, args, where


def _broken(loss, where, rel=1e-3):
    """``jax.grad(loss)`` with one entry off by ``rel`` relative."""
    path, index = where

    def grad(p, *args):
        g = jax.grad(loss)(p, *args)
        flat, treedef = jax.tree_util.tree_flatten_with_path(g)
        leaves = []
        for k, v in flat:
            factor = np.ones(v.shape)
            if jax.tree_util.keystr(k) == path:
                factor[index] = 1 + rel
            leaves.append(v * factor)
        return jax.tree_util.tree_unflatten(treedef, leaves)

    return grad


# ------------------------------------------------------------ check_grad


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("case", list(CASES))
def test_float64_arrays_with_x64_off_pass_and_say_float32_ran(case, mode):
    loss, params, args, _ = _params_and_path(case)
    report = jgc.check_grad(loss, params, *args, mode=mode)
    assert report.ok, report
    assert report.settings.gradient == (
        "jax.grad(loss) in float32 (float64 arrays, computed in float32: x64 is off)"
    )
    assert report.settings.rounding == "measured against float64"
    assert all(leaf.grad_dtype == np.float32 for leaf in report.leaves)
    assert "computed in float32: x64 is off" in str(report)


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("case", list(CASES))
def test_float64_arrays_with_x64_off_a_1e3_error_is_caught_and_localised(case, mode):
    loss, params, args, where = _params_and_path(case)
    report = jgc.check_grad(loss, params, *args, grad=_broken(loss, where), mode=mode)
    assert not report.ok
    assert failing_places(report) == {where}


def test_complex128_arrays_with_x64_off_are_complex64_computations():
    def loss(z):
        return jnp.sum(jnp.abs(jnp.sin(z)) ** 2)

    rng = np.random.default_rng(9)
    z = _in_x64(lambda: jnp.asarray(rng.normal(size=6) + 1j * rng.normal(size=6)))
    report = jgc.check_grad(loss, z)
    assert report.ok, report
    assert report.settings.gradient == (
        "jax.grad(loss) in complex64 "
        "(complex128 arrays, computed in complex64: x64 is off)"
    )

    def off(z):  # d/dRe of entry 2 off by 1e-3 relative
        g = np.array(jax.grad(loss)(z.astype(jnp.complex64)))
        g[2] = g[2].real * (1 + 1e-3) + 1j * g[2].imag
        return g.astype(np.complex64)

    assert failing_places(jgc.check_grad(loss, z, grad=off)) == {("", (2, 0))}


def test_a_jax_grad_written_by_hand_is_a_float32_computation_too():
    loss, params, args, where = _params_and_path("mlp")
    good = jgc.check_grad(loss, params, *args, grad=jax.grad(loss))
    assert good.ok, good
    assert good.settings.gradient.endswith(
        "in float32 (float64 arrays, computed in float32: x64 is off)"
    )
    bad = jgc.check_grad(loss, params, *args, grad=_broken(loss, where, rel=-1e-3))
    assert failing_places(bad) == {where}


def test_a_numpy_gradient_keeps_its_float64():
    # NumPy computes in float64 whatever JAX's setting: judged at float64, so
    # an error of 1e-7 (far below float32's rounding) is still caught.
    def loss(p):
        return jnp.sum(p**3)

    p = _in_x64(lambda: jnp.linspace(0.5, 2.0, 6))
    exact = jgc.check_grad(loss, p, grad=lambda p: 3.0 * np.asarray(p) ** 2)
    assert exact.ok, exact
    assert exact.settings.gradient.endswith(" in float64")

    def off(p):
        g = 3.0 * np.asarray(p) ** 2
        g[4] *= 1 + 1e-7
        return g

    assert failing_places(jgc.check_grad(loss, p, grad=off)) == {("", (4,))}


def test_native_precision_sweeps_in_float32():
    loss, params, args, where = _params_and_path("mlp")
    report = jgc.check_grad(loss, params, *args, precision="native")
    assert report.ok, report
    assert report.settings.reference_dtype == "float32"


def test_native_precision_of_float64_arrays_is_float32_native_precision():
    # The same steps and values, hence the same verdicts, as float32 arrays;
    # float32 finite differences resolve ~0.5% here, the entry is off by 2%.
    loss, params, args, where = _params_and_path("mlp")
    bad = jgc.check_grad(
        loss, params, *args, grad=_broken(loss, where, 2e-2), precision="native"
    )
    assert failing_places(bad) == {where}
    params32, args32 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32), (params, args)
    )
    bad32 = jgc.check_grad(
        loss, params32, *args32, grad=_broken(loss, where, 2e-2), precision="native"
    )
    for leaf, leaf32 in zip(bad.leaves, bad32.leaves):
        np.testing.assert_array_equal(leaf.numeric, leaf32.numeric)
        np.testing.assert_array_equal(leaf.status, leaf32.status)


def test_no_truncation_warning_escapes():
    loss, params, args, _ = _params_and_path("mlp")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        jgc.check_grad(loss, params, *args)
        jgc.check_grad(loss, params, *args, mode="fast", precision="native")
    assert not [w for w in seen if "truncated" in str(w.message)]


# -------------------------------------------- float32 and float64 worlds


def test_float32_world_is_unchanged():
    params, x, y = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), _mlp64())
    report = jgc.check_grad(mlp_loss, params, x, y)
    assert report.ok
    assert report.settings.gradient == "jax.grad(loss) in float32"
    assert report.settings.rounding == "measured against float64"


def test_float64_world_is_unchanged():
    with jax.enable_x64(True):
        params, x, y = _mlp64()
        report = jgc.check_grad(mlp_loss, params, x, y)
        # An error of 1e-6, far below float32's rounding, is caught at
        # float64's own allowance: with x64 on, float64 arrays are float64.
        where = ("[1]['w']", (2, 1))
        bad = jgc.check_grad(
            mlp_loss, params, x, y, grad=_broken(mlp_loss, where, rel=1e-6)
        )
    assert report.ok
    assert report.settings.gradient == "jax.grad(loss) in float64"
    assert report.settings.rounding == "fixed"
    assert failing_places(bad) == {where}


# ------------------------------------------------- numerical_grad, eps_sweep


def test_numerical_grad_of_float64_arrays_with_x64_off():
    def loss(p, x):
        return jnp.sum(jnp.tanh(x @ p) ** 2)

    p, x = _in_x64(
        lambda: (
            jnp.asarray(np.random.default_rng(6).normal(size=(5, 3))),
            jnp.asarray(np.random.default_rng(7).normal(size=(4, 5))),
        )
    )
    with jax.enable_x64(True):
        exact = np.asarray(jax.grad(loss)(p, x))
    g = jgc.numerical_grad(loss, p, x)  # float64 reference: float64 accuracy
    assert np.max(np.abs(g - exact)) <= 1e-8 * np.max(np.abs(exact))
    # In native precision the steps are float32 steps of float32 leaves: the
    # error is float32 finite differences' (~eps32^(2/3) ≈ 2.4e-5 relative),
    # not the steps' rounding to float32 (eps32/h ≈ 2.4e-5 per entry, uncounted).
    g32, err = jgc.numerical_grad(loss, p, x, precision="native", with_error=True)
    assert np.all(np.abs(g32 - exact) <= 10 * err + 1e-6 * np.max(np.abs(exact)))


def test_eps_sweep_of_float64_arrays_with_x64_off_is_a_float32_sweep():
    def loss(p):
        return jnp.sum(jnp.exp(jnp.sin(p)) * jnp.tanh(p))

    p = _in_x64(lambda: jnp.linspace(-1.0, 2.0, 5))
    s = jgc.eps_sweep(loss, p, precision="native")
    assert s.dtype == "float32"
    assert 1e-4 <= np.median(s.best_eps["central"]) <= 5e-2  # cbrt(1.2e-7) = 5e-3


# ------------------------------------------------------ check_vjp, check_jvp


def _dense(scale_dx=1.0):
    @jax.custom_vjp
    def dense(w, x):
        return jnp.tanh(x @ w)

    def fwd(w, x):
        y = jnp.tanh(x @ w)
        return y, (w, x, y)

    def bwd(res, g):
        w, x, y = res
        d = g * (1 - y**2)
        dx = d @ w.T
        return x.T @ d, dx.at[1, 2].multiply(scale_dx)

    dense.defvjp(fwd, bwd)
    return dense


def _dense_inputs():
    rng = np.random.default_rng(8)
    return _in_x64(
        lambda: (
            jnp.asarray(rng.normal(size=(6, 4)) / 2.5),
            jnp.asarray(rng.normal(size=(3, 6))),
        )
    )


def test_check_vjp_of_float64_arrays_with_x64_off():
    report = jgc.check_vjp(_dense(), *_dense_inputs())
    assert report.ok, report
    assert report.precision == "float64 arrays, computed in float32: x64 is off"
    assert "precision: float64 arrays, computed in float32" in str(report)


def test_check_vjp_of_float64_arrays_with_x64_off_catches_a_1e3_error():
    bad = jgc.check_vjp(_dense(1 + 1e-3), *_dense_inputs())
    assert not bad.ok
    ((_, rep),) = bad.localized
    assert failing_places(rep) == {("[1]", (1, 2))}


def test_check_jvp_of_float64_arrays_with_x64_off():
    def f(w, x):
        return jnp.tanh(x @ w)

    report = jgc.check_jvp(f, *_dense_inputs())
    assert report.ok, report
    assert report.precision == "float64 arrays, computed in float32: x64 is off"
    assert (
        "(float64 arrays, computed in float32"
        in report.localized[0][1].settings.gradient
    )


def test_check_jvp_of_float64_arrays_with_x64_off_catches_a_1e3_error():
    @jax.custom_jvp
    def g(w, x):
        return jnp.tanh(x @ w)

    @g.defjvp
    def g_jvp(primals, tangents):
        (w, x), (dw, dx) = primals, tangents
        y = jnp.tanh(x @ w)
        dy = (1 - y**2) * (dx @ w + x @ dw)
        return y, dy.at[2, 1].multiply(1 + 1e-3)

    bad = jgc.check_jvp(g, *_dense_inputs())
    assert not bad.ok
    assert any("[2, 1]" in line for line in bad.failures()), bad.failures()


def test_rules_in_a_consistent_world_say_nothing_about_precision():
    w, x = (a.astype(jnp.float32) for a in _dense_inputs())
    report = jgc.check_vjp(_dense(), w, x)
    assert report.ok and report.precision == ""
    assert "precision:" not in str(report)
