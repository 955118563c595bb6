"""What a failing leaf's mismatch looks like, when the evidence is clear.

Each pattern is tested in turn against the checked entries of one leaf, with
``a`` the gradient under test, ``n`` the finite differences and ``d = a − n``.
A pattern *explains* the mismatch when what it leaves over is below 5% of
``‖d‖``; a mismatch near the tolerances, or of no simple shape, gets no
diagnosis rather than a guess. Patterns:

* zero: ``a`` is zero where ``n`` is not (a missing path);
* sign flipped: ``a ≈ −n``;
* scaled: ``a ≈ c·n`` for a constant ``c`` (a missing 1/N, a doubled term),
  where at least two entries of ``n`` exceed their tolerance (with one, any
  ``a`` is a multiple of ``n``);
* transposed: ``a ≈ nᵀ`` (square matrices, every entry checked);
* off by a term proportional to θ: ``d ≈ λ·θ`` (weight decay missing or doubled);
* isolated entries: at most 3 or 1% of the entries fail; they are listed.
"""

from __future__ import annotations

import numpy as np

from .._pytree.flat import LeafInfo
from .verdict import FAIL


def _integer_hint(c: float) -> str:
    for value, name in ((c, ""), (1.0 / c if c else 0.0, "1/")):
        k = round(value)
        if abs(k) >= 2 and abs(value - k) <= 1e-3 * abs(value):
            return f" (a missing or extra factor {name}{k}?)"
    return ""


def diagnose(
    info: LeafInfo,
    idx: np.ndarray,
    a: np.ndarray,
    n: np.ndarray,
    theta: np.ndarray,
    tolerance: np.ndarray,
    status: np.ndarray,
) -> str | None:
    """A one-line description of how ``a`` differs from ``n``, or None."""
    fail = status == FAIL
    if not fail.any():
        return None
    d = a - n
    slack = 0.05 * np.linalg.norm(d)

    def explains(residual: np.ndarray) -> bool:
        return bool(np.linalg.norm(residual) <= slack)

    if explains(a) and np.linalg.norm(n) > slack:
        return "zero: the gradient under test is 0 where finite differences are not (a missing path?)"
    if explains(a + n):
        return "sign flipped: a ≈ −n"
    nn = float(np.dot(n, n))
    # One nonzero n is "scaled" by any a: a ratio needs two entries to show.
    if nn > 0 and int(np.sum(np.abs(n) > tolerance)) >= 2:
        c = float(np.dot(a, n)) / nn
        if explains(a - c * n):
            return f"scaled: a ≈ {c:.4g}·n{_integer_hint(c)}"
    shape = info.shape
    if len(shape) == 2 and shape[0] == shape[1] and idx.size == info.size:
        order = np.argsort(idx)
        full_a = a[order].reshape(shape)
        full_n = n[order].reshape(shape)
        if explains(full_a - full_n.T):
            return "transposed: a ≈ nᵀ (a gradient computed as δᵀ·x instead of xᵀ·δ?)"
    tt = float(np.dot(theta, theta))
    if tt > 0:
        lam = float(np.dot(d, theta)) / tt
        if explains(d - lam * theta):
            return (
                f"off by a term proportional to θ: a − n ≈ {lam:.4g}·θ (a weight-decay "
                "or L2 term missing or counted twice? c·‖θ‖² has gradient 2c·θ)"
            )
    k = int(fail.sum())
    if k <= max(3, 0.01 * fail.size):
        where = ", ".join(info.where(int(i)) for i in idx[fail][:5])
        more = f" and {k - 5} more" if k > 5 else ""
        return f"isolated: {k} wrong entr{'y' if k == 1 else 'ies'}: {where}{more}"
    return None


IMPRECISE_REL = 2.0**-7
"""Errors below this fraction of the entries' scale, of no systematic shape,
are precision lost rather than a wrong formula (a wrong factor or term moves
entries by far more; a cast to bfloat16 moves them by at most 2⁻⁸)."""


def imprecise(
    a: np.ndarray,
    n: np.ndarray,
    status: np.ndarray,
    *,
    scale: float,
    eps: float,
    dtype: str,
    reach: float,
    label: str,
) -> str | None:
    """ "imprecise: …" when the failing entries are off by rounding-sized
    amounts far above what ``label`` (autodiff of the primal) reaches.

    Errors are in ulps (``eps``) of the entry's scale ``max(|a|, |n|) + s``,
    the scale the verdict judges rounding by; ``reach`` is autodiff's largest
    rounding as a fraction of its scale.

    >>> a = np.array([1.0004, 2.0, 2.9993]); n = np.array([1.0, 2.0, 3.0])
    >>> print(imprecise(a, n, np.array([1, 0, 1]), scale=3.0, eps=2.0**-23,
    ...                 dtype="float32", reach=2.0**-22, label="autodiff at float32"))
    imprecise: the error is up to 979 float32 ulps of the entry's scale; autodiff at float32 reaches 2
    """
    fail = status == FAIL
    if int(fail.sum()) < 2:
        return None
    mag = np.maximum(np.abs(a[fail]), np.abs(n[fail])) + scale
    worst = float(np.max(np.abs(a[fail] - n[fail]) / mag))
    if not worst <= IMPRECISE_REL:
        return None
    return (
        f"imprecise: the error is up to {worst / eps:,.0f} {dtype} ulps of the "
        f"entry's scale; {label} reaches {max(reach / eps, 0.0):,.0f}"
    )
