"""What the comparisons at one input point amount to (``points=``).

Pure NumPy over the values :mod:`jgradcheck._checks.pointwise` computes: each
comparison is judged by :func:`~jgradcheck._numerics.verdict.judge` at the
fixed floor first, then with the yardstick's measured rounding; a point that
does not pass is a failure, unsure, within underflow, or unresolved by the
finite differences (float64 autodiff of the primal as a second opinion);
near a threshold of the rule a failure is not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._numerics.verdict import FAIL, PASS, judge, yardstick_rounding


class PointVerdicts(NamedTuple):
    """Per point: whether a comparison failed, and whether it is in the domain."""

    failing: np.ndarray
    """bool [K]: some dot test (or tangent entry) failed there (in-domain points)."""
    in_domain: np.ndarray
    """bool [K]: the primal and its finite-difference evaluations are finite."""
    at_threshold: np.ndarray
    """bool [K]: a comparison failed, but the finite differences reach across
    a threshold the rule compares with (a kink or branch: central differences
    straddle it, and may be what is wrong); not counted as failing."""
    underflow: np.ndarray
    """bool [K]: every failing comparison there is within the underflow of the
    rule's dtype (:func:`underflow_only`); not judged."""
    unsure: np.ndarray
    """bool [K]: no comparison failed, some were unsure (the differences'
    error bar too wide to decide), and the rule does not match float64
    autodiff of the primal either; counts against ``ok`` as at the primals."""
    unresolved: np.ndarray
    """bool [K]: the rule fails against the finite differences but agrees with
    JAX's float64 autodiff of the primal (:func:`matches_autodiff`): the
    differences cannot resolve ``f`` there; not judged."""


def underflow_only(
    status: np.ndarray, diff: np.ndarray, bound: np.ndarray | float
) -> bool:
    """Whether every failing comparison differs by at most ``bound``: what
    the rule's dtype can get wrong below its smallest normal number, where
    results are flushed to zero (XLA on CPU), so the relative rounding model
    of the verdict does not hold: an entry ``|v| < tiny`` is computed as 0.
    ``bound`` is ``tiny`` per entry (J·u), or ``tiny·Σ|uⱼ|`` for a dot test
    (each entry of Jᵀȳ may lose ``tiny``)."""
    bad = status == FAIL
    return bool(np.any(bad)) and bool(np.all((diff <= bound)[bad]))


def matches_autodiff(
    a: np.ndarray,
    a64: np.ndarray,
    *,
    eps_grad: float,
    scale: float,
    rounding: np.ndarray | None,
) -> bool:
    """Whether the rule's values ``a`` pass against ``a64``, JAX's autodiff of
    the primal (custom rules inlined) at float64, as exact values, by the
    same rule (the yardstick's rounding allowed). Where the rule fails
    against the finite differences but matches this, the differences are
    what is wrong: steps of ``cbrt(eps)·max(1, |x|)`` far wider than the
    function's own scale (``sin`` at 1e22), or straddling a kink."""
    zero = np.zeros_like(a64)
    v = judge(
        a,
        a64,
        zero,
        zero,
        eps_grad=eps_grad,
        scale=max(scale, float(np.max(np.abs(a64), initial=0.0))),
        rounding=rounding,
    )
    return bool(np.all(v.status == PASS)) and bool(np.all(np.isfinite(a64)))


WIDE_STEP = 1.0
"""Finite differences whose steps move an entry by more than this (points with
entries beyond ``1/cbrt(eps)``, 1.6e5 in float64) average ``f`` over more than
its unit scale: a pass there counts only if float64 autodiff of the primal
agrees (:func:`confirmed`)."""


def confirmed(
    a: np.ndarray,
    a64: np.ndarray | None,
    eps: float,
    scale: float,
    rounding: Callable[[], np.ndarray | None],
) -> bool:
    """A pass against wide-step finite differences stands where the rule also
    matches float64 autodiff of the primal, or where there is none to ask
    (not finite, or the primal cannot be differentiated)."""
    if a64 is None or not np.all(np.isfinite(a64)):
        return True
    return matches_autodiff(a, a64, eps_grad=eps, scale=scale, rounding=rounding())


