"""The yardstick of a gradient's rounding: JAX's autodiff of the primal.

A custom rule's rounding allowance is what autodiff of its primal body reaches
at the same precision (``jgradcheck._engine.primal_ad``), not what the rule
does to itself re-run at float64: a float32 rule that computes its backward in
float16 must fail, its correct twin must pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._engine.primal_ad import inlined, rules_in


def _dense(backward_dtype):
    """``tanh(x @ w)`` with a hand-written VJP whose products run in
    ``backward_dtype`` (float32: correct; float16: three digits lost)."""

    @jax.custom_vjp
    def dense(w, x):
        return jnp.tanh(x @ w)

    def fwd(w, x):
        y = jnp.tanh(x @ w)
        return y, (w, x, y)

    def bwd(res, g):
        w, x, y = res
        d = (g * (1 - y**2)).astype(backward_dtype)
        lo_x, lo_w = x.astype(backward_dtype), w.astype(backward_dtype)
        return (lo_x.T @ d).astype(w.dtype), (d @ lo_w.T).astype(x.dtype)

    dense.defvjp(fwd, bwd)
    return dense


def _data():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    # float32 pinned: the subject is a float32 rule, under either x64 setting
    f32 = jnp.float32
    return jax.random.normal(k1, (6, 5), f32) / 2, jax.random.normal(k2, (4, 6), f32)


@pytest.mark.parametrize("backward", [jnp.float32, jnp.float16])
def test_check_vjp_catches_a_float16_backward(backward):
    w, x = _data()
    report = jgc.check_vjp(_dense(backward), w, x)
    if backward == jnp.float32:
        assert report.ok, report
        return
    assert not report.ok
    (_, loc), *_ = report.localized
    assert loc.settings.rounding == "autodiff of the primal at float32"
    diagnoses = [leaf.diagnosis or "" for leaf in loc.leaves]
    assert any(d.startswith("imprecise") for d in diagnoses), diagnoses
    assert "float32 ulps" in "".join(diagnoses)
    assert "autodiff of the primal at float32 reaches" in str(report)


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("backward", [jnp.float32, jnp.float16])
def test_check_grad_catches_a_float16_backward_nested_in_a_loss(backward, mode):
    w, x = _data()
    dense = _dense(backward)

    @jax.jit
    def loss(p, x):
        return jnp.sum(dense(p["w"], x) ** 2) + 0.1 * jnp.sum(p["w"] ** 2)

    report = jgc.check_grad(loss, {"w": w}, x, mode=mode)
    assert report.settings.rounding == "autodiff of the primal at float32"
    assert report.ok == (backward == jnp.float32), report
    if backward == jnp.float16:
        assert "imprecise" in (report.leaves[0].diagnosis or "")
        # its error is thousands of float32 ulps; autodiff's a handful
        text = report.leaves[0].diagnosis
        ulps = int(text.split("up to ")[1].split(" ")[0].replace(",", ""))
        reach = int(text.rsplit("reaches ", 1)[1].replace(",", ""))
        assert ulps > 100 * max(reach, 1)


def test_hand_written_grad_is_judged_by_autodiff_of_the_loss():
    w, x = _data()

    def loss(w, x):
        return jnp.sum(jnp.tanh(x @ w) ** 2)

    def grad16(w, x):  # the right formula, computed in float16
        y = jnp.tanh(x @ w).astype(jnp.float16)
        d = 2 * y * (1 - y**2)
        return (x.astype(jnp.float16).T @ d).astype(jnp.float32)

    def grad32(w, x):
        y = jnp.tanh(x @ w)
        return x.T @ (2 * y * (1 - y**2))

    assert jgc.check_grad(loss, w, x, grad=grad32).ok
    bad = jgc.check_grad(loss, w, x, grad=grad16)
    assert not bad.ok
    assert bad.settings.rounding == "autodiff of the primal at float32"


def test_without_custom_rules_the_gradient_is_its_own_yardstick():
    w, x = _data()
    report = jgc.check_grad(lambda w, x: jnp.sum(jax.nn.relu(x @ w) ** 2), w, x)
    assert report.ok
    # jax.nn.relu is JAX's own custom_jvp: part of JAX's AD, not inlined
    assert report.settings.rounding == "measured against float64"


def _while_rule():
    """A custom_vjp whose primal iterates in a while_loop (no reverse-mode AD)."""

    @jax.custom_vjp
    def cube(x):
        def body(c):
            return c[0] * x, c[1] + 1

        return jax.lax.while_loop(lambda c: c[1] < 3, body, (jnp.ones_like(x), 0))[0]

    cube.defvjp(lambda x: (cube(x), x), lambda x, g: (3 * g * x**2,))
    return cube


def test_a_primal_autodiff_cannot_differentiate_falls_back_to_the_fixed_allowance():
    cube = _while_rule()
    x = jnp.linspace(0.5, 1.5, 5, dtype=jnp.float32)
    report = jgc.check_vjp(cube, x)
    assert report.ok, report
    assert report.rounding.startswith("fixed (the primal could not be differentiated")
    assert "while_loop" in report.rounding
    assert "rounding of the rule judged by: fixed" in str(report)
    g = jgc.check_grad(lambda x: jnp.sum(cube(x)), x)
    assert g.ok and g.settings.rounding.startswith("fixed (the primal")


def test_a_wrong_rule_with_an_undifferentiable_primal_is_still_caught():
    @jax.custom_vjp
    def cube(x):
        def body(c):
            return c[0] * x, c[1] + 1

        return jax.lax.while_loop(lambda c: c[1] < 3, body, (jnp.ones_like(x), 0))[0]

    cube.defvjp(lambda x: (cube(x), x), lambda x, g: (2 * g * x**2,))
    assert not jgc.check_vjp(cube, jnp.linspace(0.5, 1.5, 5, dtype=jnp.float32)).ok


def test_inlined_replaces_nested_rules_by_their_primal_bodies():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (f(x), x), lambda x, g: (2.0 * g,))  # wrong on purpose

    @jax.custom_jvp
    def h(x):
        return jnp.exp(x)

    h.defjvp(lambda p, t: (h(p[0]), 3.0 * t[0]))  # wrong on purpose

    def loss(x):
        y = jax.jit(lambda v: f(h(v)))(x)
        z = jax.lax.scan(lambda c, v: (c + f(v), None), 0.0, x)[0]
        w = jax.lax.cond(x[0] > 0, h, lambda v: v, x)
        return jnp.sum(y) + z + jnp.sum(w) + jnp.sum(jax.nn.relu(x))

    def plain(x):
        return (
            jnp.sum(jnp.sin(jnp.exp(x)))
            + jnp.sum(jnp.sin(x))
            + jnp.sum(jnp.exp(x))
            + jnp.sum(jax.nn.relu(x))
        )

    x = jnp.array([0.3, -0.2, 0.5])
    assert sorted(rules_in(loss, x)) == ["f", "f", "h", "h"]
    assert rules_in(plain, x) == []
    np.testing.assert_allclose(
        jax.grad(inlined(loss))(x), jax.grad(plain)(x), rtol=1e-6
    )
    assert not np.allclose(jax.grad(loss)(x), jax.grad(plain)(x))
