"""Fast mode: random directions per leaf, and a sweep of the leaves that disagree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import (
    data,
    failing_places,
    linear_grad,
    linear_loss,
    linear_problem,
    mlp_loss,
    mlp_params,
)
from jgradcheck._checks.grad import check_grad_with
from jgradcheck._leaf import fast as _fast
from jgradcheck._options import Options

K = 4
W_ENTRIES = {("['w']", (i, j)) for i in range(8) for j in range(8)}
"""Every entry of ``linear_problem``'s 8×8 weight."""
OFF_DIAGONAL = {place for place in W_ENTRIES if place[1][0] != place[1][1]}
"""The 56 entries a transposed gradient gets wrong (random weights: none agree)."""


def fast(loss, params, *args, **options):
    return jgc.check_grad(loss, params, *args, mode="fast", **options)


# ------------------------------------------------------------ correct gradients


def test_correct_mlp_passes_without_checking_entries(dtype):
    params = mlp_params([6, 12, 3], dtype)
    x, y = data((5, 6), (5, 3), dtype)
    report = fast(mlp_loss, params, x, y)
    assert report.ok, report
    assert report.settings.mode == "fast" and report.settings.directions == K
    for leaf in report.leaves:
        assert leaf.checked == 0 and leaf.ok
        k = min(K, leaf.total)  # [1]['b'] has 3 entries: 3 directions span it
        assert leaf.directions.count == k and leaf.directions.ok
        assert leaf.directions.support == leaf.total
        assert leaf.verdict == f"ok ({k} directions)"
    assert report.n_checked == 0 and report.failures() == () and report.worst() == ()
    text = str(report)
    assert text.startswith("gradient check passed (fast mode): 4 of 4 leaves agree")
    assert "not checked one by one" in text and "docs/fast_mode.md" in text
    assert "closest directional call per leaf" in text


def test_correct_hand_written_gradient_passes(dtype):
    params, x, y = linear_problem(dtype)
    assert fast(linear_loss, params, x, y, grad=linear_grad).ok


def test_native_precision():
    params, x, y = linear_problem()
    k = float(y.size)  # a sum: native float32 differences resolve ~1e-4 of |J|

    def loss(p, x, y):
        return k * linear_loss(p, x, y)

    def grad(p, x, y, scale=1.0):
        g = linear_grad(p, x, y, scale=scale)
        return jax.tree_util.tree_map(lambda a: k * a, g)

    assert fast(loss, params, x, y, grad=grad, precision="native").ok
    bad = fast(
        loss, params, x, y, grad=lambda *a: grad(*a, scale=1.05), precision="native"
    )
    assert {e.path for e in bad.failures()} == {"['w']"}
    assert bad.settings.reference_dtype == "float32"


def test_evaluations_do_not_grow_with_the_number_of_entries():
    counts = []
    for width in (8, 64):
        params = mlp_params([16, width, 4])
        x, y = data((4, 16), (4, 4))
        report = fast(mlp_loss, params, x, y, directions=3)
        assert report.ok, report
        counts.append(report.timing.evaluations)
        # J(θ) twice, then ±t along 3 directions of each of the 4 leaves (a
        # leaf with fewer entries than directions gets one per entry).
        assert report.timing.evaluations <= 2 + 8 * 3 * 4
        assert sum(leaf.directions.evaluations for leaf in report.leaves) + 2 == (
            report.timing.evaluations
        )
    assert counts[0] == counts[1]
    full = jgc.check_grad(mlp_loss, params, x, y)
    assert full.timing.evaluations >= 2 * full.n_checked > 20 * counts[1]


def test_leaf_with_fewer_entries_than_directions():
    report = fast(
        lambda p: jnp.sum(jnp.sin(p["a"]) * p["s"]), {"a": jnp.ones(2), "s": 2.0}
    )
    assert report.ok, report
    assert [leaf.directions.count for leaf in report.leaves] == [2, 1]


# ---------------------------------------------------------------- broken ones


