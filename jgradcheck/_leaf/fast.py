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
See docs/fast_mode.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._dtypes import eps as eps_of
from .._engine.context import EvalContext
from .._engine.directions import DirectionSweep
from .._engine.primal_ad import LeafYardstick, Yardstick
from .._numerics.stencil import Central, from_values, kinks, richardson
from .._numerics.verdict import (
    FAIL,
    GRAD_ULPS,
    KINK,
    PASS,
    SAFETY,
    UNSURE,
    UNSURE_REL,
    rounding_cap,
    rounding_floor,
)
from .._pytree.coords import Selection, readable, select
from .._pytree.flat import Flat, LeafInfo
from .._report.records import Directions, LeafResult

EXPLAIN_LIMIT = 2**16
"""Largest leaf swept in full when its directions disagree (beyond: a sample)."""
Z = 6.0
"""Hoeffding bound on a random-sign projection, in units of its 2-norm."""
_STREAM = 2
"""Purpose tag of fast mode's draws (check_vjp and check_jvp use 0 and 1)."""
_SAMPLE = 3
"""Purpose tag of the explaining sweep's sample."""
_HALVINGS = (2.0, 4.0, 8.0)
_EPS64 = eps_of(np.float64)


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


def direction(
    seed: int, info: LeafInfo, k: int, support: np.ndarray | None = None
) -> np.ndarray:
    """Direction ``k`` of a leaf, flattened (float64; zero outside ``support``)."""
    u = readable((info.size,), np.float64, [seed, _STREAM, info.position, k])
    if support is not None and support.size < info.size:
        kept = np.zeros_like(u)
        kept[support] = u[support]
        u = kept
    return u


def spread(w: np.ndarray) -> np.ndarray:
    """A bound on ``|Σ ±wᵢ|`` per row, for signs independent of ``w``."""
    w = np.abs(w)
    return np.minimum(np.sum(w, -1), Z * np.sqrt(np.sum(w * w, -1)))


class _Leaf(NamedTuple):
    info: LeafInfo
    idx: np.ndarray
    """The entries the directions span."""
    u: np.ndarray
    """[K, n] float64: the directions as the reference dtype holds them."""
    t: float
    a: np.ndarray
    a64: np.ndarray | None
    """The yardstick at float64: where ``yard.same``, ``a − a64`` is the
    gradient's own rounding, entry by entry."""
    yard: LeafYardstick | None
    """The leaf's rounding allowance from the yardstick (None: fixed)."""
    theta: np.ndarray
    eps_g: float
    eps_leaf: float
    grad_dtype: np.dtype
    wide: bool
    """``a64`` was computed wider than ``a`` (not every entry fits a's dtype)."""


def _plan(
    ctx: EvalContext,
    info: LeafInfo,
    idx: np.ndarray,
    grad: Any,
    yard: LeafYardstick | None,
    k: int,
    seed: int,
) -> _Leaf:
    dtype = ctx.leaf_dtype(info)
    u = np.stack([direction(seed, info, j, idx) for j in range(min(k, idx.size))])
    u = u.astype(dtype).astype(np.float64)
    theta = np.asarray(ctx.flat.leaves[info.position], np.float64).reshape(-1)
    h = ctx.rel_step(info) * max(1.0, float(np.max(np.abs(theta[idx]))))
    t = 2.0 ** math.floor(math.log2(h / float(np.max(np.abs(u)))))
    grad_dtype = np.dtype(grad.dtype)
    grad64 = None if yard is None else yard.counterpart
    wide = grad64 is not None and bool(
        np.any(grad64[idx] != grad64[idx].astype(grad_dtype).astype(np.float64))
    )
    return _Leaf(
        info=info,
        idx=idx,
        u=u,
        t=t,
        a=np.asarray(grad, np.float64).reshape(-1),
        a64=grad64,
        yard=yard,
        theta=theta,
        eps_g=eps_of(grad_dtype),
        eps_leaf=eps_of(dtype),
        grad_dtype=grad_dtype,
        wide=wide,
    )


