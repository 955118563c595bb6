"""check_jvp / assert_jvp: test a forward-mode rule (typically a jax.custom_jvp)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._engine.context import reference_precision
from .._errors import raise_unless_ok
from .._numerics.stencil import default_step
from .._numerics.verdict import judge, leaf_scale
from .._pytree.coords import _seed
from .._pytree.flat import Flat, LeafInfo
from .._report.records import LeafResult, Settings, Timing
from .._report.report import Report, RuleReport
from .rules import (
    check_per_coordinate,
    check_primal,
    fd_directional,
    fd_options,
    floats,
    held_paths,
    inputs,
    of_floats,
    outputs,
    readable,
    structure,
    wide_np,
)
from .rules import wide as widen


def _real(x: Any) -> np.ndarray:
    """Flattened float64 values; complex ones as (real, imaginary) pairs."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        return np.stack([x.real, x.imag], -1).reshape(-1).astype(np.float64)
    return x.reshape(-1).astype(np.float64)


def _jacobian_row(f, primals, flat: Flat, pos: int, k: int, fd: dict) -> Report:
    """Output entry ``k`` of output leaf ``pos``: the rule's ∂y_k/∂x (jacfwd) vs FD."""

    def loss(args):
        return jax.tree_util.tree_leaves(f(*args))[pos].reshape(-1)[k]

    def row(fl: Flat) -> list[Any]:
        g = of_floats(f, fl)
        return jax.jacfwd(
            lambda xs: jax.tree_util.tree_leaves(g(xs))[pos].reshape(-1)[k]
        )(floats(fl))

    return check_per_coordinate(loss, primals, flat, row, fd)


def _compare(
    out_infos: list[LeafInfo],
    rule: list[np.ndarray],
    rule_ref: list[np.ndarray] | None,
    fd: list[tuple[Any, np.ndarray]],
    p: int,
    settings: Settings,
    evaluations: int,
) -> Report:
    """Rule's J·u against FD(J·u) for direction ``p``, entry by entry, per output leaf."""
    results = []
    for o in out_infos:
        if not o.is_checked:
            continue
        est, r0 = fd[o.position]
        # Complex outputs are compared as (real, imaginary) pairs.
        a = _real(rule[o.position])
        n = _real(est.value[p])
        parts = 2 if np.iscomplexobj(rule[o.position]) else 1
        err = np.repeat(_real(est.error[p]), parts)
        r0p = np.repeat(_real(r0[p]), parts)
        if parts == 2:
            o = o._replace(
                shape=o.shape + (2,), dtype=np.dtype(np.finfo(o.dtype).dtype)
            )
        rounding = None
        if rule_ref is not None:
            rounding = np.abs(a - _real(rule_ref[o.position]))
        v = judge(
            a,
            n,
            err,
            r0p,
            eps_grad=float(np.finfo(o.dtype).eps),
            scale=leaf_scale(n, err),
            rounding=rounding,
        )
        results.append(
            LeafResult(
                info=o,
                idx=np.arange(o.size),
                grad=a,
                numeric=n,
                error_bar=err,
                tolerance=v.tolerance,
                status=v.status,
                step=est.step[p].reshape(-1),
                refined=np.ones(o.size, bool),
                grad_dtype=np.dtype(o.dtype),
            )
        )
    skipped = tuple(o for o in out_infos if not o.is_checked)
    return Report(tuple(results), skipped, settings, Timing(0.0, 0.0, evaluations))


