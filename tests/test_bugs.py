"""Broken gradients must be caught, and pinned to the right leaf and index."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jgradcheck as jgc
from helpers import (
    data,
    failing_places,
    linear_grad,
    linear_loss,
    linear_problem,
    mlp_loss,
    mlp_params,
    normal,
)

W_ENTRIES = {("['w']", (i, j)) for i in range(8) for j in range(8)}
"""Every entry of ``linear_problem``'s 8×8 weight."""
OFF_DIAGONAL = {place for place in W_ENTRIES if place[1][0] != place[1][1]}
"""The 56 entries a transposed gradient gets wrong (random weights: none agree)."""


def test_correct_hand_written_gradient_passes(dtype):
    params, x, y = linear_problem(dtype)
    assert jgc.check_grad(linear_loss, params, x, y, grad=linear_grad).ok


def test_wrong_sign_is_caught(dtype):
    # Through assert_grad: it raises an AssertionError carrying the report.
    params, x, y = linear_problem(dtype)
    with pytest.raises(jgc.GradCheckError) as info:
        jgc.assert_grad(
            linear_loss, params, x, y, grad=lambda *a: linear_grad(*a, sign=-1.0)
        )
    assert isinstance(info.value, AssertionError)
    assert "FAILED" in str(info.value) and "['w']" in str(info.value)
    report = info.value.report
    assert not report.ok and report.n_fail == 72
    assert report.leaf("['w']").n_fail == 64 and report.leaf("['b']").n_fail == 8
    assert "sign flipped" in report.leaf("['w']").diagnosis
    assert "diagnosis:" in str(report)


def test_transposed_square_gradient_is_caught(dtype):
    params, x, y = linear_problem(dtype)
    report = jgc.check_grad(
        linear_loss, params, x, y, grad=lambda *a: linear_grad(*a, transpose=True)
    )
    assert not report.ok
    assert report.leaf("['b']").ok
    bad = report.leaf("['w']")
    assert bad.n_fail == 56  # only the diagonal agrees
    assert all(e.index[0] != e.index[1] for e in report.failures())
    assert failing_places(report) == OFF_DIAGONAL
    assert "transposed" in bad.diagnosis and "diagnosis:" in str(report)


def test_missing_factor_is_caught(dtype):
    # A missing 1/N on the weight gradient.
    params, x, y = linear_problem(dtype)
    report = jgc.check_grad(
        linear_loss, params, x, y, grad=lambda *a: linear_grad(*a, scale=float(y.size))
    )
    assert {e.path for e in report.failures()} == {"['w']"}
    assert report.leaf("['w']").n_fail == 64
    assert float(y.size) == 128.0
    diagnosis = report.leaf("['w']").diagnosis
    assert "scaled: a ≈ 128·n (a missing or extra factor 128?)" in diagnosis


def test_missing_regularization_term_is_caught(dtype):
    params, x, y = linear_problem(dtype)

    def loss(p, x, y):
        return linear_loss(p, x, y) + 1e-2 * jnp.sum(p["w"] ** 2)

    report = jgc.check_grad(loss, params, x, y, grad=linear_grad)  # forgets 2λw
    assert not report.ok
    assert report.leaf("['b']").ok and report.leaf("['w']").n_fail == 64
    assert failing_places(report) == W_ENTRIES
    assert report.leaf("['w']").diagnosis.startswith(
        "off by a term proportional to θ: a − n ≈ -0.02·θ"
    )


def test_one_wrong_coordinate_among_thousands(dtype):
    params = mlp_params([48, 64, 4], dtype)  # 3,136 + 64 + 256 + 4 parameters
    x, y = data((8, 48), (8, 4), dtype)
    bad_index = (17, 42)

    def grad(p, x, y):
        g = jax.grad(mlp_loss)(p, x, y)
        w = g[0]["w"]
        g[0]["w"] = w.at[bad_index].multiply(1.01)  # 1% off, one entry of 3,460
        return g

    report = jgc.check_grad(mlp_loss, params, x, y, grad=grad)
    assert failing_places(report) == {("[0]['w']", bad_index)}
    worst = report.worst(1)[0]
    assert worst.where == "[0]['w'][17, 42]"
    # The global index is the position in ravel_pytree's vector ('b' sorts first).
    flat_grad, _ = ravel_pytree(grad(params, x, y))
    ref_grad, _ = ravel_pytree(jax.grad(mlp_loss)(params, x, y))
    assert np.flatnonzero(flat_grad != ref_grad).tolist() == [worst.flat_index]
    assert "[0]['w'][17, 42]" in str(report)


