"""Is a derivative the same as another computation of it, up to rounding?

The composition grid compares a rule's derivative under a transformation with
the eager rule, and ``check_hvp`` compares ``vᵢᵀ(H vⱼ)`` with ``vⱼᵀ(H vᵢ)``.
Neither has a finite-difference error bar: both sides are exact up to
rounding, so the verdict is :func:`jgradcheck._numerics.verdict.judge` with a
zero error bar, the rounding floor of the dtype and the rounding measured
against a float64 re-run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import as_float64
from .._dtypes import eps as eps_of
from .._numerics.verdict import FAIL, judge

_TINY = float(np.finfo(np.float64).tiny)


def error_line(e: BaseException) -> str:
    """``raised TypeError: <first line of the message>`` (at most 160 characters)."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"raised {type(e).__name__}: {first[:160].rstrip('.')}"


def stack(trees: list[Any]) -> Any:
    """Pytrees of matching structure stacked leaf by leaf on a new first axis."""
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def float64_leaves(tree: Any) -> list[np.ndarray]:
    """The leaves of ``tree`` as NumPy float64 arrays."""
    return [as_float64(v) for v in jax.tree_util.tree_leaves(tree)]


def compare(got: Any, want: Any, rounding: list[np.ndarray] | None) -> tuple[bool, str]:
    """``got`` against ``want`` leaf by leaf, allowing ``want``'s rounding.

    Per entry :func:`judge` with a zero error bar: ``GRAD_ULPS`` ulps of the
    entry's scale (its magnitude plus the leaf's largest), or twice the
    measured rounding ``rounding`` (``|want − want₆₄|`` per leaf; None: not
    measured), capped at ``ROUNDING_CAP`` of the scale. Returns the verdict and
    a detail naming the largest difference and its allowance (at the entry
    closest to failing).
    """
    same: bool = jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)  # type: ignore[operator]
    if not same:
        return False, "a different output structure from the eager derivative"
    fails, worst = 0, (-1.0, 0.0, 0.0)
    pairs = zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want))
    for k, (g, w) in enumerate(pairs):
        if np.shape(g) != np.shape(w):
            return False, f"shape {np.shape(g)} where eager gives {np.shape(w)}"
        a, n = as_float64(g), as_float64(w)
        zero = np.zeros_like(n)
        scale = float(np.max(np.abs(n))) if n.size else 0.0
        r = None if rounding is None else rounding[k]
        j = judge(a, n, zero, zero, eps_grad=eps_of(w.dtype), scale=scale, rounding=r)
        fails += int(np.sum(j.status == FAIL))
        diff = np.abs(a - n)
        ratio = diff / np.maximum(j.tolerance, _TINY)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        if ratio.size and float(np.max(ratio)) > worst[0]:
            i = int(np.argmax(ratio))
            worst = (
                float(ratio.flat[i]),
                float(diff.flat[i]),
                float(j.tolerance.flat[i]),
            )
    detail = f"max |Δ| {worst[1]:.2e}, allowance {worst[2]:.2e}"
    return fails == 0, detail + (f" ({fails} entries beyond it)" if fails else "")


class Dot(NamedTuple):
    """A dot product ⟨a, b⟩ in float64 and the sum of its terms' magnitudes."""

    value: float
    terms: float
    """``Σ|aᵢ·bᵢ|``: a dot product's rounding is relative to it, not to its value."""


def dot(a: Any, b: Any) -> Dot:
    """⟨a, b⟩ over the matching leaves of two pytrees, in float64."""
    pairs = list(zip(float64_leaves(a), float64_leaves(b)))
    return Dot(
        sum(float(np.sum(x * y)) for x, y in pairs),
        sum(float(np.sum(np.abs(x * y))) for x, y in pairs),
    )


def judge_dots(
    lhs: Dot, rhs: Dot, rounding: float | None, eps: float
) -> tuple[bool, float]:
    """Two computations of one number, each a dot product: the same up to rounding?

    :func:`judge` with a zero error bar at scale ``lhs.terms + rhs.terms``
    and the measured ``rounding`` (None: not measured). Returns the verdict
    and the allowance.

    >>> ok, allowance = judge_dots(Dot(1.0, 3.0), Dot(1.0 + 2**-30, 3.0), None, 2.0**-23)
    >>> ok, round(allowance / 2.0**-23, 6)  # 16 ulps of |value| + Σ|terms| = 1 + 6
    (True, 112.0)
    >>> judge_dots(Dot(1.0, 3.0), Dot(1.1, 3.0), None, 2.0**-23)[0]
    False
    """
    r = None if rounding is None else np.array([rounding])
    j = judge(
        np.array([lhs.value]),
        np.array([rhs.value]),
        np.zeros(1),
        np.zeros(1),
        eps_grad=eps,
        scale=lhs.terms + rhs.terms,
        rounding=r,
    )
    return bool(j.status[0] != FAIL), float(j.tolerance[0])
