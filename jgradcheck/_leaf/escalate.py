"""One leaf's sweep and verdict: estimate, judge, escalate what does not pass.

Stage 1 estimates every entry with the chosen method; entries that do not pass
are re-estimated (Richardson with kink detection, a confirmation at a smaller
step, descent where the ladder aliases, a 4-point stencil where roundoff
dominates), and two estimates must agree before a failure is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._engine.context import Reference
from .._engine.sweep import LeafSweep
from .._numerics.diagnose import diagnose
from .._numerics.stencil import Central, Estimate, converging, steps_for
from .._numerics.verdict import (
    FAIL,
    GRAD_ULPS,
    PASS,
    SAFETY,
    judge,
    judge_kinks,
    leaf_scale,
)
from .._pytree.flat import LeafInfo
from .._report.records import LeafResult
from .complex_step import Fallback, complex_step


def _combine(
    v1: np.ndarray, e1: np.ndarray, v2: np.ndarray, e2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two estimates of the same entries: ``(value, error, took_second)``.

    Where they agree within their error bars the tighter one is kept; where
    they do not, one error bar is wrong (a step that aliases a high frequency
    or reaches a kink) and the error widens to cover both, so the entry is
    reported unsure rather than judged on a number nobody can vouch for.
    """
    gap = np.abs(v2 - v1)
    agree = gap <= 2.0 * (e1 + e2)
    take = agree & (e2 < e1)
    value = np.where(take, v2, v1)
    error = np.where(agree, np.minimum(e1, e2), np.maximum(np.maximum(e1, e2), gap))
    return value, error, take


def _stage_one(
    ref: Reference, sw: LeafSweep, info: LeafInfo, idx: np.ndarray, method: str
) -> tuple[Central | None, Estimate, str | None]:
    """Every entry estimated with ``method``: ``(central at h, estimate, note)``.

    ``central at h`` is the 2-point difference at the default step when the
    method made it (``"auto"``), for the ladder to start from. ``"complex"``
    falls back to ``"auto"`` with a note when the complex step cannot be
    trusted for this leaf.
    """
    note = None
    if method == "complex":
        ref.prime(sw)
        cs = complex_step(ref, sw, info, idx)
        if not isinstance(cs, Fallback):
            return None, cs, None
        note = f"complex step not used: {cs.reason}; method 'auto' instead"
        method = "auto"
    if method == "auto":
        first = ref.first_pass(sw, idx)
        est = Estimate(
            first.value, first.roundoff, first.step, np.zeros(idx.shape, bool)
        )
        return first, est, note
    if method == "richardson":
        # Extrapolation cancels the h² term, so start where an O(h⁴)
        # estimate balances roundoff, not at the 2-point optimum.
        c = ref.first_pass(sw, idx, ref.stencil_rel_step(info, 4))
        return None, ref.refine(sw, idx, c), note
    return None, ref.fixed_stencil(sw, idx, method), note


