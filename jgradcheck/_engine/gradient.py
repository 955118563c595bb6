"""The gradient under test: from ``jax.grad`` or a user's ``grad=``, validated."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._dtypes import eps, is_inexact, is_real_float, narrowest_along
from .._errors import where_list
from .._pytree.flat import Flat, describe_paths, split_static
from . import programs
from .tracing import trace_shape


def loss_output_check(loss: Callable[..., Any], params: Any, args: tuple) -> Any:
    """Trace ``loss`` once (no FLOPs) and insist on a real scalar output."""
    if not callable(loss):
        raise TypeError(f"`loss` must be callable; got {type(loss).__name__}.")
    out = trace_shape(lambda: loss(params, *args), "loss")
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(
            "`loss` must return a scalar array; it returned a "
            f"{type(out).__name__}. If it returns (loss, aux), wrap it: "
            "`lambda p, *a: loss(p, *a)[0]`."
        )
    if out.shape != ():
        raise ValueError(
            f"`loss` must return a scalar; it returned shape {out.shape}. "
            "Reduce it, e.g. with `.sum()` or `.mean()`."
        )
    if not is_real_float(out.dtype):
        raise TypeError(
            f"`loss` must return a real floating-point scalar; it returned {out.dtype}."
        )
    return out


def refuse_unless_callable_as(fn: Callable[..., Any], name: str, n: int) -> None:
    """Refuse ``fn`` (the ``name=`` argument) unless it takes ``n`` positional
    arguments, as ``loss`` does: ``fn(params, *args)``.

    Functions whose signature Python cannot read (some builtins) pass.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(n))
    except TypeError as e:
        shown = "params" + "".join(f", args[{k}]" for k in range(n - 1))
        raise TypeError(
            f"`{name}` is called as `{name}({shown})`, like `loss`, with the "
            f"{n - 1} extra positional argument(s) given to the check; but "
            f"`{name}{signature}` cannot take them ({e}). The fix is to give "
            f"`{name}` the same signature as `loss`, e.g. "
            f"`lambda params, *args: ...`."
        ) from None


def _compiled(fn: Callable[..., Any], *operands: Any) -> Any:
    """``jax.jit(fn)(*operands)``, or ``fn(*operands)`` where jit cannot trace it.

    One compile of the whole function is several times faster on a first call
    than eager execution, which compiles every primitive separately (about
    1 s against 0.15 s for the 26k-parameter MLP of bench/). A function that
    jit cannot trace (Python control flow on values, in a custom rule) runs
    eagerly; an error of its own is then raised from there.
    """
    try:
        return programs.call(fn, *operands)
    except Exception:  # noqa: BLE001 - retried eagerly, which raises real errors
        return fn(*operands)


def _call_compiled(fn: Callable[..., Any], *call_args: Any) -> Any:
    """``fn(*call_args)`` compiled with their array leaves as operands (other
    leaves, such as strings or functions, are closed over): see
    :func:`_compiled`. A hand-written gradient written with NumPy, or with
    Python control flow on values, runs eagerly."""
    split = split_static(call_args)
    return _compiled(lambda dynamic: fn(*split.merge(dynamic)), split.dynamic)


def _of_floats(
    loss: Callable[..., Any], flat: Flat, args: tuple
) -> tuple[Callable[..., Any], list[Any], Any]:
    """``(f(float leaves, array args), float leaves, array args)``: the loss
    as a function of what jit may trace; other leaves and args closed over."""
    positions = [i.position for i in flat.checked]
    rest = split_static(tuple(args))

    def f(float_leaves: list[Any], adyn: Any) -> Any:
        return loss(
            flat.rebuild_with(dict(zip(positions, float_leaves))), *rest.merge(adyn)
        )

    return f, [flat.leaves[p] for p in positions], rest.dynamic


def evaluate(loss: Callable[..., Any], flat: Flat, args: tuple) -> Any:
    """``loss(params, *args)``, compiled (see :func:`_compiled`)."""
    f, floats, adyn = _of_floats(loss, flat, args)
    return _compiled(f, floats, adyn)


