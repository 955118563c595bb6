"""Escalation, measured rounding and the complex step: no false alarms, no misses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc


def hf(p):
    # A positional-encoding-like frequency: 2¹⁰π.
    return jnp.sum(jnp.sin(2**10 * jnp.pi * p) / 2**10)


@pytest.mark.parametrize(
    "method", ["auto", "central", "central4", "central6", "richardson", "complex"]
)
def test_high_frequency_every_method_passes_and_catches_a_sign_flip(method):
    with jax.enable_x64(True):
        x = jnp.linspace(-2.0, 2.0, 32)
        assert jgc.check_grad(hf, x, method=method).ok
        bad = jgc.check_grad(hf, x, method=method, grad=lambda p: -jax.grad(hf)(p))
    assert bad.n_fail == 32


def test_high_frequency_in_native_float32_no_false_alarm_and_no_false_pass():
    # In float32 the phase of sin(3217·x) is only known to ~5e-4 rad and the
    # default step spans 5 periods: the finite differences resolve the
    # gradient to ~3e-3 at best (unsure), and must not mistake the aliased
    # estimate at the default step, or the rounding probe's u³·J‴, for a
    # disagreement (they once failed 44 of 64 correct entries).
    x = jnp.linspace(-2.0, 2.0, 64, dtype=jnp.float32)
    good = jgc.check_grad(hf, x, precision="native")
    assert good.n_fail == 0, good
    bad = jgc.check_grad(hf, x, precision="native", grad=lambda p: -jax.grad(hf)(p))
    assert bad.n_fail + bad.n_unsure == 64 and bad.n_fail >= 48, bad


def test_cancelling_sum_passes_in_float64():
    # Σ |p|·p over a symmetric grid is ~0: eps·|J| says nothing of the
    # rounding of a sum of terms ~4; the measured rounding does.
    with jax.enable_x64(True):
        x = jnp.linspace(-2.0, 2.0, 50)
        assert jgc.check_grad(lambda p: jnp.sum(jnp.abs(p) * p), x).ok


def test_float32_loss_that_rounds_to_zero_is_unsure_not_failed_and_float64_passes():
    # (3000 + p)² summed in float32 rounds every change of one p away (J ≡ 0):
    # native finite differences see nothing; they must not call that a bug.
    def loss(p, c):
        return jnp.sum((c + p) ** 2) - jnp.sum(c**2)

    p = jnp.linspace(-1.0, 1.0, 50, dtype=jnp.float32)
    c = jnp.full(50, 3e3, jnp.float32)
    native = jgc.check_grad(loss, p, c, precision="native")
    assert native.n_fail == 0 and native.n_unsure > 0
    assert jgc.check_grad(
        loss, p, c
    ).ok  # float64 reference: no false "different function"


def test_complex_step_is_accurate_to_ulps():
    f = lambda p: jnp.sum(jnp.exp(jnp.sin(p)) * jnp.tanh(p))  # noqa: E731
    with jax.enable_x64(True):
        x = jnp.linspace(-2.0, 2.0, 40)
        r = jgc.check_grad(f, x, method="complex")
        exact = np.asarray(jax.grad(f)(x))
    rel = np.abs(r.leaves[0].numeric - exact) / np.abs(exact)
    assert r.ok and r.leaves[0].note is None
    assert np.median(rel) < 1e-14
    assert "complex step" in str(r)


@pytest.mark.parametrize(
    "loss",
    [
        lambda p: jnp.sum(jnp.abs(p) * p),
        lambda p: jnp.linalg.norm(p) ** 3,
        lambda p: jnp.vdot(p, p) * jnp.sum(p),
    ],
    ids=["abs", "norm", "vdot"],
)
def test_complex_step_falls_back_with_the_reason_where_it_is_wrong(loss):
    with jax.enable_x64(True):
        x = jnp.linspace(0.1, 2.0, 20)
        r = jgc.check_grad(loss, x, method="complex")
    note = r.leaves[0].note
    assert r.ok, r
    assert note and "complex step not used" in note and "not complex-analytic" in note
    assert "notes:" in str(r) and r.to_dict()["leaves"][0]["note"] == note


def test_complex_step_falls_back_when_the_loss_rejects_complex_input():
    def loss(p):
        return jnp.sum(jax.lax.erf(p))  # erf rejects complex input

    with jax.enable_x64(True):
        r = jgc.check_grad(loss, jnp.linspace(0.1, 2.0, 8), method="complex")
    assert r.ok and "cannot be evaluated at complex parameters" in r.leaves[0].note


def test_complex_step_catches_one_bad_coordinate_confirmed_by_differences():
    f = lambda p: jnp.sum(jnp.exp(jnp.sin(p)) * jnp.tanh(p))  # noqa: E731

    def bad(p):
        return jax.grad(f)(p).at[3].multiply(1 + 1e-7)

    with jax.enable_x64(True):
        r = jgc.check_grad(f, jnp.linspace(-2.0, 2.0, 40), method="complex", grad=bad)
    assert [e.where for e in r.failures()] == ["[3]"]


# ------------------------------------------- rounding through a large intermediate

BIG = 1e6


def _through_big(p):
    # (p + C)² − C²: p + C rounds to ulps of C (1.2e-10), so J rounds by
    # ~1e-4 while |J| ~ 1e6·|p|: eps·|J| says nothing of it. The probe's
    # power-of-two steps once moved p + C by whole ulps and saw no rounding.
    return (p + BIG) ** 2 - BIG**2


def test_rounding_of_a_large_intermediate_is_measured_by_every_check():
    with jax.enable_x64(True):
        x = jnp.linspace(-1.0, 1.0, 20)
        for method in ("auto", "central4", "richardson"):
            r = jgc.check_grad(lambda p: jnp.sum(_through_big(p)), x, method=method)
            assert r.ok, (method, r)
        jvp_rule = jax.custom_jvp(_through_big)
        jvp_rule.defjvp(lambda p, t: (_through_big(p[0]), 2 * (p[0] + BIG) * t[0]))
        vjp_rule = jax.custom_vjp(_through_big)
        vjp_rule.defvjp(
            lambda p: (_through_big(p), p), lambda p, g: (2 * (p + BIG) * g,)
        )
        assert jgc.check_jvp(jvp_rule, x).ok
        assert jgc.check_vjp(vjp_rule, x).ok
        # ... and a 1e-3 relative error is still caught by each.
        bad_jvp = jax.custom_jvp(_through_big)
        bad_jvp.defjvp(lambda p, t: (_through_big(p[0]), 2.002 * (p[0] + BIG) * t[0]))
        bad_vjp = jax.custom_vjp(_through_big)
        bad_vjp.defvjp(
            lambda p: (_through_big(p), p), lambda p, g: (2.002 * (p + BIG) * g,)
        )
        assert not jgc.check_jvp(bad_jvp, x).ok
        assert not jgc.check_vjp(bad_vjp, x).ok
        bad = jgc.check_grad(
            lambda p: jnp.sum(_through_big(p)), x, grad=lambda p: 2.002 * (p + BIG)
        )
        assert bad.n_fail == 20


def test_probe_drops_only_scales_where_the_cube_term_dominates():
    from jgradcheck._numerics.stencil import NOISE_SCALES, probe_offsets, probe_rounding

    u = np.full(8, 1e-3)
    offsets = probe_offsets(u)  # [12, 8]
    # A pure cube: the gaps fall by 15.7³ per scale; no rounding at all.
    cube = probe_rounding((1e3 * offsets) ** 3)
    # Half the smallest scale's gap 12·(a·v)³: the two larger scales are dropped.
    smallest = 6 * (1e3 * NOISE_SCALES[-1] * 1e-3) ** 3
    np.testing.assert_allclose(cube, smallest, rtol=1e-6)
    # Quantised values (J on a grid of 1e-4): no cube law, the largest gap.
    rng = np.random.default_rng(0)
    grid = np.round((2e6 * offsets + rng.uniform(0, 1, 8)) / 1e-4) * 1e-4
    d = probe_rounding(grid)
    # (what check_grad uses: the 75th percentile over the probes)
    assert np.all(d <= 3e-4) and np.quantile(d, 0.75) >= 2.5e-5
