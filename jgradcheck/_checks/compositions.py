"""check_compositions: is a rule's derivative the same under JAX's transformations?

A rule that is right eagerly can break under a transformation that traces it
differently: a callback that reduces over a batch axis it cannot see, a NumPy
call that needs concrete values. The grid runs the rule's derivative (Jᵀȳ for
a VJP, J·u for a JVP) under each and compares it with the same derivative run
eagerly, point by point. No finite differences: the reference is the rule
itself, so the allowance is its rounding alone (:func:`judge` with the error
bar 0 and the rule's rounding measured against its float64 re-run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from .._engine.precision import to_effective
from .._errors import raise_unless_ok
from .._pytree.coords import seed_of
from .._report.composition_records import Composition
from .._report.composition_report import CompositionReport
from .._report.rule_records import RuleKind
from .composition_points import Grid, build_grid, derivative
from .recorded import records_call
from .rules import floats, inexact_outputs, inputs, of_floats
from .same_derivative import compare, dot, error_line, float64_leaves, judge_dots, stack


def _row(name: str, run: Callable[[], Any], want: Any, rounding: Any) -> Composition:
    try:
        got = run()
    except Exception as e:  # noqa: BLE001 - a composition that raises is a finding
        return Composition(name, "FAIL", error_line(e))
    ok, detail = compare(got, want, rounding)
    return Composition(name, "ok" if ok else "FAIL", detail)


def _batched_rows(grid: Grid) -> list[Composition]:
    """jit, vmap, scan and checkpoint of the derivative; shard_map if it can."""
    D, xs, ps = grid.D, grid.xs, grid.probes
    want, r = grid.stacked()
    n = len(xs)

    def scanned() -> Any:
        body = lambda c, xp: (c, D(*xp))  # noqa: E731
        return jax.lax.scan(body, None, (stack(xs), stack(ps)))[1]

    remat = jax.jit(derivative(grid.kind, jax.checkpoint(grid.g)))
    rows = [
        _row(
            "jit", lambda: jax.jit(D)(xs[0], ps[0]), grid.base[0], grid.first_rounding()
        ),
        _row(
            f"vmap over {n} points",
            lambda: jax.jit(jax.vmap(D))(stack(xs), stack(ps)),
            want,
            r,
        ),
        _row(f"lax.scan over {n} points", scanned, want, r),
        _row(
            "jax.checkpoint",
            lambda: remat(xs[0], ps[0]),
            grid.base[0],
            grid.first_rounding(),
        ),
    ]
    devices = jax.devices()
    if len(devices) < 2:
        rows.append(Composition("shard_map", "skipped", "one device visible"))
        return rows
    mesh = Mesh(np.array(devices), ("points",))
    spec = PartitionSpec("points")
    sharded = jax.jit(
        jax.shard_map(jax.vmap(D), mesh=mesh, in_specs=spec, out_specs=spec)
    )
    name = f"shard_map over {len(devices)} devices"
    rows.append(_row(name, lambda: sharded(stack(xs), stack(ps)), want, r))
    return rows


def _cross_row(
    grid: Grid, name: str, run: Callable[[], Any], dot_with: Any | None
) -> Composition:
    """A row that computes the derivative another way: entry by entry against
    the eager derivative (``dot_with`` None), or as the other side of
    ⟨ȳ, J·u⟩ (``dot_with``: what its result is dotted with)."""
    try:
        got = run()
    except Exception as e:  # noqa: BLE001 - JAX refusing is a finding or a fact
        if "custom_vjp" in str(e):
            return Composition(
                name,
                "not defined",
                "JAX defines no forward mode of a jax.custom_vjp (it raises "
                f"{type(e).__name__}: can't apply forward-mode autodiff)",
            )
        return Composition(name, "FAIL", error_line(e))
    base, r0 = grid.base[0], grid.first_rounding()
    if dot_with is None:
        ok, detail = compare(got, base, r0)
        return Composition(name, "ok" if ok else "FAIL", detail)
    other = grid.tangents[0] if grid.kind == "vjp" else grid.cotangents[0]
    rr = None
    if r0 is not None:
        rr = sum(
            float(np.sum(r * np.abs(o))) for r, o in zip(r0, float64_leaves(other))
        )
    what = "⟨ȳ, J·u⟩" if grid.kind == "vjp" else "⟨Jᵀȳ, u⟩"
    lhs, rhs = dot(got, dot_with), dot(base, other)
    ok, allowance = judge_dots(lhs, rhs, rr, grid.eps)
    detail = (
        f"{what} = {lhs.value:.6g} against {rhs.value:.6g} eagerly: "
        f"|Δ| {abs(lhs.value - rhs.value):.2e}, allowance {allowance:.2e}"
    )
    return Composition(name, "ok" if ok else "FAIL", detail)


def _cross_rows(grid: Grid) -> list[Composition]:
    """The derivative by the other modes: jvp, linearize, linear_transpose, vjp."""
    g, x0, u0, y0 = grid.g, grid.xs[0], grid.tangents[0], grid.cotangents[0]

    def linearized(u: Any) -> Any:
        return jax.linearize(g, x0)[1](u)

    def transposed() -> Any:
        return jax.linear_transpose(jax.linearize(g, x0)[1], x0)(y0)[0]

    if grid.kind == "vjp":
        return [
            _cross_row(
                grid, "jvp (forward mode)", lambda: jax.jvp(g, (x0,), (u0,))[1], y0
            ),
            _cross_row(grid, "jax.linearize", lambda: linearized(u0), y0),
            _cross_row(grid, "jax.linear_transpose", transposed, None),
        ]
    return [
        _cross_row(grid, "jax.linearize", lambda: linearized(u0), None),
        _cross_row(grid, "jax.linear_transpose", transposed, u0),
        _cross_row(grid, "vjp (reverse mode)", lambda: jax.vjp(g, x0)[1](y0)[0], u0),
    ]


def _kind_of(f: Any, kind: Any) -> RuleKind:
    if kind == "auto":
        return "jvp" if isinstance(f, jax.custom_jvp) else "vjp"
    if kind not in ("vjp", "jvp"):
        raise ValueError(f'`kind` must be "auto", "vjp" or "jvp"; got {kind!r}.')
    return kind


@records_call
def check_compositions(
    f: Callable[..., Any],
    *primals: Any,
    nondiff_argnums: tuple[int, ...] = (),
    kind: str = "auto",
    batch: int = 3,
    key: Any = 0,
) -> CompositionReport:
    """Test that a rule's derivative is the same under JAX's transformations.

    The derivative of ``f`` (``Jᵀȳ`` through its VJP, or ``J·u`` through its
    JVP) is computed eagerly at ``batch`` input points (the primals, then
    each entry moved by 3%, 6%, … of itself), then under each composition,
    one row each:

    * ``jit``; ``vmap`` over the points (compiled, as in a training step)
      and ``lax.scan`` over them (the rule called inside a scan body), both
      against the eager loop; ``jax.checkpoint`` (remat) of ``f``, compiled;
    * the other modes: for a VJP, ``jax.jvp``, ``jax.linearize`` and
      ``jax.linear_transpose`` of the linearization (compared through
      ⟨ȳ, J·u⟩ = ⟨Jᵀȳ, u⟩, or entry by entry). JAX defines no forward mode for
      a ``jax.custom_vjp``: those rows say ``not defined`` and do not fail.
      For a JVP: ``jax.linearize``, its transpose and ``jax.vjp``;
    * ``shard_map`` over the points when more than one device is visible
      (``skipped`` otherwise).

    The reference is the rule itself, run eagerly, so the allowance is its
    rounding only: 16 ulps of each entry's scale, or twice its rounding
    measured against its own float64 re-run (capped at 2⁻¹⁰ of the scale),
    the verdict of :func:`check_grad` with a zero error bar. A composition
    that raises fails with the error. This is not a check of the rule against
    finite differences: run :func:`check_vjp` / :func:`check_jvp` for that.

    Args:
      f: the function whose rule is tested, ``f(*primals)``; typically a
        ``jax.custom_vjp`` or ``jax.custom_jvp``.
      *primals: its positional arguments (pytrees). Floating-point leaves are
        differentiated; integer, boolean and non-array leaves are held fixed.
      nondiff_argnums: positions of further arguments to hold fixed.
      kind: ``"vjp"``, ``"jvp"`` or ``"auto"`` (``"jvp"`` for a
        ``jax.custom_jvp``, else ``"vjp"``): which derivative the rows run.
      batch: input points for vmap, scan and shard_map, at least 2 (rounded
        up to a multiple of the device count for shard_map).
      key: int seed or jax.random key for the points, ȳ and u.

    Returns:
      A ``CompositionReport`` with ``.ok``, ``.rows`` and ``.row(name)``.

    Raises:
      ValueError, TypeError: bad input, or a derivative that fails eagerly.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_vjp
      ... def softplus(x):
      ...     return jnp.logaddexp(x, 0.0)
      >>> softplus.defvjp(lambda x: (softplus(x), x),
      ...                 lambda x, g: (g * jax.nn.sigmoid(x),))
      >>> report = jgc.check_compositions(softplus, jnp.array([-1.0, 0.5, 2.0]))
      >>> report.ok, report.row("vmap").status, report.row("jvp").status
      (True, 'ok', 'not defined')
    """
    rule_kind = _kind_of(f, kind)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 2:
        raise ValueError(f"`batch` must be an int of at least 2; got {batch!r}.")
    # With x64 off JAX computes float64 arrays in float32: judge them so.
    primals = tuple(jax.tree_util.tree_map(to_effective, tuple(primals)))
    flat = inputs(f, primals, tuple(nondiff_argnums))
    for i in flat.checked:
        if i.kind == "complex":
            raise TypeError(
                f"check_compositions compares real derivatives; input {i.path} is "
                f"{i.dtype}. Split it into real and imaginary parts."
            )
    f_out, want, _ = inexact_outputs(f, f(*flat.rebuild(flat.leaves)))
    n_dev = len(jax.devices())
    count = batch if n_dev < 2 else -(-batch // n_dev) * n_dev
    grid = build_grid(
        of_floats(f_out, flat), floats(flat), want, rule_kind, seed_of(key), count
    )
    rows = _batched_rows(grid) + _cross_rows(grid)
    return CompositionReport(rule_kind, tuple(rows), count, grid.how)


def assert_compositions(
    f: Callable[..., Any], *primals: Any, **options: Any
) -> CompositionReport:
    """:func:`check_compositions`, raising :class:`GradCheckError` unless it passed.

    Args:
      f: as for :func:`check_compositions`.
      *primals: as for :func:`check_compositions`.
      **options: as for :func:`check_compositions`.

    Returns:
      The passing ``CompositionReport``.

    Raises:
      GradCheckError: a row FAILed; ``error.report`` is the report.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> _ = jgc.assert_compositions(jnp.sin, jnp.array([0.5, 1.0]))
    """
    return raise_unless_ok(check_compositions(f, *primals, **options))
