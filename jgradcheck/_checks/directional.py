"""Finite differences of a function of several arrays along given directions.

The rule checks compare a rule's J·u (or ⟨ȳ, J·u⟩) with
:func:`fd_directional`: Richardson-refined central differences of ``f`` along
each direction ``u``, evaluated at reference precision in one compiled call,
with the rounding of every output entry measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import cast, on_device
from .._dtypes import eps as eps_of
from .._engine import programs
from .._numerics.rounding import (
    ENTRY_FLOOR_QUANTILE,
    narrowest_dtype,
    rounding_from_probes,
)
from .._numerics.stencil import (
    Estimate,
    default_step,
    from_values,
    probe_offsets,
    probe_rounding,
    richardson,
)


def widen(x: jax.typing.ArrayLike) -> jax.Array:
    """``x`` as float64 (complex128 if complex): the reference precision.

    Must run where 64-bit types are enabled (:func:`reference_precision`).
    """
    dtype = np.complex128 if jnp.iscomplexobj(x) else np.float64
    return cast(x, dtype)


def widen_np(x: jax.typing.ArrayLike) -> np.ndarray:
    """``x`` as a NumPy float64 (complex128 if complex) array."""
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def pair_dot(a: list[Any], b: list[np.ndarray]) -> np.ndarray:
    """Σ over input leaves of Re⟨a_i[p], b_i[p]⟩ for each pair p, in float64.

    Re(Σ a·b), without conjugation, is the pairing under which JAX's VJP is
    the transpose of its JVP, for real and complex values alike.
    """
    return sum(
        np.real(np.sum((widen_np(x) * widen_np(y)).reshape(x.shape[0], -1), axis=1))
        for x, y in zip(a, b)
    )


_LEVELS = 4
"""Richardson levels: steps h/2^k for k < _LEVELS."""


def _plan(
    x: list[Any], directions: list[list[np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(ts, steps, eps)``: the offsets t along each direction ([P, 2L + 12]:
    steps, minus steps, rounding probes) and the steps ([P, L]) at ``x``.

    No entry moves farther than ``reach(x)``."""
    eps = max(eps_of(v.dtype) for v in x)
    xmax = max(float(np.max(np.abs(np.asarray(v)))) if v.size else 0.0 for v in x)
    umax = [max(float(np.max(np.abs(c))) for c in u) for u in directions]
    h0 = default_step(narrowest_dtype(*(v.dtype for v in x))) * max(1.0, xmax)
    steps = np.array([[h0 / m / 2.0**k for k in range(_LEVELS)] for m in umax])
    u0 = np.sqrt(eps) * max(1.0, xmax) / np.asarray(umax)
    probes = probe_offsets(u0).T  # [P, 12]
    return np.concatenate([steps, -steps, probes], axis=1), steps, eps


def reach(x: list[Any]) -> float:
    """How far :func:`fd_directional` moves an entry of ``x`` at most: the
    first step ``cbrt(eps)·max(1, |x|)`` (probes move less)."""
    xmax = max(float(np.max(np.abs(np.asarray(v)))) if v.size else 0.0 for v in x)
    return default_step(narrowest_dtype(*(v.dtype for v in x))) * max(1.0, xmax)


def _estimates(
    leaves: list[Any], steps: np.ndarray, eps: float
) -> list[tuple[Estimate, np.ndarray]]:
    """Per output leaf (values shaped [P, 2L + 12, *shape]): the Richardson
    estimate and the roundoff bound at the first step."""
    P, levels = steps.shape
    out = []
    for leaf in leaves:
        arr = widen_np(leaf)  # [P, 2L + 12, *shape]
        extra = (1,) * (arr.ndim - 2)
        # Each entry's own probe, floored by the leaf's median (one probe can
        # see no rounding by chance; the entries share one computation).
        noise = rounding_from_probes(
            probe_rounding(np.moveaxis(arr[:, 2 * levels :], 1, 0)),
            quantile=ENTRY_FLOOR_QUANTILE,
            per_entry=True,
        )
        ds = []
        for k in range(levels):
            width = (2.0 * steps[:, k]).reshape((P,) + extra)
            ds.append(from_values(arr[:, k], arr[:, levels + k], width, eps, noise))
        out.append((richardson(ds), ds[0].roundoff))
    return out


