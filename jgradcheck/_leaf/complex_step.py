"""The complex-step derivative, trusted only after it agrees with finite differences.

For a J that is real on real inputs and complex-analytic in θᵢ,
``J(θ + i·h·eᵢ) = J(θ) + i·h·∂ᵢJ − h²/2·∂ᵢ²J + O(h³)``, so
``Im J(θ + i·h·eᵢ) / h`` is the derivative with an O(h²) truncation error and
*no subtractive cancellation*: h can be tiny (``eps²·max(1, |θᵢ|)`` here) and
the estimate is accurate to a few ulps, one evaluation per coordinate.

It is silently wrong when J is not analytic in θ: ``abs``, ``norm``, ``vdot``
and ``conj`` (they conjugate), ``max``/ReLU/sort (they compare), and linear
algebra such as ``cholesky``, ``eigh`` or ``slogdet`` (they assume Hermitian
input or take real parts). So it is not trusted blindly: before the sweep, a few
coordinates of the leaf are estimated both ways, and the leaf falls back to
``method="auto"`` with a note naming the reason when they disagree or when the
loss cannot be evaluated at complex parameters at all. After the sweep, an entry
the complex step calls wrong is re-estimated by finite differences like every
other method's (see ``jgradcheck._leaf.escalate.check_leaf``), so no failure rests on the complex step
alone.

The perturbed leaf is a complex copy of the parameter; the sweep engine only
ever sets single entries (no ``ravel_pytree``, whose unravel rejects complex
values for a real tree).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from .._dtypes import eps as eps_of
from .._engine.context import EvalContext, Primed
from .._engine.protocols import Sweep
from .._engine.sweep import LeafSweep
from .._numerics.stencil import Estimate
from .._pytree.flat import Flat, LeafInfo
from .estimates import primed_central, refined

PROBES = 8
"""Coordinates per leaf on which the complex step is compared with finite differences."""

CS_ULPS = 64.0
"""Error bar of a complex-step value, in ulps of the leaf's largest value."""


class Fallback(NamedTuple):
    """Why the complex step was not used for a leaf."""

    reason: str


def _complex_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.complex128 if np.dtype(dtype) == np.float64 else np.complex64)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def complex_sweep(ctx: EvalContext, info: LeafInfo, batch: int) -> LeafSweep | Fallback:
    """A sweep of ``Im J`` with the leaf held as a complex array, or why not.

    The sweep is registered with ``ctx`` (its timing is the check's).
    """
    real = np.asarray(ctx.flat.leaves[info.position])
    leaves = list(ctx.flat.leaves)
    leaves[info.position] = jnp.asarray(real.astype(_complex_dtype(real.dtype)))
    flat = Flat(ctx.flat.treedef, tuple(leaves), ctx.flat.infos)
    loss: Callable[..., Any] = ctx.loss

    def imag_loss(params: Any, *args: Any) -> Any:
        return jnp.imag(loss(params, *args))

    try:
        sw = LeafSweep(
            imag_loss,
            flat,
            ctx.args,
            info,
            batch,
            sparse=False,
            layout=ctx.layout,
            engine=ctx.opts.engine,
        )
        sw(np.zeros(1, np.int32), sw.base[:1])
    except Exception as err:  # noqa: BLE001 - any failure means: fall back
        return Fallback(
            f"the loss cannot be evaluated at complex parameters ({_one_line(err)})"
        )
    ctx.register(sw)
    return sw


def complex_step(
    ctx: EvalContext, sw: Sweep, idx: np.ndarray
) -> tuple[Estimate, Primed] | Fallback:
    """Complex-step estimates for ``idx``, probed against finite differences first.

    Args:
      ctx: the evaluation context (J at reference precision).
      sw: the real sweep of the leaf (primed again here, for the probes).
      idx: flat indices into the leaf to estimate.

    Returns:
      The :class:`Estimate` and what priming ``sw`` for the probes measured,
      or a :class:`Fallback` with the reason.
    """
    info = sw.info
    csw = complex_sweep(ctx, info, sw.batch)
    if isinstance(csw, Fallback):
        return csw
    eps = eps_of(sw.dtype)
    theta = sw.base[idx]
    h = (eps**2) * np.maximum(1.0, np.abs(theta))
    values = csw.base[idx] + 1j * h.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = csw(idx, values.astype(csw.dtype)) / h
    if not np.all(np.isfinite(value)):
        bad = int(idx[~np.isfinite(value)][0])
        return Fallback(
            f"the complex step is not finite at {info.where(bad)} "
            "(the loss overflows or divides by zero at a complex argument)"
        )
    scale = float(np.max(np.abs(value))) if value.size else 0.0
    error = CS_ULPS * eps * (np.abs(value) + scale)
    # Probe: a few coordinates spread over the selection, both ways.
    k = np.unique(np.linspace(0, idx.size - 1, min(PROBES, idx.size)).astype(int))
    primed, first = primed_central(ctx, sw, idx[k])
    fd = refined(ctx, sw, idx[k], first, primed)
    gap = np.abs(value[k] - fd.value)
    off = gap > 2.0 * (fd.error + error[k]) + 16.0 * eps * scale
    if off.any():
        j = int(np.flatnonzero(off)[0])
        return Fallback(
            f"the complex step disagrees with finite differences at "
            f"{info.where(int(idx[k][j]))} (complex step {value[k][j]:.6g}, "
            f"finite differences {fd.value[j]:.6g} ± {fd.error[j]:.2g}): the loss "
            "is not complex-analytic in this parameter (abs, norm, vdot, conj, "
            "max/ReLU, sort, cholesky, eigh and slogdet are not)"
        )
    estimate = Estimate(
        value=value,
        error=error,
        step=h,
        refined=np.zeros(idx.shape, bool),
        roundoff=error,
    )
    return estimate, primed
