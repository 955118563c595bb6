"""eps_sweep: the error of finite differences against ε, for choosing and explaining ε.

For a sample of coordinates, J is evaluated at θ ± h·eᵢ (and θ ± 2h·eᵢ for the
4-point stencil) for every step h of a grid, in one compiled sweep per leaf,
and each estimate is compared with the gradient under test. The curves are
V-shaped: truncation error falls like h^p on the right, roundoff grows like
eps·|J|/h on the left, and the best ε sits where they cross.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._engine.context import EvalContext, evaluation_context
from .._engine.gradient import autodiff_gradient, user_gradient
from .._engine.precision import in_effective_dtypes, quiet_truncation
from .._engine.protocols import Sweep
from .._engine.tracing import jit_enabled
from .._options import Options
from .._pytree.coords import select
from .._pytree.flat import LeafInfo
from .._report.eps_sections import eps_sweep_sections
from .._report.html import render_html
from .._report.text import render_text
from .._typing import Precision, PyTree
from .prepare import prepare_params

STENCIL_ORDERS = {"central": 2, "central4": 4}
"""The stencils ``eps_sweep`` draws: name -> order p of its truncation error (∝ h^p)."""

DEFAULT_GRID = np.logspace(-13, -1, 49)
"""The relative steps tried unless ``eps=`` says: 49 from 1e-13 to 1e-1."""


@dataclasses.dataclass(frozen=True, repr=False)
class EpsSweep:
    """Errors of finite-difference estimates over a grid of steps.

    Arrays are plain NumPy, for your own plots: ``errors[method]`` has shape
    ``[coordinates, steps]`` and holds ``|n(h) − a| / max(|a|, tiny)``, the
    relative error of the estimate at step ``h = eps[j]·max(1, |θᵢ|)`` against
    the gradient under test ``a``. ``print(sweep)`` (and a notebook, as HTML)
    shows the best ε per method and per coordinate with the error there.
    """

    eps: np.ndarray
    """Relative steps (the grid)."""
    where: tuple[str, ...]
    """Path and index of each sampled coordinate."""
    grad: np.ndarray
    """The gradient under test at each coordinate."""
    errors: dict[str, np.ndarray]
    roundoff: np.ndarray
    """Theory: roundoff relative error ``eps_J·|J| / (h·|a|)``, shape [coords, steps]."""
    truncation: dict[str, np.ndarray]
    """Theory: ``C·h^p`` fitted on each coordinate's largest steps, per method."""
    best_eps: dict[str, np.ndarray]
    """Per method, the step with the smallest error for each coordinate."""
    dtype: str
    """The dtype J was evaluated in."""

    def __str__(self) -> str:
        return render_text(eps_sweep_sections(self, STENCIL_ORDERS))

    def _repr_html_(self) -> str:
        return render_html(eps_sweep_sections(self, STENCIL_ORDERS))

    def __repr__(self) -> str:
        best = ", ".join(
            f"{m}: {float(np.median(b)):.1e}" for m, b in self.best_eps.items()
        )
        return (
            f"EpsSweep({len(self.where)} coordinates × {len(self.eps)} steps "
            f"{float(self.eps[0]):.0e}…{float(self.eps[-1]):.0e} in {self.dtype}; "
            f"median best step: {best})"
        )

    def plot(
        self, ax: Any = None, *, coords: int | None = 4, methods: Any = None
    ) -> Any:
        """Draw the V-curves and theory lines with matplotlib; returns the Axes.

        Args:
          ax: an existing Axes (default: a new figure).
          coords: how many coordinates to draw (None: all).
          methods: which methods (default: all swept).
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        methods = list(methods or self.errors)
        rows = range(
            len(self.where) if coords is None else min(coords, len(self.where))
        )
        for k in rows:
            for m in methods:
                err = np.maximum(self.errors[m][k], 1e-18)
                (line,) = ax.loglog(self.eps, err, label=f"{m} {self.where[k]}")
                ax.loglog(self.eps, self.truncation[m][k], ":", color=line.get_color())
            ax.loglog(self.eps, self.roundoff[k], "--", color="gray", lw=0.8)
        seen = np.concatenate([self.errors[m][list(rows)].ravel() for m in methods])
        seen = seen[np.isfinite(seen) & (seen > 0)]
        if seen.size:
            ax.set_ylim(
                bottom=max(1e-18, 0.1 * float(seen.min())), top=10 * float(seen.max())
            )
        ax.set_xlabel("relative step ε (h = ε·max(1, |θ|))")
        ax.set_ylabel("relative error vs gradient under test")
        ax.set_title(
            f"finite-difference error vs ε in {self.dtype} (dotted: h^p, dashed: eps/h)"
        )
        ax.legend(fontsize=7)
        return ax


def _stencil(
    j: dict[float, np.ndarray], theta_h: dict[float, np.ndarray], m: str
) -> np.ndarray:
    """Estimates from J at offsets (in units of h) ±1 (and ±2)."""
    width = theta_h[1.0] - theta_h[-1.0]  # actual 2h; 0 when θ ± h rounds to θ
    width = np.where(width > 0, width, np.nan)
    if m == "central":
        return (j[1.0] - j[-1.0]) / width
    return (8 * (j[1.0] - j[-1.0]) - (j[2.0] - j[-2.0])) / (6 * width)


def _values_at_offsets(
    sw: Sweep, idx: np.ndarray, grid: np.ndarray, offsets: tuple[float, ...]
) -> tuple[np.ndarray, dict[float, np.ndarray], dict[float, np.ndarray]]:
    """J at θ + o·h for every offset o and step h of the grid, from one sweep.

    Returns ``(h, J, θ + o·h)``: the steps ``[coords, steps]``, and per offset
    J and the perturbed value as represented (float64), ``[coords, steps]``.
    """
    theta = sw.base[idx]
    h = grid[None, :] * np.maximum(1.0, np.abs(theta.astype(np.float64)))[:, None]
    ii = np.repeat(idx, grid.size)
    vals, th = {}, {}
    for o in offsets:
        th[o] = (theta[:, None] + (o * h).astype(sw.dtype)).astype(sw.dtype)
    flat_vals = np.concatenate([th[o].reshape(-1) for o in offsets])
    js = sw(np.tile(ii, len(offsets)), flat_vals)
    n = ii.size
    for k, o in enumerate(offsets):
        vals[o] = js[k * n : (k + 1) * n].reshape(idx.size, grid.size)
        th[o] = th[o].astype(np.float64)
    return h, vals, th


def _best(grid: np.ndarray, err: np.ndarray) -> np.ndarray:
    """The step with the smallest error per row (NaN where no step worked)."""
    ok = np.isfinite(err).any(axis=1)
    safe = np.where(np.isfinite(err), err, np.inf)
    return np.where(ok, grid[np.argmin(safe, axis=1)], np.nan)


@quiet_truncation()
@jit_enabled()
def eps_sweep(
    loss: Callable[..., Any],
    params: PyTree,
    *args: Any,
    grad: Callable[..., PyTree] | None = None,
    coords: int | PyTree | None = 16,
    key: Any = 0,
    eps: Any = None,
    methods: tuple[str, ...] = ("central", "central4"),
    precision: Precision = "float64",
) -> EpsSweep:
    """The error of finite differences against the gradient under test, over ε.

    Args:
      loss: as in :func:`check_grad`.
      params: as in :func:`check_grad`.
      *args: as in :func:`check_grad`.
      grad: as in :func:`check_grad`.
      key: as in :func:`check_grad`.
      coords: coordinates to sample (an int, at most the number of parameters;
        a boolean mask pytree; or None for all); default 16.
      eps: relative steps to try (default: 49 steps from 1e-13 to 1e-1).
      methods: ``"central"`` (2-point, error ∝ h²) and/or ``"central4"``
        (4-point, ∝ h⁴).
      precision: ``"float64"`` (default) or ``"native"`` (see the V move).

    Returns:
      An ``EpsSweep``; ``.plot()`` draws it.

    Example:
      >>> import jax.numpy as jnp, jgradcheck as jgc
      >>> s = jgc.eps_sweep(lambda p: jnp.sum(jnp.sin(p)),
      ...                   jnp.array([0.3, 1.2], jnp.float32), precision="native")
      >>> s.errors["central"].shape, bool(1e-4 < s.best_eps["central"][0] < 1e-1)
      ((2, 49), True)
    """
    opts = Options.build(coords=coords, key=key, precision=precision)
    unknown = [m for m in methods if m not in STENCIL_ORDERS]
    if unknown or not methods:
        raise ValueError(
            "`methods` must be a non-empty subset of "
            f"{tuple(STENCIL_ORDERS)}; got {methods!r}."
        )
    grid = DEFAULT_GRID if eps is None else np.asarray(eps, np.float64).reshape(-1)
    if grid.size == 0 or np.any(~(grid > 0)):
        raise ValueError("`eps` must be positive relative steps.")
    flat = prepare_params(loss, params, args)
    g_all = (
        autodiff_gradient(loss, in_effective_dtypes(flat), args)
        if grad is None
        else user_gradient(grad, params, flat, args)
    )
    coords = opts.coords
    if isinstance(coords, int) and not isinstance(coords, bool):
        coords = min(coords, flat.n_params)  # a sample size: at most every coordinate
    selection = select(flat, coords, opts.key)
    offsets = (1.0, -1.0, 2.0, -2.0) if "central4" in methods else (1.0, -1.0)
    rows = []
    with evaluation_context(loss, flat, args, opts) as ctx:
        for info in flat.checked:
            idx = selection[info.position]
            if idx.size:
                a = np.asarray(g_all[info.position], np.float64).reshape(-1)[idx]
                rows.append(_leaf_errors(ctx, info, idx, a, grid, offsets, methods))
    err = {m: np.concatenate([r.errors[m] for r in rows]) for m in methods}
    return EpsSweep(
        eps=grid,
        where=tuple(w for r in rows for w in r.where),
        grad=np.concatenate([r.grad for r in rows]),
        errors=err,
        roundoff=np.concatenate([r.roundoff for r in rows]),
        truncation={m: _truncation(e, grid, STENCIL_ORDERS[m]) for m, e in err.items()},
        best_eps={m: _best(grid, e) for m, e in err.items()},
        dtype=str(ctx.j_dtype),
    )


class _LeafErrors(NamedTuple):
    """One leaf's rows of an :class:`EpsSweep`."""

    where: list[str]
    grad: np.ndarray
    errors: dict[str, np.ndarray]
    roundoff: np.ndarray


