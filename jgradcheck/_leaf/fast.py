"""Fast mode of :func:`jgradcheck.check_grad`: random directions, not every entry.

A full check differences J along every coordinate: 2n evaluations for n
entries. Fast mode differences J along K random directions per leaf, whatever
the leaf's size, and compares two numbers per direction ``u``::

    rule     ⟨a, u⟩                              a: the gradient under test
    numeric  (J(θ + t·u) − J(θ − t·u)) / 2t      float64, Richardson-refined

``u`` is zero outside one leaf and holds readable values ±0.01 … ±9.00 on its
checked entries, drawn from a stream seeded by (key, leaf position, k): the same
key gives the same directions, and adding a leaf does not change the others'.
The directions of all leaves are evaluated by one compiled ``vmap``: 2
evaluations per direction, and 6 more for a direction whose first difference
does not agree within roundoff (steps t/2, t/4, t/8 and Richardson
extrapolation with an error bar). ``t`` is a power of two with
``t·max|u| ≈ cbrt(eps)·max(1, max|θ|)``, the full mode's step.

The verdict on a direction mirrors :mod:`jgradcheck._numerics.verdict`::

    tolerance = SAFETY · err + ρ + (log₂ n + 2) · eps₆₄ · Σ|aᵢuᵢ|
    ρ = max(floor(eps) · S, min(2·|⟨a − a₆₄, u⟩|, cap(eps) · S))
    S = spread(|u| ∘ (|a| + s)),   spread(w) = min(Σ wᵢ, Z · ‖w‖₂)

``err`` is the finite difference's error bar: Richardson's truncation estimate
plus the roundoff of J and of ``θ + t·u``. ``ρ`` is the rounding of ``⟨a, u⟩``.
The full mode allows each entry ``floor(eps)`` of ``|aᵢ| + s`` (16 ulps in float32) (``s``: the leaf's
largest ``|a|``); projected on ``u`` that is at most the sum (worst case) and,
since the signs of ``u`` are drawn independently of the gradient, at most
Z = 6 times its 2-norm except with probability ``2·exp(−Z²/2) ≈ 3e-8``
(Hoeffding): ``S`` takes the smaller. When the reference is float64, the
yardstick (:mod:`jgradcheck._engine.primal_ad`) gives the projected rounding:
where the gradient under test is autodiff itself (``jax.grad`` of a loss
without custom rules, or equal to autodiff of the primal bit for bit),
``⟨a − a₆₄, u⟩`` exactly, with ``a₆₄`` autodiff at float64; on other entries
(a custom rule, a hand-written gradient) autodiff's per-entry allowance
spread like the fixed one. If ``a₆₄`` really is wider than ``a`` (some entry
does not fit a's dtype), ``eps`` is float64's and the measurement decides, so a
small error in one float32 entry is not hidden under a fixed allowance that
grows like √n. A direction that fails only against that measured rounding, in a
leaf whose complete sweep then finds no wrong entry, becomes ``unsure`` (the
sweep vouches for every entry): fast mode never fails a gradient that the full
mode's fixed allowance accepts. The last term is the rounding of the float64
sum itself. Nothing here grows like the number of entries
(``jax.test_util.check_grads`` multiplies its tolerance by the size).

What a direction cannot see: an error ``δ`` whose projection ``⟨δ, u⟩`` is
below the tolerance, e.g. one entry off by ``e`` is seen only when
``|e·uᵢ| > tolerance`` (with ``|uᵢ| ≤ 9``). A leaf passing along K directions
is reported with ``checked == 0``: its entries were not compared one by one.
A leaf with a direction that disagrees (or cannot be judged) is swept entry by
entry like the full mode, so failures carry paths, indices and a diagnosis.
A leaf of at least ``MIN_ENTRIES`` checked entries with a direction that
disagrees is first halved by :mod:`jgradcheck._leaf.group_testing`: only the
small groups whose own directions disagree are swept, the other entries are
reported as checked by directions only (``coords=k`` keeps the sweep of k
entries instead). The machinery (plan, differences, judge, refine) lives in
:mod:`jgradcheck._leaf.fast_directions`. See docs/fast_mode.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._engine.context import EvalContext
from .._engine.directions import DirectionSweep
from .._engine.primal_ad import Yardstick
from .._numerics.verdict import FAIL, KINK, SAFETY, UNSURE
from .._pytree.coords import Selection, select
from .._pytree.flat import Flat
from .._report.records import Directions, LeafResult
from .fast_directions import PlannedLeaf, check_directions, direction, plan, spread
from .group_testing import MIN_ENTRIES, Search, explains, locate, summary

__all__ = ["EXPLAIN_LIMIT", "check_fast", "direction", "fast_selection", "spread"]

EXPLAIN_LIMIT = 2**16
"""Largest leaf swept in full when its directions disagree (beyond: a sample)."""
_SAMPLE = 3
"""Purpose tag of the explaining sweep's sample."""


