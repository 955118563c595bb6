"""The reference-relative rule of kernel teams: a rule against a reference implementation.

For one leaf, with ``rule`` the derivative under test (at its native
precision), ``ref64`` the reference implementation differentiated by JAX at
float64 and ``ref_native`` the same at the native precision::

    |rule − ref64| ≤ k · maxᵢ |ref_nativeᵢ − ref64ᵢ| + ρ · maxᵢ |ref64ᵢ|

per entry. The yardstick ``maxᵢ |ref_native − ref64|`` is what a plain,
trusted implementation loses at the native precision: a rule whose error
against the float64 truth is within ``k`` times that is as good as the
reference at that precision (flash-attention's tests use ``k = 2``: a fused
kernel reorders sums and keeps other intermediates, so its error is of the
reference's order but not below it; 2 leaves room for that and nothing for
a wrong formula, which is off by O(1) of the scale). The leaf maximum, not
the entry, is the yardstick: the reference's error at one entry can be zero
by chance (an exactly representable result) where the rule's is an ordinary
rounding. The last term is the rounding floor of the verdicts
(:func:`jgradcheck._numerics.verdict.rounding_floor`: ``GRAD_ULPS`` ulps of
the precision the rule accumulates in, at least ``STORE_ULPS`` of its own)
of the leaf's scale: what any correct gradient in that dtype may carry, even
where the reference happens to round exactly (a linear function at
float64-exact inputs). It matters most in float64, where the reference at
the native precision *is* ``ref64`` and its measured error is 0: a correct
rule that sums in another order is a few ulps off, and must pass.

``ratio = max|rule − ref64| / max|ref_native − ref64|`` is reported per
leaf: below 1 the rule is more accurate than the reference at its precision.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .verdict import FAIL, PASS, rounding_floor

REFERENCE_FACTOR = 2.0
"""Default ``k`` (``reference_factor=``): flash-attention's factor."""


def reference_ratio(rule_err: float, ref_err: float) -> float:
    """``rule_err / ref_err``: below 1 the rule is more accurate than the
    reference at its precision; inf where the reference is exact (float64)
    and the rule is not.

    >>> reference_ratio(1.0, 2.0), reference_ratio(0.0, 0.0), reference_ratio(1.0, 0.0)
    (0.5, 0.0, inf)
    """
    if ref_err > 0:
        return rule_err / ref_err
    return 0.0 if rule_err == 0 else float("inf")


class Against(NamedTuple):
    """One leaf of a rule compared with a reference."""

    status: np.ndarray
    """uint8 per entry: PASS or FAIL."""
    rule_err: float
    """``max |rule − ref64|``."""
    ref_err: float
    """``max |ref_native − ref64|``: the yardstick."""
    allowed: float
    """``k·ref_err + ρ·max|ref64|``, the tolerance of every entry."""
    worst: int
    """Position of the entry with the largest ``|rule − ref64|``."""

    @property
    def ratio(self) -> float:
        """:func:`reference_ratio` of the leaf."""
        return reference_ratio(self.rule_err, self.ref_err)


def against_reference(
    rule: np.ndarray,
    ref64: np.ndarray,
    ref_native: np.ndarray,
    *,
    factor: float,
    eps: float,
) -> Against:
    """The reference-relative verdict of one leaf (flattened float64 arrays).

    Args:
      rule: the rule's derivative, at its native precision.
      ref64: the reference's derivative in float64 (the truth, once finite
        differences vouched for it).
      ref_native: the reference's derivative at the native precision.
      factor: ``k``.
      eps: machine epsilon of the native dtype.

    >>> ref64 = np.array([1.0, 2.0, 3.0])
    >>> ref = ref64 + np.array([0.01, -0.02, 0.0])        # the reference at bf16
    >>> good = against_reference(ref64 + 0.03, ref64, ref, factor=2.0, eps=2.0**-8)
    >>> bad = against_reference(ref64 * 1.1, ref64, ref, factor=2.0, eps=2.0**-8)
    >>> good.status.tolist(), round(good.ratio, 3), bad.status.tolist()
    ([0, 0, 0], 1.5, [1, 1, 1])
    """
    diff = np.abs(rule - ref64)
    scale = float(np.max(np.abs(ref64))) if ref64.size else 0.0
    ref_err = float(np.max(np.abs(ref_native - ref64))) if ref64.size else 0.0
    allowed = factor * ref_err + rounding_floor(eps) * scale
    status = np.where(diff <= allowed, PASS, FAIL).astype(np.uint8)  # NaN fails
    worst = int(np.argmax(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0
    rule_err = float(np.max(diff)) if diff.size else 0.0
    return Against(status, rule_err, ref_err, allowed, worst)
