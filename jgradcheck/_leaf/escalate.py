"""One leaf's sweep and verdict: estimate, judge, escalate what does not pass.

The escalation ladder (``h = cbrt(eps)·max(1, |θ|)``, the default step):

1. **first pass** (:mod:`jgradcheck._leaf.first_pass`): every entry
   estimated with the chosen ``method`` (for ``"auto"`` a central difference
   at h: two evaluations, enough for every entry that agrees), then judged.
   Entries that do not pass escalate, whatever the method:
2. **refine**: central differences at h/2 … h/8 with Richardson
   extrapolation, and one-sided slopes at the smallest step that tell a kink
   from a wrong gradient;
3. **confirm**: a failure must survive one more central difference at
   h/:data:`CONFIRM_SHRINK` (steps that alias a high frequency can look
   settled);
4. **descend**: where truncation dominates the error bar or the ladder does
   not behave like a Taylor series (aliasing), the ladder continues down to
   h/4096;
5. **widen**: where roundoff dominates (a large or float32 J) and the ladder
   behaved, an adaptive 4-point stencil at its own, larger step;
6. **judge**: the final verdict; entries at a kink are judged on their
   one-sided slopes;
7. **kinks across precisions** (:mod:`jgradcheck._leaf.native_kink`): an
   entry that still fails, where J has a kink that float64 puts a little way
   off θ (within the params' own dtype's step) and the gradient under test is
   one of its one-sided slopes, is a kink, not a failure.

Two estimates of one entry must agree within their error bars
(:func:`jgradcheck._numerics.combine.combine_estimates`), so no failure rests
on a single, unchecked number. Stages 2–6 are functions of one
:class:`LeafState` (the estimates and what is known about them) and the
leaf's fixed :class:`LeafInputs`; :func:`check_leaf` runs them in order.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, cast

import jax
import numpy as np

from .._dtypes import eps as eps_of
from .._engine.context import EvalContext, Primed
from .._engine.primal_ad import LeafYardstick
from .._engine.protocols import Sweep
from .._numerics.combine import combine_estimates
from .._numerics.diagnose import diagnose, imprecise
from .._numerics.stencil import (
    Central,
    Estimate,
    Kink,
    central,
    converging,
    descend,
    kinks,
    ladder,
    richardson,
    steps_for,
)
from .._numerics.verdict import (
    FAIL,
    PASS,
    SAFETY,
    Judgement,
    judge,
    judge_kinks,
    leaf_scale,
    rounding_cap,
    rounding_floor,
)
from .._options import METHODS
from .._pytree.flat import LeafInfo
from .._report.records import LeafResult
from .._typing import Method
from .estimates import fixed_stencil
from .first_pass import first_pass
from .native_kink import Compared, precision_kinks

CONFIRM_SHRINK = 64.0
"""A failure's estimate is confirmed by a central difference at h / this."""

CLEAR_MARGIN = 10.0
"""A failure is clear when the gap exceeds this many ``SAFETY`` error bars on
a credible error bar: it needs no further stage."""

ROUNDOFF_SHARE = 0.5
"""Roundoff dominates an error bar when it is at least this share of it
(then a larger step helps: widen); below it truncation dominates (descend)."""

WIDEN_METHOD = "central4"
"""The stencil of the widen stage."""


class LeafInputs(NamedTuple):
    """What every stage of one leaf reads and none changes."""

    ctx: EvalContext
    sw: Sweep
    primed: Primed
    idx: np.ndarray
    """Flat indices of the entries checked."""
    grad: np.ndarray
    """The gradient under test at ``idx`` (float64 copy)."""
    grad_rounding: np.ndarray | None
    """The gradient's rounding allowance at ``idx`` from the yardstick
    (:mod:`jgradcheck._engine.primal_ad`), when measured."""
    eps_grad: float
    h0: np.ndarray
    """The default step per entry."""
    roundoff0: np.ndarray
    """The roundoff a smooth J allows at ``h0``: ``eps·|J| / h`` (the measured
    rounding is not included: an error bar that only noise makes wide must
    leave the entry unsure)."""
    rtol: float | None
    atol: float | None