def check_leaf(
    ref: Reference,
    info: LeafInfo,
    idx: np.ndarray,
    grad: Any,
    grad64: np.ndarray | None,
    *,
    rtol: float | None,
    atol: float | None,
    method: str = "auto",
) -> LeafResult:
    """Sweep one leaf, judge it, re-estimate the entries that do not agree, judge again.

    Stage 1 estimates every entry with ``method``: for ``"auto"`` a central
    difference at cbrt(eps) (two evaluations, enough for every entry that
    agrees). Entries that do not pass escalate, whatever the method:

    2. central differences at h/2 … h/8 (h = cbrt(eps)·max(1, |θ|)) with
       Richardson extrapolation, and one-sided slopes for kinks;
    3. a failure is confirmed by one more central difference at h/64;
       where truncation dominates or the ladder does not behave like a
       Taylor series (aliasing), the ladder descends to h/4096; where
       roundoff dominates, an adaptive 4-point stencil at a larger step.

    Two estimates of one entry must agree within their error bars
    (:func:`_combine`), so no failure rests on a single, unchecked number.
    """
    eps_g = float(np.finfo(np.dtype(grad.dtype)).eps)
    g = np.asarray(grad, np.float64).reshape(-1)[idx]
    rounding = None if grad64 is None else np.abs(g - grad64[idx])
    sw = ref.sweep(info, EVALS_PER_COORD[method] * idx.size, coords=idx.size)
    h0 = steps_for(sw.base[idx], ref.rel_step(info))
    first, est, note = _stage_one(ref, sw, info, idx, method)
    numeric, error = est.value.copy(), est.error.copy()
    step, refined = est.step.copy(), est.refined.copy()
    # The roundoff a smooth J allows at the default step (eps·|J| / h; the
    # measured noise is not included: an error bar that only noise makes wide
    # must leave the entry unsure).
    roundoff0 = ref.eps_j * max(abs(sw.j0), np.finfo(np.float64).tiny) / h0

    def verdict():
        return judge(
            g,
            numeric,
            error,
            roundoff0,
            eps_grad=eps_g,
            scale=leaf_scale(numeric, error),
            rounding=rounding,
            rtol=rtol,
            atol=atol,
        )

    v = verdict()
    status = v.status
    redo = np.flatnonzero(v.status != PASS)
    if redo.size:
        # Stage 2: steps h/2 … h/8 with Richardson extrapolation, and one-sided
        # slopes to tell a kink from a wrong gradient.
        f = (
            first.take(redo)
            if first is not None
            else ref.central_at(sw, idx[redo], h0[redo])
        )
        est, kink, ds = ref.refine_with_kinks(sw, idx[redo], f)
        if first is not None:  # stage 1 had no truncation estimate: replace
            numeric[redo], error[redo] = est.value, est.error
            step[redo] = est.step
        else:
            numeric[redo], error[redo], took = _combine(
                numeric[redo], error[redo], est.value, est.error
            )
            step[redo] = np.where(took, est.step, step[redo])
        refined[redo] = True
        at_kink = np.zeros(idx.shape, bool)
        at_kink[redo[kink.found]] = True
        round_part = np.zeros(idx.shape)
        round_part[redo] = est.roundoff
        credible = np.ones(idx.shape, bool)
        credible[redo] = converging(ds)
        v = verdict()

        def still_open() -> np.ndarray:
            # Not passing, not at a kink, and not a failure by a clear margin
            # on a credible error bar.
            clear = credible & (np.abs(g - numeric) > 10.0 * SAFETY * error)
            return (v.status != PASS) & ~at_kink & ~clear

        # A failure must survive one more central difference at h/64: an
        # estimate from steps that alias a high frequency can look settled.
        sure = (v.status == FAIL) & ~at_kink & ~still_open()
        if sure.any():
            at = np.flatnonzero(sure)
            c = ref.central_at(sw, idx[at], h0[at] / CONFIRM_SHRINK)
            credible[at] = np.abs(c.value - numeric[at]) <= 2.0 * (
                error[at] + c.roundoff
            )
        # Stage 3a, where truncation dominates the error bar or the ladder
        # does not converge (steps wider than a high frequency's period):
        # continue it down to h/4096, until the extrapolation converges.
        deep = still_open() & ((round_part < 0.5 * error) | ~credible)
        aliased = deep & ~credible  # a larger step would alias again (3b)
        if deep.any():
            at = np.flatnonzero(deep)
            sub = np.searchsorted(redo, at)
            est = ref.descend(sw, idx[at], [c.take(sub) for c in ds])
            numeric[at], error[at], step[at] = est.value, est.error, est.step
            round_part[at] = est.roundoff
            credible[at] = True
            v = verdict()
        # Stage 3b, where roundoff dominates (a large or float32 J) and the
        # ladder behaved like a Taylor series (a larger step is no use where
        # it did not: it would alias): an adaptive 4-point stencil at its
        # own, larger step, combined with the estimate so far.
        again = np.flatnonzero(
            still_open() & (round_part >= 0.5 * error) & credible & ~aliased
        )
        if again.size:
            est = ref.fixed_stencil(sw, idx[again], "central4", primed=True)
            numeric[again], error[again], took = _combine(
                numeric[again], error[again], est.value, est.error
            )
            step[again] = np.where(took, est.step, step[again])
            v = verdict()
        status = v.status
        k = kink.found & (status[redo] != PASS)
        if k.any():
            own = np.zeros(idx.shape) if rounding is None else rounding
            status = judge_kinks(
                status,
                g,
                redo[k],
                kink.left[k],
                kink.right[k],
                kink.noise[k],
                own[redo[k]] + GRAD_ULPS * eps_g * np.abs(g[redo[k]]),
            )
    return LeafResult(
        info=info,
        idx=idx,
        grad=g,
        numeric=numeric,
        error_bar=error,
        tolerance=v.tolerance,
        status=status,
        step=step,
        refined=refined,
        grad_dtype=np.dtype(grad.dtype),
        diagnosis=diagnose(
            info,
            idx,
            g,
            numeric,
            sw.base[idx].astype(np.float64),
            v.tolerance,
            status,
        ),
        note=note,
    )


CONFIRM_SHRINK = 64.0
"""A failure's estimate is confirmed by a central difference at h / this."""

METHODS = ("auto", "central", "central4", "central6", "richardson", "complex")
EVALS_PER_COORD = {
    "auto": 2,
    "central": 4,
    "central4": 8,
    "central6": 12,
    "richardson": 8,
    "complex": 2,
}