def _bad_w(report):
    assert not report.ok
    assert report.leaf("['b']").ok and report.leaf("['b']").checked == 0
    return report.leaf("['w']")


def test_wrong_sign(dtype):
    # Through assert_grad(mode="fast"): it raises with the fast report attached.
    params, x, y = linear_problem(dtype)
    with pytest.raises(jgc.GradCheckError) as info:
        jgc.assert_grad(
            linear_loss,
            params,
            x,
            y,
            grad=lambda *a: linear_grad(*a, sign=-1.0),
            mode="fast",
        )
    report = info.value.report
    assert report.settings.mode == "fast" and not report.ok
    assert report.leaf("['w']").n_fail == 64 and report.leaf("['b']").n_fail == 8
    assert report.leaf("['w']").n_fail_directions == K
    assert "sign flipped" in report.leaf("['w']").diagnosis
    assert str(report).startswith("gradient check FAILED: 72 of 72 checked entries")


def test_transposed(dtype):
    params, x, y = linear_problem(dtype)
    report = fast(
        linear_loss, params, x, y, grad=lambda *a: linear_grad(*a, transpose=True)
    )
    w = _bad_w(report)
    assert w.n_fail == 56 and w.checked == 64
    assert all(e.index[0] != e.index[1] for e in report.failures())
    assert failing_places(report) == OFF_DIAGONAL
    assert w.diagnosis.startswith("transposed")


def test_missing_regularisation_term(dtype):
    params, x, y = linear_problem(dtype)

    def loss(p, x, y):
        return linear_loss(p, x, y) + 1e-2 * jnp.sum(p["w"] ** 2)

    report = fast(loss, params, x, y, grad=linear_grad)
    w = _bad_w(report)
    assert w.n_fail == 64 and failing_places(report) == W_ENTRIES
    assert w.diagnosis.startswith("off by a term proportional to θ: a − n ≈ -0.02·θ")


@pytest.mark.parametrize("scale", [16.0, 0.5])
def test_scaled(scale):
    params, x, y = linear_problem()
    w = _bad_w(
        fast(linear_loss, params, x, y, grad=lambda *a: linear_grad(*a, scale=scale))
    )
    assert w.n_fail == 64 and "scaled" in w.diagnosis


def test_float32_sized_error():
    # 3e-3 relative on every entry of one leaf, float32 throughout.
    params, x, y = linear_problem(jnp.float32)

    def grad(p, x, y):
        g = linear_grad(p, x, y)
        return {"w": g["w"] * (1 + 3e-3), "b": g["b"]}

    report = fast(linear_loss, params, x, y, grad=grad)
    w = _bad_w(report)
    assert w.n_fail == 64 and "scaled: a ≈ 1.003·n" in w.diagnosis
    assert failing_places(report) == W_ENTRIES


def test_1e4_relative_error_in_one_float64_entry():
    with jax.enable_x64(True):
        params, x, y = linear_problem(jnp.float64)

        def grad(p, x, y):
            g = linear_grad(p, x, y)
            return {"w": g["w"], "b": g["b"].at[3].multiply(1 + 1e-4)}

        report = fast(linear_loss, params, x, y, grad=grad)
    assert failing_places(report) == {("['b']", (3,))}
    assert report.leaf("['w']").checked == 0


def _one_bad_entry(scale, where=(17, 4)):
    params = mlp_params([40, 25, 3])  # [0]['w'] has 1,000 entries
    x, y = data((6, 40), (6, 3))

    def grad(p, x, y):
        g = jax.grad(mlp_loss)(p, x, y)
        g[0]["w"] = g[0]["w"].at[where].multiply(scale)
        return g

    return params, x, y, grad


@pytest.fixture(scope="module")
def one_bad_entry_report():
    """The fast check of ``_one_bad_entry(2.0)``, shared by the two tests below
    that assert different things about that same check (run once per worker)."""
    params, x, y, grad = _one_bad_entry(2.0)
    return fast(mlp_loss, params, x, y, grad=grad)