def _along(g: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    """``(x, ts [P, T], us) ↦ g(x + t·u)`` for every direction and offset."""

    def at(x: list[Any], t: jax.Array, u: list[jax.Array]) -> Any:
        return g([xi + t * ui for xi, ui in zip(x, u)])

    per_t = jax.vmap(at, in_axes=(None, 0, None))
    return jax.vmap(per_t, in_axes=(None, 0, 0))


def _stacked(directions: list[list[np.ndarray]], x: list[Any]) -> list[jax.Array]:
    """The directions stacked per input leaf ([P, *shape]), in ``x``'s dtypes."""
    return [
        cast(np.stack([u[i] for u in directions]), x[i].dtype) for i in range(len(x))
    ]


def fd_directional(
    g: Callable[[list[Any]], Any],
    x: list[Any],
    directions: list[list[np.ndarray]],
) -> list[tuple[Estimate, np.ndarray]]:
    """Richardson-refined d/dt g(x + t·u) at t = 0 for each direction u, in float64.

    One compiled, doubly vmapped call (shared by every check whose ``g``
    traces to the same computation: :mod:`jgradcheck._engine.programs`) evaluates every direction at steps ±h/2^k,
    and at the rounding probes of :func:`jgradcheck._numerics.stencil.probe_rounding`
    (t = ±u, ±2u at three scales of u = √eps·max(1, |x|)/|u|): the rounding of
    each output entry is measured, not assumed to be eps·|y| (an output that
    sums large terms which cancel rounds far more). Returns, per output leaf,
    the estimate (arrays shaped [P, *leaf shape]) and the roundoff bound at the
    first step. Must run inside the reference precision.
    """
    ts, steps, eps = _plan(x, directions)
    f_all = programs.call(_along(g), x, on_device(ts), _stacked(directions, x))
    return _estimates(jax.tree_util.tree_leaves(f_all), steps, eps)


class PointDifferences:
    """:func:`fd_directional` at many points of the same shapes, compiled once.

    ``g`` is evaluated at every point, direction and offset in one program
    (vmapped over the points); where ``g`` cannot be vmapped over points it is
    evaluated point by point (``note`` says why). Call in the reference
    precision.
    """

    def __init__(self, g: Callable[[list[Any]], Any]) -> None:
        along = _along(g)
        self._batched = programs.Function(jax.vmap(along, in_axes=(0, 0, None)))
        self._single = programs.Function(along)
        self.note = ""

    def __call__(
        self, xs: list[Any], directions: list[list[np.ndarray]]
    ) -> tuple[list[list[tuple[Estimate, np.ndarray]]], np.ndarray, np.ndarray]:
        """Per point, the estimates of :func:`fd_directional` (none where a
        value is not finite), whether every value ``g`` took there was finite,
        and how far an entry moved (:func:`reach`).

        Args:
          xs: the points, one array per input leaf, stacked ([K, *shape]).
          directions: as in :func:`fd_directional`.
        """
        K = int(xs[0].shape[0])
        points = [[np.asarray(v[k]) for v in xs] for k in range(K)]
        plans = [_plan(p, directions) for p in points]
        us = _stacked(directions, points[0])
        ts = on_device(np.stack([p[0] for p in plans]))
        if not self.note:
            try:
                leaves = jax.tree_util.tree_leaves(self._batched(xs, ts, us))
                per_point = [[np.asarray(v[k]) for v in leaves] for k in range(K)]
            except Exception as e:  # noqa: BLE001 - a loop instead, with a note
                self.note = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        if self.note:
            per_point = [
                [
                    np.asarray(v)
                    for v in jax.tree_util.tree_leaves(self._single(p, ts[k], us))
                ]
                for k, p in enumerate(points)
            ]
        finite = np.array(
            [all(np.all(np.isfinite(v)) for v in vals) for vals in per_point]
        )
        out = [
            _estimates(vals, steps, eps) if ok else []
            for vals, (_, steps, eps), ok in zip(per_point, plans, finite)
        ]
        return out, finite, np.array([reach(p) for p in points])
