"""The last stage of a leaf: failures that are kinks across precisions.

An entry that fails against the float64 reference (at a kink the refine
stage found or not) is looked at again on a ladder of
float64 one-sided slopes up to the params' own precision's step: where J has
a kink that close to θ (so at native precision θ sits on it), the gradient
under test is one of its one-sided slopes and the float64 estimate another,
the entry is ``kink``, with a note that says so
(:mod:`jgradcheck._numerics.native_kink` argues the test and its steps).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._dtypes import eps
from .._engine.context import EvalContext
from .._engine.protocols import Sweep
from .._numerics.native_kink import at_kink_nearby, kinks_nearby, nearby_ladder
from .._numerics.stencil import rounding_of
from .._numerics.verdict import FAIL, KINK
from .._pytree.flat import LeafInfo

NOTE_ENTRIES = 3
"""Entries named in the note (the others are counted)."""

SCREEN = 4.0
"""A candidate's gap at the native step must be at least ``|a − n|`` over this."""


class Compared(NamedTuple):
    """One leaf's entries as judged so far (float64 copies, indexed like ``idx``)."""

    idx: np.ndarray
    grad: np.ndarray
    numeric: np.ndarray
    error: np.ndarray
    allowed: np.ndarray
    """The gradient's own rounding allowance per entry."""
    h0: np.ndarray
    """The float64 default step per entry."""
    j0: float
    """J(θ) from the leaf's sweep."""
    noise: float
    """J's measured rounding near θ."""


class _Ladder(NamedTuple):
    """J at ``θ ± steps`` (``[L, n]`` each) and the steps as represented."""

    j_plus: np.ndarray
    j_minus: np.ndarray
    d_plus: np.ndarray
    d_minus: np.ndarray


def _evaluate(sw: Sweep, idx: np.ndarray, steps: np.ndarray) -> _Ladder:
    """One call of ``sw`` for J at ``θ ± steps`` along the entries ``idx``."""
    theta = sw.base[idx]
    tp = [(theta + h.astype(sw.dtype)).astype(sw.dtype) for h in steps]
    tm = [(theta - h.astype(sw.dtype)).astype(sw.dtype) for h in steps]
    j = sw(np.tile(idx, 2 * len(steps)), np.concatenate(tp + tm))
    j = j.reshape(2 * len(steps), -1)
    t64 = theta.astype(np.float64)
    return _Ladder(
        j[: len(steps)],
        j[len(steps) :],
        np.stack([x.astype(np.float64) - t64 for x in tp]),
        np.stack([t64 - x.astype(np.float64) for x in tm]),
    )


def _screen(c: Compared, sw: Sweep, cand: np.ndarray, top: np.ndarray) -> np.ndarray:
    """The candidates worth a ladder: the one-sided slopes at the largest step
    differ by at least 1/:data:`SCREEN` of ``|a − n|``.

    At a kink across precisions ``|a − n|`` is at most the jump (both are
    slopes of it, or between), and the gap at the native step is the jump
    less ``Δ·δ/s`` and curvature, so a real one passes; a gradient that is
    simply wrong where J is smooth has a gap of ``s·|J''|`` and stops here,
    at two evaluations rather than the ladder's.
    """
    lad = _evaluate(sw, c.idx[cand], top)
    with np.errstate(invalid="ignore", divide="ignore"):
        right = (lad.j_plus[0] - c.j0) / lad.d_plus[0]
        left = (c.j0 - lad.j_minus[0]) / lad.d_minus[0]
    gap = np.abs(right - left)
    return cand[gap >= np.abs(c.grad[cand] - c.numeric[cand]) / SCREEN]


def precision_kinks(
    ctx: EvalContext,
    sw: Sweep,
    c: Compared,
    status: np.ndarray,
) -> tuple[np.ndarray, str | None]:
    """``status`` with kinks across precisions as ``kink``, and a note naming them.

    Only failing entries are looked at, those at a kink the refine stage
    found among them (its one-sided slopes at h/8 are blurred when the kink
    is a little way off θ inside that step), and only where the leaf's own
    dtype is not the reference's
    (else nothing changes): :func:`kinks_nearby` on float64 one-sided slopes
    from the float64 step up to the native one, from ``sw``, for the entries
    that pass :func:`_screen`.
    """
    cand = np.flatnonzero(
        (status == FAIL) & np.isfinite(c.grad) & np.isfinite(c.numeric)
    )
    native = ctx.native_dtype(sw.info)
    if not cand.size or native == ctx.leaf_dtype(sw.info):
        return status, None
    native_rel = float(np.cbrt(eps(native)))
    steps = nearby_ladder(c.h0, native_rel, ctx.rel_step(sw.info))
    if steps.shape[0] < 3:
        return status, None
    cand = _screen(c, sw, cand, steps[-1:, cand])
    if not cand.size:
        return status, None
    lad = _evaluate(sw, c.idx[cand], steps[:, cand])
    jmax = np.abs(np.stack([lad.j_plus, lad.j_minus])).max(0)
    kink = kinks_nearby(c.j0, *lad, rounding_of(jmax, ctx.eps_j, c.noise))
    yes = at_kink_nearby(
        c.grad[cand], c.numeric[cand], c.error[cand], kink, c.allowed[cand]
    )
    if not yes.any():
        return status, None
    out = status.copy()
    out[cand[yes]] = KINK
    note = _note(sw.info, c, cand[yes], kink.left[yes], kink.right[yes], native)
    return out, note


def _note(
    info: LeafInfo,
    c: Compared,
    at: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    dtype: np.dtype,
) -> str:
    """What the report says about the kinks across precisions of one leaf."""
    parts = [
        f"{info.where(int(c.idx[k]))}: one-sided slopes {lo:.4g} and {hi:.4g}, "
        f"the gradient under test {c.grad[k]:.4g}, the float64 finite "
        f"difference {c.numeric[k]:.4g}"
        for k, lo, hi in zip(at[:NOTE_ENTRIES], left, right)
    ]
    more = f" and {at.size - NOTE_ENTRIES} more" if at.size > NOTE_ENTRIES else ""
    n = "entry" if at.size == 1 else "entries"
    return (
        f"{at.size} {n} at a kink across precisions (J has a kink within "
        f"{dtype}'s step of θ: in {dtype} θ sits on it, in float64 it is a "
        "little way off and the finite difference sees one side; the gradient "
        f"under test is a one-sided slope there, not wrong): {'; '.join(parts)}"
        f"{more}"
    )