def test_one_bad_entry_of_a_1000_entry_leaf_is_found_and_localised(
    one_bad_entry_report,
):
    report = one_bad_entry_report
    assert failing_places(report) == {("[0]['w']", (17, 4))}
    bad = report.leaf("[0]['w']")
    assert bad.checked == 1000 and bad.n_fail_directions > 0
    assert bad.diagnosis == "isolated: 1 wrong entry: [0]['w'][17, 4]"
    assert report.worst(1)[0].where == "[0]['w'][17, 4]"
    assert all(leaf.checked == 0 for leaf in report.leaves if leaf is not bad)
    # 2 + 2·4 per leaf, + refinement of the failing directions, + the sweep.
    assert report.timing.evaluations < 2 + 8 * K * 4 + 2 * 1000 * 2


def test_report_api_in_fast_mode(one_bad_entry_report):
    report = one_bad_entry_report
    text = str(report)
    for needle in [
        "along 4 random directions u per leaf",
        "directions that disagree",
        "⟨a,u⟩",
        "n along u",
        "[0]['w'][17, 4]",
        "4/4 agree",
        "ok (4 directions)",
    ]:
        assert needle in text, needle
    assert "ok=False" in repr(report)
    html = report._repr_html_()
    assert "directions that disagree" in html and "#cf222e" in html
    # assert_grad in fast mode: see test_wrong_sign.


def test_buggy_custom_vjp_through_jax_grad():
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defvjp(
        lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(2 * x),)
    )
    report = fast(lambda p: jnp.sum(softplus(p) ** 2), jnp.linspace(-2.0, 2.0, 9))
    assert failing_places(report) == {("", (i,)) for i in range(9) if i != 4}


# ------------------------------------------------- what the sweep covers (coords)


def test_int_coords_caps_the_explaining_sweep():
    params, x, y, grad = _one_bad_entry(2.0)
    report = fast(mlp_loss, params, x, y, grad=grad, coords=10, key=3)
    bad = report.leaf("[0]['w']")
    assert not report.ok and bad.checked == 10 and bad.n_fail_directions > 0
    # (17, 4) is not among the 10 entries drawn with key=3: the leaf still fails,
    # on the evidence of its directions, and the report says what was not swept.
    assert bad.n_fail == 0 and report.failures() == ()
    assert "probably among the 990 not swept" in bad.diagnosis
    assert bad.verdict.startswith("FAIL (") and "directions" in bad.verdict
    assert "no single swept entry is wrong" in str(report).splitlines()[0]


def test_large_leaf_is_explained_by_a_sample(monkeypatch):
    monkeypatch.setattr(_fast, "EXPLAIN_LIMIT", 100)
    params, x, y, grad = _one_bad_entry(2.0)
    report = fast(mlp_loss, params, x, y, grad=grad)
    assert report.leaf("[0]['w']").checked == 100 and not report.ok


def test_mask_restricts_directions_and_sweep():
    params, x, y, grad = _one_bad_entry(2.0)
    mask = jax.tree_util.tree_map(lambda p: np.ones(p.shape, bool), params)
    mask[0]["w"][17, 4] = False
    mask[1]["b"] = np.zeros(3, bool)
    report = fast(mlp_loss, params, x, y, grad=grad, coords=mask)
    assert report.ok, report  # the bad entry is outside the mask
    assert [leaf.path for leaf in report.leaves] == ["[0]['b']", "[0]['w']", "[1]['w']"]
    assert report.leaf("[0]['w']").directions.support == 999
    mask[0]["w"][17, 4] = True
    report = fast(mlp_loss, params, x, y, grad=grad, coords=mask)
    assert failing_places(report) == {("[0]['w']", (17, 4))}


def test_directions_are_zero_outside_the_mask():
    info = jgc.check_grad(lambda p: jnp.sum(p**2), jnp.ones(6)).leaves[0].info
    u = _fast.direction(0, info, 1, np.array([1, 4]))
    assert np.count_nonzero(u) == 2 and u[1] != 0 and u[4] != 0


# ----------------------------------------------------------------- determinism


