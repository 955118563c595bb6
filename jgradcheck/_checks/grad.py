"""check_grad, assert_grad and numerical_grad: the public entry points."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from .._engine.context import evaluation_context
from .._engine.gradient import (
    evaluate,
    loss_output_check,
    nonfinite_places,
    reference_gradient,
    user_gradient,
    value_and_gradient,
)
from .._errors import raise_unless_ok, where_list
from .._leaf.escalate import check_leaf
from .._leaf.estimates import primed_central, refined
from .._leaf.fast import check_fast, fast_selection, validate
from .._numerics.rounding import TRIALS_QUANTILE, probe_step, rounding_from_probes
from .._options import METHOD_NAMES, Options, check_precision
from .._pytree.coords import _seed, select
from .._pytree.flat import Flat, as_real, flatten_params, real_view
from .._report.records import Report, Settings
from .terms import check_terms, returns_terms, validate_terms

PyTree = Any


def _prepare(loss: Callable[..., Any], params: PyTree, args: tuple) -> Flat:
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


def _complex_as_real(
    flat: Flat,
    loss: Callable[..., Any],
    grad: Callable[..., Any] | None,
    grads: dict,
    selection: dict,
):
    """Check complex leaves as (real, imaginary) pairs of real coordinates.

    JAX's gradient of a real loss at a complex z is ∂L/∂x − i·∂L/∂y, so its
    real view is (Re g, −Im g) = (∂L/∂x, ∂L/∂y), what finite differences of
    the real and imaginary parts estimate.
    """
    view, unview = as_real(flat)
    if view is flat:
        return flat, loss, grad, grads, selection
    complex_at = {i.position for i in flat.checked if i.kind == "complex"}

    def loss_of_view(params: PyTree, *args: Any) -> Any:
        return loss(unview(params), *args)

    def grad_of_view(params: PyTree, *args: Any) -> PyTree:
        g = jax.tree_util.tree_leaves(grad(unview(params), *args))
        g = [real_view(jnp.conj(x)) if k in complex_at else x for k, x in enumerate(g)]
        return jax.tree_util.tree_unflatten(flat.treedef, g)

    grads, selection = dict(grads), dict(selection)
    for info in flat.checked:
        if info.kind == "complex":
            grads[info.position] = real_view(jnp.conj(grads[info.position]))
            idx = selection[info.position]
            selection[info.position] = np.stack([2 * idx, 2 * idx + 1], -1).reshape(-1)
    return view, loss_of_view, grad and grad_of_view, grads, selection


def _native_noise(
    loss: Callable[..., Any], flat: Flat, args: tuple, j0: float, x64: bool
) -> float:
    """The rounding of ``loss`` at the params' own precision, measured.

    ``J(θ+u) + J(θ−u) − 2J(θ)`` for random ``u = ±√eps·max(1, |θ|)`` on every
    checked entry: the linear term cancels and the quadratic one is ~eps·J'',
    so what remains is rounding. Evaluated with the caller's own x64 setting;
    the trials become one rounding by
    :func:`jgradcheck._numerics.rounding.rounding_from_probes` (the largest).
    """
    rng = np.random.default_rng(0)
    trials = []
    with jax.enable_x64(x64):
        for _ in range(4):
            plus, minus = list(flat.leaves), list(flat.leaves)
            for info in flat.checked:
                x = np.asarray(flat.leaves[info.position])
                signs = rng.choice(np.array([-1.0, 1.0]), x.shape)
                u = probe_step(x.dtype) * np.maximum(1.0, np.abs(x)) * signs
                plus[info.position] = jnp.asarray(x + u.astype(x.dtype))
                minus[info.position] = jnp.asarray(x - u.astype(x.dtype))
            jp = float(loss(flat.rebuild(plus), *args))
            jm = float(loss(flat.rebuild(minus), *args))
            trials.append(abs(jp + jm - 2.0 * j0))
    return float(rounding_from_probes(np.array(trials), quantile=TRIALS_QUANTILE))


def check_grad(
    loss: Callable[..., Any],
    params: PyTree,
    *args: Any,
    grad: Callable[..., PyTree] | None = None,
    coords: int | PyTree | None = None,
    key: Any = 0,
    precision: str = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    memory_budget: int | None = None,
    method: str = "auto",
    mode: str = "full",
    directions: int | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool | TextIO | None = None,
    terms: dict[str, Callable[..., Any]] | None = None,
) -> Report:
    """Compare a gradient with central finite differences, entry by entry.

    The gradient under test is ``jax.grad(loss)`` (or ``grad(params, *args)``)
    at the params' own dtype. The reference is the central difference
    ``(J(θ+hᵢeᵢ) − J(θ−hᵢeᵢ)) / 2hᵢ`` with ``hᵢ = cbrt(eps)·max(1, |θᵢ|)``,
    computed in float64 by default, swept one leaf at a time by a compiled
    ``vmap`` over chunks of coordinates. Entries that do not agree within
    roundoff are re-estimated with smaller steps and Richardson extrapolation,
    with an error bar. An entry fails when the two differ by more than ten error
    bars plus the rounding the gradient's own dtype allows; tolerances never
    grow with the number of entries.

    Args:
      loss: ``loss(params, *args)`` returning a real scalar, or a dict of named
        scalar terms: then the sum and every term are checked separately
        (``report.terms``), so a large simple term (L2) cannot hide an error
        in a small one (the data term).
      params: a pytree of arrays. Floating-point leaves are checked; integer,
        boolean and key leaves and non-array leaves are held fixed and listed.
      *args: extra arguments to ``loss``, held fixed (data, labels, config).
      grad: optional ``grad(params, *args)`` returning a pytree shaped like
        ``params`` (a hand-written backprop), or, for a loss of named terms, a
        dict of such pytrees with the same keys. Default: ``jax.grad(loss)``.
      coords: ``None`` checks every coordinate; an int ``k`` checks ``k``
        coordinates drawn with ``key`` (every leaf gets at least one); a pytree
        of boolean masks shaped like ``params`` checks exactly those entries.
      key: int seed or ``jax.random`` key for ``coords=k``.
      precision: ``"float64"`` (default) evaluates the finite differences in
        float64 whatever the params' dtype, in a scoped ``jax.enable_x64``;
        ``"native"`` uses the params' own dtype.
      rtol: explicit relative tolerance: with ``atol``, the tolerance is
        ``atol + rtol·max(|a|, |n|)``, replacing the error-bar rule.
      atol: explicit absolute tolerance (see ``rtol``).
      memory_budget: bytes one batch of evaluations may use (default 2 GiB;
        on CPU batches are further kept cache-sized).
      method: how every entry is first estimated: ``"auto"`` (default:
        central differences at cbrt(eps), 2 evaluations); ``"central"``,
        ``"central4"`` or ``"central6"`` (2-, 4- or 6-point stencils at
        eps^(1/(p+1)), at steps 2h and h for an error bar, the step shrunk per
        entry where the measured truncation calls for it); ``"richardson"``
        (steps from eps^(1/5) halving 3 times, extrapolated); ``"complex"``
        (complex step Im J(θ+ih)/h, accurate to ulps, probed against central
        differences on 8 entries per leaf first; a leaf where they disagree,
        or whose loss rejects complex input, falls back to ``"auto"`` with a
        note in the report). Whatever the method, entries that do not pass
        are re-estimated (Richardson over h/2 … h/8 with kink detection,
        confirmation at h/64, descent to h/4096 where the ladder aliases, a
        4-point stencil where roundoff dominates) and two estimates must
        agree before a failure is reported.
      mode: ``"full"`` (default) checks every selected entry; ``"fast"``
        compares the gradient along ``directions`` random directions per leaf
        with finite differences of J along them (about ``2·directions``
        evaluations per leaf whatever its size) and sweeps entry by entry only
        the leaves that disagree. A passing leaf is reported with
        ``checked == 0`` and its evidence in ``leaf.directions``; an error too
        small to move a projection beyond its error bar can be missed
        (docs/fast_mode.md). In fast mode ``coords`` limits that sweep:
        ``None`` sweeps a failing leaf in full up to 65,536 entries (a sample
        beyond), an int ``k`` up to ``k`` entries per failing leaf, a mask
        restricts the directions and the sweep to its entries.
      directions: random directions per leaf in fast mode (default 4).
      devices: where the sweeps run: ``None`` (default) splits each batch of
        coordinates over every local device of the default backend
        (``jax.local_devices()``); an int ``n`` uses the first ``n``; or a
        sequence of local ``jax.Device``. Results do not depend on it
        (docs/multi_device.md).
      progress: a progress bar per leaf (tqdm; a widget in notebooks).
        ``None`` (default): only for leaves whose sweep takes more than about
        2 s, and only when stderr is a terminal or in a notebook; ``True``:
        always; ``False``: never; a text stream: always, written there.
      terms: for a ``loss`` that returns a scalar, its named terms:
        ``{name: term(params, *args)}``, scalar functions that add up to
        ``loss`` (checked at ``params``). ``loss`` and every term are then
        checked separately (``report.terms``), as for a loss that returns a
        dict. ``grad``, if given, returns a dict with these keys, one
        gradient pytree per term.

    Returns:
      A ``Report``; read ``report.ok``, ``print(report)``, ``report.worst(k)``.

    Raises:
      TypeError, ValueError: for bad input (non-scalar loss, NaN/inf in the
        loss or the gradient, a ``grad=`` output not shaped like ``params``,
        empty params, ``coords`` out of range), naming the offending path.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> loss = lambda p, x: jnp.sum(jnp.tanh(x @ p["w"] + p["b"]) ** 2)
      >>> params = {"w": jnp.ones((3, 2)) / 3, "b": jnp.zeros(2)}
      >>> jgc.check_grad(loss, params, jnp.arange(6.0).reshape(2, 3)).ok
      True
      >>> def bad(p, x):  # wrong sign on the weights only
      ...     g = jax.grad(loss)(p, x)
      ...     return {"w": -g["w"], "b": g["b"]}
      >>> report = jgc.check_grad(loss, params, jnp.arange(6.0).reshape(2, 3), grad=bad)
      >>> report.ok, report.worst(1)[0].path
      (False, "['w']")
      >>> fast = jgc.check_grad(loss, params, jnp.arange(6.0).reshape(2, 3), mode="fast")
      >>> fast.ok, [leaf.checked for leaf in fast.leaves]  # passed along 4 directions
      (True, [0, 0])
      >>> l2 = lambda p, x: 0.1 * jnp.sum(p["w"] ** 2)
      >>> total = lambda p, x: loss(p, x) + l2(p, x)
      >>> r = jgc.check_grad(total, params, jnp.arange(6.0).reshape(2, 3),
      ...                    terms={"fit": loss, "l2": l2})
      >>> r.ok, [name for name, _ in r.terms]
      (True, ['fit', 'l2'])
    """
    check_precision(precision)
    if method not in METHOD_NAMES:
        raise ValueError(f"`method` must be one of {METHOD_NAMES}; got {method!r}.")
    n_directions = validate(mode, directions)
    if terms is not None:
        terms = validate_terms(terms, loss, params, args)
    if terms is not None or returns_terms(loss, params, args):
        options = dict(
            coords=coords, key=key, precision=precision, rtol=rtol, atol=atol
        )
        options.update(memory_budget=memory_budget, method=method)
        options.update(mode=mode, directions=directions)
        options.update(devices=devices, progress=progress)
        return check_terms(check_grad, loss, params, args, grad, options, terms)
    flat = _prepare(loss, params, args)
    if grad is None:
        native, under_test = value_and_gradient(loss, flat, args)
        source = "jax.grad(loss)"
    else:
        native = evaluate(loss, flat, args)
        under_test = user_gradient(grad, params, flat, args)
        source = f"grad={getattr(grad, '__name__', type(grad).__name__)}"
    native_value, native_dtype = float(native), np.dtype(native.dtype)
    bad = nonfinite_places(flat, under_test)
    if bad:
        raise ValueError(
            f"the gradient under test ({source}) is not finite at: {where_list(bad)}. "
            "Fix the NaN/inf first (a division by zero, log of 0, or overflow)."
        )
    dtypes = {np.dtype(getattr(g, "dtype", np.float64)) for g in under_test.values()}
    source += f" in {', '.join(sorted(str(d) for d in dtypes))}"
    explain = None
    if mode == "fast":
        selection, explain = fast_selection(flat, coords, key)
    else:
        selection = select(flat, coords, key)
    flat, loss_of_view, grad_of_view, under_test, selection = _complex_as_real(
        flat, loss, grad, under_test, selection
    )

    results = []
    user_x64 = bool(jax.config.read("jax_enable_x64"))
    opts = Options.build(
        coords=coords,
        key=key,
        precision=precision,
        rtol=rtol,
        atol=atol,
        memory_budget=memory_budget,
        method=method,
        mode=mode,
        directions=directions,
        devices=devices,
        progress=progress,
    )
    with evaluation_context(loss_of_view, flat, args, opts) as ctx:
        if precision == "float64":
            ctx.check_same_function(
                native_value,
                native_dtype,
                rounding=lambda: _native_noise(
                    loss_of_view, flat, args, native_value, user_x64
                ),
            )
        measured = None
        if precision == "float64" and any(np.finfo(d).eps > 1e-15 for d in dtypes):
            measured = reference_gradient(
                loss_of_view, grad_of_view, ctx.params, ctx.flat, ctx.args_tuple
            )
        if mode == "fast":
            results = check_fast(
                ctx,
                flat,
                selection,
                under_test,
                measured,
                directions=n_directions,
                seed=_seed(key),
                explain=explain,
                check_leaf=functools.partial(
                    check_leaf, rtol=rtol, atol=atol, method=opts.method
                ),
                rtol=rtol,
                atol=atol,
            )
        else:
            for info in flat.checked:
                idx = selection[info.position]
                if idx.size:
                    g = under_test[info.position]
                    g64 = None if measured is None else measured[info.position]
                    results.append(
                        check_leaf(
                            ctx,
                            info,
                            idx,
                            g,
                            g64,
                            rtol=rtol,
                            atol=atol,
                            method=opts.method,
                        )
                    )
        settings = Settings(
            gradient=source,
            reference_dtype=str(ctx.j_dtype),
            rel_step=ctx.rel_step(flat.checked[0]),
            rounding="measured against float64" if measured is not None else "fixed",
            rtol=rtol,
            atol=atol,
            mode=mode,
            directions=n_directions,
            method=method,
        )
    timing = ctx.timing()
    return Report(
        leaves=tuple(results),
        skipped=flat.skipped,
        settings=settings,
        timing=timing,
    )


def assert_grad(
    loss: Callable[..., Any], params: PyTree, *args: Any, **options: Any
) -> Report:
    """Like :func:`check_grad`, but raise :class:`GradCheckError` unless it passes.

    Takes the same arguments and keyword options as :func:`check_grad`.

    Returns:
      The passing ``Report``.

    Raises:
      GradCheckError: an ``AssertionError`` carrying the report (``err.report``)
        whose message is the report's table.

    Example:
      >>> import jax.numpy as jnp, jgradcheck as jgc
      >>> loss = lambda p: jnp.sum(jnp.sin(p) ** 2)
      >>> _ = jgc.assert_grad(loss, jnp.linspace(0.0, 1.0, 5))
      >>> try:
      ...     jgc.assert_grad(loss, jnp.linspace(0.0, 1.0, 5), grad=lambda p: jnp.sin(2 * p) / 2)
      ... except jgc.GradCheckError as e:
      ...     print(e.report.ok, e.report.n_fail)
      False 4
    """
    return raise_unless_ok(check_grad(loss, params, *args, **options))


def numerical_grad(
    loss: Callable[..., Any],
    params: PyTree,
    *args: Any,
    precision: str = "float64",
    with_error: bool = False,
    memory_budget: int | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool | TextIO | None = None,
) -> PyTree | tuple[PyTree, PyTree]:
    """The finite-difference gradient of ``loss`` as a pytree shaped like ``params``.

    Every coordinate is estimated from central differences at steps h, h/2,
    h/4, h/8 with Richardson extrapolation, keeping the estimate with the
    smallest error bar.

    Args:
      loss: ``loss(params, *args)`` returning a real scalar.
      params: a pytree of arrays; non-floating-point leaves get ``None``.
      *args: extra arguments held fixed.
      precision: ``"float64"`` (default) or ``"native"``, as in :func:`check_grad`.
      with_error: also return a pytree of error bars.
      memory_budget: as in :func:`check_grad`.
      devices: as in :func:`check_grad`.
      progress: as in :func:`check_grad`.

    Returns:
      A pytree of NumPy arrays (float64 by default, so the precision survives
      even when JAX's x64 mode is off), or ``(grad, error_bars)``.

    Example:
      >>> import jax.numpy as jnp, jgradcheck as jgc
      >>> g = jgc.numerical_grad(lambda p: jnp.sum(p ** 3), jnp.array([1.0, 2.0]))
      >>> [round(float(v), 6) for v in g]
      [3.0, 12.0]
    """
    check_precision(precision)
    flat = _prepare(loss, params, args)
    values, errors = {}, {}
    opts = Options.build(
        precision=precision,
        memory_budget=memory_budget,
        devices=devices,
        progress=progress,
    )
    with evaluation_context(loss, flat, args, opts) as ctx:
        for info in flat.checked:
            idx = np.arange(info.size)
            sw = ctx.sweep(info, 8 * idx.size, coords=idx.size)
            primed, first = primed_central(ctx, sw, idx)
            est = refined(ctx, sw, idx, first, primed)
            values[info.position] = est.value.reshape(info.shape)
            errors[info.position] = est.error.reshape(info.shape)

    def tree(d: dict[int, np.ndarray]) -> PyTree:
        return flat.rebuild([d.get(i.position) for i in flat.infos])

    grad_tree = tree(values)
    return (grad_tree, tree(errors)) if with_error else grad_tree