def loss_jaxpr(loss: Callable[..., Any], flat: Flat, args: tuple) -> tuple[Any, Any]:
    """``(jaxpr, output shape)`` of the loss as a function of its float leaves
    (the jaxpr's first inputs, in ``flat.checked`` order) and its array args;
    traced once, no FLOPs, under the current x64 setting."""
    f, floats, adyn = _of_floats(loss, flat, args)
    return jax.make_jaxpr(f, return_shape=True)(floats, adyn)


def path_dtypes(jaxpr: Any, flat: Flat) -> dict[int, np.dtype]:
    """``{position: dtype}`` for each float leaf that the loss (its
    :func:`loss_jaxpr`) computes with in a real float dtype less precise than
    the leaf's own: ``p.astype(jnp.float32)`` of a float64 leaf,
    ``x.astype(jnp.bfloat16)`` of a float32 one. That is the precision the
    leaf's contribution to J, and its gradient, really round at. Leaves
    computed at their own precision (or wider) are not listed."""
    n = len(flat.checked)
    owns = [np.dtype(v.aval.dtype) for v in jaxpr.jaxpr.invars[:n]]
    out = {}
    for info, own, dtype in zip(flat.checked, owns, narrowest_along(jaxpr, n)):
        if dtype is not None and is_real_float(own) and eps(dtype) > eps(own):
            out[info.position] = dtype
    return out


def value_and_gradient(
    loss: Callable[..., Any],
    flat: Flat,
    args: tuple,
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
) -> tuple[Any, dict[int, Any]]:
    """``jax.value_and_grad(loss)`` with respect to the floating-point leaves,
    compiled (see :func:`_compiled`): ``(J, {position: gradient leaf})``.

    ``wrap`` transforms the loss (as a function of its float leaves and array
    args) before it is differentiated (e.g. custom rules inlined)."""
    f, floats, adyn = _of_floats(loss, flat, args)
    value, grads = _compiled(jax.value_and_grad(wrap(f) if wrap else f), floats, adyn)
    return value, dict(zip([i.position for i in flat.checked], grads))


def autodiff_gradient(
    loss: Callable[..., Any],
    flat: Flat,
    args: tuple,
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
) -> dict[int, Any]:
    """``jax.grad(loss)`` with respect to the floating-point leaves only."""
    return value_and_gradient(loss, flat, args, wrap)[1]


def user_gradient(
    grad: Callable[..., Any], params: Any, flat: Flat, args: tuple
) -> dict[int, Any]:
    """Call the user's ``grad(params, *args)`` and check it is shaped like ``params``."""
    if not callable(grad):
        raise TypeError(f"`grad` must be callable; got {type(grad).__name__}.")
    refuse_unless_callable_as(grad, "grad", 1 + len(args))
    out = _call_compiled(grad, params, *args)
    try:
        leaves = flat.treedef.flatten_up_to(out)
    except (ValueError, TypeError):
        want, got = describe_paths(params), describe_paths(out)
        missing = [p for p in want if p not in got]
        extra = [p for p in got if p not in want]
        lines = [
            "`grad` returned a pytree whose structure differs from `params`.",
            f"  params: {flat.treedef}",
            f"  grad:   {jax.tree_util.tree_structure(out)}",
        ]
        if missing:
            lines.append(f"  missing from grad: {where_list(missing)}")
        if extra:
            lines.append(f"  not in params:     {where_list(extra)}")
        lines.append("Return a pytree with the same containers and keys as `params`.")
        raise ValueError("\n".join(lines)) from None
    problems = []
    result = {}
    for info, g in zip(flat.infos, leaves):
        if not info.is_checked:
            continue
        name = info.path or "<root>"
        if g is None:
            problems.append(
                f"{name}: got None, expected an array of shape {info.shape}"
            )
            continue
        if isinstance(g, (int, float)) and not isinstance(g, bool):
            g = np.asarray(g, info.dtype)  # a Python number, at its leaf's dtype
        shape = tuple(np.shape(g))
        if shape == info.shape:
            dtype = getattr(g, "dtype", np.asarray(g).dtype)
            if not is_inexact(dtype):
                problems.append(
                    f"{name}: dtype {dtype}, expected a floating-point array"
                )
                continue
            result[info.position] = g
        elif len(shape) == 2 and shape == info.shape[::-1]:
            problems.append(
                f"{name}: shape {shape} is the transpose of the parameter's shape "
                f"{info.shape}; the gradient is probably computed as (δᵀ·a) instead of "
                "(aᵀ·δ): return its transpose (`.T`)"
            )
        else:
            problems.append(f"{name}: shape {shape}, expected {info.shape}")
    if problems:
        raise ValueError(
            "`grad` returned leaves that do not match `params`:\n  "
            + "\n  ".join(problems)
        )
    return result


