"""Verdicts: is each gradient entry consistent with its finite-difference estimate?

No magic thresholds. For entry i with gradient under test ``a``, numeric estimate
``n`` and the estimate's error bar ``e``::

    tolerance = SAFETY · e  +  ρ
    ρ = max(floor(a.dtype) · (max(|a|, |n|) + s),
            min(2·|a − a₆₄|, cap(a.dtype) · (max(|a|, |n|) + s)))

where ``s`` is the largest ``|n|`` in the leaf. The first term is the
finite-difference estimate's own error (truncation + roundoff); ``ρ`` is the
rounding a correct gradient computed in its own dtype can carry. When the
reference is float64 and the gradient under test is narrower, that rounding is
*measured*: ``a₆₄`` is the same gradient function run on float64 inputs, and
``|a − a₆₄|`` is exactly the rounding error of ``a`` (it is capped, so a rule
that is broken only in float32 is still caught). Neither term grows with the
number of entries, so one wrong entry among millions is judged exactly like one
wrong entry among ten.

The floor and the cap (:func:`rounding_floor`, :func:`rounding_cap`) are
``GRAD_ULPS · eps`` and ``ROUNDING_CAP`` for float32 and float64. For the
narrow dtypes (bfloat16, float16) they follow the same error analysis with the
accumulation XLA really does: sums and dot products of narrow floats accumulate
in float32, so a correct narrow gradient carries float32's accumulation
rounding plus a few roundings to its own dtype where values are stored.

An entry that passes only because its error bar is wide (``e`` above 0.1% of the
entry's scale and far above the roundoff at the default step, as at a kink or for
a noisy J) is ``unsure``, not ``pass``: jgradcheck never claims agreement it
cannot resolve. With explicit ``rtol``/``atol`` the tolerance is
``atol + rtol·max(|a|, |n|)``; an entry fails only when the difference exceeds
it by more than the error bar, and is unsure when the error bar alone exceeds it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SAFETY = 10.0
"""How many error bars apart the two values must be to call an entry wrong."""

GRAD_ULPS = 16.0
"""Rounding allowance for the gradient under test, in units of its dtype's eps."""

ROUNDING_CAP = 2.0**-10
"""Measured rounding is allowed up to this fraction of the entry's scale."""

EPS_ACCUMULATE = 2.0**-23
"""Machine epsilon of float32, the precision XLA accumulates narrower floats in."""

STORE_ULPS = 2.0
"""Fixed rounding allowance of a narrow gradient, in ulps of its own dtype.

A correct bfloat16/float16 gradient entry is the product of a few stored
factors (the backpropagated error, the activation or input it multiplies, an
activation's derivative) summed in float32 and stored once more: about four
roundings of half an ulp each, relative to the entry's scale ``|a| + s``.
Measured on jax.grad of small MLPs (1–3 hidden layers, widths 4–64), the
rounding reached 0.5–2 ulps of ``|a| + s``, up to 3.6 in the widest; anything
beyond the floor is the measured ``|a − a₆₄|`` (the float64 re-run), which is
what covers deeper computations. 16 ulps of bfloat16 would be 12.5% of the
scale, and let a gradient 5% wrong pass."""

CAP_ULPS = 8.0
"""Measured rounding of a narrow gradient is allowed up to this many of its ulps.

``ROUNDING_CAP`` (2⁻¹⁰, 8192 float32 ulps) is less than one ulp of float16 and
an eighth of one of bfloat16: it would refuse even the storage rounding of a
correct narrow gradient. Twice the largest measured rounding of correct
bfloat16 MLP gradients (3.6 ulps of the scale) needs ~8 ulps."""

UNSURE_REL = 1e-3
"""An error bar wider than this fraction of an entry's scale cannot vouch for it."""

RESOLUTION = {
    2.0**-52: 2.0**-1022,  # float64: its smallest normal number
    2.0**-23: 2.0**-126,  # float32: its smallest normal number
    2.0**-7: 2.0**-126,  # bfloat16: float32's, the range it is computed in
    2.0**-10: 2.0**-24,  # float16: its subnormal spacing
}
"""The smallest difference a gradient of each dtype (keyed by its machine
epsilon) can resolve near zero, whatever its scale.

Relative rounding (``eps`` of a value) holds for normal numbers only. XLA on a
CPU flushes float32 (and float64) results below the smallest normal number to
zero, and bfloat16 is computed in float32, so an entry whose true value is
below it may come out as 0: a float32 softplus'(−95) of 5.5e-42 is 0. float16
is computed in float32 and only stored in float16, keeping float16's
subnormals, spaced 2⁻²⁴ apart. ``GRAD_ULPS`` of this resolution is added to
the rounding allowance (:func:`underflow_floor`): for an entry or scale in the
normal range it is far below the relative allowance (float32: a scale under
1e-31 before it matters), so it changes nothing there."""

