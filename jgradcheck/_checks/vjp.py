"""check_vjp / assert_vjp: test a reverse-mode rule (typically a jax.custom_vjp)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._engine.context import reference_precision
from .._errors import raise_unless_ok
from .._numerics.verdict import judge
from .._pytree.coords import _seed
from .._pytree.flat import Flat, LeafInfo
from .._report.report import Report, RuleReport
from .._report.rule_records import Check, DotTest
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


def _cotangent(
    out_infos: list[LeafInfo], out_def: Any, seed: int, pair: int, only: int | None
):
    leaves = []
    for o in out_infos:
        if not o.is_checked:
            leaves.append(np.zeros(o.shape, jax.dtypes.float0))
        elif only is None or o.position == only:
            leaves.append(
                jnp.asarray(readable(o.shape, o.dtype, [seed, 0, o.position, pair]))
            )
        else:
            leaves.append(jnp.zeros(o.shape, o.dtype))
    return jax.tree_util.tree_unflatten(out_def, leaves)


def _dot(a: list[Any], b: list[np.ndarray]) -> np.ndarray:
    """Σ over input leaves of Re⟨a_i[p], b_i[p]⟩ for each pair p, in float64.

    Re(Σ a·b), without conjugation, is the pairing under which JAX's VJP is
    the transpose of its JVP, for real and complex values alike.
    """
    return sum(
        np.real(np.sum((wide_np(x) * wide_np(y)).reshape(x.shape[0], -1), axis=1))
        for x, y in zip(a, b)
    )


def _dot_tests(
    g, x, vjp_fn, out_infos, out_def, flat: Flat, seed: int, pairs: int, precision
):
    """One DotTest per floating-point output leaf."""
    us = [
        [readable(i.shape, i.dtype, [seed, 1, i.position, p]) for i in flat.checked]
        for p in range(pairs)
    ]
    u_stack = [np.stack([u[k] for u in us]) for k in range(len(flat.checked))]
    wide = precision == "float64"
    with reference_precision(precision):
        x_ref = [widen(v) if wide else v for v in x]
        fd = fd_directional(g, x_ref, us)
        _, vjp_ref = jax.vjp(g, x_ref)
    tests = []
    eps_in = max(float(np.finfo(i.dtype).eps) for i in flat.checked)
    for o in out_infos:
        if not o.is_checked:
            continue
        cts = [
            _cotangent(out_infos, out_def, seed, p, o.position) for p in range(pairs)
        ]
        stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *cts)
        rule = _dot(jax.vmap(vjp_fn)(stacked)[0], u_stack)
        with reference_precision(precision):
            st_ref = jax.tree_util.tree_map(
                lambda c: c if c.dtype == jax.dtypes.float0 or not wide else widen(c),
                stacked,
            )
            rule_ref = _dot(jax.vmap(vjp_ref)(st_ref)[0], u_stack)
        est, r0 = fd[o.position]
        ybar = np.stack(
            [wide_np(jax.tree_util.tree_leaves(c)[o.position]) for c in cts]
        )
        flatten = lambda a: a.reshape(pairs, -1)  # noqa: E731
        numeric = np.real(np.sum(flatten(ybar) * flatten(est.value), axis=1))
        error = np.sum(np.abs(flatten(ybar)) * flatten(est.error), axis=1)
        round0 = np.sum(np.abs(flatten(ybar)) * flatten(r0), axis=1)
        terms = np.sum(np.abs(flatten(ybar) * flatten(est.value)), axis=1)
        v = judge(
            rule,
            numeric,
            error,
            round0,
            eps_grad=eps_in,
            scale=float(terms.max()),
            rounding=np.abs(rule - rule_ref) if wide else None,
        )
        tests.append(DotTest(o.path, rule, numeric, error, v.tolerance, v.status))
    return tests


def _pulled_back(
    f: Callable[..., Any], flat: Flat, ct: Any
) -> Callable[..., list[Any]]:
    """``args ↦ Jᵀ(args)·ct`` through the rule: cotangents of the float leaves."""

    def pull(*args: Any) -> list[Any]:
        fl = Flat(flat.treedef, tuple(jax.tree_util.tree_leaves(args)), flat.infos)
        y, vjp_fn = jax.vjp(of_floats(f, fl), floats(fl))
        cast = jax.tree_util.tree_map(
            lambda c, a: c if c.dtype == jax.dtypes.float0 else c.astype(a.dtype), ct, y
        )
        return vjp_fn(cast)[0]

    return pull


def _localize(
    f, primals, flat: Flat, out_infos, out_def, seed, only: int, fd: dict
) -> Report:
    """check_grad of L(x) = ⟨ȳ, f(x)⟩ against the rule's Jᵀȳ, every input coordinate."""
    ct = _cotangent(out_infos, out_def, seed, 0, only)
    ct_leaf = jax.tree_util.tree_leaves(ct)[only]
    pull = _pulled_back(f, flat, ct)

    def loss(args):
        out = jax.tree_util.tree_leaves(f(*args))[only]
        return jnp.real(jnp.sum(ct_leaf * out))

    return check_per_coordinate(
        loss, primals, flat, lambda fl: pull(*fl.rebuild(fl.leaves)), fd
    )