@dataclasses.dataclass(frozen=True)
class LeafState:
    """One leaf's estimates and what is known about them, between stages."""

    numeric: np.ndarray
    error: np.ndarray
    step: np.ndarray
    refined: np.ndarray
    """bool: re-estimated by the refine stage."""
    verdict: Judgement
    """:func:`judge` of the estimates as they are."""
    at_kink: np.ndarray
    """bool: a kink of J within the smallest step (refine)."""
    roundoff: np.ndarray
    """The roundoff part of ``error`` (refine, descend; 0 elsewhere)."""
    credible: np.ndarray
    """bool: the error bar comes from a ladder that behaves like a Taylor series."""


class Refinement(NamedTuple):
    """The refine stage's ladder, for the descend and judge stages."""

    redo: np.ndarray
    """Positions (into ``idx``) of the entries refined."""
    ladder: list[Central]
    kink: Kink


def _judge(leaf: LeafInputs, numeric: np.ndarray, error: np.ndarray) -> Judgement:
    return judge(
        leaf.grad,
        numeric,
        error,
        leaf.roundoff0,
        eps_grad=leaf.eps_grad,
        scale=leaf_scale(numeric, error),
        rounding=leaf.grad_rounding,
        rtol=leaf.rtol,
        atol=leaf.atol,
    )


def _put(a: np.ndarray, at: np.ndarray, values: np.ndarray | bool) -> np.ndarray:
    out = a.copy()
    out[at] = values
    return out


def _roundoff(est: Estimate) -> np.ndarray:
    """The roundoff part of a Richardson estimate's error (always set)."""
    return cast(np.ndarray, est.roundoff)


def _still_open(leaf: LeafInputs, s: LeafState) -> np.ndarray:
    """Not passing, not at a kink, and not a clear failure on a credible error bar."""
    clear = s.credible & (
        np.abs(leaf.grad - s.numeric) > CLEAR_MARGIN * SAFETY * s.error
    )
    return (s.verdict.status != PASS) & ~s.at_kink & ~clear


def _refine(
    leaf: LeafInputs, state: LeafState, first: Central | None
) -> tuple[LeafState, Refinement]:
    """Stage 2: Richardson over h … h/8 for the entries that do not pass, and
    their one-sided slopes (kinks).

    A first pass without a truncation estimate (``first``, ``"auto"``) is
    replaced; any other is combined with the refined estimate.
    """
    sw, idx, rounding = leaf.sw, leaf.idx, leaf.primed.rounding
    redo = np.flatnonzero(state.verdict.status != PASS)
    start = (
        first.take(redo)
        if first is not None
        else central(sw, idx[redo], sw.base, leaf.h0[redo], leaf.ctx.eps_j, rounding)
    )
    ds = ladder(sw, idx[redo], sw.base, start, leaf.ctx.eps_j, noise=rounding)
    est, kink = richardson(ds), kinks(ds, leaf.primed.j0)
    if first is not None:
        value, error, step = est.value, est.error, est.step
    else:
        value, error, took = combine_estimates(
            state.numeric[redo], state.error[redo], est.value, est.error
        )
        step = np.where(took, est.step, state.step[redo])
    numeric = _put(state.numeric, redo, value)
    error_bar = _put(state.error, redo, error)
    n = idx.shape
    refined_state = LeafState(
        numeric=numeric,
        error=error_bar,
        step=_put(state.step, redo, step),
        refined=_put(state.refined, redo, True),
        verdict=_judge(leaf, numeric, error_bar),
        at_kink=_put(np.zeros(n, bool), redo[kink.found], True),
        roundoff=_put(np.zeros(n), redo, _roundoff(est)),
        credible=_put(np.ones(n, bool), redo, converging(ds)),
    )
    return refined_state, Refinement(redo, ds, kink)


def _confirm(leaf: LeafInputs, s: LeafState) -> LeafState:
    """Stage 3: a clear failure must survive a central difference at
    h/:data:`CONFIRM_SHRINK`; where it does not, its error bar is not credible."""
    sure = (s.verdict.status == FAIL) & ~s.at_kink & ~_still_open(leaf, s)
    if not sure.any():
        return s
    at = np.flatnonzero(sure)
    h = leaf.h0[at] / CONFIRM_SHRINK
    c = central(
        leaf.sw, leaf.idx[at], leaf.sw.base, h, leaf.ctx.eps_j, leaf.primed.rounding
    )
    agrees = np.abs(c.value - s.numeric[at]) <= 2.0 * (s.error[at] + c.roundoff)
    return dataclasses.replace(s, credible=_put(s.credible, at, agrees))


