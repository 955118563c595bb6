"""Fast mode's group testing: the wrong entries of a large failing leaf, by halving.

One 64×64 float32 leaf (4096 entries, above ``MIN_ENTRIES``) and one loss for
every check, so the compiled programs are shared; the plan itself (halving,
giving up, whether the sweep explains the directions) is tested on arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import failing_places
from jgradcheck._leaf import group_testing as gt
from jgradcheck._numerics.verdict import FAIL, PASS, UNSURE
from jgradcheck._pytree.flat import LeafInfo
from jgradcheck._report.records import Directions, LeafResult

N = 4096


def loss(p):
    return jnp.sum(jnp.sin(p) * p)


@pytest.fixture(scope="module")
def problem():
    theta = jnp.linspace(-1.0, 2.0, N, dtype=jnp.float32).reshape(64, 64)
    return theta, jax.grad(loss)(theta)


def fast(theta, g, **options):
    return jgc.check_grad(loss, theta, grad=lambda p: g, mode="fast", **options)


# ------------------------------------------------------------ on a real leaf


def test_one_wrong_entry_is_named_in_few_evaluations(problem):
    theta, exact = problem
    report = fast(theta, exact.at[17, 5].multiply(1.5))
    assert failing_places(report) == {("", (17, 5))}
    leaf = report.leaves[0]
    assert leaf.checked == gt.SMALLEST and leaf.verdict == "FAIL (1 wrong)"
    assert leaf.diagnosis == "isolated: 1 wrong entry: [17, 5]"
    # The full sweep of this leaf takes 2·4096 evaluations and more.
    assert report.timing.evaluations < 2 * N / 8
    assert leaf.note.startswith("1 wrong entry found by group testing (")
    assert leaf.note.endswith(
        f"the {N - gt.SMALLEST} other entries checked by directions only"
    )
    assert leaf.note in str(report)


def test_correct_gradient_passes_without_group_testing(problem):
    theta, exact = problem
    report = fast(theta, exact)
    assert report.ok, report
    assert report.leaves[0].checked == 0 and report.leaves[0].note is None
    assert report.timing.evaluations <= 2 + 2 * 4 * 4  # no group was tested


def test_two_wrong_entries_far_apart_are_both_found(problem):
    theta, exact = problem
    report = fast(theta, exact.at[3, 7].multiply(1.5).at[60, 2].multiply(0.5))
    assert failing_places(report) == {("", (3, 7)), ("", (60, 2))}
    assert report.leaves[0].note.startswith("2 wrong entries found by group testing")


def test_many_wrong_entries_fall_back_to_the_sweep(problem):
    theta, exact = problem
    wrong = np.random.default_rng(0).choice(N, 40, replace=False)
    g = exact.reshape(-1).at[wrong].multiply(1.3).reshape(64, 64)
    report = fast(theta, g)
    expected = {
        ("", tuple(int(i) for i in np.unravel_index(w, (64, 64)))) for w in wrong
    }
    assert failing_places(report) == expected  # all 40, as the full mode finds
    leaf = report.leaves[0]
    assert leaf.checked == N and "group testing gave up after" in leaf.note
    assert "the leaf was swept as without it" in leaf.note


def test_a_mask_is_halved_over_its_own_entries(problem):
    # A checkerboard: the groups' index ranges hold entries outside the mask,
    # where every direction is zero.
    theta, exact = problem
    mask = np.add.outer(np.arange(64), np.arange(64)) % 2 == 0
    report = fast(theta, exact.at[3, 7].multiply(1.5), coords=mask)
    assert failing_places(report) == {("", (3, 7))}
    assert report.leaves[0].checked == gt.SMALLEST
    assert f"the {N // 2 - gt.SMALLEST} other entries" in report.leaves[0].note
    report = fast(theta, exact.at[3, 8].multiply(1.5), coords=mask)
    assert report.ok, report  # the wrong entry is outside the mask


# ------------------------------------------------------------ the plan


def test_halving_follows_the_groups_that_disagree():
    s = gt.start(1024, FAIL)
    assert [g[:2] for g in s.children()] == [(0, 512), (512, 1024)]
    s = gt.advance(s, [PASS, FAIL], evaluations=40)
    assert [g[:2] for g in s.live] == [(512, 1024)] and not s.done
    for statuses in ([FAIL, PASS], [PASS, FAIL], [FAIL, PASS]):
        s = gt.advance(s, statuses, evaluations=40)
    assert s.done and s.gave_up is None and s.levels == 4
    assert s.swept == (gt.Group(640, 704, FAIL),) and s.evaluations == 160
    idx = np.arange(1024) * 3  # entries of a mask: flat indices, not positions
    np.testing.assert_array_equal(s.entries(idx), idx[640:704])


def test_unsure_groups_are_followed_and_swept():
    s = gt.start(256, FAIL)
    s = gt.advance(s, [UNSURE, FAIL], evaluations=10)
    assert [g.status for g in s.live] == [UNSURE, FAIL]
    s = gt.advance(s, [PASS, UNSURE, FAIL, PASS], evaluations=20)
    assert s.done and s.gave_up is None
    assert s.swept == (gt.Group(64, 128, UNSURE), gt.Group(128, 192, FAIL))
    # An unsure group whose halves agree was noise: it is dropped, not a failure.
    s = gt.advance(gt.start(256, FAIL), [UNSURE, FAIL], evaluations=10)
    s = gt.advance(s, [PASS, PASS, FAIL, PASS], evaluations=20)
    assert s.gave_up is None and s.swept == (gt.Group(128, 192, FAIL),)


def test_gives_up_when_a_failing_group_has_two_agreeing_halves():
    s = gt.advance(gt.start(4096, FAIL), [PASS, PASS], evaluations=40)
    assert s.done and "both halves agree" in s.gave_up


def test_gives_up_on_many_groups_a_large_budget_or_a_large_sweep():
    s = gt.start(1 << 16, FAIL)
    for _ in range(2):
        s = gt.advance(s, [FAIL] * 2 * len(s.live), evaluations=10)
    assert len(s.live) == 4 and s.gave_up is None  # two wrong entries per half?
    s = gt.advance(s, [FAIL] * 2 * len(s.live), evaluations=10)
    assert s.gave_up == "all 8 groups of a level disagree: an error across the leaf"
    s = gt.start(1 << 16, FAIL)
    for statuses in ("FF", "FFFP", "FFFFFP", "FFFFFFFFFP"):
        s = gt.advance(s, [FAIL if c == "F" else PASS for c in statuses], evaluations=0)
    assert s.done and s.gave_up == f"{gt.MAX_LIVE + 1} groups disagree at one level"
    s = gt.advance(gt.start(N, FAIL), [FAIL, PASS], evaluations=2000)
    assert s.gave_up == "2000 evaluations exceed 0.125 of a sweep"  # 2·4096/8
    full = tuple(gt.Group(64 * i, 64 * (i + 1), FAIL) for i in range(16))
    s = gt.Search(n=N, live=(gt.Group(1024, 1152, FAIL),), swept=full)
    s = gt.advance(s, [FAIL, FAIL], evaluations=0)
    assert s.gave_up == f"more than {gt.MAX_SWEPT} entries left to sweep"


INFO = LeafInfo("['w']", 0, (8,), np.dtype(np.float32), "float", 0)


def _swept(status, grad, numeric):
    k = len(status)
    return LeafResult(
        info=INFO,
        idx=np.arange(k),
        grad=np.asarray(grad, float),
        numeric=np.asarray(numeric, float),
        error_bar=np.full(k, 1e-9),
        tolerance=np.full(k, 1e-6),
        status=np.asarray(status, np.uint8),
        step=np.full(k, 1e-3),
        refined=np.zeros(k, bool),
        grad_dtype=np.dtype(np.float32),
    )


def _directions(u, a, true):
    rule, numeric = u @ a, u @ true
    k = u.shape[0]
    return Directions(
        rule=rule,
        numeric=numeric,
        error_bar=np.full(k, 1e-9),
        tolerance=np.full(k, 1e-6),
        status=np.where(np.abs(rule - numeric) > 1e-6, FAIL, PASS).astype(np.uint8),
        step=np.full(k, 1e-3),
        support=8,
        evaluations=2 * k,
        seed=0,
    )


def test_the_sweep_must_account_for_the_leaf_directions():
    # Entries 0..3 were swept (one group), 4..7 vouched for by directions.
    u = np.array([[1.0, -2.0, 3.0, 1.0, 2.0, -1.0, 1.0, 4.0], [2.0] * 8])
    true = np.linspace(-1.0, 1.0, 8)
    search = gt.Search(n=8, live=(), swept=(gt.Group(0, 4, FAIL),))
    idx = np.arange(8)
    a = true.copy()
    a[2] += 0.5
    res = _swept([PASS, PASS, FAIL, PASS], a[:4], true[:4])
    assert gt.explains(search, idx, res, _directions(u, a, true), u) is None
    # A second wrong entry outside the swept group: the directions say so.
    a[6] -= 0.25
    why = gt.explains(search, idx, res, _directions(u, a, true), u)
    assert why == "the wrong entries found do not account for the leaf's directions"
    # The sweep finds nothing, or a group that disagreed holds no wrong entry.
    ok = _swept([PASS] * 4, true[:4], true[:4])
    assert "finds no wrong entry" in gt.explains(
        search, idx, ok, _directions(u, a, true), u
    )
    two = gt.Search(n=8, live=(), swept=(gt.Group(0, 2, FAIL), gt.Group(2, 4, FAIL)))
    res = _swept([PASS, PASS, FAIL, PASS], a[:4], true[:4])
    assert "none is wrong alone" in gt.explains(
        two, idx, res, _directions(u, a, true), u
    )
