"""check_hvp: reverse-over-reverse Hessian-vector products through custom
rules against finite differences of the gradient, and the Hessian's symmetry."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

import jgradcheck as jgc


def _softplus_rule(blind: bool):
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    def bwd(x, g):
        # blind: right at first order, but the bwd's own derivative in x is
        # cut, so reverse over reverse drops the second derivative.
        at = jax.lax.stop_gradient(x) if blind else x
        return (g * jax.nn.sigmoid(at),)

    softplus.defvjp(lambda x: (softplus(x), x), bwd)
    return softplus


softplus = _softplus_rule(blind=False)
softplus_blind = _softplus_rule(blind=True)


@jax.custom_vjp
def tanh(x):
    return jnp.tanh(x)


tanh.defvjp(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda t, g: (g * (1 - t * t),))


def _product_rule(factor: float):
    @jax.custom_vjp
    def mul(a, b):
        return a * b

    # factor 2: ∂/∂b is 2a, the "gradient" (b, 2a) is no gradient field.
    mul.defvjp(lambda a, b: (a * b, (a, b)), lambda r, g: (g * r[1], factor * g * r[0]))
    return mul


mul, mul_asymmetric = _product_rule(1.0), _product_rule(2.0)


def softplus_loss(w, x):
    return jnp.sum(softplus(w * x) ** 2)


def softplus_blind_loss(w, x):
    return jnp.sum(softplus_blind(w * x) ** 2)


def mlp_loss(p, x, y):
    h = tanh(x @ p["w1"])
    return jnp.mean((h @ p["w2"] - y) ** 2)


def product_loss(p):
    return jnp.sum(mul(p["a"], p["b"]) ** 2)


def asymmetric_loss(p):
    return jnp.sum(mul_asymmetric(p["a"], p["b"]) ** 2)


W, XS = [0.5, -1.0, 0.3], [1.0, 2.0, -1.5]
PRODUCT = {"a": [0.5, 1.0], "b": [1.5, -1.0]}


def _product_params(dtype):
    return {k: jnp.array(v, dtype) for k, v in PRODUCT.items()}


@functools.cache
def _blind_report():
    return jgc.check_hvp(softplus_blind_loss, jnp.array(W), jnp.array(XS))


def test_correct_custom_vjp_passes(dtype):
    report = jgc.check_hvp(softplus_loss, jnp.array(W, dtype), jnp.array(XS, dtype))
    assert report.ok, report
    assert len(report.directions) == 2 and report.symmetry.ok


def test_tanh_mlp_through_a_custom_vjp_passes(dtype):
    params = {
        "w1": jnp.array([[0.4, -0.7], [0.2, 0.9]], dtype),
        "w2": jnp.array([0.6, -0.3], dtype),
    }
    x = jnp.array([[1.0, -0.5], [0.3, 0.8], [-1.2, 0.1]], dtype)
    y = jnp.array([0.2, -0.1, 0.4], dtype)
    report = jgc.check_hvp(mlp_loss, params, x, y, directions=3)
    assert report.ok, report
    assert report.symmetry.pairs == 3


def test_bwd_blind_to_its_input_is_caught():
    report = _blind_report()
    assert not report.ok
    assert all(d.n_fail == d.size == 3 for d in report.directions), report
    # H·v is wrong but still symmetric (it is 0 on the softplus' part):
    # only the finite differences see it.
    assert report.symmetry.ok
    assert str(report).startswith("check_hvp: FAILED: H·v disagrees")


def test_asymmetric_second_order_is_caught_and_its_twin_passes(dtype):
    good = jgc.check_hvp(product_loss, _product_params(dtype), directions=3)
    assert good.ok, good
    bad = jgc.check_hvp(asymmetric_loss, _product_params(dtype), directions=3)
    assert not bad.symmetry.ok, bad
    assert "the Hessian is not symmetric" in str(bad).splitlines()[0]


def test_one_direction_has_no_symmetry_row():
    report = jgc.check_hvp(softplus_loss, jnp.array(W), jnp.array(XS), directions=1)
    assert report.ok and report.symmetry is None
    assert "symmetry: not checked" in str(report)


def test_report_renders_and_assert_raises():
    report = _blind_report()
    html = report._repr_html_()
    assert "FAIL (3 of 3)" in html and "symmetry: ok" in html
    assert repr(report) == "HvpReport(ok=False, directions=2)"
    with pytest.raises(jgc.GradCheckError) as e:
        jgc.assert_hvp(softplus_blind_loss, jnp.array(W), jnp.array(XS))
    assert not e.value.report.ok


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="`directions`"):
        jgc.check_hvp(softplus_loss, jnp.array(W), jnp.array(XS), directions=0)
    with pytest.raises(TypeError, match="`loss`"):
        jgc.check_hvp(None, jnp.array(W))
    with pytest.raises(ValueError, match="must return a scalar"):
        jgc.check_hvp(lambda w: w**2, jnp.array(W))
    with pytest.raises(ValueError, match="no floating-point"):
        jgc.check_hvp(lambda p: 0.0, jnp.array([1, 2]))


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
def test_low_precision_hvp_passes_correct_and_catches_the_blind_bwd(low):
    # Finite differences in float64 of the low-precision gradient; the
    # allowance is the HVP's rounding measured against its float64 re-run.
    w, xs = jnp.array(W, low), jnp.array(XS, low)
    assert jgc.check_hvp(softplus_loss, w, xs).ok
    assert not jgc.check_hvp(softplus_blind_loss, w, xs).ok