def _descend(
    leaf: LeafInputs, s: LeafState, refinement: Refinement
) -> tuple[LeafState, np.ndarray]:
    """Stage 4: where truncation dominates or the ladder is not credible, the
    ladder continues down to h/4096. Also returns the entries whose ladder
    aliased (a larger step would alias again: no widen stage for them)."""
    deep = _still_open(leaf, s) & (
        (s.roundoff < ROUNDOFF_SHARE * s.error) | ~s.credible
    )
    aliased = deep & ~s.credible
    if not deep.any():
        return s, aliased
    at = np.flatnonzero(deep)
    sub = np.searchsorted(refinement.redo, at)
    ds = [c.take(sub) for c in refinement.ladder]
    sw = leaf.sw
    longer = descend(
        sw, leaf.idx[at], sw.base, ds, leaf.ctx.eps_j, noise=leaf.primed.rounding
    )
    est = richardson(longer)
    numeric, error = _put(s.numeric, at, est.value), _put(s.error, at, est.error)
    descended = dataclasses.replace(
        s,
        numeric=numeric,
        error=error,
        step=_put(s.step, at, est.step),
        roundoff=_put(s.roundoff, at, _roundoff(est)),
        credible=_put(s.credible, at, True),
        verdict=_judge(leaf, numeric, error),
    )
    return descended, aliased


def _widen(leaf: LeafInputs, s: LeafState, aliased: np.ndarray) -> LeafState:
    """Stage 5: where roundoff dominates and the ladder behaved, a 4-point
    stencil at its own, larger step, combined with the estimate so far."""
    again = np.flatnonzero(
        _still_open(leaf, s)
        & (s.roundoff >= ROUNDOFF_SHARE * s.error)
        & s.credible
        & ~aliased
    )
    if not again.size:
        return s
    est = fixed_stencil(leaf.ctx, leaf.sw, leaf.idx[again], WIDEN_METHOD, leaf.primed)
    value, error, took = combine_estimates(
        s.numeric[again], s.error[again], est.value, est.error
    )
    numeric, error_bar = _put(s.numeric, again, value), _put(s.error, again, error)
    return dataclasses.replace(
        s,
        numeric=numeric,
        error=error_bar,
        step=_put(s.step, again, np.where(took, est.step, s.step[again])),
        verdict=_judge(leaf, numeric, error_bar),
    )