def fast_selection(flat: Flat, coords: Any, key: Any) -> tuple[Selection, int | None]:
    """What ``coords=`` means in fast mode: (entries the directions span, sweep cap).

    ``None``: every entry; a failing leaf is swept in full up to
    :data:`EXPLAIN_LIMIT` entries, beyond that a sample of that many. An int
    ``k``: every entry, with a failing leaf swept on at most ``k`` of its
    entries. A mask: the directions are zero outside it, and a failing leaf is
    swept on its masked entries.
    """
    if coords is None:
        return select(flat, None, key), EXPLAIN_LIMIT
    if isinstance(coords, (int, np.integer)) and not isinstance(coords, bool):
        if coords < 1:
            raise ValueError(f"`coords` must be at least 1; got {coords}.")
        return select(flat, None, key), int(coords)
    return select(flat, coords, key), None


def _resolve(
    d: Directions, loose: np.ndarray, res: LeafResult, u: np.ndarray
) -> Directions:
    """Failing directions after a complete sweep that found no wrong entry.

    A direction that fails only against the measured rounding, not against
    the full mode's fixed allowance, is ``unsure`` (the sweep vouches for every
    entry); beyond that allowance it stays a failure, unless the entries the
    sweep found at a kink explain the rest: along ``u`` they account for up to
    ``Σ |uᵢ|·(|aᵢ − nᵢ| + SAFETY·errᵢ)`` (a kink's one-sided slopes differ by
    the jump, which the entry's verdict has excused already).
    """
    if res.n_fail or res.checked < d.support:
        return d
    kinked = res.status == KINK
    if kinked.any():
        gap = res.abs_err[kinked] + SAFETY * res.error_bar[kinked]
        loose = loose + np.abs(u[:, res.idx[kinked]]) @ gap
    within = (d.status == FAIL) & (np.abs(d.rule - d.numeric) <= loose)
    return d._replace(status=np.where(within, UNSURE, d.status).astype(np.uint8))


def _explained_entries(leaf: PlannedLeaf, cap: int | None, seed: int) -> np.ndarray:
    if cap is None or leaf.idx.size <= cap:
        return leaf.idx
    rng = np.random.default_rng([seed, _SAMPLE, leaf.info.position])
    return np.sort(rng.choice(leaf.idx, size=cap, replace=False))


def _unexplained(d: Directions, swept: int) -> str:
    """Why a leaf fails along a direction although no swept entry fails."""
    head = (
        f"disagrees along {d.n_fail} of {d.count} random directions, but none of "
        f"the {swept} swept entries is wrong beyond its tolerance: "
    )
    if swept >= d.support:
        return head + (
            "the error is spread thinly over many entries (each below its "
            "tolerance, their sum along u above the error bar)"
        )
    return head + (
        f"the wrong entries are probably among the {d.support - swept} not swept "
        "(pass a larger coords=k, or a mask, to sweep them)"
    )


