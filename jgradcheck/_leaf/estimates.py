"""Estimates of one leaf's entries from its sweep, shared by the leaf checks.

:func:`primed_central` primes the sweep
(:meth:`jgradcheck._engine.context.EvalContext.prime`) and returns what
priming measured (:class:`jgradcheck._engine.context.Primed`); the other
functions take it explicitly. The numerics are
:mod:`jgradcheck._numerics.stencil`'s; these only choose steps and refuse
non-finite values of J.
"""

from __future__ import annotations

import numpy as np

from .._engine.context import EvalContext, Primed
from .._engine.protocols import Sweep
from .._errors import where_list
from .._numerics.stencil import (
    STENCILS,
    Central,
    Estimate,
    central,
    ladder,
    richardson,
    stencil,
    stencil_step,
    steps_for,
)


def raise_unless_finite(
    sw: Sweep, idx: np.ndarray, ok: np.ndarray, step: np.ndarray
) -> None:
    """Raise where J is not finite at θ ± h (``ok`` False) for entries ``idx``."""
    if ok.all():
        return
    bad = ~ok
    places = [sw.info.where(int(k)) for k in idx[bad]]
    raise ValueError(
        f"`loss` is not finite at θ ± h for {int(bad.sum())} coordinate(s): "
        f"{where_list(places)} (h ≈ {float(np.median(step[bad])):.2g}). "
        "Finite differences cannot be taken across a singularity; check the "
        "loss near these parameters or move `params` away from it."
    )


def primed_central(
    ctx: EvalContext, sw: Sweep, idx: np.ndarray, rel_step: float | None = None
) -> tuple[Primed, Central]:
    """Prime ``sw``, then central differences at the default step for ``idx``.

    ``rel_step`` overrides the default relative step ``cbrt(eps)``
    (:meth:`EvalContext.rel_step`). Raises where J is not finite at θ ± h.
    """
    primed = ctx.prime(sw)
    h = steps_for(sw.base[idx], rel_step or ctx.rel_step(sw.info))
    c = central(sw, idx, sw.base, h, ctx.eps_j, primed.rounding)
    raise_unless_finite(sw, idx, np.isfinite(c.j_plus) & np.isfinite(c.j_minus), c.step)
    return primed, c


def refined(
    ctx: EvalContext, sw: Sweep, idx: np.ndarray, first: Central, primed: Primed
) -> Estimate:
    """Richardson over central differences at ``first``'s step h, h/2 … h/8."""
    ds = ladder(sw, idx, sw.base, first, ctx.eps_j, noise=primed.rounding)
    return richardson(ds)


def fixed_stencil(
    ctx: EvalContext, sw: Sweep, idx: np.ndarray, method: str, primed: Primed
) -> Estimate:
    """Every entry ``idx`` with one stencil (:func:`jgradcheck._numerics.stencil.stencil`).

    The step is ``eps^(1/(p+1))·max(1, |θ|)``, shrunk per coordinate where
    the measured truncation error calls for it. Raises where J is not finite.
    """
    order = STENCILS[method][2]
    h = steps_for(sw.base[idx], stencil_step(ctx.bounding_dtype(sw.info), order))
    est = stencil(sw, idx, sw.base, h, ctx.eps_j, method, noise=primed.rounding)
    raise_unless_finite(sw, idx, np.isfinite(est.value), est.step)
    return est