def check_jvp(
    f: Callable[..., Any],
    *primals: Any,
    nondiff_argnums: tuple[int, ...] = (),
    key: Any = 0,
    precision: str = "float64",
    order: int = 1,
    localize: int | None = 100_000,
    rows: int = 3,
    method: str = "auto",
    memory_budget: int | None = None,
    devices: Any = None,
    progress: Any = None,
) -> RuleReport:
    """Test the forward-mode derivative (JVP) of ``f`` at ``primals``.

    Typically ``f`` is a :func:`jax.custom_jvp`. Checks the primal output of
    ``jax.jvp(f)``; the rule's tangent output J·u for a random readable tangent
    ``u`` against Richardson-refined central differences of ``f`` along ``u``,
    entry by entry for every output leaf (so one wrong output coordinate among
    thousands is named); when that fails, the same with the tangent on one input
    leaf at a time, to say which input's tangent is mishandled, and for up to
    ``rows`` failing output entries their row of the Jacobian (``jax.jacfwd``,
    i.e. the rule applied to every basis tangent) against finite differences
    per input coordinate, to name the input index; and structure
    (zero tangent → zero, deterministic, jit = eager, vmap = loop). Tolerances
    come from the finite differences' error bars, never from array sizes.

    Args:
      f: the function whose JVP rule is tested, ``f(*primals)``.
      *primals: its positional arguments (pytrees); floating-point leaves are
        differentiated, the rest held fixed.
      nondiff_argnums: positions of further arguments to hold fixed.
      key: int seed or jax.random key; each input leaf has its own stream.
      precision: ``"float64"`` (default) or ``"native"`` for the differences.
      order: 2 also tests the derivative of the rule itself: ``x ↦ J(x)·u`` is
        checked with check_jvp (result in ``report.second_order``).
      localize: Jacobian rows are checked only when the inputs have at most
        this many coordinates in all (None: always).
      rows: how many failing output entries get their Jacobian row checked.
      method: how the Jacobian rows' finite differences start, as in
        :func:`check_grad` (default ``"auto"``); the tangent comparisons
        always use Richardson extrapolation over four steps.
      memory_budget: as in :func:`check_grad`, for the Jacobian rows' sweeps.
      devices: as in :func:`check_grad`, for the Jacobian rows' sweeps.
      progress: as in :func:`check_grad`, for the Jacobian rows' sweeps.

    Returns:
      A ``RuleReport`` whose ``localized`` reports are per output leaf.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_jvp
      ... def f(x):
      ...     return jnp.sin(x)
      >>> f.defjvp(lambda p, t: (f(p[0]), jnp.cos(p[0]) * t[0]))
      <...>
      >>> jgc.check_jvp(f, jnp.linspace(0.0, 1.0, 5)).ok
      True
    """
    sweeps = fd_options(precision, method, memory_budget, devices, progress)
    if order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2; got {order!r}.")
    flat = inputs(f, primals, tuple(nondiff_argnums))
    g, x = of_floats(f, flat), floats(flat)
    want = f(*flat.rebuild(flat.leaves))
    seed = _seed(key)
    u = [readable(i.shape, i.dtype, [seed, 1, i.position, 0]) for i in flat.checked]
    n_in = len(u)
    directions = [u]
    if n_in > 1:
        directions += [
            [v if k == j else np.zeros_like(v) for k, v in enumerate(u)]
            for j in range(n_in)
        ]

    def rule(xs: list[Any], tan: list[Any]) -> tuple[Any, list[Any]]:
        y, t = jax.jvp(g, (xs,), ([jnp.asarray(v) for v in tan],))
        return y, jax.tree_util.tree_leaves(t)

    y, _ = rule(x, u)
    primal = check_primal("primal", y, want)
    out_infos, _ = outputs(y)
    if not any(o.is_checked for o in out_infos):
        raise ValueError("`f` has no floating-point outputs: there is no JVP to test.")
    wide = precision == "float64"
    with reference_precision(precision):
        x_ref = [widen(v) if wide else v for v in x]
        fd = fd_directional(g, x_ref, directions)
        refs = []
        for d in directions:
            tan = [wide_np(v) if wide else v for v in d]
            refs.append([np.asarray(t) for t in rule(x_ref, tan)[1]] if wide else None)
        ref_dtype = str(np.dtype(jax.tree_util.tree_leaves(fd[0][0].value)[0].dtype))
    settings = Settings(
        gradient="the rule's tangent J·u (jax.jvp)",
        reference_dtype="float64" if wide else ref_dtype,
        rel_step=default_step(np.float64 if wide else x[0].dtype),
        rounding="measured against float64" if wide else "fixed",
        rtol=None,
        atol=None,
    )
    evals = 8 * len(directions)
    localized = []
    for p, d in enumerate(directions):
        if p > 0 and all(rep.ok for _, rep in localized):
            break
        tangent = [np.asarray(t) for t in rule(x, d)[1]]
        rep = _compare(out_infos, tangent, refs[p], fd, p, settings, evals)
        label = (
            "random tangent on every input"
            if p == 0
            else f"tangent on input {flat.checked[p - 1].path} only"
        )
        localized.append((label, rep))
    first = localized[0][1]
    if not first.ok and (localize is None or flat.n_params <= localize):
        by_path = {o.path: o for o in out_infos if o.kind == "float"}
        for e in first.failures()[:rows]:
            if e.path in by_path:
                o = by_path[e.path]
                k = int(np.ravel_multi_index(e.index, o.shape)) if o.shape else 0
                rep = _jacobian_row(f, primals, flat, o.position, k, sweeps)
                localized.append((f"row {e.where} of the Jacobian (jacfwd)", rep))

    probe = [jnp.asarray(v) for v in u]
    zero = [jnp.zeros_like(v) for v in probe]
    jitted = jax.jit(lambda xs, tan: jax.jvp(g, (xs,), (tan,))[1])
    checks = structure(
        "tangent",
        lambda tan: jax.jvp(g, (x,), (tan,))[1],
        lambda tan: jitted(x, tan),
        probe,
        zero,
    )
    second = None
    if order == 2:

        def pushed(*args: Any) -> list[Any]:
            fl = Flat(flat.treedef, tuple(jax.tree_util.tree_leaves(args)), flat.infos)
            xs = floats(fl)
            tangent = [jnp.asarray(v, xi.dtype) for v, xi in zip(u, xs)]
            return jax.tree_util.tree_leaves(
                jax.jvp(of_floats(f, fl), (xs,), (tangent,))[1]
            )

        second = check_jvp(
            pushed,
            *primals,
            nondiff_argnums=nondiff_argnums,
            key=key,
            **sweeps,
        )
    return RuleReport(
        kind="jvp",
        primal=primal,
        dot_tests=(),
        localized=tuple(localized),
        structure=tuple(checks),
        held=held_paths(flat),
        second_order=second,
    )


def assert_jvp(f: Callable[..., Any], *primals: Any, **options: Any) -> RuleReport:
    """Like :func:`check_jvp`, but raise :class:`GradCheckError` unless it passes.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_jvp
      ... def f(x):
      ...     return jnp.exp(x)
      >>> f.defjvp(lambda p, t: (f(p[0]), t[0]))  # forgets the factor exp(x)
      <...>
      >>> try:
      ...     jgc.assert_jvp(f, jnp.array([0.5, 1.0]))
      ... except jgc.GradCheckError as e:
      ...     print(e.report.ok)
      False
    """
    return raise_unless_ok(check_jvp(f, *primals, **options))