def test_1e4_relative_error_in_float64_is_caught():
    with jax.enable_x64(True):
        params, x, y = linear_problem(jnp.float64)

        def grad(p, x, y):
            g = linear_grad(p, x, y)
            return {"w": g["w"], "b": g["b"].at[3].multiply(1 + 1e-4)}

        report = jgc.check_grad(linear_loss, params, x, y, grad=grad)
    assert failing_places(report) == {("['b']", (3,))}


def test_float32_sized_error_is_caught():
    # 3e-3 relative on every entry of one leaf, float32 throughout.
    params, x, y = linear_problem(jnp.float32)

    def grad(p, x, y):
        g = linear_grad(p, x, y)
        return {"w": g["w"] * (1 + 3e-3), "b": g["b"]}

    report = jgc.check_grad(linear_loss, params, x, y, grad=grad)
    assert report.leaf("['b']").ok
    assert report.leaf("['w']").n_fail == 64
    assert failing_places(report) == W_ENTRIES


def test_buggy_custom_vjp_is_caught_through_jax_grad():
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    def fwd(x):
        return softplus(x), x

    def bwd(x, g):
        return (g * jax.nn.sigmoid(2 * x),)  # should be sigmoid(x)

    softplus.defvjp(fwd, bwd)
    params = jnp.linspace(-2.0, 2.0, 9)
    report = jgc.check_grad(lambda p: jnp.sum(softplus(p) ** 2), params)
    assert not report.ok
    # sigmoid(2x) == sigmoid(x) only at x = 0 (index 4).
    assert failing_places(report) == {("", (i,)) for i in range(9) if i != 4}


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_correct_custom_vjp_passes_through_jax_grad(mode):
    # The twin of the test above (and of test_fast.py's): the rule made right.
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defvjp(lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))
    params = jnp.linspace(-2.0, 2.0, 9)
    report = jgc.check_grad(lambda p: jnp.sum(softplus(p) ** 2), params, mode=mode)
    assert report.ok, report
    assert report.n_fail == 0 and report.n_unsure == 0


@pytest.mark.parametrize("k", [5, 40])
def test_sampled_check_catches_a_leaf_wide_bug(k):
    params, x, y = linear_problem()
    report = jgc.check_grad(
        linear_loss, params, x, y, coords=k, grad=lambda *a: linear_grad(*a, scale=2.0)
    )
    assert not report.ok
    assert report.leaf("['w']").n_fail == report.leaf("['w']").checked


@pytest.mark.parametrize("k", [5, 40])
def test_sampled_check_passes_a_correct_gradient(k):
    # The twin of the test above: the same sample, the gradient unbroken.
    params, x, y = linear_problem()
    report = jgc.check_grad(linear_loss, params, x, y, coords=k, grad=linear_grad)
    assert report.ok, report
    assert report.n_checked == k and report.n_fail == 0
    assert report.leaf("['w']").checked >= 1


def test_explicit_tolerances_override():
    params, x, y = linear_problem()

    def grad(p, x, y):
        g = linear_grad(p, x, y)
        return {"w": g["w"] * (1 + 1e-3), "b": g["b"]}

    assert not jgc.check_grad(linear_loss, params, x, y, grad=grad).ok
    loose = jgc.check_grad(linear_loss, params, x, y, grad=grad, rtol=1e-2, atol=0.0)
    assert loose.ok, loose
    assert loose.settings.rtol == 1e-2


def _diagnosis(grad, loss=linear_loss):
    params, x, y = linear_problem()
    report = jgc.check_grad(loss, params, x, y, grad=grad)
    return report.leaf("['w']").diagnosis, report