def _leaf_errors(
    ctx: EvalContext,
    info: LeafInfo,
    idx: np.ndarray,
    a: np.ndarray,
    grid: np.ndarray,
    offsets: tuple[float, ...],
    methods: tuple[str, ...],
) -> _LeafErrors:
    """J at θ ± h·eᵢ (± 2h·eᵢ) for every step of ``grid`` in one sweep, and the
    relative errors of each stencil against the gradient under test ``a``."""
    sw = ctx.sweep(info, idx.size * grid.size * len(offsets))
    h, vals, th = _values_at_offsets(sw, idx, grid, offsets)
    scale = np.maximum(np.abs(a), np.finfo(np.float64).tiny)[:, None]
    errors = {m: np.abs(_stencil(vals, th, m) - a[:, None]) / scale for m in methods}
    jmag = np.maximum(np.abs(vals[1.0]), np.abs(vals[-1.0]))
    return _LeafErrors(
        where=[info.where(int(i)) for i in idx],
        grad=a,
        errors=errors,
        roundoff=ctx.eps_j * jmag / (h * scale),
    )


def _truncation(err: np.ndarray, grid: np.ndarray, p: int) -> np.ndarray:
    """``C·h^p`` fitted per coordinate on the largest steps (truncation dominates)."""
    top = slice(-4, None)
    c = np.nanmedian(err[:, top] / grid[top] ** p, axis=1)
    return c[:, None] * grid[None, :] ** p