def _differences(
    sweep: DirectionSweep,
    leaves: list[_Leaf],
    which: list[np.ndarray],
    divisors: tuple[float, ...],
    eps_j: float,
    prime: int = 0,
) -> tuple[np.ndarray, list[list[Central]]]:
    """Central differences along directions ``which[j]`` of leaf j at steps t/d.

    One call of ``sweep`` for everything; ``prime`` extra rows evaluate J(θ).
    Returns those J(θ) values and, per leaf, one :class:`Central` per divisor.
    """
    rows = prime + 2 * len(divisors) * sum(w.size for w in which)
    taus = np.zeros((rows, len(leaves)))
    cols = np.zeros((rows, len(leaves)), np.int32)
    r, blocks = prime, []
    for j, (leaf, ks) in enumerate(zip(leaves, which)):
        for d in divisors:
            for sign in (1.0, -1.0):
                taus[r : r + ks.size, j] = sign * leaf.t / d
                cols[r : r + ks.size, j] = ks
                blocks.append((j, d, sign, r, r + ks.size))
                r += ks.size
    values = sweep(taus, cols) if rows else np.zeros(0)
    found: dict[tuple[int, float, float], np.ndarray] = {
        (j, d, s): values[a:b] for j, d, s, a, b in blocks
    }
    out = []
    for j, (leaf, ks) in enumerate(zip(leaves, which)):
        per = []
        for d in divisors:
            tau = leaf.t / d
            c = from_values(
                found[j, d, 1.0], found[j, d, -1.0], np.full(ks.size, 2 * tau), eps_j
            )
            # θ + τ·u is rounded in the leaf's dtype: |error| ≤ eps·(|θ| + τ|u|)
            # per entry, seen by J through the gradient (≈ a). Summed at most
            # like the terms, and, under the usual model of independent
            # rounding errors (Higham & Mary, 2019), like Z times their 2-norm.
            perturbed = np.abs(leaf.a) * (np.abs(leaf.theta) + tau * np.abs(leaf.u[ks]))
            c = c._replace(
                roundoff=c.roundoff + leaf.eps_leaf * spread(perturbed) / tau
            )
            per.append(c)
        out.append(per)
    return values[:prime], out


def _projected(leaf: _Leaf, u: np.ndarray) -> np.ndarray:
    """The gradient's rounding projected on ``u``: exactly, signed, where it
    is the yardstick itself (``a − a₆₄``). Elsewhere the gradient is another
    computation whose roundings are independent of autodiff's but of the
    same size entry by entry: their sum along random-sign ``u`` has about
    the 2-norm of ``u ∘ (b − b₆₄)`` (autodiff's own rounding ``b − b₆₄``,
    summed over many entries, so an entry where autodiff happened to round
    exactly does not matter), and exceeds ``Z`` times it with probability
    ``2·exp(−Z²/2)`` (Hoeffding)."""
    assert leaf.yard is not None and leaf.a64 is not None
    same = leaf.yard.same
    exact = np.abs(np.sum(u * np.where(same, leaf.a - leaf.a64, 0.0), -1))
    if same.all():
        return exact
    own = np.abs(leaf.a64 - leaf.yard.autodiff)
    other = np.where(same, 0.0, np.abs(u) * own)
    return exact + Z * np.sqrt(np.sum(other * other, -1))


class _Verdict(NamedTuple):
    tolerance: np.ndarray
    status: np.ndarray
    loose: np.ndarray
    """The tolerance with the full mode's fixed rounding allowance, projected."""


def _judge(
    leaf: _Leaf,
    ks: np.ndarray,
    rule: np.ndarray,
    numeric: np.ndarray,
    error: np.ndarray,
    roundoff0: np.ndarray,
    rtol: float | None,
    atol: float | None,
) -> _Verdict:
    """Status of directions ``ks`` of a leaf (see the module docstring)."""
    u = leaf.u[ks]
    au = np.abs(u * leaf.a)
    summation = (math.log2(max(leaf.idx.size, 2)) + 2.0) * _EPS64 * au.sum(-1)
    diff = np.abs(rule - numeric)
    if rtol is None and atol is None:
        s = float(np.max(np.abs(leaf.a[leaf.idx])))
        allow = spread(np.abs(u) * (np.abs(leaf.a) + s))
        measured = np.zeros(ks.size)
        if leaf.yard is not None:
            measured = np.minimum(
                2.0 * _projected(leaf, u), rounding_cap(leaf.eps_g) * allow
            )
        loose = np.maximum(rounding_floor(leaf.eps_g) * allow, measured)
        # A measured rounding replaces the fixed allowance when a₆₄ really was
        # computed wider than a (else the same rounding hides in both).
        rho = np.maximum(GRAD_ULPS * _EPS64 * allow, measured) if leaf.wide else loose
        tol = SAFETY * error + rho + summation
        loose = SAFETY * error + loose + summation
        fail = ~(diff <= tol)
        typical = np.sqrt(np.sum(au * au, -1))  # |⟨a,u⟩| for random signs
        mag = np.maximum(np.maximum(np.abs(rule), np.abs(numeric)), typical)
        unsure = ~fail & (error > np.maximum(UNSURE_REL * mag, 100.0 * roundoff0))
    else:
        tol = spread(np.abs(u) * ((atol or 0.0) + (rtol or 0.0) * np.abs(leaf.a)))
        tol = loose = tol + summation
        fail = ~(diff <= tol + SAFETY * error)
        unsure = ~fail & ((diff > tol) | (SAFETY * error > tol))
    bad = ~np.isfinite(numeric)  # J not finite along u: cannot be judged here
    status = np.where(fail & ~bad, FAIL, np.where(unsure | bad, UNSURE, PASS))
    return _Verdict(tol, status.astype(np.uint8), loose)