def _no_cotangent_for_integers(f, flat: Flat, y_ct: Any) -> Check | None:
    """Integer inputs must get float0 (or zero) cotangents from the rule."""
    ints = [i for i in flat.infos if i.kind == "fixed" and i.dtype is not None]
    if not ints:
        return None
    positions = [i.position for i in flat.checked] + [i.position for i in ints]

    def g(arrs):
        return f(*flat.replace(dict(zip(positions, arrs))))

    try:
        _, vjp_all = jax.vjp(g, [flat.leaves[p] for p in positions])
        cts = vjp_all(y_ct)[0][len(flat.checked) :]
    except Exception as e:  # noqa: BLE001 - the rule's error is the finding
        return Check("integer inputs get no cotangent", False, f"vjp raised: {e}")
    bad = [
        i.path
        for i, c in zip(ints, cts)
        if np.asarray(c).dtype != jax.dtypes.float0 and np.any(np.asarray(c) != 0)
    ]
    detail = "nonzero cotangent for " + ", ".join(bad) if bad else "float0 or zeros"
    return Check("integer inputs get no cotangent", not bad, detail)


def check_vjp(
    f: Callable[..., Any],
    *primals: Any,
    nondiff_argnums: tuple[int, ...] = (),
    pairs: int = 4,
    key: Any = 0,
    localize: int | None = 100_000,
    precision: str = "float64",
    order: int = 1,
    method: str = "auto",
    memory_budget: int | None = None,
    devices: Any = None,
    progress: Any = None,
) -> RuleReport:
    """Test the reverse-mode derivative (VJP) of ``f`` at ``primals``.

    Typically ``f`` is a :func:`jax.custom_vjp`; any JAX function works. Checks
    the primal output of ``jax.vjp(f)``; for each floating-point output leaf, a
    dot-product test ⟨ȳ, FD(J·u)⟩ vs ⟨Jᵀȳ, u⟩ on ``pairs`` random readable
    (u, ȳ); the full numeric Jᵀȳ for every input coordinate (finite differences
    of ⟨ȳ, f⟩ through :func:`check_grad`), one output leaf at a time, so a bug
    in one output's cotangent is attributed to that output and pinned to input
    paths and indices; and structure (zero cotangent → zero, deterministic,
    jit = eager, vmap = loop, integer inputs get no cotangent).

    Args:
      f: the function whose VJP rule is tested, ``f(*primals)``.
      *primals: its positional arguments (pytrees). Floating-point leaves are
        differentiated; integer, boolean and non-array leaves are held fixed.
      nondiff_argnums: positions of further arguments to hold fixed.
      pairs: random (u, ȳ) pairs per output leaf for the dot-product test.
      key: int seed or jax.random key; each leaf has its own stream.
      localize: localise every output whose inputs have at most this many
        coordinates in all (None: always); outputs whose dot-product test
        fails are always localised.
      precision: ``"float64"`` or ``"native"`` for the finite differences.
      order: 2 also tests the derivative of the rule itself (for rules that
        will be differentiated again): ``x ↦ Jᵀ(x)·ȳ`` is checked with
        check_vjp against finite differences of the rule's own output; the
        result is in ``report.second_order``.
      method: how the localisation's finite differences start, as in
        :func:`check_grad` (default ``"auto"``); the dot-product tests always
        use Richardson extrapolation over four steps.
      memory_budget: as in :func:`check_grad`, for the localisation sweeps.
      devices: as in :func:`check_grad`, for the localisation sweeps.
      progress: as in :func:`check_grad`, for the localisation sweeps.

    Returns:
      A ``RuleReport``.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_vjp
      ... def softplus(x):
      ...     return jnp.logaddexp(x, 0.0)
      >>> softplus.defvjp(lambda x: (softplus(x), x),
      ...                 lambda x, g: (g * jax.nn.sigmoid(x),))
      >>> jgc.check_vjp(softplus, jnp.linspace(-3.0, 3.0, 7)).ok
      True
    """
    sweeps = fd_options(precision, method, memory_budget, devices, progress)
    if not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"`pairs` must be a positive int; got {pairs!r}.")
    if order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2; got {order!r}.")
    flat = inputs(f, primals, tuple(nondiff_argnums))
    g, x = of_floats(f, flat), floats(flat)
    want = f(*flat.rebuild(flat.leaves))
    y, vjp_fn = jax.vjp(g, x)
    primal = check_primal("primal", y, want)
    out_infos, out_def = outputs(y)
    if not any(o.is_checked for o in out_infos):
        raise ValueError("`f` has no floating-point outputs: there is no VJP to test.")
    seed = _seed(key)
    dots = _dot_tests(g, x, vjp_fn, out_infos, out_def, flat, seed, pairs, precision)

    n_in = flat.n_params
    localized = []
    for o, d in zip([o for o in out_infos if o.is_checked], dots):
        if localize is None or n_in <= localize or not d.ok:
            rep = _localize(
                f, primals, flat, out_infos, out_def, seed, o.position, sweeps
            )
            localized.append((f"cotangent on output {o.path or '<root>'} only", rep))

    probe = _cotangent(out_infos, out_def, seed, 0, None)
    zero = jax.tree_util.tree_map(
        lambda c: c if c.dtype == jax.dtypes.float0 else jnp.zeros_like(c), probe
    )
    jitted = jax.jit(lambda xs, ct: jax.vjp(g, xs)[1](ct))
    checks = structure(
        "cotangent", lambda ct: vjp_fn(ct), lambda ct: jitted(x, ct), probe, zero
    )
    ints = _no_cotangent_for_integers(f, flat, probe)
    if ints is not None:
        checks.append(ints)
    second = None
    if order == 2:
        second = check_vjp(
            _pulled_back(f, flat, probe),
            *primals,
            nondiff_argnums=nondiff_argnums,
            pairs=pairs,
            key=key,
            localize=localize,
            **sweeps,
        )
    return RuleReport(
        kind="vjp",
        primal=primal,
        dot_tests=tuple(dots),
        localized=tuple(localized),
        structure=tuple(checks),
        held=held_paths(flat),
        second_order=second,
    )


def assert_vjp(f: Callable[..., Any], *primals: Any, **options: Any) -> RuleReport:
    """Like :func:`check_vjp`, but raise :class:`GradCheckError` unless it passes.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_vjp
      ... def cube(x):
      ...     return x ** 3
      >>> cube.defvjp(lambda x: (cube(x), x), lambda x, g: (2 * g * x ** 2,))  # 3, not 2
      >>> try:
      ...     jgc.assert_vjp(cube, jnp.array([1.0, 2.0]))
      ... except jgc.GradCheckError as e:
      ...     print(e.report.ok)
      False
    """
    return raise_unless_ok(check_vjp(f, *primals, **options))
