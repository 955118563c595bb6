"""Kinks across precisions: a kink of J that the params' own precision puts at
θ and float64 puts a little way off it.

A ReLU pre-activation that rounds to exactly 0 in float32 is, in float64, a
little way off 0 (1.7e-7, say). Moving the kink by that much in the
pre-activation moves it by ``1.7e-7 / |∂pre/∂θᵢ|`` along θᵢ, far more than the
float64 step when the coefficient is small. The gradient under test (float32)
sits at the kink and takes one of its one-sided slopes (or a value between
them); the float64 central difference, whose steps stay on one side of the
moved kink, sees one smooth branch. They disagree by the jump in slope, with a
tight error bar: without this test the entry would FAIL.

The test, for an entry that still fails (:func:`kinks_nearby`,
:func:`at_kink_nearby`):

1. **J has a kink near θ.** Float64 one-sided slopes
   ``(J(θ+s) − J(θ))/s`` and ``(J(θ) − J(θ−s))/s`` on a ladder of doubling
   steps, from the float64 step ``h`` up to the native default step
   ``cbrt(eps_native)·max(1, |θ|)``. A kink at distance δ from θ leaves the
   slopes alone for ``s < δ``; for ``s > δ`` the far side's slope is the
   near side's plus ``Δ·(1 − δ/s)`` (Δ the jump in slope), so the gap between
   the sides settles at Δ as ``s`` grows. A gap that stays (a factor
   0.75–1.5 per doubling) over three successive steps, while a smooth J's gap
   doubles with s and a jump in J halves it, is a kink.
2. **Its slopes are resolved**: over those three steps neither side moves by
   more than 1/:data:`RESOLVED` of the gap (that bounds ``Δ·δ/s``, so the
   kink is within ``s/6`` of θ at the smallest of them, and it bounds the
   curvature's share). The smallest qualifying triple is kept, and its
   largest step must not exceed the native default step: within it, finite
   differences at native precision, the finest at which that J can be
   differenced, straddle the kink; it is a kink *at* θ at native precision.
3. **The gradient under test is one of those slopes**, or between them (at a
   kink any value between is a derivative), within twice their error, 0.1%
   of their size and the gradient's own rounding allowance.
4. **The float64 estimate is one of them too**, within the same slack and
   ten of its error bars.

Why a wrong gradient near a kink still fails: (3) widens the range between
the one-sided slopes by at most twice their error, which (2) keeps below a
quarter of the jump. A gradient of twice the correct slope, or of the
opposite sign, lies outside the range by the whole jump or more and fails;
so does any gradient where J has no kink within the native step of θ.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .verdict import SAFETY, UNSURE_REL

RESOLVED = 8.0
"""The one-sided slopes may move by at most the gap divided by this."""


def nearby_ladder(h: np.ndarray, native_rel_step: float, rel_step: float) -> np.ndarray:
    """``[L, n]`` doubling steps ``h·2^k`` up to the native default step.

    Args:
      h: the float64 default step per entry, ``rel_step·max(1, |θ|)``.
      native_rel_step: ``cbrt(eps)`` of the params' own dtype.
      rel_step: the float64 relative step (``h``'s).
    """
    levels = max(int(np.floor(np.log2(native_rel_step / rel_step))) + 1, 0)
    return h[None, :] * 2.0 ** np.arange(levels, dtype=np.float64)[:, None]


class NearbyKink(NamedTuple):
    """One-sided slopes near θ, at the step triple kept."""

    found: np.ndarray
    """bool: a resolved gap between the sides that stays over three steps."""
    left: np.ndarray
    right: np.ndarray
    error: np.ndarray
    """Each slope's error: how far the sides moved over the triple, plus
    rounding."""


def _steady(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = a / b
    return (ratio > 0.75) & (ratio < 1.5)


def kinks_nearby(
    j0: float,
    j_plus: np.ndarray,
    j_minus: np.ndarray,
    d_plus: np.ndarray,
    d_minus: np.ndarray,
    rounding: np.ndarray,
) -> NearbyKink:
    """One-sided slopes on a doubling ladder, and whether J has a kink near θ.

    Args:
      j0: J(θ).
      j_plus, j_minus: ``[L, n]``: J(θ + d_plus), J(θ − d_minus), the step
        doubling from row to row.
      d_plus, d_minus: ``[L, n]``: the steps as represented.
      rounding: ``[L, n]``: the rounding of one J value (absolute).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        right = (j_plus - j0) / d_plus
        left = (j0 - j_minus) / d_minus
        noise = 2.0 * rounding / np.minimum(d_plus, d_minus)
    gap = np.abs(right - left)
    n = j_plus.shape[1]
    found = np.zeros(n, bool)
    out = [np.full(n, np.nan) for _ in range(3)]
    for k in range(j_plus.shape[0] - 3, -1, -1):  # the smallest triple wins
        top = k + 2
        moved = np.maximum(
            np.max(np.abs(right[k:top] - right[top]), axis=0),
            np.max(np.abs(left[k:top] - left[top]), axis=0),
        )
        error = moved + noise[k]
        ok = (
            _steady(gap[k + 1], gap[k])
            & _steady(gap[top], gap[k + 1])
            & (gap[top] > RESOLVED * error)
            & (gap[top] > 1e-3 * np.maximum(np.abs(left[top]), np.abs(right[top])))
        )
        for o, v in zip(out, (left[top], right[top], error)):
            o[ok] = v[ok]
        found |= ok
    return NearbyKink(found, *out)


def at_kink_nearby(
    grad: np.ndarray,
    numeric: np.ndarray,
    error: np.ndarray,
    kink: NearbyKink,
    allowed: np.ndarray,
) -> np.ndarray:
    """bool per entry: a kink across precisions (the module docstring's 1–4).

    Args:
      grad: the gradient under test at these entries.
      numeric: the float64 estimate, ``error`` its error bar.
      kink: :func:`kinks_nearby` at these entries.
      allowed: the gradient's own rounding allowance.
    """
    lo = np.minimum(kink.left, kink.right)
    hi = np.maximum(kink.left, kink.right)
    slack = 2.0 * kink.error + UNSURE_REL * np.maximum(np.abs(lo), np.abs(hi))

    def within(x: np.ndarray, extra: np.ndarray) -> np.ndarray:
        return (x >= lo - slack - extra) & (x <= hi + slack + extra)

    return kink.found & within(grad, allowed) & within(numeric, SAFETY * error)
