"""``points=K``: rules checked across their input domain (issue 15, items 1-2).

Each bug below lives in a region the example input never visits, so the check
at the given values passes and only ``points=`` catches it; the correct rule
with the same branches (one custom_vjp with all four) passes at every judged
point, in float32 and float64. Reports are computed once per module (a rule
check at points costs one batch plus the full check at the shrunk input).
"""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._engine.jaxprs import thresholds
from jgradcheck._interfaces.cli_options import build_parser
from jgradcheck._numerics import points as pts
from jgradcheck._numerics.verdict import FAIL, PASS, judge

K = 16

# ------------------------------------------------------------ the branches


def _softplus(x):
    return jnp.logaddexp(x, 0.0)


def _exprel(x):
    """(eˣ − 1)/x, a degree-4 series where |x| < 0.01."""
    small = jnp.abs(x) < 0.01
    safe = jnp.where(small, 1.0, x)
    series = 1 + x / 2 + x**2 / 6 + x**3 / 24 + x**4 / 120
    return jnp.where(small, series, jnp.expm1(safe) / safe)


def _exprel_slope(x, series_constant=0.5):
    """d/dx of :func:`_exprel`: the series' own derivative where |x| < 0.01."""
    small = jnp.abs(x) < 0.01
    safe = jnp.where(small, 1.0, x)
    series = series_constant + x / 3 + x**2 / 8 + x**3 / 30
    return jnp.where(small, series, (safe * jnp.exp(safe) - jnp.expm1(safe)) / safe**2)


def _elu(x):
    return jnp.where(x > 0, x, jnp.expm1(jnp.minimum(x, 0.0)))


def _rows(x):
    """x times its row sums: a per-row statistic broadcast over a batch axis."""
    return x * x.sum(axis=1, keepdims=True)


def _all_branches(x):
    relu = jnp.maximum(x, 0.0)  # a true kink at 0
    return (_softplus(x) + _exprel(x) + _elu(x) + relu + _rows(x)).sum(axis=1)


@jax.custom_vjp
def branches(x):
    """Saturating, near-zero series, piecewise, a kink and per-row: all correct."""
    return _all_branches(x)


def _branches_bwd(x, g):
    g = g[:, None]
    return (
        g * (jax.nn.sigmoid(x) + _exprel_slope(x))
        + g * jnp.where(x > 0, 1.0, 0.0)  # relu: the left slope at 0
        + g * jnp.where(x > 0, 1.0, jnp.exp(jnp.minimum(x, 0.0)))
        + g * x.sum(axis=1, keepdims=True)
        + (g * x).sum(axis=1, keepdims=True),
    )


branches.defvjp(lambda x: (branches(x), x), _branches_bwd)


# ------------------------------------------------------------ the bugs


@jax.custom_vjp
def softplus_saturation_bug(x):
    return _softplus(x)


softplus_saturation_bug.defvjp(
    lambda x: (_softplus(x), x),
    # The saturated branch copied from the negative side: 0 instead of 1.
    lambda x, g: (g * jnp.where(x > 15.0, 0.0, jax.nn.sigmoid(x)),),
)


@jax.custom_jvp
def exprel_series_bug(x):
    return _exprel(x)


exprel_series_bug.defjvp(
    # The series' constant term 1/3 instead of 1/2 (only where |x| < 0.01).
    lambda p, t: (_exprel(p[0]), _exprel_slope(p[0], series_constant=1 / 3) * t[0])
)


@jax.custom_vjp
def elu_negative_branch_bug(x):
    return _elu(x)


elu_negative_branch_bug.defvjp(
    lambda x: (_elu(x), x),
    # eˣ − 1 (the primal) instead of eˣ on the negative branch.
    lambda x, g: (g * jnp.where(x > 0, 1.0, jnp.expm1(jnp.minimum(x, 0.0))),),
)


@jax.custom_vjp
def rows_broadcast_bug(x):
    return _rows(x)


rows_broadcast_bug.defvjp(
    lambda x: (_rows(x), x),
    # Row 0's sum broadcast over the batch: right only where the rows agree.
    lambda x, g: (
        g * x.sum(axis=1, keepdims=True)[:1] + (g * x).sum(axis=1, keepdims=True),
    ),
)

X = jnp.array([0.5, 1.0, 2.0], jnp.float32)
"""The example input: positive, moderate, away from every branch."""