def check_fast(
    ctx: EvalContext,
    flat: Flat,
    selection: Selection,
    under_test: dict[int, Any],
    measured: Yardstick | None,
    *,
    directions: int,
    seed: int,
    explain: int | None,
    check_leaf: Callable[..., LeafResult],
    rtol: float | None,
    atol: float | None,
) -> list[LeafResult]:
    """The leaf results of fast mode (called by check_grad inside the precision scope).

    Args:
      ctx: the evaluation context (the directional sweep is registered with
        it, so its timing and evaluation counts include it).
      flat: the (real-view) parameters; ``selection`` the entries per leaf.
      under_test, measured: the gradient under test per leaf position, and its
        rounding allowance (:mod:`jgradcheck._engine.primal_ad`; None: fixed).
      directions: K, random directions per leaf (fewer for a leaf with fewer
        entries).
      seed: the seed of the directions and of the explaining sample.
      explain: most entries of a failing leaf swept one by one (None: all).
      check_leaf: ``check_leaf(ctx, info, idx, grad, yard)``, the full mode's
        sweep and verdict of one leaf.
      rtol, atol: explicit tolerances, as in check_grad.
    """
    leaves = []
    for info in flat.checked:
        idx = selection[info.position]
        if idx.size:
            g64 = None if measured is None else measured.leaves.get(info.position)
            leaves.append(
                plan(ctx, info, idx, under_test[info.position], g64, directions, seed)
            )
    n_first = 2 + 2 * sum(leaf.u.shape[0] for leaf in leaves)
    sweep = DirectionSweep(
        ctx,
        [leaf.info for leaf in leaves],
        [leaf.u for leaf in leaves],
        n_first,
        engine=ctx.opts.engine,
        operands=ctx.operands(),
    )
    ctx.register(sweep)
    results = []
    groups = not isinstance(ctx.opts.coords, (int, np.integer))
    for leaf, (d, loose) in zip(
        leaves, check_directions(sweep, ctx, leaves, seed, rtol, atol)
    ):
        if d.ok:
            results.append(_unswept(leaf, d))
            continue
        grad = under_test[leaf.info.position]
        found, gave_up = None, None
        if groups and d.n_fail and leaf.idx.size >= MIN_ENTRIES:
            search = locate(
                ctx, leaf, FAIL, directions=directions, seed=seed, rtol=rtol, atol=atol
            )
            found, gave_up = _localised(ctx, leaf, d, grad, search, check_leaf)
        if found is not None:
            results.append(found)
            continue
        entries = _explained_entries(leaf, explain, seed)
        res = check_leaf(ctx, leaf.info, entries, grad, leaf.yard)
        d = _resolve(d, loose, res, leaf.u)
        note = _unexplained(d, res.checked) if d.n_fail and not res.n_fail else None
        results.append(
            res._replace(
                directions=d,
                diagnosis=res.diagnosis or note,
                note=_joined(res.note, gave_up),
            )
        )
    return results


def _localised(
    ctx: EvalContext,
    leaf: PlannedLeaf,
    d: Directions,
    grad: Any,
    search: Search,
    check_leaf: Callable[..., LeafResult],
) -> tuple[LeafResult | None, str | None]:
    """The leaf's result from group testing's small groups, swept entry by
    entry; or None and why group testing gave up (the leaf is then swept as
    without it)."""
    why = search.gave_up
    if why is None:
        entries = search.entries(leaf.idx)
        res = check_leaf(ctx, leaf.info, entries, grad, leaf.yard)
        why = explains(search, leaf.idx, res, d, leaf.u)
        if why is None:
            note = _joined(res.note, summary(search, res))
            return res._replace(directions=d, note=note), None
    return None, (
        f"group testing gave up after {search.evaluations} directional "
        f"evaluations ({why}); the leaf was swept as without it"
    )


def _joined(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _unswept(leaf: PlannedLeaf, d: Directions) -> LeafResult:
    """A leaf that agrees along every direction: no entry compared on its own."""
    return LeafResult.unchecked(leaf.info, leaf.grad_dtype, directions=d)
