"""``reference=``: the derivative under test against JAX's derivative of a
plain reference implementation, judged by the reference's own error.

Kernel teams test a fused or low-precision backward pass this way
(flash-attention's tests): the rule's error against the float64 derivative of
a trusted implementation must not exceed ``k`` times the error of that
implementation run at the same precision
(:mod:`jgradcheck._numerics.reference` has the rule and why ``k = 2``).
Finite differences arbitrate: the reference's float64 derivative is compared
with the float64 finite differences the check computed anyway, and where they
disagree the report says the reference is wrong, not the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._dtypes import eps as eps_of
from .._numerics.reference import REFERENCE_FACTOR, against_reference
from .._numerics.verdict import EPS_ACCUMULATE, FAIL, judge
from .._pytree.flat import LeafInfo
from .._report.records import LeafResult, ReferenceCheck, ReferenceLeaf

ARBITER_EPS = EPS_ACCUMULATE
"""The reference's float64 derivative may differ from the finite differences
by SAFETY error bars plus this precision's rounding allowance
(:func:`jgradcheck._numerics.verdict.rounding_floor`): a reference that keeps a
few float32 intermediates (``preferred_element_type=jnp.float32``, float32
constants) is still a reference; a wrong term, factor or sign is not."""


def validate_reference(reference: Any, factor: Any) -> float:
    """``reference=`` must be callable (or None), ``reference_factor`` a positive number."""
    if reference is not None and not callable(reference):
        raise TypeError(
            f"`reference` must be a function like `f`; got {type(reference).__name__}."
        )
    ok = isinstance(factor, (int, float)) and not isinstance(factor, bool)
    if not ok or not math.isfinite(float(factor)) or float(factor) <= 0:
        raise ValueError(
            f"`reference_factor` must be a positive number (default "
            f"{REFERENCE_FACTOR:g}); got {factor!r}."
        )
    return float(factor)


def name_of(reference: Callable[..., Any]) -> str:
    """The reference's name, for the report."""
    return getattr(reference, "__name__", type(reference).__name__)


def real64(x: Any) -> np.ndarray:
    """Flattened float64 values; complex ones as (real, imaginary) pairs."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        return np.stack([x.real, x.imag], -1).reshape(-1).astype(np.float64)
    return x.astype(np.float64).reshape(-1)


def leaf_against(
    label: str,
    info: LeafInfo,
    rule: Any,
    ref64: Any,
    ref_native: Any,
    factor: float,
) -> ReferenceLeaf:
    """One leaf's :class:`ReferenceLeaf` (arrays shaped like ``info``)."""
    a, r64, rn = real64(rule), real64(ref64), real64(ref_native)
    dtype = getattr(ref_native, "dtype", None) or np.asarray(rule).dtype
    v = against_reference(a, r64, rn, factor=factor, eps=eps_of(dtype))
    parts = a.size // max(info.size, 1)
    return ReferenceLeaf(
        label=label,
        rule_err=v.rule_err,
        ref_err=v.ref_err,
        allowed=v.allowed,
        n_fail=int(np.sum(v.status == FAIL)),
        size=int(a.size),
        worst=info.where(v.worst // max(parts, 1)) if info.size else info.path,
    )


def disagreement(
    ref64: np.ndarray, numeric: np.ndarray, error: np.ndarray, scale: float
) -> int:
    """How many values of the reference's float64 derivative disagree with
    finite differences ``numeric ± error`` (judged at :data:`ARBITER_EPS`)."""
    v = judge(
        ref64, numeric, error, np.zeros_like(error), eps_grad=ARBITER_EPS, scale=scale
    )
    return int(np.sum(v.status == FAIL))


def evidence(bad: int, total: int, what: str) -> str:
    """What the finite differences said about the reference."""
    if bad:
        return (
            f"{bad} of {total} {what} of its float64 derivative differ from the "
            "float64 finite differences beyond their error bars"
        )
    return f"its float64 derivative agrees with the finite differences ({total} {what})"


def reference_check(
    reference: Callable[..., Any],
    factor: float,
    natives: Iterable[str],
    leaves: Iterable[ReferenceLeaf],
    bad: int,
    total: int,
    what: str,
) -> ReferenceCheck:
    """The :class:`ReferenceCheck` of ``reference``: its leaves, the dtypes it
    ran at natively, and ``bad`` of ``total`` ``what`` (entries, dot-product
    pairs) where its float64 derivative disagreed with the finite differences."""
    return ReferenceCheck(
        name=name_of(reference),
        factor=factor,
        native=", ".join(sorted(set(natives))),
        leaves=tuple(leaves),
        reference_agrees=bad == 0,
        evidence=evidence(bad, total, what),
    )


def against_grad(
    loss_ref: Callable[..., Any],
    factor: float,
    leaves: tuple[LeafResult, ...],
    native: dict[int, Any],
    ref64: dict[int, Any],
    ref_native: dict[int, Any],
) -> ReferenceCheck:
    """check_grad's ``reference=``: the gradient under test (``native``)
    against ``jax.grad(loss_ref)`` in float64 and at the params' precision;
    the checked entries' finite differences arbitrate."""
    out, bad, total = [], 0, 0
    for leaf in leaves:
        pos = leaf.info.position
        if pos not in native:
            continue
        out.append(
            leaf_against(
                leaf.info.path or "<root>",
                leaf.info,
                native[pos],
                ref64[pos],
                ref_native[pos],
                factor,
            )
        )
        if leaf.checked:
            r = real64(ref64[pos])[leaf.idx]
            scale = float(np.max(np.abs(leaf.numeric))) if leaf.checked else 0.0
            bad += disagreement(r, leaf.numeric, leaf.error_bar, scale)
            total += leaf.checked
    dtypes = [str(np.asarray(v).dtype) for v in ref_native.values()]
    return reference_check(loss_ref, factor, dtypes, out, bad, total, "entries")