EQUAL_ROWS = jnp.array([[0.5, 1.0], [0.5, 1.0]], jnp.float32)
"""Points keep the primals' shapes: the batch bug must show in the values,
so the example has equal rows (where the bug is invisible), and the points
do not."""


@pytest.fixture(scope="module")
def saturation():
    return jgc.check_vjp(softplus_saturation_bug, X, points=K, localize=0)


@pytest.fixture(scope="module")
def series():
    return jgc.check_jvp(exprel_series_bug, X, points=K, localize=0)


@pytest.fixture(scope="module")
def negative():
    return jgc.check_vjp(elu_negative_branch_bug, X, points=K, localize=0)


@pytest.fixture(scope="module")
def broadcast():
    return jgc.check_vjp(rows_broadcast_bug, EQUAL_ROWS, points=K, localize=0)


BUGS = ["saturation", "series", "negative", "broadcast"]


def _at_given(report):
    """The report at the given values alone (the points section dropped)."""
    return dataclasses.replace(report, points=None)


@pytest.mark.parametrize("bug", BUGS)
def test_region_bug_passes_at_the_example_and_is_caught_at_points(bug, request):
    report = request.getfixturevalue(bug)
    assert _at_given(report).ok, f"{bug}: the example input must not show the bug"
    assert not report.ok
    assert report.points.failing
    assert "passed at the given values" in str(report).splitlines()[0]


@pytest.mark.parametrize("bug", BUGS)
def test_the_shrunk_input_still_fails_in_the_full_check(bug, request):
    p = request.getfixturevalue(bug).points
    assert p.simplest_report is not None and not p.simplest_report.ok
    # Localised at the shrunk input: a failing entry named by path and index
    # (the VJP's ⟨ȳ, f⟩ sweep, or the JVP's failing output entries).
    named = [e for _, r in p.simplest_report.localized for e in r.failures()]
    assert named and all(e.path == "[0]" or e.path == "" for e in named)
    # The printed input builds that same point.
    ns = {"jnp": jnp}
    exec("\n".join(p.simplest), ns)
    assert (
        ns["x"].dtype == jnp.float32
        and ns["x"].shape == (EQUAL_ROWS if bug == "broadcast" else X).shape
    )


def test_saturation_summary_and_shrinking(saturation):
    p = saturation.points
    assert p.common == "some entry of [0] > 15"
    assert 15.0 in p.thresholds
    ns = {"jnp": jnp}
    exec(p.simplest[0], ns)
    # Fewest entries moved from a passing point: one entry in the saturated
    # branch, short to write.
    assert int(np.sum(np.asarray(ns["x"]) > 15)) == 1
    assert max(pts.digits_of(v, np.float32) for v in np.asarray(ns["x"])) <= 4
    text = str(saturation)
    assert "all with some entry of [0] > 15" in text
    assert p.simplest[0] in text


def test_series_summary_names_the_small_magnitudes(series):
    assert series.points.common == "some entry of [0] with |x| < 0.01"


def test_negative_branch_summary(negative):
    assert negative.points.common == "some entry of [0] < 0"


def test_failures_and_serialisation_carry_the_points(saturation):
    lines = saturation.failures()
    assert any(line.startswith("points: fails at") for line in lines)
    d = json.loads(json.dumps(saturation.to_dict(), allow_nan=False))
    assert d["ok"] is False and d["points"]["failing"] == list(
        saturation.points.failing
    )
    assert d["points"]["simplest_report"]["ok"] is False
    # The points' values stay on the record, out of the dict.
    assert "values" not in d["points"]
    (values,) = saturation.points.values
    assert values.shape == (K, 3) and values.dtype == np.float32
    assert np.array_equal(values[0], np.asarray(X))  # point 0: the given values
    assert "input points" in saturation._repr_html_()


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_correct_branches_pass_at_every_judged_point(x64):
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        x = EQUAL_ROWS.astype(dtype)
        report = jgc.check_vjp(branches, x, points=K, localize=0)
        assert report.ok, str(report)
        p = report.points
        assert p.failing == () and p.judged >= K // 2 and p.located == ()
        # exp overflows past |x| ≈ 88 (float32) or 709: listed, not failed.
        assert p.out_of_domain and set(p.out_of_domain).isdisjoint(p.failing)
        assert "out of the domain" in str(report)
        # The kink of relu at 0: central differences there average the two
        # slopes; the rule's left slope is not failed there.
        assert p.labels[1] == "every entry 0" and 1 not in p.failing
        assert 1 in p.at_threshold + p.unresolved


