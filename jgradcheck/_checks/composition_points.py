"""The composition grid's inputs: points, probes, eager derivatives, rounding.

:func:`build_grid` draws the input points (the primals, then each entry moved
by 3%, 6%, … of itself), a readable tangent and cotangent per point, runs the
rule's derivative eagerly at each (the reference of every row of
:func:`jgradcheck.check_compositions`) and measures its rounding against a
float64 re-run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import as_float64
from .._dtypes import eps as eps_of
from .._engine.context import reference_precision
from .._numerics.rounding import narrowest_dtype
from .._pytree.coords import readable
from .._report.rule_records import RuleKind
from .same_derivative import error_line, float64_leaves, stack

Derivative = Callable[[list[Any], Any], Any]
"""``(x, probe) ↦`` the rule's derivative at ``x``: Jᵀ·probe or J·probe."""


def derivative(kind: RuleKind, g: Callable[[list[Any]], Any]) -> Derivative:
    """The rule's derivative of ``g``: ``(x, ȳ) ↦ Jᵀȳ`` or ``(x, u) ↦ J·u``."""
    if kind == "vjp":
        return lambda x, ybar: jax.vjp(g, x)[1](ybar)[0]
    return lambda x, u: jax.jvp(g, (x,), (u,))[1]


class Grid(NamedTuple):
    """The rule at its points, its eager derivatives and their rounding."""

    g: Callable[[list[Any]], Any]
    """``f`` as a function of the list of differentiated leaves."""
    kind: RuleKind
    D: Derivative
    xs: list[list[Any]]
    """The input points: the primals first, then moved by 3%, 6%, …"""
    tangents: list[list[Any]]
    """A readable tangent u per point (one array per differentiated leaf)."""
    cotangents: list[Any]
    """A readable cotangent ȳ per point (structured like ``f``'s output)."""
    base: list[Any]
    """The derivative run eagerly at each point: the reference of every row."""
    rounding: list[list[np.ndarray]] | None
    """``|base − base₆₄|`` per point and leaf; None: not measured."""
    how: str
    """How the allowance was measured, for the report."""
    eps: float
    """Machine epsilon of the narrowest input or output dtype."""

    @property
    def probes(self) -> list[Any]:
        """What the derivative is applied to: ȳ for a VJP, u for a JVP."""
        return self.cotangents if self.kind == "vjp" else self.tangents

    def stacked(self) -> tuple[Any, list[np.ndarray] | None]:
        """The eager derivatives at every point, stacked, and their rounding."""
        r = None
        if self.rounding is not None:
            r = [np.stack(leaf) for leaf in zip(*self.rounding)]
        return stack(self.base), r

    def first_rounding(self) -> list[np.ndarray] | None:
        return None if self.rounding is None else self.rounding[0]


def _draws(
    x: list[Any], want: Any, seed: int, count: int
) -> tuple[list[list[Any]], list[list[Any]], list[Any]]:
    """Input points, tangents and cotangents, ``count`` of each, from ``seed``."""
    signs = [
        np.sign(readable(np.shape(v), np.float64, [seed, 3, k]))
        for k, v in enumerate(x)
    ]
    xs = [
        [jnp.asarray(v * (1 + 0.03 * b * s)).astype(v.dtype) for v, s in zip(x, signs)]
        for b in range(count)
    ]
    tangents = [
        [
            jnp.asarray(readable(np.shape(v), v.dtype, [seed, 1, k, b]))
            for k, v in enumerate(x)
        ]
        for b in range(count)
    ]
    out_leaves, out_def = jax.tree_util.tree_flatten(want)
    cotangents = [
        jax.tree_util.tree_unflatten(
            out_def,
            [
                jnp.asarray(readable(np.shape(y), y.dtype, [seed, 2, k, b]))
                for k, y in enumerate(out_leaves)
            ],
        )
        for b in range(count)
    ]
    return xs, tangents, cotangents


def _at_float64(D: Derivative, pairs: list[tuple[Any, Any]]) -> list[Any]:
    """The derivative at float64, compiled once (eagerly if jit fails: the
    re-run measures rounding, it is not one of the rows)."""
    try:
        compiled = jax.jit(D)
        return [compiled(*p) for p in pairs]
    except Exception:  # noqa: BLE001 - the jit row reports jit's failure
        return [D(*p) for p in pairs]


def _rounding(
    D: Derivative, xs: list[Any], probes: list[Any], base: list[Any], eps: float
) -> tuple[list[list[np.ndarray]] | None, str]:
    """``|eager − eager₆₄|`` per point and leaf, or None; and how, in words."""
    if eps <= eps_of(np.float64):
        return None, "16 ulps of each entry's scale (a float64 rule: no wider re-run)"
    wide = lambda t: jax.tree_util.tree_map(as_float64, t)  # noqa: E731
    pairs = [(wide(xb), wide(pb)) for xb, pb in zip(xs, probes)]
    try:
        with reference_precision("float64"):
            b64 = _at_float64(D, pairs)
    except Exception as e:  # noqa: BLE001 - the float64 re-run is optional
        return (
            None,
            f"16 ulps of each entry's scale (the float64 re-run {error_line(e)})",
        )
    out = [
        [np.abs(a - b) for a, b in zip(float64_leaves(one), float64_leaves(w))]
        for one, w in zip(base, b64)
    ]
    return out, "the eager rule's rounding, measured against its float64 re-run"


def build_grid(
    g: Callable[[list[Any]], Any],
    x: list[Any],
    want: Any,
    kind: RuleKind,
    seed: int,
    count: int,
) -> Grid:
    """The points, the eager derivative at each and its measured rounding.

    Raises:
      ValueError: the derivative fails eagerly (nothing to compare with).
    """
    xs, tangents, cotangents = _draws(x, want, seed, count)
    probes = cotangents if kind == "vjp" else tangents
    leaves = x + jax.tree_util.tree_leaves(want)
    eps = eps_of(narrowest_dtype(*(v.dtype for v in leaves)))
    D = derivative(kind, g)
    try:
        base = [D(xb, pb) for xb, pb in zip(xs, probes)]
    except Exception as e:
        raise ValueError(
            f"the rule's derivative ({kind}) of `f` fails when run eagerly, "
            f"before any composition: {error_line(e)}. Run check_{kind}(f, ...) "
            "on the same primals to see why."
        ) from e
    rounding, how = _rounding(D, xs, probes, base, eps)
    return Grid(g, kind, D, xs, tangents, cotangents, base, rounding, how, eps)
