"""Before the sweep: params checked and flattened, the gradient under test
taken at the params' own dtype, the entries selected, and complex leaves seen
as (real, imaginary) pairs of real coordinates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import eps as eps_of
from .._dtypes import is_complex, is_inexact
from .._engine.gradient import (
    evaluate,
    loss_jaxpr,
    loss_output_check,
    nonfinite_places,
    path_dtypes,
    user_gradient,
    value_and_gradient,
)
from .._engine.precision import (
    as_computed,
    computed_dtype,
    effective_dtype,
    in_effective_dtypes,
    truncation_note,
)
from .._engine.tracing import explained_tracing, refuse_traced, traced_value
from .._errors import NonFiniteGradientError, where_list
from .._leaf.fast import fast_selection
from .._options import Options
from .._pytree.coords import Selection, select
from .._pytree.flat import Flat, as_real, flatten_params, real_view
from .._typing import PyTree


def prepare_params(loss: Callable[..., Any], params: PyTree, args: tuple) -> Flat:
    """``params`` flattened, after checking there is something to check and that
    ``loss(params, *args)`` is a real scalar.

    Raises:
      ValueError, TypeError: empty params, no floating-point leaves, or a loss
        that is not a finite real scalar.
    """
    refuse_traced(params, "params")
    refuse_traced(args, "args")
    flat = flatten_params(params)
    if not flat.infos:
        raise ValueError("`params` is empty: there is nothing to check.")
    if not flat.checked:
        kinds = ", ".join(
            f"{i.path or '<root>'} ({i.dtype or i.kind})" for i in flat.infos
        )
        raise ValueError(
            f"`params` has no floating-point leaves to check; its leaves are: {kinds}."
        )
    loss_output_check(loss, flat.rebuild(flat.leaves), args)
    return flat


class GradientUnderTest(NamedTuple):
    """The gradient under test at ``params``, and J at the params' own precision."""

    value: float
    """``loss(params, *args)`` at the params' own dtype."""
    dtype: np.dtype
    """The dtype of that value."""
    grads: dict[int, jax.Array]
    """Leaf position -> the gradient under test for that leaf."""
    source: str
    """Where it came from, for the report: ``jax.grad(loss) in float32``."""
    dtypes: frozenset[np.dtype]
    """The dtypes of the gradient's leaves."""


class RealView(NamedTuple):
    """The check with complex leaves seen as real (..., 2) leaves (see
    :func:`complex_as_real`); the inputs themselves when no leaf is complex."""

    flat: Flat
    loss: Callable[..., Any]
    grad: Callable[..., PyTree] | None
    under_test: dict[int, jax.Array]
    selection: Selection


def gradient_under_test(
    loss: Callable[..., Any],
    grad: Callable[..., PyTree] | None,
    params: PyTree,
    flat: Flat,
    args: tuple,
    held: Selection | None = None,
    label: str | None = None,
) -> GradientUnderTest:
    """``jax.grad(loss)`` (or ``grad(params, *args)``) at the params' own dtype.

    ``held``: the params' NaN/inf entries (held fixed, not checked); the
    gradient there may be anything, and the loss must not read them.

    Each leaf is returned in the dtype it was computed at
    (:func:`jgradcheck._engine.precision.as_computed`): with x64 off, a
    gradient of float64 arrays is a float32 computation, judged at float32's
    eps and its rounding measured against the float64 re-run, as for any
    float32 gradient; ``source`` says so. ``jax.grad`` is taken at the leaves'
    effective dtypes (float32 leaves, not float64 arrays that JAX would
    truncate piecemeal); a ``grad=`` gets ``params`` as given. ``label``
    names it in the report instead of ``grad=NAME`` (a rule check's Jᵀȳ).

    Raises:
      ValueError: when the gradient is not finite somewhere else, naming the
        entries; when the loss is not finite and ``params`` has NaN/inf
        entries, naming those.
    """
    if grad is None:
        # JAX differentiates float32 leaves, not float64 arrays it truncates
        # piecemeal (mixed float32/float64 programs it cannot always transpose).
        effective = in_effective_dtypes(flat)
        with explained_tracing("loss"):
            native, under_test = value_and_gradient(loss, effective, args)
            casts = path_dtypes(loss_jaxpr(loss, effective, args)[0], effective)
        narrowed = [i.dtype for i in flat.checked if i.dtype is not None]
        source = "jax.grad(loss)"
    else:
        with explained_tracing("loss"):
            native = evaluate(loss, flat, args)
        under_test = user_gradient(grad, params, flat, args)
        narrowed = [
            g.dtype for g in under_test.values() if computed_dtype(g) != g.dtype
        ]
        name = getattr(grad, "__name__", type(grad).__name__)
        source = label or f"grad={name}"
        casts = {}
    traced_value(native, "loss")
    if held and not np.isfinite(float(native)):
        raise ValueError(_reads_nonfinite(flat, held, float(native)))
    bad = nonfinite_places(flat, under_test, held)
    if bad:
        raise NonFiniteGradientError(
            f"the gradient under test ({source}) is not finite at: {where_list(bad)}. "
            "Fix the NaN/inf first (a division by zero, log of 0, or overflow)."
        )
    under_test = {pos: as_computed(g) for pos, g in under_test.items()}
    wide = sorted({str(under_test[p].dtype) for p in casts}) if casts else []
    # A leaf the loss casts to a narrower dtype has that dtype's rounding in
    # its gradient too: judged as the narrower result it is, like a float64
    # array with x64 off. So is a wider gradient of a leaf (a grad= that
    # returns float64 for a float32 leaf, with x64 on): the loss computes the
    # leaf's contribution at the leaf's own precision. A NumPy gradient keeps
    # its dtype (NumPy's computation, :mod:`jgradcheck._engine.precision`).
    own = {i.position: i.dtype for i in flat.checked}
    under_test = {
        p: _cast(
            _cast(g, casts.get(p)), own.get(p) if isinstance(g, jax.Array) else None
        )
        for p, g in under_test.items()
    }
    dtypes = {np.dtype(getattr(g, "dtype", np.float64)) for g in under_test.values()}
    source += f" in {', '.join(sorted(str(d) for d in dtypes))}"
    source += truncation_note(narrowed)
    if casts:
        to = ", ".join(sorted({str(d) for d in casts.values()}))
        source += f" ({', '.join(wide)} leaves, computed in {to} inside the loss)"
    return GradientUnderTest(
        float(native), np.dtype(native.dtype), under_test, source, frozenset(dtypes)
    )