@jax.custom_vjp
def sine(x):
    return jnp.sin(x)


sine.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))


def test_wide_steps_at_huge_inputs_are_not_trusted_alone():
    """At |x| ≈ 1e37 the finite differences' steps (cbrt(eps)·|x|) span many
    periods of sin: whatever they say is not counted unless float64
    autodiff of the primal agrees. A correct rule passes; those points are
    listed as unresolved, never failed."""
    report = jgc.check_vjp(sine, X, points=K, localize=0)
    p = report.points
    assert report.ok and p.failing == () and p.unsure == ()
    huge = {k for k, v in enumerate(p.values[0]) if np.max(np.abs(v)) > 1e30}
    assert p.unresolved and set(p.unresolved) <= huge
    assert "cannot resolve f there" in str(report)


def test_without_points_the_report_is_as_before():
    report = jgc.check_vjp(branches, EQUAL_ROWS, localize=0)
    assert report.points is None and "input points" not in str(report)
    assert report.to_dict()["points"] is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_points_raise(bad):
    with pytest.raises(ValueError, match="`points`"):
        jgc.check_vjp(branches, EQUAL_ROWS, points=bad)
    with pytest.raises(ValueError, match="`points`"):
        jgc.check_jvp(exprel_series_bug, X, points=bad)


def test_cli_points_option():
    args = build_parser().parse_args(["check-vjp", "f.py:f", "--primals", "p.py:p"])
    assert args.points is None
    args = build_parser().parse_args(
        ["check-jvp", "f.py:f", "--primals", "p.py:p", "--points", "8"]
    )
    assert args.points == 8


# ------------------------------------------------- pure NumPy (no compiling)


def test_point_set_is_deterministic_and_shaped():
    given = [np.array([[2.0, 3.0]]), np.array(0.5)]
    kw = dict(
        kinks=[15.0],
        large=(-1e30, 1e30),
        beyond=(-4e30, 4e30),
        tiny=1e-38,
        rel=1e-3,
    )
    a, labels = pts.point_set(given, 40, seed=3, **kw)
    b, _ = pts.point_set(given, 40, seed=3, **kw)
    c, _ = pts.point_set(given, 40, seed=4, **kw)
    assert len(a) == len(labels) == 40
    assert all(p[0].shape == (1, 2) and p[1].shape == () for p in a)
    assert all(np.array_equal(u, v) for p, q in zip(a, b) for u, v in zip(p, q))
    assert not all(np.array_equal(u, v) for p, q in zip(a, c) for u, v in zip(p, q))
    values = {float(v) for p in a for leaf in p for v in np.ravel(leaf)}
    assert {0.0, 1.0, -1.0, 1e-38, -1e-38, 1e30, -4e30} <= values
    assert 15.0 - 0.015 in values and 15.0 + 0.015 in values


def test_common_property_is_stated_only_when_it_separates():
    fail = [[np.array([0.0, 16.0])], [np.array([30.0, -1.0])]]
    ok = [[np.array([1.0, 15.0])], [np.array([-40.0, 0.0])]]
    assert pts.common_property(fail, ok, ["[0]"]) == "some entry of [0] > 15"
    # A passing point with an entry above 15 as well: nothing is said.
    ok_big = ok + [[np.array([20.0, 1.0])]]
    assert pts.common_property(fail, ok_big, ["[0]"]) == ""
    near = [[np.array([1.0, 1e-4])], [np.array([-0.003, 2.0])]]
    away = [[np.array([0.5, 2.0])], [np.array([-1.0, 0.02])]]
    assert (
        pts.common_property(near, away, ["[0]"]) == "some entry of [0] with |x| < 0.01"
    )


def test_shrinking_candidates_and_printing():
    point, base = [np.array([3.0, 0.0, 15.017])], [np.zeros(3)]
    resets = pts.reset_candidates(point, base, 8)
    assert all(pts.moved(c, base).size < 2 for c in resets)
    simpler = pts.simpler_candidates([np.array([0.0, 0.0, 15.017])], base, 16)
    assert any(c[0][2] == 15.02 for c in simpler)
    key = pts.simplicity([np.array([0.0, 0.0, 15.02])], base, [np.float32])
    assert key < pts.simplicity(point, base, [np.float32])
    lines = pts.as_code(
        [np.array([[0.0, 15.02]]), np.array(1.5)], ["[0]['w']", "[1]"], [np.float32] * 2
    )
    assert lines == [
        "x0 = jnp.array([[0.0, 15.02]], dtype=jnp.float32)  # [0]['w']",
        "x1 = jnp.array(1.5, dtype=jnp.float32)  # [1]",
    ]


