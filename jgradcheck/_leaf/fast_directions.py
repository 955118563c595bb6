"""Fast mode's directional checks: plan, difference and judge random directions.

The machinery of :mod:`jgradcheck._leaf.fast` (its module docstring states the
verdict formula and why it holds): a leaf's directions are planned
(:func:`plan`), differenced along with every other leaf's in one compiled
``vmap`` (:func:`differences`), judged (:func:`judge`) and refined where they
do not agree at the first step (:func:`check_directions`). Group testing
(:mod:`jgradcheck._leaf.group_testing`) runs the same functions on a leaf
restricted to groups of its entries (:func:`restrict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._dtypes import eps as eps_of
from .._engine.context import EvalContext
from .._engine.primal_ad import LeafYardstick
from .._numerics.stencil import Central, from_values, kinks, richardson
from .._numerics.verdict import (
    FAIL,
    GRAD_ULPS,
    PASS,
    SAFETY,
    UNSURE,
    UNSURE_REL,
    rounding_cap,
    rounding_floor,
)
from .._pytree.coords import readable
from .._pytree.flat import LeafInfo
from .._report.records import Directions

Z = 6.0
"""Hoeffding bound on a random-sign projection, in units of its 2-norm."""
_STREAM = 2
"""Purpose tag of fast mode's draws (check_vjp and check_jvp use 0 and 1)."""
_HALVINGS = (2.0, 4.0, 8.0)
_EPS64 = eps_of(np.float64)

DirectionCall = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``sweep(taus, cols)``: J for each row of ``taus``/``cols`` ([N, leaves]), row
r moving leaf j by ``taus[r, j]`` times its direction ``cols[r, j]``
(:class:`jgradcheck._engine.directions.DirectionSweep`)."""


def direction(
    seed: int,
    info: LeafInfo,
    k: int,
    support: np.ndarray | None = None,
    *,
    purpose: int = _STREAM,
) -> np.ndarray:
    """Direction ``k`` of a leaf, flattened (float64; zero outside ``support``).

    ``purpose`` tags the stream (group testing draws its own directions).
    """
    u = readable((info.size,), np.float64, [seed, purpose, info.position, k])
    if support is not None and support.size < info.size:
        kept = np.zeros_like(u)
        kept[support] = u[support]
        u = kept
    return u


def spread(w: np.ndarray) -> np.ndarray:
    """A bound on ``|Σ ±wᵢ|`` per row, for signs independent of ``w``."""
    w = np.abs(w)
    return np.minimum(np.sum(w, -1), Z * np.sqrt(np.sum(w * w, -1)))


class PlannedLeaf(NamedTuple):
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
    scale: float
    """The leaf's largest ``|a|`` on its checked entries (``s`` of the formula)."""
    eps_g: float
    eps_leaf: float
    grad_dtype: np.dtype
    wide: bool
    """``a64`` was computed wider than ``a`` (not every entry fits a's dtype)."""


def plan(
    ctx: EvalContext,
    info: LeafInfo,
    idx: np.ndarray,
    grad: Any,
    yard: LeafYardstick | None,
    k: int,
    seed: int,
) -> PlannedLeaf:
    """A leaf's first ``k`` directions on entries ``idx``, its step and arrays."""
    dtype = ctx.leaf_dtype(info)
    u = np.stack([direction(seed, info, j, idx) for j in range(min(k, idx.size))])
    u = u.astype(dtype).astype(np.float64)
    theta = np.asarray(ctx.flat.leaves[info.position], np.float64).reshape(-1)
    h = ctx.rel_step(info) * max(1.0, float(np.max(np.abs(theta[idx]))))
    t = 2.0 ** math.floor(math.log2(h / float(np.max(np.abs(u)))))
    grad_dtype = np.dtype(grad.dtype)
    a = np.asarray(grad, np.float64).reshape(-1)
    grad64 = None if yard is None else yard.counterpart
    wide = grad64 is not None and bool(
        np.any(grad64[idx] != grad64[idx].astype(grad_dtype).astype(np.float64))
    )
    return PlannedLeaf(
        info=info,
        idx=idx,
        u=u,
        t=t,
        a=a,
        a64=grad64,
        yard=yard,
        theta=theta,
        scale=float(np.max(np.abs(a[idx]))),
        eps_g=eps_of(grad_dtype),
        eps_leaf=eps_of(dtype),
        grad_dtype=grad_dtype,
        wide=wide,
    )