class _State:
    """One leaf's directions while they are judged and refined."""

    def __init__(self, c: Central, v: _Verdict):
        self.first = c
        self.value, self.error, self.step = (np.array(x) for x in c[:3])
        self.tolerance, self.status, self.loose = (np.array(x) for x in v)

    def update(
        self,
        ks: np.ndarray,
        value: np.ndarray,
        error: np.ndarray,
        step: np.ndarray,
        v: _Verdict,
        status: np.ndarray,
    ) -> None:
        self.value[ks], self.error[ks], self.step[ks] = value, error, step
        self.tolerance[ks], self.status[ks], self.loose[ks] = (
            v.tolerance,
            status,
            v.loose,
        )


def _directions(
    sweep: DirectionSweep,
    ctx: EvalContext,
    leaves: list[_Leaf],
    seed: int,
    rtol: float | None,
    atol: float | None,
) -> list[tuple[Directions, np.ndarray]]:
    """Every leaf's directional checks, and their loose tolerances.

    One pass at step t for every direction; the directions that do not agree
    within roundoff are refined (t/2, t/4, t/8, Richardson) and judged again.
    """
    everything = [np.arange(leaf.u.shape[0]) for leaf in leaves]
    j0, first = _differences(sweep, leaves, everything, (1.0,), ctx.eps_j, prime=2)
    for v in j0:
        ctx.check_deterministic(float(v), "the compiled directional sweep")
    rules = [np.sum(leaf.u * leaf.a, -1) for leaf in leaves]
    states = [
        _State(c, _judge(leaf, ks, rule, c.value, c.roundoff, c.roundoff, rtol, atol))
        for leaf, ks, rule, (c,) in zip(leaves, everything, rules, first)
    ]
    redo = [np.flatnonzero(st.status != PASS) for st in states]
    if any(r.size for r in redo):
        _, more = _differences(sweep, leaves, redo, _HALVINGS, ctx.eps_j)
        for leaf, ks, rule, st, ds in zip(leaves, redo, rules, states, more):
            if not ks.size:
                continue
            c0 = st.first.take(ks)
            est = richardson([c0] + ds)
            v = _judge(
                leaf, ks, rule[ks], est.value, est.error, c0.roundoff, rtol, atol
            )
            # A kink of J at θ along u: the central difference is the average
            # slope and proves nothing; the entry-by-entry sweep judges it.
            kink = kinks([c0] + ds, float(j0[0])).found & (v.status != PASS)
            status = np.where(kink, UNSURE, v.status).astype(np.uint8)
            st.update(ks, est.value, est.error, est.step, v, status)
    return [
        (
            Directions(
                rule=rule,
                numeric=st.value,
                error_bar=st.error,
                tolerance=st.tolerance,
                status=st.status,
                step=st.step,
                support=int(leaf.idx.size),
                evaluations=2 * rule.size + 2 * len(_HALVINGS) * ks.size,
                seed=seed,
            ),
            st.loose,
        )
        for leaf, rule, st, ks in zip(leaves, rules, states, redo)
    ]


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


def _explained_entries(leaf: _Leaf, cap: int | None, seed: int) -> np.ndarray:
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
                _plan(ctx, info, idx, under_test[info.position], g64, directions, seed)
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
    for leaf, (d, loose) in zip(
        leaves, _directions(sweep, ctx, leaves, seed, rtol, atol)
    ):
        if d.ok:
            results.append(_unswept(leaf, d))
            continue
        entries = _explained_entries(leaf, explain, seed)
        pos = leaf.info.position
        res = check_leaf(ctx, leaf.info, entries, under_test[pos], leaf.yard)
        d = _resolve(d, loose, res, leaf.u)
        note = _unexplained(d, res.checked) if d.n_fail and not res.n_fail else None
        results.append(res._replace(directions=d, diagnosis=res.diagnosis or note))
    return results


def _unswept(leaf: _Leaf, d: Directions) -> LeafResult:
    """A leaf that agrees along every direction: no entry compared on its own."""
    return LeafResult.unchecked(leaf.info, leaf.grad_dtype, directions=d)