def test_thresholds_are_the_constants_compared_with():
    jaxpr = jax.make_jaxpr(lambda x: _exprel(x) + jnp.where(x > 15.0, x, 0.0))
    # 0.0 for abs; 0.01 as the float32 constant it is.
    assert thresholds(jaxpr(jnp.ones(2, jnp.float32))) == [
        0.0,
        float(np.float32(0.01)),
        15.0,
    ]
    assert thresholds(jax.make_jaxpr(jnp.tanh)(1.0)) == []


def test_a_nan_yardstick_leaves_the_fixed_floor():
    """A yardstick that is NaN at an entry (autodiff's inf·0 through an
    unselected branch) measured nothing there: the fixed floor judges it, as
    without a yardstick, both ways."""
    n, err, r0 = np.array([1.0, 2.0]), np.full(2, 1e-12), np.full(2, 1e-13)
    nan = np.array([np.nan, np.nan])
    for a, want in [(n.copy(), PASS), (n * (1 + 1e-3), FAIL)]:
        with_nan = judge(a, n, err, r0, eps_grad=2.0**-23, scale=2.0, rounding=nan)
        fixed = judge(a, n, err, r0, eps_grad=2.0**-23, scale=2.0)
        assert np.all(with_nan.status == want) and np.all(fixed.status == want)
        assert np.array_equal(with_nan.tolerance, fixed.tolerance)


def test_every_failing_point_is_localised_where_the_bug_is(saturation):
    # The full check at each failing point names the entries above 15 (the
    # saturated branch), and only those: paths and indices, as at the primals.
    p = saturation.points
    assert p.located and [q.point for q in p.located] == list(p.failing[:8])
    for q in p.located:
        assert not q.ok and q.entries
        named = {int(re.fullmatch(r"\[0\]\[(\d+)\]", e).group(1)) for e in q.entries}
        above = set(np.flatnonzero(p.values[0][q.point] > 15.0).tolist())
        assert named == above, (q, p.values[0][q.point])
    assert "where the full check at each failing point finds the error" in str(
        saturation
    )
    assert saturation.to_dict()["points"]["located"][0]["entries"]


@jax.custom_vjp
def softplus_fixed(x):
    return _softplus(x)


softplus_fixed.defvjp(
    lambda x: (_softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),)
)


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
def test_low_precision_points_catch_the_saturation_bug_and_pass_its_fix(low):
    x = X.astype(low)
    bad = jgc.check_vjp(softplus_saturation_bug, x, points=K, localize=0)
    assert _at_given(bad).ok and not bad.ok
    # Every failing point is in the saturated region (in bfloat16 the points
    # just above 15 round onto it, so the summary's bound may be higher).
    values = bad.points.values[0]
    assert all((values[k] > 15).any() for k in bad.points.failing)
    good = jgc.check_vjp(softplus_fixed, x, points=K, localize=0)
    assert good.ok, str(good)


def _host_cos(x):
    return np.cos(np.asarray(x)).astype(np.asarray(x).dtype)


def _callback_rule(scale: float):
    """sin with a backward pass through a host callback on the primal (no vmap
    rule): fine where only the cotangent is batched (the checks at the given
    values), not where the points batch the primal."""

    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    def bwd(x, g):
        cos = jax.pure_callback(_host_cos, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
        return (scale * g * cos,)

    f.defvjp(lambda x: (f(x), x), bwd)
    return f


CALLBACK_GOOD, CALLBACK_BAD = _callback_rule(1.0), _callback_rule(1.01)


def test_a_rule_vmap_cannot_batch_is_checked_point_by_point_with_a_note():
    x = jnp.array([0.3, -1.2, 2.0], jnp.float32)
    good = jgc.check_vjp(CALLBACK_GOOD, x, points=6, localize=0)
    assert good.ok and good.points.note.startswith("NotImplementedError: vmap"), good
    assert "evaluated point by point (f cannot be vmapped" in str(good)
    bad = jgc.check_vjp(CALLBACK_BAD, x, points=6, localize=0)
    assert not bad.ok and bad.points.note and bad.points.failing