def restrict(leaf: PlannedLeaf, entries: np.ndarray, u: np.ndarray) -> PlannedLeaf:
    """The leaf seen on ``entries`` (flat indices) only, along directions ``u``.

    ``u`` is ``[K, entries.size]``: directions that are zero on every other
    entry. Every array becomes compact (indexed like ``entries``); the step,
    the scale ``s``, the precision and whether ``a₆₄`` is wide stay the
    leaf's, so a group is judged by the leaf's formula. θ + τ·u changes only
    these entries, so the rounding of the perturbed θ is summed over them.
    """
    yard = leaf.yard
    if yard is not None:
        yard = yard._replace(
            rounding=yard.rounding[entries],
            counterpart=yard.counterpart[entries],
            same=yard.same[entries],
            autodiff=yard.autodiff[entries],
        )
    return leaf._replace(
        idx=np.arange(entries.size),
        u=u,
        a=leaf.a[entries],
        a64=None if leaf.a64 is None else leaf.a64[entries],
        yard=yard,
        theta=leaf.theta[entries],
    )


def differences(
    sweep: DirectionCall,
    leaves: list[PlannedLeaf],
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


def _projected(leaf: PlannedLeaf, u: np.ndarray) -> np.ndarray:
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


class Verdict(NamedTuple):
    tolerance: np.ndarray
    status: np.ndarray
    loose: np.ndarray
    """The tolerance with the full mode's fixed rounding allowance, projected."""


def judge(
    leaf: PlannedLeaf,
    ks: np.ndarray,
    rule: np.ndarray,
    numeric: np.ndarray,
    error: np.ndarray,
    roundoff0: np.ndarray,
    rtol: float | None,
    atol: float | None,
) -> Verdict:
    """Status of directions ``ks`` of a leaf (see the module docstring)."""
    u = leaf.u[ks]
    au = np.abs(u * leaf.a)
    summation = (math.log2(max(leaf.idx.size, 2)) + 2.0) * _EPS64 * au.sum(-1)
    diff = np.abs(rule - numeric)
    if rtol is None and atol is None:
        allow = spread(np.abs(u) * (np.abs(leaf.a) + leaf.scale))
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
    return Verdict(tol, status.astype(np.uint8), loose)


class _State:
    """One leaf's directions while they are judged and refined."""

    def __init__(self, c: Central, v: Verdict):
        self.first = c
        self.value, self.error, self.step = (np.array(x) for x in c[:3])
        self.tolerance, self.status, self.loose = (np.array(x) for x in v)

    def update(
        self,
        ks: np.ndarray,
        value: np.ndarray,
        error: np.ndarray,
        step: np.ndarray,
        v: Verdict,
        status: np.ndarray,
    ) -> None:
        self.value[ks], self.error[ks], self.step[ks] = value, error, step
        self.tolerance[ks], self.status[ks], self.loose[ks] = (
            v.tolerance,
            status,
            v.loose,
        )


def check_directions(
    sweep: DirectionCall,
    ctx: EvalContext,
    leaves: list[PlannedLeaf],
    seed: int,
    rtol: float | None,
    atol: float | None,
) -> list[tuple[Directions, np.ndarray]]:
    """Every leaf's directional checks, and their loose tolerances.

    One pass at step t for every direction; the directions that do not agree
    within roundoff are refined (t/2, t/4, t/8, Richardson) and judged again.
    """
    everything = [np.arange(leaf.u.shape[0]) for leaf in leaves]
    j0, first = differences(sweep, leaves, everything, (1.0,), ctx.eps_j, prime=2)
    for v in j0:
        ctx.check_deterministic(float(v), "the compiled directional sweep")
    rules = [np.sum(leaf.u * leaf.a, -1) for leaf in leaves]
    states = [
        _State(c, judge(leaf, ks, rule, c.value, c.roundoff, c.roundoff, rtol, atol))
        for leaf, ks, rule, (c,) in zip(leaves, everything, rules, first)
    ]
    redo = [np.flatnonzero(st.status != PASS) for st in states]
    if any(r.size for r in redo):
        _, more = differences(sweep, leaves, redo, _HALVINGS, ctx.eps_j)
        for leaf, ks, rule, st, ds in zip(leaves, redo, rules, states, more):
            if not ks.size:
                continue
            c0 = st.first.take(ks)
            est = richardson([c0] + ds)
            v = judge(leaf, ks, rule[ks], est.value, est.error, c0.roundoff, rtol, atol)
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
