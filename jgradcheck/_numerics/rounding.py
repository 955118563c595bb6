"""J's rounding, measured: the probes' step and the one rounding policy.

Every check needs to know how much J itself rounds near θ: finite differences
divide that rounding by the step, and an error bar that leaves it out turns
noise into failures. It is measured, never assumed to be ``eps·|J|`` (a loss
that sums large terms which cancel rounds far more than its value suggests).
Three callers measure it, each with probes that suit it:

* the sweeps of ``check_grad`` (``EvalContext.prime``): the four-point probes
  of :func:`jgradcheck._numerics.stencil.probe_rounding` at a few coordinates
  of a leaf;
* the same-function check at the params' own precision (``check_grad``):
  ``|J(θ+u) + J(θ−u) − 2J(θ)|`` for a few random ``u`` over every entry;
* the directional differences of ``check_vjp`` / ``check_jvp``: the four-point
  probes per output entry.

:func:`rounding_from_probes` turns those measurements into J's rounding with
one policy: NaN measurements are dropped (they measure nothing), and the
rounding is the ``quantile`` of the rest (0 when none is left); with
``per_entry``, each entry keeps its own measurement, floored by that quantile.
The quantile is each caller's, for a reason stated with its constant below.
"""

from __future__ import annotations

import numpy as np
from jax.typing import DTypeLike

from .._dtypes import eps as eps_of

PROBE_QUANTILE = 0.75
"""A leaf's sweeps: the upper quartile of the probes at a few coordinates.

Not the largest: a probe next to a jump of J sees the jump, and must not pass
for noise (that would widen every error bar of the leaf)."""

TRIALS_QUANTILE = 1.0
"""The same-function check at the params' own precision: the largest of the
few random trials. Each trial sums the rounding of every entry at once, and
the check must not call a float32 loss a different function because one
trial happened to round less."""

ENTRY_FLOOR_QUANTILE = 0.5
"""The rule checks' outputs: each output entry's own probe, floored by the
median over all entries. Output entries round differently (their magnitudes
differ), so each keeps its own measurement; but one probe per entry can see
no rounding by chance, and the entries come from the same computation."""


def probe_step(dtype: DTypeLike) -> float:
    """Relative step of the rounding probes: ``√eps`` of ``dtype``.

    Large enough to move intermediates up to ~``eps^(-1/2)`` times larger than
    θ by an ulp. At high frequencies ``u³·J‴`` can exceed the rounding, which
    only makes the error bars wider (unsure, never a false failure).
    """
    return float(np.sqrt(eps_of(dtype)))


def narrowest_dtype(*dtypes: DTypeLike) -> np.dtype:
    """The least precise of ``dtypes`` (the first of equals): it bounds roundoff."""
    return max((np.dtype(d) for d in dtypes), key=eps_of)


def _level(measured: np.ndarray, quantile: float) -> float:
    if quantile == 1.0:  # the same statistic, without interpolation's rounding
        return float(np.max(measured))
    if quantile == 0.5:
        return float(np.median(measured))
    return float(np.quantile(measured, quantile))


def rounding_from_probes(
    measured: np.ndarray, *, quantile: float, per_entry: bool = False
) -> np.ndarray:
    """J's rounding from probe measurements of it (the module's one policy).

    Args:
      measured: non-negative measurements of J's rounding, any shape.
      quantile: which quantile of the measurements is J's rounding, in
        ``[0, 1]``: :data:`PROBE_QUANTILE`, :data:`TRIALS_QUANTILE` or
        :data:`ENTRY_FLOOR_QUANTILE` (each says why).
      per_entry: keep each measurement, floored by the quantile of all
        (default: the quantile alone).

    Returns:
      A float64 array: shaped like ``measured`` with ``per_entry``, else a
      scalar array. NaN measurements are dropped; none left gives 0 (or
      ``measured`` unchanged, with ``per_entry``).

    Example:
      >>> float(rounding_from_probes(np.array([1.0, 2.0, 3.0, 9.0]), quantile=0.75))
      4.5
      >>> rounding_from_probes(np.array([0.0, 2.0, 3.0]), quantile=0.5, per_entry=True)
      array([2., 2., 3.])
    """
    measured = np.asarray(measured, np.float64)
    kept = measured[~np.isnan(measured)]
    if not per_entry:
        return np.asarray(_level(kept, quantile) if kept.size else 0.0)
    if not kept.size:
        return measured
    return np.maximum(measured, _level(kept, quantile))
