"""Stage 1 of ``check_leaf``: every entry estimated with the chosen method.

See :mod:`jgradcheck._leaf.escalate` for the whole ladder.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._engine.context import EvalContext, Primed
from .._engine.protocols import Sweep
from .._numerics.stencil import Central, Estimate, stencil_step
from .._typing import Method
from .complex_step import Fallback, complex_step
from .estimates import fixed_stencil, primed_central, refined


class FirstPass(NamedTuple):
    """Stage 1's estimates of every entry."""

    primed: Primed
    """What priming the sweep measured (J(θ), J's rounding)."""
    central: Central | None
    """The 2-point difference at h when the method made it (``"auto"``), for
    the refine stage's ladder to start from."""
    estimate: Estimate
    note: str | None
    """Why the method was not used (``"complex"`` falling back to ``"auto"``)."""


def first_pass(
    ctx: EvalContext, sw: Sweep, idx: np.ndarray, method: Method
) -> FirstPass:
    """Stage 1 of the ladder: every entry of ``idx`` estimated with ``method``.

    Primes ``sw`` (for ``"complex"``, first once before the complex sweep is
    compiled, then again for its probes) and returns what priming measured.

    ``"complex"`` falls back to ``"auto"`` with a note when the complex step
    cannot be trusted for this leaf.
    """
    note = None
    if method == "complex":
        ctx.prime(sw)  # J(θ) is checked before the complex sweep is compiled
        cs = complex_step(ctx, sw, idx)
        if not isinstance(cs, Fallback):
            estimate, primed = cs
            return FirstPass(primed, None, estimate, None)
        note = f"complex step not used: {cs.reason}; method 'auto' instead"
        method = "auto"
    if method == "auto":
        primed, first = primed_central(ctx, sw, idx)
        zeros = np.zeros(idx.shape, bool)
        est = Estimate(first.value, first.roundoff, first.step, zeros)
        return FirstPass(primed, first, est, note)
    if method == "richardson":
        # Extrapolation cancels the h² term, so start where an O(h⁴)
        # estimate balances roundoff, not at the 2-point optimum.
        rel_step = stencil_step(ctx.bounding_dtype(sw.info), 4)
        primed, first = primed_central(ctx, sw, idx, rel_step)
        return FirstPass(primed, None, refined(ctx, sw, idx, first, primed), note)
    primed = ctx.prime(sw)
    return FirstPass(primed, None, fixed_stencil(ctx, sw, idx, method, primed), note)
