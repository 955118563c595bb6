"""check_hvp: Hessian-vector products through custom rules, with error bars.

Second-order methods, influence functions and sharpness measures need ``H·v``
of a loss. Through a ``jax.custom_vjp`` JAX computes it reverse over reverse
(``jax.grad`` of ``⟨jax.grad(loss), v⟩``): the backward rule is differentiated
as ordinary code, and a rule that is right at first order can be wrong there
(a ``stop_gradient`` inside it, a hand-written bwd whose own derivative is not
the Hessian). ``jax.hessian`` (forward over reverse) raises on a custom_vjp,
so users reach for exactly this product.

The HVP is compared, entry by entry, with Richardson-refined central
differences of ``θ ↦ jax.grad(loss)(θ)`` along ``v`` in float64
(:func:`fd_directional`), judged by :func:`judge` as ``check_grad`` judges a
gradient; then the Hessian's symmetry ``vᵢᵀ(H vⱼ) = vⱼᵀ(H vᵢ)`` is checked for
every pair of directions, allowing the rounding of both dot products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import as_float64
from .._dtypes import eps as eps_of
from .._engine import programs
from .._engine.context import reference_precision, to_float64_args
from .._engine.gradient import loss_output_check
from .._engine.precision import to_effective
from .._engine.tracing import refuse_traced
from .._errors import raise_unless_ok
from .._numerics.rounding import narrowest_dtype
from .._numerics.verdict import FAIL, UNSURE, judge, leaf_scale
from .._pytree.coords import readable, seed_of
from .._pytree.flat import Flat, LeafInfo, flatten_params
from .._report.hvp_records import HvpDirection, Symmetry
from .._report.hvp_report import HvpReport
from .directional import fd_directional, widen
from .recorded import records_call
from .same_derivative import dot, judge_dots

Leaves = list[Any]


class _Loss(NamedTuple):
    """The params flattened, their differentiated leaves ``x`` and ``args``,
    in the dtypes JAX computes them in; :meth:`of` makes ``loss`` a function
    of the list of differentiated leaves."""

    flat: Flat
    x: Leaves
    args: tuple

    def of(self, loss: Callable[..., Any], args: tuple) -> Callable[[Leaves], Any]:
        positions = [i.position for i in self.flat.checked]

        def on_leaves(xs: Leaves) -> Any:
            return loss(self.flat.rebuild_with(dict(zip(positions, xs))), *args)

        return on_leaves


def gradient_of(scalar: Callable[[Leaves], Any]) -> Callable[[Leaves], Leaves]:
    """``θ ↦ jax.grad(loss)(θ)`` over the list of leaves."""
    return jax.grad(scalar)


def hvp_of(scalar: Callable[[Leaves], Any]) -> Callable[[Leaves, Leaves], Leaves]:
    """``(θ, v) ↦ H·v`` reverse over reverse: ``jax.grad`` of ``⟨∇loss(θ), v⟩``."""
    g = gradient_of(scalar)

    def inner(xs: Leaves, v: Leaves) -> Any:
        return sum(jnp.sum(a * b) for a, b in zip(g(xs), v))

    return jax.grad(inner)


def _prepare(loss: Callable[..., Any], params: Any, args: tuple) -> _Loss:
    refuse_traced((params, args), "params")
    # With x64 off JAX computes float64 arrays in float32: judge them so.
    params, args = jax.tree_util.tree_map(to_effective, (params, tuple(args)))
    flat = flatten_params(params)
    if not flat.checked:
        raise ValueError(
            "`params` has no floating-point leaves to differentiate; got "
            + ", ".join(
                f"{i.path or '<root>'} ({i.dtype or i.kind})" for i in flat.infos
            )
        )
    for i in flat.checked:
        if i.kind == "complex":
            raise TypeError(
                f"check_hvp needs real params; leaf {i.path or '<root>'} is {i.dtype}. "
                "Split it into real and imaginary parts."
            )
    loss_output_check(loss, params, args)
    return _Loss(flat, [flat.leaves[i.position] for i in flat.checked], args)


def _direction_row(
    k: int,
    infos: tuple[LeafInfo, ...],
    hvp: Leaves,
    hvp64: Leaves,
    fd: list[Any],
) -> HvpDirection:
    """The verdict for direction ``k`` over every leaf, and its worst entry."""
    n_fail = n_unsure = size = 0
    worst: tuple[float, str, float, float, float, float] = (-1.0, "", 0, 0, 0, 0)
    for info, a_k, a64_k, (est, roundoff) in zip(infos, hvp, hvp64, fd):
        a = as_float64(a_k).reshape(-1)
        n, e = est.value[k].reshape(-1), est.error[k].reshape(-1)
        j = judge(
            a,
            n,
            e,
            roundoff[k].reshape(-1),
            eps_grad=eps_of(info.dtype),
            scale=leaf_scale(n, e),
            rounding=np.abs(a - as_float64(a64_k).reshape(-1)),
        )
        n_fail += int(np.sum(j.status == FAIL))
        n_unsure += int(np.sum(j.status == UNSURE))
        size += a.size
        ratio = np.abs(a - n) / np.maximum(j.tolerance, np.finfo(np.float64).tiny)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        if ratio.size and float(np.max(ratio)) > worst[0]:
            i = int(np.argmax(ratio))
            worst = (float(ratio[i]), info.where(i), a[i], n[i], e[i], j.tolerance[i])
    _, where, a_w, n_w, e_w, t_w = worst
    return HvpDirection(
        k, where, float(a_w), float(n_w), float(e_w), float(t_w), n_fail, n_unsure, size
    )


def symmetry(
    vs: list[Leaves], hv: list[Leaves], hv64: list[Leaves], eps: float
) -> Symmetry | None:
    """``vᵢᵀ(H vⱼ)`` against ``vⱼᵀ(H vᵢ)`` for every pair i < j.

    Each is a dot product: its rounding is relative to the sum of its terms'
    magnitudes, so :func:`judge` gets that sum (of both) as the scale, and the
    HVPs' rounding measured against their float64 re-run, carried through both
    dot products, as the measured rounding. None with one direction.
    """
    worst, out, all_ok = -1.0, None, True
    for i in range(len(vs)):
        for j in range(i + 1, len(vs)):
            left, right = dot(vs[i], hv[j]), dot(vs[j], hv[i])
            r = abs(left.value - dot(vs[i], hv64[j]).value)
            r += abs(right.value - dot(vs[j], hv64[i]).value)
            ok, allowance = judge_dots(left, right, r, eps)
            all_ok &= ok
            diff = abs(left.value - right.value)
            ratio = diff / allowance if allowance > 0 else np.inf * (diff > 0)
            ratio = np.inf if np.isnan(ratio) else ratio
            if ratio > worst:
                worst, out = ratio, (i, j, left.value, right.value, allowance)
    if out is None:
        return None
    pairs = len(vs) * (len(vs) - 1) // 2
    return Symmetry(pairs, (out[0], out[1]), out[2], out[3], out[4], all_ok)


def _directions(flat: Flat, seed: int, count: int) -> list[list[np.ndarray]]:
    """``count`` readable directions, one array per differentiated leaf."""
    return [
        [readable(i.shape, i.dtype, [seed, 4, i.position, k]) for i in flat.checked]
        for k in range(count)
    ]


@records_call
def check_hvp(
    loss: Callable[..., Any],
    params: Any,
    *args: Any,
    directions: int = 2,
    key: Any = 0,
) -> HvpReport:
    """Test Hessian-vector products of ``loss`` through its custom rules.

    ``H·v`` is computed reverse over reverse, ``jax.grad`` of
    ``θ ↦ ⟨jax.grad(loss)(θ), v⟩``, which is how JAX differentiates a
    ``jax.custom_vjp`` twice: its backward rule is differentiated as ordinary
    code. (``jax.hessian`` is forward over reverse and raises on a custom_vjp.)
    A rule that is right at first order can be wrong here: a
    ``stop_gradient`` inside the bwd, or a hand-written bwd whose own
    derivative is not the Hessian.

    For each of ``directions`` random readable directions ``v`` (values
    ±0.01 … ±9.00), every entry of ``H·v`` (at the params' precision) is
    compared with Richardson-refined central differences of
    ``θ ↦ jax.grad(loss)(θ)`` along ``v`` in float64, with their error bar,
    judged by the rule of :func:`check_grad` (ten error bars plus the HVP's
    rounding, measured against its float64 re-run). Then the symmetry of the
    Hessian, ``vᵢᵀ(H vⱼ) = vⱼᵀ(H vᵢ)`` for every pair, allowing 16 ulps of the
    sum of the dot products' |terms| or twice their measured rounding.

    Args:
      loss: ``loss(params, *args)`` returning a real scalar.
      params: a pytree of arrays; floating-point leaves are differentiated,
        others held fixed.
      *args: further arguments of ``loss`` (held fixed).
      directions: how many directions ``v``, at least 1 (2 or more for the
        symmetry check).
      key: int seed or jax.random key for the directions.

    Returns:
      An ``HvpReport`` with ``.ok``, ``.directions`` (one ``HvpDirection``
      each) and ``.symmetry``.

    Raises:
      TypeError, ValueError: bad input (no floating-point params, complex
        params, ``directions`` < 1).

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_vjp
      ... def softplus(x):
      ...     return jnp.logaddexp(x, 0.0)
      >>> softplus.defvjp(lambda x: (softplus(x), x),
      ...                 lambda x, g: (g * jax.nn.sigmoid(x),))
      >>> loss = lambda w, x: jnp.sum(softplus(w * x) ** 2)
      >>> jgc.check_hvp(loss, jnp.array([0.5, -1.0]), jnp.array([1.0, 2.0])).ok
      True
    """
    if isinstance(directions, bool) or not isinstance(directions, (int, np.integer)):
        raise TypeError(
            f"`directions` must be an int; got {type(directions).__name__}."
        )
    if directions < 1:
        raise ValueError(f"`directions` must be at least 1; got {directions}.")
    prep = _prepare(loss, params, args)
    vs_np = _directions(prep.flat, seed_of(key), int(directions))
    hvp = programs.jit(hvp_of(prep.of(loss, prep.args)))
    vs = [[jnp.asarray(v) for v in vk] for vk in vs_np]
    hv = [hvp(prep.x, v) for v in vs]
    with reference_precision("float64"):
        args64 = to_float64_args(prep.args)
        x64 = [widen(v) for v in prep.x]
        scalar64 = prep.of(loss, args64)
        hvp64 = programs.jit(hvp_of(scalar64))
        hv64 = [
            [np.asarray(h) for h in hvp64(x64, [widen(c) for c in v])] for v in vs_np
        ]
        fd = fd_directional(gradient_of(scalar64), x64, vs_np)
    infos = prep.flat.checked
    rows = tuple(
        _direction_row(k, infos, hv[k], hv64[k], fd) for k in range(len(vs_np))
    )
    eps = eps_of(narrowest_dtype(*(v.dtype for v in prep.x)))
    sym = symmetry(vs, hv, hv64, eps)
    how = (
        "16 ulps of each entry's scale, or twice its rounding measured against "
        "the float64 re-run of the same HVP"
    )
    return HvpReport(rows, sym, tuple(i.path or "<root>" for i in infos), how)


def assert_hvp(
    loss: Callable[..., Any], params: Any, *args: Any, **options: Any
) -> HvpReport:
    """:func:`check_hvp`, raising :class:`GradCheckError` unless it passed.

    Args:
      loss: as for :func:`check_hvp`.
      params: as for :func:`check_hvp`.
      *args: as for :func:`check_hvp`.
      **options: as for :func:`check_hvp`.

    Returns:
      The passing ``HvpReport``.

    Raises:
      GradCheckError: a direction or the symmetry check failed (or could not
        be judged); ``error.report`` is the report.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_vjp
      ... def softplus(x):
      ...     return jnp.logaddexp(x, 0.0)
      >>> softplus.defvjp(lambda x: (softplus(x), x),   # bwd blind to its own x:
      ...     lambda x, g: (g * jax.nn.sigmoid(jax.lax.stop_gradient(x)),))
      >>> try:
      ...     jgc.assert_hvp(lambda w: jnp.sum(softplus(w)), jnp.array([0.5, -1.0]))
      ... except jgc.GradCheckError as e:
      ...     print(e.report.ok)
      False
    """
    return raise_unless_ok(check_hvp(loss, params, *args, **options))