def test_same_key_same_directions_and_the_rule_is_their_projection():
    params = mlp_params([6, 12, 3])
    x, y = data((5, 6), (5, 3))
    one = fast(mlp_loss, params, x, y, key=7)
    two = fast(mlp_loss, params, x, y, key=7)
    other = fast(mlp_loss, params, x, y, key=8)
    # check_grad computes the gradient under test compiled (jit).
    grads = jax.tree_util.tree_leaves(jax.jit(jax.grad(mlp_loss))(params, x, y))
    for a, b, c, g in zip(one.leaves, two.leaves, other.leaves, grads):
        assert np.array_equal(a.directions.rule, b.directions.rule)
        assert np.array_equal(a.directions.numeric, b.directions.numeric)
        assert not np.array_equal(a.directions.rule, c.directions.rule)
        u = np.stack(
            [
                _fast.direction(a.directions.seed, a.info, k)
                for k in range(a.directions.count)
            ]
        )
        u = u.astype(np.float64)  # float64 reference: u as drawn
        expect = u @ np.asarray(g, np.float64).reshape(-1)
        np.testing.assert_allclose(a.directions.rule, expect, rtol=1e-12)
    assert one.leaves[0].directions.seed == 7


def test_directions_are_readable_and_per_leaf():
    report = jgc.check_grad(
        lambda p: jnp.sum(p["a"] ** 2 + p["b"]), {"a": jnp.ones(5), "b": jnp.ones(5)}
    )
    a, b = (leaf.info for leaf in report.leaves)
    ua, ub = _fast.direction(0, a, 0), _fast.direction(0, b, 0)
    assert not np.array_equal(ua, ub)
    assert np.all((np.abs(ua) >= 0.01) & (np.abs(ua) <= 9.0))
    assert np.allclose(ua * 100, np.round(ua * 100))


# ------------------------------------------------------- tolerance and verdict


def test_tolerance_does_not_grow_with_leaf_size():
    # The rounding allowance of ⟨a,u⟩ is min(Σ, 6·‖·‖₂) of the per-entry one:
    # relative to the typical projection it stays bounded as n grows.
    rel = []
    for n in (100, 10_000):
        p = jnp.linspace(0.1, 1.0, n, dtype=jnp.float32)
        report = fast(lambda p: jnp.sum(jnp.sin(p) + p**2), p)
        assert report.ok, report
        d = report.leaves[0].directions
        rel.append(float(np.max(d.tolerance / np.abs(d.numeric))))
    # Measured: 2.9x and 1.0e-4; a plain sum (L1) would give 29x and 1.5e-3.
    assert rel[1] < 10 * rel[0] and rel[1] < 5e-4


def test_spread_is_the_smaller_of_the_two_bounds():
    w = np.ones((2, 400))
    np.testing.assert_allclose(_fast.spread(w), [6 * 20.0, 6 * 20.0])
    np.testing.assert_allclose(_fast.spread(np.ones((1, 4))), [4.0])


def test_one_percent_on_one_float32_entry_of_3136_uses_the_measured_rounding():
    # The fixed 16-ulp float32 allowance, projected on u, would hide this (the
    # projection moves by ~5e-5, that allowance is ~8e-4); the rounding
    # measured against the float64 gradient (~1e-6) does not.
    params = mlp_params([48, 64, 4])
    x, y = data((8, 48), (8, 4))

    def grad(p, x, y):
        g = jax.grad(mlp_loss)(p, x, y)
        g[0]["w"] = g[0]["w"].at[17, 42].multiply(1.01)
        return g

    report = fast(mlp_loss, params, x, y, grad=grad)
    assert failing_places(report) == {("[0]['w']", (17, 42))}