def nonfinite_places(
    flat: Flat, grads: dict[int, Any], held: dict[int, np.ndarray] | None = None
) -> list[str]:
    """Paths and indices of NaN/inf entries of a gradient (outside ``held``:
    entries of the params held fixed)."""
    places = []
    for info in flat.checked:
        arr = np.asarray(grads[info.position]).reshape(-1)
        bad = ~np.isfinite(arr)
        if held and info.position in held:
            bad[held[info.position]] = False
        for k in np.flatnonzero(bad)[:20]:
            places.append(f"{info.where(int(k))} = {arr[k]}")
    return places


def reference_gradient(
    loss: Callable[..., Any],
    grad: Callable[..., Any] | None,
    params: Any,
    flat: Flat,
    args: tuple,
    known: dict[int, Any] | None = None,
) -> dict[int, np.ndarray] | None:
    """The gradient under test recomputed from reference-precision inputs.

    Its difference from the gradient under test is that gradient's own rounding
    error, measured rather than guessed. Returns None when the gradient function
    cannot run at the reference precision (then a fixed allowance is used).
    ``known``: ``jax.grad(loss)`` at these inputs, already computed
    (:attr:`jgradcheck._engine.context.EvalContext.gradient`).
    """
    try:
        if grad is None and known is not None:
            g = known
        elif grad is None:
            g = autodiff_gradient(loss, flat, args)
        else:
            g = user_gradient(grad, params, flat, args)
        out = {pos: np.asarray(v, np.float64).reshape(-1) for pos, v in g.items()}
    except Exception:  # noqa: BLE001 - optional measurement; fall back quietly
        return None
    if not all(np.all(np.isfinite(v)) for v in out.values()):
        return None
    return out


class Pullback:
    """``jax.vjp(fn, xs)``'s pullback, compiled: ``ct ↦ Jᵀ(xs)·ct`` as one
    program (re-running the forward pass inside it), instead of one compile
    per primitive of the backward pass, once per shape, as eager execution
    does. Under ``jax.vmap`` it compiles once for the batch. A rule that jit
    cannot trace runs eagerly (its own error, if any, is raised from there).
    Call it in the x64 scope it was made in.
    """

    def __init__(self, fn: Callable[..., Any], xs: Any) -> None:
        self._fn, self._xs = fn, xs
        self._pull = programs.Function(lambda xs, ct: jax.vjp(fn, xs)[1](ct))
        self._eager: Callable[..., Any] | None = None

    def __call__(self, ct: Any) -> Any:
        if self._eager is None:
            try:
                return self._pull(self._xs, ct)
            except Exception:  # noqa: BLE001 - retried eagerly, which raises real errors
                self._eager = jax.vjp(self._fn, self._xs)[1]
        return self._eager(ct)


class Pushforward:
    """``(xs, tangent) ↦ jax.jvp(fn, (xs,), (tangent,))`` compiled once per
    shape (see :class:`Pullback`); eager where jit cannot trace ``fn``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._push = programs.Function(lambda xs, t: jax.jvp(fn, (xs,), (t,)))
        self._eager = False

    def __call__(self, xs: Any, tangent: Any) -> tuple[Any, Any]:
        if not self._eager:
            try:
                return self._push(xs, tangent)
            except Exception:  # noqa: BLE001 - retried eagerly, which raises real errors
                self._eager = True
        return jax.jvp(self._fn, (xs,), (tangent,))