PASS, FAIL, UNSURE, KINK = 0, 1, 2, 3
STATUS_NAMES = {PASS: "pass", FAIL: "FAIL", UNSURE: "unsure", KINK: "kink"}


def judge_kinks(
    status: np.ndarray,
    grad: np.ndarray,
    at: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    noise: np.ndarray,
    rounding: np.ndarray,
) -> np.ndarray:
    """Status at coordinates ``at`` where J has a kink within the smallest step.

    There the derivative is one of the one-sided slopes (or, exactly at the
    kink, any value between them): a gradient in that range is ``kink`` —
    neither confirmed nor wrong — and one outside it fails.
    """
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    slack = UNSURE_REL * np.maximum(np.abs(lo), np.abs(hi)) + SAFETY * noise + rounding
    g = grad[at]
    inside = (g >= lo - slack) & (g <= hi + slack)
    status = status.copy()
    status[at] = np.where(inside, KINK, FAIL)
    return status


def rounding_floor(eps_grad: float) -> float:
    """The fixed rounding allowance of a gradient with machine epsilon
    ``eps_grad``, as a fraction of the entry's scale ``|a| + s``.

    ``GRAD_ULPS`` ulps of the precision it accumulates in (its own, or float32
    for narrower dtypes), and at least ``STORE_ULPS`` ulps of its own dtype:
    ``GRAD_ULPS · eps`` for float32 and float64, 2⁻⁶ for bfloat16 (2 ulps),
    2⁻⁹ for float16 (2 ulps).

    >>> rounding_floor(2.0**-7) == 2.0**-6, rounding_floor(2.0**-23) == 16 * 2.0**-23
    (True, True)
    """
    return max(GRAD_ULPS * min(eps_grad, EPS_ACCUMULATE), STORE_ULPS * eps_grad)


def rounding_cap(eps_grad: float) -> float:
    """How much measured rounding ``|a − a₆₄|`` may excuse, as a fraction of
    the entry's scale: ``ROUNDING_CAP``, or ``CAP_ULPS`` ulps of a narrow dtype.

    >>> rounding_cap(2.0**-23) == 2.0**-10, rounding_cap(2.0**-7) == 2.0**-4
    (True, True)
    """
    return max(ROUNDING_CAP, CAP_ULPS * eps_grad)


def underflow_floor(eps_grad: float) -> float:
    """``GRAD_ULPS`` times the :data:`RESOLUTION` of a gradient with machine
    epsilon ``eps_grad`` (0 for a dtype not in the table).

    >>> underflow_floor(2.0**-23) == 16 * 2.0**-126, underflow_floor(2.0**-10)
    (True, 9.5367431640625e-07)
    """
    return GRAD_ULPS * RESOLUTION.get(eps_grad, 0.0)


class Judgement(NamedTuple):
    tolerance: np.ndarray
    status: np.ndarray  # uint8 codes PASS/FAIL/UNSURE


def leaf_scale(numeric: np.ndarray, error: np.ndarray | None = None) -> float:
    """The leaf's scale ``s``: the largest ``|n|`` among its well-resolved entries.

    With ``error``, entries whose error bar is wider than ``UNSURE_REL·|n|`` do
    not count (a coordinate straddling a jump has a huge, meaningless ``n``
    that must not loosen the tolerance of the others), unless no entry is
    well resolved.
    """
    mag = np.abs(numeric)
    good = np.isfinite(mag)
    if error is not None:
        narrow = good & (error <= UNSURE_REL * mag)
        if narrow.any():
            good = narrow
    return float(mag[good].max()) if good.any() else 0.0