def _cast(g: Any, dtype: Any) -> Any:
    """``g`` in the effective ``dtype`` when it is given, of ``g``'s kind
    (real or complex) and less precise than ``g``'s dtype."""
    if dtype is None or not is_inexact(dtype):
        return g
    dtype = effective_dtype(dtype)
    if is_complex(dtype) != is_complex(g.dtype) or eps_of(dtype) <= eps_of(g.dtype):
        return g
    return jnp.asarray(g).astype(dtype)


def _reads_nonfinite(flat: Flat, held: Selection, value: float) -> str:
    """The error for a loss that reads NaN/inf entries of ``params``."""
    infos = {i.position: i for i in flat.checked}
    places = [
        f"{infos[pos].where(int(k))} = {np.asarray(flat.leaves[pos]).reshape(-1)[k]}"
        for pos, idx in held.items()
        for k in idx[:20]
    ]
    return (
        f"`params` is not finite at: {where_list(places)}, and `loss` is {value} "
        "there: the loss reads those entries, so no gradient can be checked. "
        "Non-finite entries the loss does not read (padding, masked values) are "
        "held fixed and listed in the report; the fix is to replace these by "
        "finite values, or mask them out of the loss."
    )


def selection_of(flat: Flat, opts: Options) -> tuple[Selection, int | None]:
    """The entries to check, and (fast mode) how many a failing leaf's sweep takes."""
    if opts.mode == "fast":
        return fast_selection(flat, opts.coords, opts.key)
    return select(flat, opts.coords, opts.key), None


def complex_as_real(
    flat: Flat,
    loss: Callable[..., Any],
    grad: Callable[..., PyTree] | None,
    grads: dict[int, jax.Array],
    selection: Selection,
) -> RealView:
    """Check complex leaves as (real, imaginary) pairs of real coordinates.

    JAX's gradient of a real loss at a complex z is ∂L/∂x − i·∂L/∂y, so its
    real view is (Re g, −Im g) = (∂L/∂x, ∂L/∂y), what finite differences of
    the real and imaginary parts estimate.
    """
    view, unview = as_real(flat)
    if view is flat:
        return RealView(flat, loss, grad, grads, selection)
    complex_at = {i.position for i in flat.checked if i.kind == "complex"}

    def loss_of_view(params: PyTree, *args: Any) -> Any:
        return loss(unview(params), *args)

    def grad_of_view(params: PyTree, *args: Any) -> PyTree:
        assert grad is not None
        g = jax.tree_util.tree_leaves(grad(unview(params), *args))
        g = [real_view(jnp.conj(x)) if k in complex_at else x for k, x in enumerate(g)]
        return jax.tree_util.tree_unflatten(flat.treedef, g)

    grads, selection = dict(grads), dict(selection)
    for info in flat.checked:
        if info.kind == "complex":
            grads[info.position] = real_view(jnp.conj(grads[info.position]))
            idx = selection[info.position]
            selection[info.position] = np.stack([2 * idx, 2 * idx + 1], -1).reshape(-1)
    return RealView(view, loss_of_view, grad and grad_of_view, grads, selection)