def test_rounding_hidden_from_the_measurement_is_not_a_failure():
    # Computed in float32 whatever the input, then scaled by a float64 constant:
    # a₆₄ looks wider than a but carries a's own float32 rounding. Directions
    # judged against the measured rounding disagree; the sweep vouches for
    # every entry, and within the full mode's fixed allowance they are unsure.
    # The gradient's rounding is measured by re-running it at float64 only
    # where it is JAX's autodiff itself (a hand-written `grad=` is judged by
    # autodiff of the loss, test_yardstick.py): `autodiff=True` declares it so,
    # as the rule checks' localisation does for `jax.vjp`.
    params, x, y = linear_problem()

    def grad(p, x, y):
        f32 = lambda t: jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), t)  # noqa: E731
        g = linear_grad(f32(p), *f32((x, y)))
        return jax.tree_util.tree_map(
            lambda v, q: v.astype(q.dtype) * (1 + 2**-40), g, p
        )

    report = check_grad_with(
        linear_loss,
        params,
        (x, y),
        grad=grad,
        opts=Options.build(mode="fast"),
        autodiff=True,
    )
    assert report.ok, report
    assert sum(leaf.directions.n_unsure for leaf in report.leaves) > 0
    assert all(leaf.directions.n_fail == 0 for leaf in report.leaves)
    assert report.n_checked == 72


def test_a_kink_along_a_direction_is_resolved_by_the_sweep():
    p = jnp.array([0.0, 1.0, -2.0, 0.0, 0.5, 3.0, 0.0, -1.0])
    report = fast(lambda p: jnp.sum(jnp.abs(p)) + jnp.sum(p**2), p)
    assert report.ok, report
    leaf = report.leaves[0]
    assert leaf.checked == 8 and leaf.n_kink == 3
    assert leaf.directions.n_unsure > 0 and leaf.directions.n_fail == 0


def test_explicit_tolerances_apply_to_directions():
    params, x, y = linear_problem()

    def grad(p, x, y):
        g = linear_grad(p, x, y)
        return {"w": g["w"] * (1 + 1e-3), "b": g["b"]}

    assert not fast(linear_loss, params, x, y, grad=grad).ok
    loose = fast(linear_loss, params, x, y, grad=grad, rtol=1e-2, atol=0.0)
    assert loose.ok, loose
    assert all(leaf.checked == 0 for leaf in loose.leaves)


def test_named_terms_in_fast_mode():
    params, x, y = linear_problem()

    def loss(p, x, y):
        return {"data": linear_loss(p, x, y), "l2": 25.0 * jnp.sum(p["w"] ** 2)}

    report = fast(loss, params, x, y)
    assert report.ok and all(t.settings.mode == "fast" for _, t in report.terms)


def test_complex_leaf_in_fast_mode():
    z = jnp.array([1.0 + 2.0j, -0.5 + 0.1j, 0.3 - 1.0j])
    report = fast(lambda z: jnp.sum(jnp.abs(z) ** 2 + jnp.real(z) ** 3), z)
    assert report.ok, report
    assert report.leaves[0].directions.support == 6

    def wrong(z):
        return jnp.conj(
            jax.grad(lambda z: jnp.sum(jnp.abs(z) ** 2 + jnp.real(z) ** 3))(z)
        )

    bad = fast(lambda z: jnp.sum(jnp.abs(z) ** 2 + jnp.real(z) ** 3), z, grad=wrong)
    assert not bad.ok and bad.leaves[0].n_fail == 3


# -------------------------------------------------------------- report and input


def test_full_mode_report_is_unchanged():
    params, x, y = linear_problem()
    report = jgc.check_grad(linear_loss, params, x, y)
    assert report.settings.mode == "full" and report.settings.directions is None
    assert all(leaf.directions is None for leaf in report.leaves)
    assert "directions" not in str(report)


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(mode="quick"), "`mode` must be one of"),
        (dict(mode="fast", directions=0), "`directions` must be a positive int"),
        (dict(mode="fast", directions=True), "`directions` must be a positive int"),
        (dict(mode="fast", directions=2.5), "`directions` must be a positive int"),
        (dict(directions=3), "`directions` is an option of mode='fast'"),
        (dict(mode="fast", coords=0), "`coords` must be at least 1"),
    ],
)
def test_bad_options(options, match):
    params, x, y = linear_problem()
    with pytest.raises(ValueError, match=match):
        jgc.check_grad(linear_loss, params, x, y, **options)