def _allowed(leaf: LeafInputs, at: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The gradient's own rounding allowance at kink entries ``at``.

    The yardstick's rounding is capped as :func:`judge` caps it
    (``rounding_cap`` of the entry's magnitude, ``|a|`` plus ``other``: the
    larger one-sided slope, or the finite difference): at a kink that the float64 re-run sees on the other side,
    ``|b − b₆₄|`` is the jump between the slopes, not rounding, and would
    otherwise excuse a gradient that matches neither slope.
    """
    grad = leaf.grad[at]
    own = np.zeros(at.shape) if leaf.grad_rounding is None else leaf.grad_rounding[at]
    mag = np.abs(grad) + np.abs(other)
    capped = np.minimum(own, rounding_cap(leaf.eps_grad) * mag)
    return capped + rounding_floor(leaf.eps_grad) * np.abs(grad)


def _judge_kinks(leaf: LeafInputs, s: LeafState, refinement: Refinement) -> np.ndarray:
    """Stage 6: the final status; entries at a kink that do not pass are
    judged on their one-sided slopes."""
    status, redo, kink = s.verdict.status, refinement.redo, refinement.kink
    k = kink.found & (status[redo] != PASS)
    if not k.any():
        return status
    at = redo[k]
    return judge_kinks(
        status,
        leaf.grad,
        at,
        kink.left[k],
        kink.right[k],
        kink.noise[k],
        _allowed(leaf, at, np.maximum(np.abs(kink.left[k]), np.abs(kink.right[k]))),
    )


def _kinks_across_precisions(
    leaf: LeafInputs, s: LeafState, status: np.ndarray
) -> tuple[np.ndarray, str | None]:
    """Stage 7: failures where J has a kink within the params' own precision's
    step of θ, and the gradient is one of its slopes, are kinks
    (:mod:`.native_kink`)."""
    compared = Compared(
        leaf.idx,
        leaf.grad,
        s.numeric,
        s.error,
        _allowed(leaf, np.arange(leaf.idx.size), s.numeric),
        leaf.h0,
        leaf.primed.j0,
        leaf.primed.rounding,
    )
    return precision_kinks(leaf.ctx, leaf.sw, compared, status)


def _inputs(
    ctx: EvalContext,
    sw: Sweep,
    idx: np.ndarray,
    grad: jax.Array,
    yard: LeafYardstick | None,
    primed: Primed,
    *,
    rtol: float | None,
    atol: float | None,
) -> LeafInputs:
    g = np.asarray(grad, np.float64).reshape(-1)[idx]
    h0 = steps_for(sw.base[idx], ctx.rel_step(sw.info))
    return LeafInputs(
        ctx=ctx,
        sw=sw,
        primed=primed,
        idx=idx,
        grad=g,
        grad_rounding=None if yard is None else yard.rounding[idx],
        eps_grad=eps_of(grad.dtype),
        h0=h0,
        roundoff0=ctx.eps_j * max(abs(primed.j0), np.finfo(np.float64).tiny) / h0,
        rtol=rtol,
        atol=atol,
    )


def check_leaf(
    ctx: EvalContext,
    info: LeafInfo,
    idx: np.ndarray,
    grad: jax.Array,
    yard: LeafYardstick | None,
    *,
    rtol: float | None,
    atol: float | None,
    method: Method = "auto",
    label: str = "",
) -> LeafResult:
    """Sweep one leaf, judge it, escalate the entries that do not pass, judge again.

    The stages are the module docstring's ladder.

    Args:
      ctx: the evaluation context (J at reference precision).
      info: the leaf.
      idx: flat indices of the entries to check.
      grad: the gradient under test for the whole leaf.
      yard: the leaf's rounding allowance from the yardstick (autodiff of the
        primal, or the gradient itself re-run at float64), or None (fixed).
      rtol: explicit relative tolerance (see :func:`jgradcheck.check_grad`).
      atol: explicit absolute tolerance.
      method: how every entry is first estimated.
      label: who the yardstick is, for an "imprecise" diagnosis
        (``autodiff of the primal at float32``).

    Returns:
      The leaf's :class:`LeafResult`.
    """
    sw = ctx.sweep(info, METHODS[method].evals_per_coord * idx.size, coords=idx.size)
    first = first_pass(ctx, sw, idx, method)
    leaf = _inputs(ctx, sw, idx, grad, yard, first.primed, rtol=rtol, atol=atol)
    est = first.estimate
    state = LeafState(
        numeric=est.value.copy(),
        error=est.error.copy(),
        step=est.step.copy(),
        refined=est.refined.copy(),
        verdict=_judge(leaf, est.value, est.error),
        at_kink=np.zeros(idx.shape, bool),
        roundoff=np.zeros(idx.shape),
        credible=np.ones(idx.shape, bool),
    )
    status, note = state.verdict.status, first.note
    if np.any(status != PASS):
        state, refinement = _refine(leaf, state, first.central)
        state = _confirm(leaf, state)
        state, aliased = _descend(leaf, state, refinement)
        state = _widen(leaf, state, aliased)
        status = _judge_kinks(leaf, state, refinement)
        status, kink_note = _kinks_across_precisions(leaf, state, status)
        note = "; ".join(n for n in (first.note, kink_note) if n) or None
    return LeafResult(
        info=info,
        idx=idx,
        grad=leaf.grad,
        numeric=state.numeric,
        error_bar=state.error,
        tolerance=state.verdict.tolerance,
        status=status,
        step=state.step,
        refined=state.refined,
        grad_dtype=np.dtype(grad.dtype),
        diagnosis=_diagnosis(
            leaf, state, status, yard, label, str(np.dtype(grad.dtype))
        ),
        note=note,
    )


def _diagnosis(
    leaf: LeafInputs,
    s: LeafState,
    status: np.ndarray,
    yard: LeafYardstick | None,
    label: str,
    dtype: str,
) -> str | None:
    """The pattern of the mismatch; rounding-sized errors of no systematic
    shape, far above the yardstick's, are "imprecise"."""
    found = diagnose(
        leaf.sw.info,
        leaf.idx,
        leaf.grad,
        s.numeric,
        leaf.sw.base[leaf.idx].astype(np.float64),
        s.verdict.tolerance,
        status,
    )
    if yard is None or yard.reach is None:
        return found
    if found is not None and not found.startswith("isolated"):
        return found
    lost = imprecise(
        leaf.grad,
        s.numeric,
        status,
        scale=leaf_scale(s.numeric, s.error),
        eps=leaf.eps_grad,
        dtype=dtype,
        reach=yard.reach,
        label=label,
    )
    return lost or found