def failure_kind(
    status: np.ndarray,
    a: np.ndarray,
    fd: tuple[np.ndarray, np.ndarray, np.ndarray],
    a64: np.ndarray | None,
    *,
    kink: bool,
    on: bool,
    bound: np.ndarray | float,
    eps_grad: float,
    scale: float,
    rounding: np.ndarray | None,
) -> str:
    """What a comparison at a point that did not pass is.

    ``"unresolved"`` where the rule matches float64 autodiff of the primal
    (``a64``, when there is one); ``"straddled"`` near a threshold (``kink``)
    unless autodiff confirms the finite differences ``fd`` (value, error bar,
    roundoff) there, and always with an entry exactly on one (``on``: autodiff
    splits the tie as the differences average it, so it confirms nothing); ``"unsure"`` where nothing failed; ``"underflow"`` where
    every failure is within ``bound`` of the finite differences and of
    ``a64``; else ``"fail"``.
    """
    numeric, error, round0 = fd
    if a64 is not None and matches_autodiff(
        a, a64, eps_grad=eps_grad, scale=scale, rounding=rounding
    ):
        return "unresolved"
    if kink:
        # Central differences across a kink measure its average slope; they
        # count only where autodiff (one side's slope) agrees with them.
        if on or a64 is None or not np.all(np.isfinite(a64)):
            return "straddled"
        v = judge(a64, numeric, error, round0, eps_grad=eps_grad, scale=scale)
        if not np.all(v.status == PASS):
            return "straddled"
    if not np.any(status == FAIL):
        return "unsure"
    near_zero = underflow_only(status, np.abs(a - numeric), bound)
    if near_zero and (a64 is None or underflow_only(status, np.abs(a - a64), bound)):
        return "underflow"
    return "fail"


KINDS = ("fail", "unsure", "straddled", "underflow", "unresolved")
"""What a point where some comparison did not pass is (:func:`failure_kind`),
worst first."""


def outcome(flags: dict[str, np.ndarray], in_domain: np.ndarray) -> PointVerdicts:
    """Per point, the worst kind over its comparisons (a failure anywhere fails
    it); points that pass everywhere are none of them."""
    seen = ~in_domain
    out = {}
    for kind in KINDS:
        out[kind] = flags[kind] & ~seen
        seen = seen | out[kind]
    return PointVerdicts(
        out["fail"],
        in_domain,
        out["straddled"],
        out["underflow"],
        out["unsure"],
        out["unresolved"],
    )


def near(
    xs: list[Any], kinks: list[float], reach: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """bool [K] twice: some entry of point k lies within ``reach[k]`` of a
    threshold; some entry is exactly on one (where autodiff splits a tie,
    ``max(x, 0)`` at 0 giving ½, as central differences do)."""
    close = np.zeros(len(reach), bool)
    on = np.zeros(len(reach), bool)
    for v in xs:
        a = np.asarray(v, np.float64).reshape(len(reach), -1)
        for c in kinks:
            close |= np.any(np.abs(a - c) <= reach[:, None], axis=1)
            on |= np.any(a == c, axis=1)
    return close, on


def allowance_of(a: np.ndarray, bb: tuple[Any, Any] | None, pick: Any) -> Any:
    """The rounding allowance of the rule's values ``a`` (None: fixed)."""
    if bb is None:
        return None
    b, b64 = bb
    if b is None:
        return np.abs(a - pick(b64))
    return yardstick_rounding(a, pick(b), pick(b64))


def once(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn()``, computed at the first call only."""
    memo: list[Any] = []

    def get() -> Any:
        if not memo:
            memo.append(fn())
        return memo[0]

    return get


def verdict(
    a: np.ndarray,
    numeric: np.ndarray,
    error: np.ndarray,
    round0: np.ndarray,
    *,
    eps_grad: float,
    scale: float,
    allowance: Callable[[], np.ndarray | None],
) -> Any:
    """:func:`judge` at the fixed floor first: the strictest allowance (a
    measured rounding only ever widens it), so what passes there passes;
    what fails is judged again with the yardstick's ``allowance()``, which is
    computed (and its programs compiled) only then."""
    v = judge(a, numeric, error, round0, eps_grad=eps_grad, scale=scale)
    if np.any(v.status == FAIL):
        rounding = allowance()
        if rounding is not None:
            v = judge(
                a,
                numeric,
                error,
                round0,
                eps_grad=eps_grad,
                scale=scale,
                rounding=rounding,
            )
    return v
