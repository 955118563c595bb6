"""Precision mismatch, not a wrong rule (issue 12, item 5).

A failing rule that computes with narrower intermediates than its yardstick
is compared again with the yardstick at the rule's precision
(``jgradcheck._checks.precision_match``): if they agree there, the report
says "precision mismatch" with the evidence; if not, that precision does not
explain the failure. The verdict stays FAIL either way. Every "precision
mismatch" has a wrong-formula twin that must not be excused, and a correct
rule at the same hard point must pass with no note.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._engine.matched import float_ops, narrower_ops, rounded

BF16 = jnp.bfloat16


def dense_reference(w, x):
    """tanh(x @ w), accumulated in float32 (float64 at float64), stored once."""
    acc = jnp.promote_types(x.dtype, jnp.float32)
    return jnp.tanh(jnp.dot(x, w, preferred_element_type=acc)).astype(x.dtype)


def _dense(kind: str):
    """``dense_reference`` with a hand-written VJP.

    ``"saved"``: saves the bfloat16 output ``y`` and computes ``1 − y²`` from
    it (the formula is right; at saturated units ``1 − y²`` cancels, so the
    bfloat16 rounding of ``y`` costs the derivative its digits).
    ``"bug"``: the same, with a factor 2 too many (a wrong formula).
    ``"recompute"``: recomputes ``y`` in the accumulation dtype from ``x``
    and ``w`` (correct, and as precise as the reference).
    """

    @jax.custom_vjp
    def dense(w, x):
        return dense_reference(w, x)

    def fwd(w, x):
        return dense_reference(w, x), (w, x)

    def bwd(res, g):
        w, x = res
        acc = jnp.promote_types(x.dtype, jnp.float32)
        if kind == "recompute":
            y = jnp.tanh(jnp.dot(x, w, preferred_element_type=acc))
        else:
            y = dense_reference(w, x).astype(acc)  # the bfloat16 output, widened
        d = g.astype(acc) * (1 - y**2) * (2.0 if kind == "bug" else 1.0)
        dw = jnp.dot(x.astype(acc).T, d)
        dx = jnp.dot(d, w.astype(acc).T)
        return dw.astype(w.dtype), dx.astype(x.dtype)

    dense.defvjp(fwd, bwd)
    return dense


SAVED, BUG, RECOMPUTE = _dense("saved"), _dense("bug"), _dense("recompute")


def _data():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    w = jax.random.normal(k1, (3, 2), jnp.float32) * 3  # saturating: |x·w| up to 14
    x = jax.random.normal(k2, (2, 3), jnp.float32)
    return w.astype(BF16), x.astype(BF16)


@pytest.mark.parametrize("rule", [SAVED, BUG, RECOMPUTE], ids=["saved", "bug", "ok"])
def test_bf16_rule_against_a_float32_accumulating_reference(rule):
    report = jgc.check_vjp(rule, *_data(), reference=dense_reference, localize=0)
    m = report.precision_match
    if rule is RECOMPUTE:  # correct and as precise: passes, nothing to explain
        assert report.ok, report
        assert m is None and "precision mismatch" not in str(report)
        return
    assert not report.ok  # the verdict stays FAIL: the rule loses digits
    assert m is not None and m.dtype == "bfloat16" and m.other == "float32"
    assert ("convert_element_type to bfloat16", 1, 0) in m.where  # the saved y
    if rule is SAVED:
        assert m.agrees and m.rule_err <= m.allowed
        assert m.line.startswith("precision mismatch: the rule computes with bfloat16")
        assert "the formula is right" in m.line
        assert m.line in report.failures()
    else:  # a wrong formula is not excused as precision
        assert not m.agrees and m.rule_err > m.allowed
        assert m.line.startswith("not a precision mismatch")
        assert "precision does not explain" in str(report)
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["precision_match"]["agrees"] == m.agrees


def _dense16():
    """A float32 ``tanh(x @ w)`` whose VJP computes in float16 (item 3)."""

    @jax.custom_vjp
    def dense(w, x):
        return jnp.tanh(x @ w)

    def fwd(w, x):
        y = jnp.tanh(x @ w)
        return y, (w, x, y)

    def bwd(res, g):
        w, x, y = res
        d = (g * (1 - y**2)).astype(jnp.float16)
        lo_x, lo_w = x.astype(jnp.float16), w.astype(jnp.float16)
        return (lo_x.T @ d).astype(w.dtype), (d @ lo_w.T).astype(x.dtype)

    dense.defvjp(fwd, bwd)
    return dense


def test_float32_rule_with_a_float16_backward_is_caught_and_explained():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    w = jax.random.normal(k1, (3, 2), jnp.float32) / 2
    x = jax.random.normal(k2, (2, 3), jnp.float32)
    report = jgc.check_vjp(_dense16(), w, x, localize=0)
    assert not report.ok  # item 3: still caught
    m = report.precision_match
    assert m is not None and m.dtype == "float16" and m.other == "float32"
    assert m.yardstick == "autodiff of the primal"
    # d, x and w cast to float16; both products computed and stored in float16
    counts = {label: (n, k) for label, n, k in m.where}
    assert counts["convert_element_type to float16"] == (3, 0)
    assert counts["dot_general → float16"] == (2, 0)
    assert m.agrees, m.line
    assert m.rule_err / m.scale / m.eps < 2  # about one float16 ulp of the scale


def _x_sin_x(factor):
    """``x·sin(x)`` in float32 with a JVP computed in float16; ``factor`` 2
    doubles the ``sin`` term (a wrong formula)."""

    @jax.custom_jvp
    def f(x):
        return jnp.sin(x) * x

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (u,) = primals, tangents
        x16 = x.astype(jnp.float16)
        d = jnp.cos(x16) * x16 + factor * jnp.sin(x16)
        return f(x), d.astype(x.dtype) * u

    return f


@pytest.mark.parametrize("factor", [1.0, 2.0], ids=["float16", "bug"])
def test_check_jvp_float16_tangent_explained_or_not(factor):
    x = jnp.linspace(0.5, 2.0, 5, dtype=jnp.float32)
    report = jgc.check_jvp(_x_sin_x(factor), x, localize=0)
    assert not report.ok
    m = report.precision_match
    assert m is not None and m.dtype == "float16" and m.program == "JVP"
    assert m.agrees == (factor == 1.0), m.line


def test_float_ops_counts_intermediates_not_stored_outputs():
    x = jnp.ones((2, 2), BF16)
    stored = jax.make_jaxpr(
        lambda a: jnp.tanh(jnp.dot(a, a, preferred_element_type=jnp.float32)).astype(
            BF16
        )
    )(x)
    assert not any(d == "bfloat16" for _, d in float_ops(stored))
    narrow = jax.make_jaxpr(lambda a: jnp.tanh((a @ a).astype(jnp.float32)))(x)
    assert float_ops(narrow)[("dot_general → bfloat16", "bfloat16")] == 1
    assert narrower_ops(narrow, stored).dtype == BF16
    assert narrower_ops(stored, narrow) is None  # the other is as narrow


def test_rounded_rounds_inputs_and_intermediates_only():
    x = jnp.array([1.0, 2.0**-9], jnp.float32)
    f = jax.jit(rounded(lambda x: (x + 1.0, x * 3.0), BF16))
    plus, times = f(x)
    assert plus.dtype == jnp.float32  # the program's dtypes are kept
    np.testing.assert_array_equal(plus, [2.0, 1.0])  # 1 + 2⁻⁹ is 1 in bfloat16
    np.testing.assert_array_equal(times, [3.0, 3 * 2.0**-9])  # exact in bfloat16


def _loss_of(dense):
    def loss(params):
        return jnp.sum(dense(*params))

    return loss


LOSS_SAVED, LOSS_BUG = _loss_of(SAVED), _loss_of(BUG)


def loss_reference(params):
    return jnp.sum(dense_reference(*params))


@pytest.mark.parametrize("loss", [LOSS_SAVED, LOSS_BUG], ids=["saved", "bug"])
def test_check_grad_of_a_loss_nesting_the_rule(loss):
    report = jgc.check_grad(loss, _data(), reference=loss_reference)
    assert not report.ok
    m = report.precision_match
    assert m is not None and m.program == "gradient" and m.dtype == "bfloat16"
    assert m.yardstick == "the reference loss_reference"
    assert m.agrees == (loss is LOSS_SAVED), m.line
    assert m.line in str(report)
