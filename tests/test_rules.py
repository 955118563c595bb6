"""check_vjp / check_jvp: correct rules pass, broken rules are caught and localised."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import normal


def vjp_rule(fun, fwd_res, bwd):
    """A custom_vjp of ``fun`` with residuals ``fwd_res(*args)`` and ``bwd``."""
    f = jax.custom_vjp(fun)
    f.defvjp(lambda *a: (fun(*a), fwd_res(*a)), bwd)
    return f


def _failing(report, label_part=""):
    return {
        (e.path, e.index)
        for label, r in report.localized
        if label_part in label
        for e in r.failures()
    }


# ------------------------------------------------------------------ rules

softplus_ok = vjp_rule(
    lambda x: jnp.logaddexp(x, 0.0), lambda x: x, lambda x, g: (g * jax.nn.sigmoid(x),)
)
softplus_bad = vjp_rule(
    lambda x: jnp.logaddexp(x, 0.0),
    lambda x: x,
    lambda x, g: (g * jax.nn.sigmoid(2 * x),),
)


def _lse(x):
    return jax.nn.logsumexp(x)


lse_ok = vjp_rule(_lse, lambda x: x, lambda x, g: (g * jax.nn.softmax(x),))
lse_ignores_cotangent = vjp_rule(_lse, lambda x: x, lambda x, g: (jax.nn.softmax(x),))


def _layernorm(x):
    mu = x.mean(-1, keepdims=True)
    sd = jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    return (x - mu) / sd


def _ln_bwd(projection):
    def bwd(x, g):
        mu = x.mean(-1, keepdims=True)
        sd = jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
        y = (x - mu) / sd
        gx = g - g.mean(-1, keepdims=True)
        if projection:
            gx = gx - y * (g * y).mean(-1, keepdims=True)
        return (gx / sd,)

    return bwd


layernorm_ok = vjp_rule(_layernorm, lambda x: x, _ln_bwd(True))
layernorm_no_projection = vjp_rule(_layernorm, lambda x: x, _ln_bwd(False))


def _softmax_bwd(x, g):
    s = jax.nn.softmax(x)
    return (s * (g - jnp.sum(g * s, -1, keepdims=True)),)


softmax_ok = vjp_rule(lambda x: jax.nn.softmax(x), lambda x: x, _softmax_bwd)


def _dense_rule(transpose_dw=False, dx_scale=1.0):
    def fun(x, w):
        return jnp.tanh(x @ w)

    def bwd(res, g):
        x, w = res
        d = g * (1 - jnp.tanh(x @ w) ** 2)
        dw = x.T @ d
        return (dx_scale * (d @ w.T), dw.T if transpose_dw else dw)

    return vjp_rule(fun, lambda x, w: (x, w), bwd)


def _dense_inputs(dtype=jnp.float32, n=4):
    return (
        normal([0, 0], (3, n), dtype),
        normal([0, 1], (n, n), dtype) / 2,
    )


X7 = jnp.linspace(-2.0, 2.0, 7)


# ------------------------------------------------------------ correct rules


@pytest.mark.parametrize(
    "rule,x",
    [
        (softplus_ok, X7),
        (lse_ok, X7),
        (layernorm_ok, jnp.arange(12.0).reshape(2, 6) ** 1.5 / 10),
        (softmax_ok, X7.reshape(1, 7)),
        (_dense_rule(), None),
    ],
    ids=["softplus", "logsumexp", "layernorm", "softmax", "dense"],
)
def test_correct_vjp_rules_pass(rule, x):
    # Through assert_vjp, which runs check_vjp and returns its passing report.
    args = _dense_inputs() if x is None else (x,)
    report = jgc.assert_vjp(rule, *args)
    assert isinstance(report, jgc.RuleReport) and report.kind == "vjp"
    assert report.ok, report
    assert report.primal.ok and all(c.ok for c in report.structure)
    assert len(report.dot_tests) == 1 and report.dot_tests[0].rule.shape == (4,)


def test_correct_rule_in_float64():
    with jax.enable_x64(True):
        report = jgc.check_vjp(_dense_rule(), *_dense_inputs(jnp.float64))
    assert report.ok, report


# ------------------------------------------------------------- broken rules


def test_wrong_softplus_is_localised():
    # Through assert_vjp: it raises, with check_vjp's report attached.
    with pytest.raises(jgc.GradCheckError) as info:
        jgc.assert_vjp(softplus_bad, X7)
    assert "check_vjp: FAILED" in str(info.value)
    report = info.value.report
    assert isinstance(report, jgc.RuleReport)
    assert not report.ok
    assert not report.dot_tests[0].ok
    # sigmoid(2x) = sigmoid(x) only at x = 0 (index 3).
    assert _failing(report) == {("[0]", (i,)) for i in range(7) if i != 3}


def test_rule_ignoring_its_cotangent_is_caught():
    report = jgc.check_vjp(lse_ignores_cotangent, X7)
    assert not report.ok
    assert len(_failing(report)) == 7
    # With a zero cotangent it still returns softmax: the structure check says so.
    zero = {c.name: c.ok for c in report.structure}["zero cotangent gives zero"]
    assert zero is False


def test_layernorm_missing_projection_is_caught():
    report = jgc.check_vjp(
        layernorm_no_projection, jnp.arange(12.0).reshape(2, 6) ** 1.5 / 10
    )
    assert not report.ok and len(_failing(report)) >= 10
    # The missing projection y·mean(g·y) is nonzero everywhere: every entry.
    assert _failing(report) == {("[0]", (i, j)) for i in range(2) for j in range(6)}


def test_transposed_dw_is_attributed_to_w():
    report = jgc.check_vjp(_dense_rule(transpose_dw=True), *_dense_inputs())
    paths = {p for p, _ in _failing(report)}
    assert paths == {"[1]"}


def test_dx_off_by_1e4_relative_in_float64():
    with jax.enable_x64(True):
        report = jgc.check_vjp(
            _dense_rule(dx_scale=1 + 1e-4), *_dense_inputs(jnp.float64)
        )
    assert not report.ok
    assert {p for p, _ in _failing(report)} == {"[0]"}


def test_float32_rule_off_by_3e3_relative():
    report = jgc.check_vjp(_dense_rule(dx_scale=1 + 3e-3), *_dense_inputs())
    assert not report.ok
    assert {p for p, _ in _failing(report)} == {"[0]"}


def test_one_wrong_coordinate_of_1000():
    def bwd(x, g):
        return ((g * jnp.cos(x)).at[613].multiply(1.01),)

    rule = vjp_rule(jnp.sin, lambda x: x, bwd)
    report = jgc.check_vjp(rule, jnp.linspace(0.0, 3.0, 1000))
    assert _failing(report) == {("[0]", (613,))}


def test_two_outputs_bug_in_one_cotangent_only():
    def fun(x):
        return jnp.sin(x), jnp.sum(x**2)

    def bwd(x, g):
        ga, gb = g
        return (ga * jnp.cos(x) + gb * 2 * x * 1.01,)  # bug in the 2nd output's path

    report = jgc.check_vjp(vjp_rule(fun, lambda x: x, bwd), X7)
    dots = {d.output: d.ok for d in report.dot_tests}
    assert dots == {"[0]": True, "[1]": False}
    assert _failing(report, "output [0]") == set()
    assert len(_failing(report, "output [1]")) == 6  # x = 0 agrees


def test_pytree_inputs_one_leaf_wrong():
    def fun(p, x):
        return jnp.tanh(x @ p["w"] + p["b"])

    def bwd(res, g):
        p, x = res
        d = g * (1 - fun(p, x) ** 2)
        return {"w": x.T @ d, "b": 2 * d.sum(0)}, d @ p["w"].T  # b doubled

    rule = vjp_rule(fun, lambda p, x: (p, x), bwd)
    p = {"w": jnp.eye(3) * 0.3, "b": jnp.array([0.1, -0.2, 0.3])}
    report = jgc.check_vjp(rule, p, jnp.ones((2, 3)) * 0.5)
    assert {path for path, _ in _failing(report)} == {"[0]['b']"}


def test_integer_argument_is_held_and_gets_no_cotangent():
    def fun(x, n):
        return x * n

    def bwd(n, g):
        return g * n, None

    rule = jax.custom_vjp(fun)
    rule.defvjp(lambda x, n: (fun(x, n), n), bwd)
    report = jgc.check_vjp(rule, X7, jnp.array(3, jnp.int32))
    assert report.ok, report
    assert report.held == ("[1]",)
    assert {c.name for c in report.structure} >= {"integer inputs get no cotangent"}


def test_nondiff_argnums_holds_a_float_argument():
    report = jgc.check_vjp(lambda x, s: jnp.sin(x) * s, X7, 2.5, nondiff_argnums=(1,))
    assert report.ok and report.held == ("[1]",)
    assert all(leaf.path == "[0]" for _, r in report.localized for leaf in r.leaves)


def test_vjp_bad_input():
    with pytest.raises(TypeError, match="`f` must be callable"):
        jgc.check_vjp(3, X7)
    with pytest.raises(ValueError, match="no primal arguments"):
        jgc.check_vjp(jnp.sin)
    with pytest.raises(ValueError, match="`pairs`"):
        jgc.check_vjp(jnp.sin, X7, pairs=0)
    with pytest.raises(ValueError, match="nondiff_argnums"):
        jgc.check_vjp(jnp.sin, X7, nondiff_argnums=(3,))


def test_draws_are_readable_and_per_leaf():
    from jgradcheck._checks.rules import readable

    a = readable((5,), np.float32, [0, 1, 2, 0])
    assert np.all(np.abs(a) >= 0.01) and np.all(np.abs(a) <= 9.0)
    assert np.allclose(a * 100, np.round(a * 100), atol=1e-3)
    assert not np.allclose(np.abs(a), 1.0)
    # Another leaf's stream does not disturb this one.
    assert np.array_equal(a, readable((5,), np.float32, [0, 1, 2, 0]))
    assert not np.array_equal(a, readable((5,), np.float32, [0, 1, 3, 0]))


# ------------------------------------------------------------------- JVP


def jvp_rule(fun, jvp):
    f = jax.custom_jvp(fun)
    f.defjvp(jvp)
    return f


def test_correct_jvp_rule_passes():
    # Through assert_jvp, which runs check_jvp and returns its passing report.
    rule = jvp_rule(jnp.sin, lambda p, t: (jnp.sin(p[0]), jnp.cos(p[0]) * t[0]))
    report = jgc.assert_jvp(rule, jnp.linspace(0.0, 3.0, 50))
    assert isinstance(report, jgc.RuleReport) and report.kind == "jvp"
    assert report.ok, report
    assert report.localized and all(r.ok for _, r in report.localized)


def test_jvp_error_in_one_output_coordinate_of_1000():
    def jvp(p, t):
        return jnp.sin(p[0]), (jnp.cos(p[0]) * t[0]).at[417].multiply(1.5)

    report = jgc.check_jvp(jvp_rule(jnp.sin, jvp), jnp.linspace(0.0, 1.0, 1000))
    assert _failing(report, "every input") == {("", (417,))}


def test_jvp_attributes_the_wrong_input():
    def fun(x, w):
        return jnp.tanh(x @ w)

    def jvp(p, t):
        x, w = p
        tx, tw = t
        y = fun(x, w)
        return y, (1 - y**2) * (tx @ w + x @ tw.T)  # tw transposed

    report = jgc.check_jvp(
        jvp_rule(fun, jvp), jnp.ones((2, 3)) * 0.2, jnp.eye(3) * 0.5 + 0.1
    )
    labels = {label: r.ok for label, r in report.localized if "tangent" in label}
    assert labels == {
        "random tangent on every input": False,
        "tangent on input [0] only": True,
        "tangent on input [1] only": False,
    }


def test_assert_jvp_raises():
    rule = jvp_rule(jnp.exp, lambda p, t: (jnp.exp(p[0]), t[0]))
    with pytest.raises(jgc.GradCheckError):
        jgc.assert_jvp(rule, jnp.array([0.5, 1.0]))


# --------------------------------------------------------------- order 2


def test_order_2_checks_the_derivative_of_the_rule():
    def fun(x):
        return jnp.sin(x) * x

    def bwd_ok(x, g):
        return (g * (jnp.cos(x) * x + jnp.sin(x)),)

    def bwd_bad_second(x, g):
        # Right values at x, but written with stop_gradient so its own
        # derivative (needed for Hessians) is wrong.
        return (g * jax.lax.stop_gradient(jnp.cos(x) * x + jnp.sin(x)),)

    x = jnp.linspace(0.2, 2.0, 6)
    good = jgc.check_vjp(vjp_rule(fun, lambda x: x, bwd_ok), x, order=2)
    assert good.ok and good.second_order is not None and good.second_order.ok, good
    assert good.second_order.second_order is None and "second order" in str(good)
    bad = jgc.check_vjp(vjp_rule(fun, lambda x: x, bwd_bad_second), x, order=2)
    assert not bad.ok
    assert bad.second_order is not None and not bad.second_order.ok
    # First order alone is fine: only the derivative of the rule is wrong.
    assert all(d.ok for d in bad.dot_tests) and all(r.ok for _, r in bad.localized)
    assert "second order" in str(bad)


def test_jvp_order_2():
    def jvp_stopped(p, t):
        return jnp.exp(p[0]), jax.lax.stop_gradient(jnp.exp(p[0])) * t[0]

    rule = jvp_rule(jnp.exp, jvp_stopped)
    report = jgc.check_jvp(rule, jnp.array([0.1, 0.5]), order=2)
    assert report.localized[0][1].ok and not report.second_order.ok
    assert not report.ok and "second order" in str(report)
    # The twin: the same rule without stop_gradient passes at order 2.
    right = jvp_rule(jnp.exp, lambda p, t: (jnp.exp(p[0]), jnp.exp(p[0]) * t[0]))
    good = jgc.check_jvp(right, jnp.array([0.1, 0.5]), order=2)
    assert good.ok and good.second_order is not None and good.second_order.ok, good
    assert good.second_order.second_order is None and "second order" in str(good)
    with pytest.raises(ValueError, match="`order`"):
        jgc.check_jvp(rule, jnp.array([0.1]), order=3)


# ----------------------------------------------------------------- complex

Z = jnp.array([1 + 2j, -0.5 + 0.3j, 0.2 - 1j], jnp.complex64)


@pytest.mark.parametrize(
    "fun",
    [
        lambda z: jnp.sin(z) * z,
        lambda z: jnp.abs(z) ** 2 * z,
        lambda z: jnp.conj(z) * jnp.exp(z),
    ],
    ids=["holomorphic", "non-holomorphic |z|²z", "non-holomorphic conj(z)exp(z)"],
)
def test_complex_functions_pass(fun):
    assert jgc.check_vjp(fun, Z).ok
    assert jgc.check_jvp(fun, Z).ok


def test_complex_rule_with_the_wrong_conjugation_is_caught():
    ok = vjp_rule(jnp.sin, lambda z: z, lambda z, g: (g * jnp.cos(z),))
    bad = vjp_rule(jnp.sin, lambda z: z, lambda z, g: (g * jnp.conj(jnp.cos(z)),))
    assert jgc.check_vjp(ok, Z).ok
    report = jgc.check_vjp(bad, Z)
    assert not report.ok and _failing(report)
    jvp_bad = jvp_rule(
        jnp.sin, lambda p, t: (jnp.sin(p[0]), jnp.conj(jnp.cos(p[0])) * t[0])
    )
    assert not jgc.check_jvp(jvp_bad, Z).ok


def test_check_grad_on_complex_leaves():
    def loss(p):
        return jnp.sum(jnp.abs(p["z"]) ** 2 * jnp.real(p["z"])) + jnp.sum(
            jnp.sin(p["w"])
        )

    params = {"z": Z, "w": jnp.ones(2)}
    assert jgc.check_grad(loss, params).ok

    def conjugated(p):  # the other convention: caught in the imaginary parts
        g = jax.grad(loss)(p)
        return {"z": jnp.conj(g["z"]), "w": g["w"]}

    report = jgc.check_grad(loss, params, grad=conjugated)
    assert {e.path for e in report.failures()} == {"['z']"}
    assert all(e.index[-1] == 1 for e in report.failures())  # [..., 1] = imaginary part


def test_jvp_jacobian_rows_name_the_input_index():
    def fun(x):
        return jnp.tanh(x @ jnp.arange(12.0).reshape(4, 3) / 10)

    def jvp(p, t):
        (x,), (tx,) = p, t
        y = fun(x)
        w = (
            (jnp.arange(12.0).reshape(4, 3) / 10).at[2, 1].multiply(1.5)
        )  # one bad weight
        return y, (1 - y**2) * (tx @ w)

    report = jgc.check_jvp(jvp_rule(fun, jvp), jnp.ones((2, 4)) * 0.3)
    rows = [(label, r) for label, r in report.localized if "Jacobian" in label]
    assert rows, report
    # Column 1 of the output depends on x[:, 2] through the bad weight.
    for label, r in rows:
        assert label.startswith("row [") and ", 1]" in label
        assert {e.index for e in r.failures()} <= {(0, 2), (1, 2)}
        assert r.failures()


# ------------------------------------------------------- check_grad options


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_rule_checks_pass_check_grad_options_to_their_sweeps(check):
    import io

    stream = io.StringIO()
    bad = softplus_bad if check is jgc.check_vjp else None
    if bad is None:
        bad = jvp_rule(
            jnp.sin, lambda p, t: (jnp.sin(p[0]), 1.01 * jnp.cos(p[0]) * t[0])
        )
    report = check(bad, X7, method="central4", devices=1, progress=stream)
    assert not report.ok
    # check_vjp's localisation and check_jvp's Jacobian rows are check_grad sweeps.
    sweeps = [
        r for label, r in report.localized if label.startswith(("cotangent", "row"))
    ]
    assert sweeps and all(r.settings.method == "central4" for r in sweeps)
    assert {d for r in sweeps for d in r.timing.devices} == {str(jax.devices()[0])}
    assert stream.getvalue()  # the progress bars were written there
    with pytest.raises(ValueError, match="`method` must be one of"):
        check(bad, X7, method="five-point")
    with pytest.raises(ValueError, match="`precision`"):
        check(bad, X7, precision="float16")


# ------------------------------------------------------------ one pipeline


def _dense(x, w):
    return jnp.tanh(x @ w)


def _dense_jvp_transposed_tw(p, t):
    (x, w), (tx, tw) = p, t
    y = _dense(x, w)
    return y, (1 - y**2) * (tx @ w + x @ tw.T)


@pytest.mark.parametrize("kind", ["vjp", "jvp"])
def test_check_rule_is_the_pipeline_of_both_public_checks(kind):
    from jgradcheck._checks.jvp import JVP
    from jgradcheck._checks.rules import check_rule
    from jgradcheck._checks.vjp import VJP
    from jgradcheck._options import Options

    if kind == "vjp":
        rule, inputs = _dense_rule(transpose_dw=True), _dense_inputs()
    else:
        rule = jvp_rule(_dense, _dense_jvp_transposed_tw)
        inputs = (jnp.ones((2, 3)) * 0.2, jnp.eye(3) * 0.5 + 0.1)
    direction = VJP(pairs=2) if kind == "vjp" else JVP(rows=1)
    opts = Options.build(key=3, method="central")
    report = check_rule(rule, inputs, direction, nondiff_argnums=(), order=1, opts=opts)
    public = (
        jgc.check_vjp(rule, *inputs, pairs=2, key=3, method="central")
        if kind == "vjp"
        else jgc.check_jvp(rule, *inputs, rows=1, key=3, method="central")
    )
    assert report.kind == public.kind == kind and not report.ok and not public.ok
    assert str(report).splitlines()[:3] == str(public).splitlines()[:3]
    assert [label for label, _ in report.localized] == [
        label for label, _ in public.localized
    ]
    for (_, a), (_, b) in zip(report.localized, public.localized, strict=True):
        assert {e.where for e in a.failures()} == {e.where for e in b.failures()}
    assert report.structure == public.structure


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_rule_checks_take_memory_sizes(check):
    assert check(jnp.sin, X7, memory_budget="64MiB").ok
    with pytest.raises(ValueError, match="`memory_budget`"):
        check(jnp.sin, X7, memory_budget="a lot")