def judge(
    grad: np.ndarray,
    numeric: np.ndarray,
    error: np.ndarray,
    roundoff0: np.ndarray,
    *,
    eps_grad: float,
    scale: float,
    rounding: np.ndarray | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> Judgement:
    """Per-entry tolerance and status.

    Args:
      grad: the gradient under test (float64 copy).
      numeric: the finite-difference estimate.
      error: the estimate's error bar.
      roundoff0: the roundoff bound at the default step (what a smooth J allows).
      eps_grad: machine epsilon of the gradient under test's dtype.
      scale: the leaf's scale, the largest ``|numeric|`` in it.
      rounding: measured rounding error of ``grad`` (``|a − a₆₄|``), if known;
        NaN entries (a yardstick that is not finite there) count as unknown.
      rtol, atol: explicit tolerances overriding the error-bar rule.
    """
    diff = np.abs(grad - numeric)
    mag = np.maximum(np.abs(grad), np.abs(numeric))
    if rtol is None and atol is None:
        rho = rounding_floor(eps_grad) * (mag + scale) + underflow_floor(eps_grad)
        if rounding is not None:
            # NaN: the yardstick itself is not finite there (autodiff's
            # inf·0 through an unselected branch): nothing measured, the floor.
            rounding = np.where(np.isnan(rounding), 0.0, rounding)
            cap = rounding_cap(eps_grad) * (mag + scale)
            rho = np.maximum(rho, np.minimum(2.0 * rounding, cap))
        tol = SAFETY * error + rho
        fail = ~(diff <= tol)  # NaN-safe: NaN differences fail
        wide = error > np.maximum(
            UNSURE_REL * np.maximum(mag, scale), 100.0 * roundoff0
        )
        unsure = ~fail & wide
    else:
        tol = (atol or 0.0) + (rtol or 0.0) * mag
        fail = ~(diff <= tol + SAFETY * error)
        unsure = ~fail & ((diff > tol) | (SAFETY * error > tol))
    status = np.where(fail, FAIL, np.where(unsure, UNSURE, PASS)).astype(np.uint8)
    return Judgement(tol, status)


def rel_error(grad: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """Per element ``|a − n| / max(|a|, |n|)`` (0 where both are 0)."""
    diff = np.abs(grad - numeric)
    mag = np.maximum(np.abs(grad), np.abs(numeric))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mag > 0, diff / np.where(mag > 0, mag, 1.0), 0.0)


def norm_ratio(grad: np.ndarray, numeric: np.ndarray) -> float:
    """Per leaf ``‖a − n‖ / (‖a‖ + ‖n‖)`` (0 when both are 0)."""
    den = float(np.linalg.norm(grad) + np.linalg.norm(numeric))
    return float(np.linalg.norm(grad - numeric)) / den if den > 0 else 0.0


def yardstick_rounding(a: np.ndarray, b: np.ndarray, b64: np.ndarray) -> np.ndarray:
    """Per-entry rounding allowance of a gradient ``a`` from a yardstick.

    ``b`` is what a correct implementation at ``a``'s precision computes (JAX's
    autodiff of the primal, custom rules inlined), ``b64`` the same at float64;
    ``|b − b64|`` is that implementation's rounding, measured. Arrays are one
    whole leaf, flattened.

    Where ``a`` equals ``b`` bit for bit, ``a`` *is* the autodiff result at
    that entry, and its rounding is ``|b − b64|`` exactly. Elsewhere ``a``
    is another computation of the same derivative: its rounding error is
    ``Σₖ δₖ·cᵢₖ`` over its own roundings ``|δₖ| ≤ eps`` with entry-dependent
    weights (Higham & Mary's probabilistic model: independent, mean-zero),
    of the same order as autodiff's at the entry but not equal to it, and
    independent of it. An entry-wise ``|b − b64|`` can be arbitrarily small
    by chance (a sum that happens to round exactly), so it would refuse a
    correct alternative implementation at the entries where autodiff was
    lucky. The scale of the error is a property of the leaf (the same
    contraction lengths, the same graph for every entry), so the allowance
    is the leaf's largest relative rounding ``M = maxⱼ |bⱼ − b64ⱼ| /
    (|b64ⱼ| + s)`` (``s = max|b64|``, the scale the verdict uses) applied to
    every entry: ``max(|bᵢ − b64ᵢ|, M·(|b64ᵢ| + s))``. Over a leaf of n
    entries a correct rule's largest error and autodiff's are two maxima of n
    draws of the same distribution, which concentrate together (like
    ``√(2 ln n)`` standard deviations); :func:`judge` allows twice that, so
    a correct rule is not refused, and a rule that rounds in a format three
    digits narrower (thousands of ulps against autodiff's few) is.

    >>> a = np.array([1.0, 2.0]); b64 = np.array([1.0, 2.0 + 2**-20])
    >>> yardstick_rounding(a, a, b64) * 2**20         # a is autodiff: entry by entry
    array([0., 1.])
    >>> r = yardstick_rounding(a + 2**-30, a, b64)  # another implementation
    >>> (r * 2**20).round(3)  # the leaf's relative rounding at every entry
    array([0.75, 1.  ])
    """
    own = np.abs(b - b64)
    s = float(np.max(np.abs(b64))) if b64.size else 0.0
    scale = np.abs(b64) + s
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, own / np.where(scale > 0, scale, 1.0), 0.0)
    m = float(np.max(rel)) if rel.size else 0.0
    same = a == b
    return np.where(same, own, np.maximum(own, m * scale))


def yardstick_reach(b: np.ndarray, b64: np.ndarray) -> float:
    """The yardstick's largest rounding in a leaf, as a fraction of its scale
    ``|b64| + max|b64|`` (what :func:`yardstick_rounding` calls ``M``).

    >>> round(yardstick_reach(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 2**-18])) * 2**20, 3)
    1.0
    """
    own = np.abs(b - b64)
    s = float(np.max(np.abs(b64))) if b64.size else 0.0
    scale = np.abs(b64) + s
    return float(np.max(own / scale)) if s > 0 else 0.0
