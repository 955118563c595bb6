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


def fd_directional(
    g: Callable[[list[Any]], Any],
    x: list[Any],
    directions: list[list[np.ndarray]],
) -> list[tuple[Estimate, np.ndarray]]:
    """Richardson-refined d/dt g(x + t·u) at t = 0 for each direction u, in float64.

    One jitted, doubly vmapped call evaluates every direction at steps ±h/2^k,
    and at the rounding probes of :func:`jgradcheck._numerics.stencil.probe_rounding`
    (t = ±u, ±2u at three scales of u = √eps·max(1, |x|)/|u|): the rounding of
    each output entry is measured, not assumed to be eps·|y| (an output that
    sums large terms which cancel rounds far more). Returns, per output leaf,
    the estimate (arrays shaped [P, *leaf shape]) and the roundoff bound at the
    first step. Must run inside the reference precision.
    """
    x64 = x
    eps = max(eps_of(v.dtype) for v in x)
    xmax = max(float(np.max(np.abs(np.asarray(v)))) if v.size else 0.0 for v in x64)
    umax = [max(float(np.max(np.abs(c))) for c in u) for u in directions]
    h0 = default_step(narrowest_dtype(*(v.dtype for v in x))) * max(1.0, xmax)
    P, levels = len(directions), 4
    steps = np.array([[h0 / m / 2.0**k for k in range(levels)] for m in umax])  # [P, L]
    u0 = np.sqrt(eps) * max(1.0, xmax) / np.asarray(umax)
    probes = probe_offsets(u0).T  # [P, 12]
    us = [cast(np.stack([u[i] for u in directions]), x[i].dtype) for i in range(len(x))]

    def at(t: jax.Array, u: list[jax.Array]) -> Any:
        return g([xi + t * ui for xi, ui in zip(x64, u)])

    ts = np.concatenate([steps, -steps, probes], axis=1)  # [P, 2L + 12]
    f_all = programs.call(
        jax.vmap(jax.vmap(at, in_axes=(0, None)), in_axes=(0, 0)), on_device(ts), us
    )
    leaves = jax.tree_util.tree_leaves(f_all)
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