# Sign flipped, transposed, scaled by 128 and a missing L2 term: their
# diagnoses are asserted on the reports of the tests above that catch them.
@pytest.mark.parametrize(
    "grad,expected",
    [
        (lambda *a: linear_grad(*a, scale=0.5), "factor 1/2"),
        (
            lambda p, x, y: {
                "w": jnp.zeros_like(p["w"]),
                "b": linear_grad(p, x, y)["b"],
            },
            "zero",
        ),
        (
            lambda p, x, y: {
                "w": linear_grad(p, x, y)["w"].at[2, 3].multiply(1.1),
                "b": linear_grad(p, x, y)["b"],
            },
            "isolated: 1 wrong entry: ['w'][2, 3]",
        ),
    ],
    ids=["halved", "zero", "isolated"],
)
def test_diagnosis_names_the_pattern(grad, expected):
    diagnosis, report = _diagnosis(grad)
    assert diagnosis is not None and expected in diagnosis, diagnosis
    assert "diagnosis:" in str(report)


def test_no_diagnosis_for_unstructured_errors_or_passing_leaves():
    def grad(p, x, y):
        g = linear_grad(p, x, y)
        noise = normal(9, g["w"].shape)
        return {"w": g["w"] + 0.1 * noise, "b": g["b"]}

    diagnosis, report = _diagnosis(grad)
    assert diagnosis is None and report.leaf("['b']").diagnosis is None


# ------------------------------------------------------------ named terms


def _terms_problem():
    params, x, y = linear_problem(jnp.float32)

    def loss(p, x, y):
        return {"data": linear_loss(p, x, y), "l2": 25.0 * jnp.sum(p["w"] ** 2)}

    return loss, params, x, y


def test_terms_pass_when_correct():
    loss, params, x, y = _terms_problem()
    report = jgc.check_grad(loss, params, x, y)
    assert report.ok, report
    assert [name for name, _ in report.terms] == ["data", "l2"]


def test_data_error_under_a_50x_l2_term_is_attributed_to_the_data_term():
    loss, params, x, y = _terms_problem()

    def grad(p, x, y):
        g = linear_grad(p, x, y)
        return {
            "data": {"w": g["w"] * (1 + 1e-3), "b": g["b"]},  # 1e-3 relative error
            "l2": {"w": 50.0 * p["w"], "b": jnp.zeros_like(p["b"])},
        }

    g = grad(params, x, y)
    ratio = float(jnp.linalg.norm(g["l2"]["w"]) / jnp.linalg.norm(g["data"]["w"]))
    assert ratio > 50
    report = jgc.check_grad(loss, params, x, y, grad=grad)
    terms = dict(report.terms)
    assert not report.ok
    assert not terms["data"].ok and terms["l2"].ok
    assert terms["data"].leaf("['w']").n_fail > 50
    assert str(report).startswith("gradient check FAILED in term 'data'")
    assert "scaled: a ≈ 1.001·n" in str(report)


def test_terms_grad_must_return_the_same_keys():
    loss, params, x, y = _terms_problem()
    with pytest.raises(ValueError, match=r"dict with the same keys"):
        jgc.check_grad(loss, params, x, y, grad=linear_grad)


# ---------------------------------------------------------------- methods

METHODS = ["auto", "central", "central4", "central6", "richardson"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("precision", ["float64", "native"])
def test_every_method_passes_correct_and_catches_wrong(method, precision):
    params, x, y = linear_problem()
    # Native float32 differences resolve ~1e-4 of |J|: use a sum (entries ~1)
    # and a larger error on the largest entry of w; in float64 a 3e-3 error on
    # a tiny entry.
    k = float(y.size) if precision == "native" else 1.0
    g_w = np.abs(np.asarray(linear_grad(params, x, y)["w"]))
    largest = tuple(int(i) for i in np.unravel_index(np.argmax(g_w), g_w.shape))
    where = ("['w']", largest) if precision == "native" else ("['b']", (5,))
    factor = 1.05 if precision == "native" else 1 + 3e-3

    def loss(p, x, y):
        return k * linear_loss(p, x, y)

    def good(p, x, y):
        return jax.tree_util.tree_map(lambda a: k * a, linear_grad(p, x, y))

    def bad(p, x, y):
        g = good(p, x, y)
        leaf = "w" if precision == "native" else "b"
        g[leaf] = g[leaf].at[where[1]].multiply(factor)
        return g

    opts = dict(method=method, precision=precision)
    ok = jgc.check_grad(loss, params, x, y, grad=good, **opts)
    assert ok.ok, ok
    assert failing_places(jgc.check_grad(loss, params, x, y, grad=bad, **opts)) == {
        where
    }


@pytest.mark.parametrize("method", ["central4", "central6"])
def test_higher_order_stencils_have_tighter_error_bars_in_native_float32(method):
    params, x, y = linear_problem()

    def loss(p, x, y):  # not quadratic, so truncation matters
        return jnp.mean(jnp.tanh(x @ p["w"] + p["b"] - y) ** 2)

    base = jgc.check_grad(loss, params, x, y, method="central", precision="native")
    high = jgc.check_grad(loss, params, x, y, method=method, precision="native")
    assert base.ok and high.ok
    bar = lambda r: np.median(np.concatenate([leaf.error_bar for leaf in r.leaves]))  # noqa: E731
    assert bar(high) < bar(base)


def test_unknown_method():
    params, x, y = linear_problem()
    with pytest.raises(ValueError, match="`method` must be one of"):
        jgc.check_grad(linear_loss, params, x, y, method="forward")


def _scalar_terms_problem():
    params, x, y = linear_problem(jnp.float32)
    terms = {
        "data": linear_loss,
        "l2": lambda p, x, y: 25.0 * jnp.sum(p["w"] ** 2),
    }

    def loss(p, x, y):  # what users train with: one scalar
        return linear_loss(p, x, y) + 25.0 * jnp.sum(p["w"] ** 2)

    return loss, terms, params, x, y


def test_terms_option_names_the_terms_of_a_scalar_loss():
    loss, terms, params, x, y = _scalar_terms_problem()
    report = jgc.check_grad(loss, params, x, y, terms=terms)
    assert report.ok, report
    assert [name for name, _ in report.terms] == ["data", "l2"]
    assert report.n_checked == sum(r.n_checked for _, r in report.terms) / 2


def test_terms_option_attributes_a_data_error_under_a_50x_l2_term():
    loss, terms, params, x, y = _scalar_terms_problem()

    def grad(p, x, y):
        g = linear_grad(p, x, y)
        return {
            "data": {"w": g["w"] * (1 + 1e-3), "b": g["b"]},
            "l2": {"w": 50.0 * p["w"], "b": jnp.zeros_like(p["b"])},
        }

    report = jgc.check_grad(loss, params, x, y, grad=grad, terms=terms)
    by_name = dict(report.terms)
    assert not report.ok and not by_name["data"].ok and by_name["l2"].ok
    assert str(report).startswith("gradient check FAILED in term 'data'")


def test_terms_option_catches_a_wrong_custom_rule_inside_a_term():
    @jax.custom_vjp
    def sq(v):
        return v**2

    sq.defvjp(lambda v: (v**2, v), lambda v, g: (2.002 * v * g,))  # 1e-3 too big
    params = {"w": jnp.linspace(0.2, 1.0, 5)}
    terms = {
        "data": lambda p: jnp.sum(sq(p["w"])),
        "l2": lambda p: 100.0 * jnp.sum(p["w"] ** 2),
    }
    report = jgc.check_grad(
        lambda p: terms["data"](p) + terms["l2"](p), params, terms=terms
    )
    by_name = dict(report.terms)
    assert not by_name["data"].ok and by_name["l2"].ok
    assert by_name["data"].leaf("['w']").n_fail == 5


@pytest.mark.parametrize(
    "terms, error, match",
    [
        ([linear_loss], TypeError, "non-empty dict"),
        ({}, TypeError, "non-empty dict"),
        ({"data": 3.0}, TypeError, "names .str. to functions"),
        ({"data": lambda p, x, y: x @ p["w"]}, ValueError, "term 'data' must return"),
        ({"data": linear_loss}, ValueError, "do not add up to `loss`.*data="),
    ],
)
def test_terms_option_rejects_bad_terms(terms, error, match):
    loss, _, params, x, y = _scalar_terms_problem()
    with pytest.raises(error, match=match):
        jgc.check_grad(loss, params, x, y, terms=terms)


def test_terms_option_and_a_dict_loss_are_exclusive():
    loss, params, x, y = _terms_problem()
    with pytest.raises(ValueError, match="not both"):
        jgc.check_grad(loss, params, x, y, terms={"data": linear_loss})
