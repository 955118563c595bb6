"""The one pipeline of check_vjp and check_jvp, and the steps they share.

:func:`check_rule` runs the steps of both checks in order: options (one
:class:`~jgradcheck._options.Options`), primals, the rule's primal output,
output leaves, probe directions, directional finite differences at reference
precision, comparisons, structure, order 2 and the report. What differs
between reverse and forward mode (the probe directions, the dot test, the
localisation, the structural probes, the rule's own derivative) is a
:class:`Direction`: :class:`jgradcheck._checks.vjp.VJP` or
:class:`jgradcheck._checks.jvp.JVP`.

Both treat the positional arguments of ``f`` as a pytree of primals (floating
point leaves are differentiated; integer, boolean, key and non-array leaves are
held fixed) and compare the rule with finite differences computed in float64:

* the primal output of the rule against ``f`` itself;
* random, readable cotangents/tangents (``±0.01 … ±9.00``, one seeded stream per
  leaf, never all ones);
* a dot-product test per output leaf: ⟨ȳ, FD(J·u)⟩ against ⟨Jᵀȳ, u⟩ (VJP), or
  FD(J·u) against the rule's J·u entry by entry (JVP), each finite difference
  Richardson-refined with an error bar and judged by :mod:`jgradcheck._numerics.verdict`;
* localisation: for a VJP, the numeric Jᵀȳ for every input coordinate through
  the sweep engine (:func:`jgradcheck.check_grad` on ⟨ȳ, f⟩), one output leaf at
  a time so a bug in one output's cotangent is attributed to that output; for a
  JVP, the failing output entries, and the input leaf whose tangent breaks them;
* structure: zero in gives zero out, the rule is deterministic, ``jit`` and
  eager agree, ``vmap`` over two cotangents/tangents equals a loop, and integer
  inputs receive no cotangent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from .._engine.context import reference_precision
from .._numerics.stencil import (
    Estimate,
    default_step,
    from_values,
    probe_offsets,
    probe_rounding,
    richardson,
)
from .._options import Options
from .._pytree.coords import readable as readable
from .._pytree.coords import seed_of
from .._pytree.flat import Flat, LeafInfo, flatten_params, with_offsets
from .._report.records import Report
from .._report.rule_report import Check, DotTest, RuleReport
from .._typing import PyTree
from .grad import check_grad_with

# ------------------------------------------------------------- the pipeline


class RuleInputs(NamedTuple):
    """The primals of a rule check, flattened, and what every step reads."""

    f: Callable[..., Any]
    """The function whose rule is tested, ``f(*primals)``."""
    primals: tuple
    flat: Flat
    """The primals as one pytree; held leaves have kind ``"held"``."""
    of_floats: Callable[[list[Any]], Any]
    """``f`` as a function of the differentiated leaves (:func:`of_floats`)."""
    floats: list[Any]
    """The differentiated leaves, at the primals' own dtypes."""
    want: PyTree
    """``f(*primals)`` itself, to compare the rule's primal output with."""
    seed: int
    """The int seed of every draw (``key=``)."""
    opts: Options
    """Precision, method and the sweeps' options."""


class RuleRun(NamedTuple):
    """Everything a :class:`Direction` compares, once the pipeline computed it."""

    inputs: RuleInputs
    out_infos: list[LeafInfo]
    """The leaves of ``f``'s output."""
    out_def: Any
    """The treedef of ``f``'s output."""
    directions: list[list[np.ndarray]]
    """The probe directions (one array per differentiated leaf each)."""
    apply: Callable[[Any], Any]
    """The rule at the primals: cotangent ↦ Jᵀȳ (VJP) or tangent ↦ J·u (JVP)."""
    at_reference: list[Any]
    """The differentiated leaves at reference precision."""
    differences: list[tuple[Estimate, np.ndarray]]
    """:func:`fd_directional` along ``directions``, per output leaf."""


class Direction(Protocol):
    """The direction-specific parts of a rule check (reverse or forward mode)."""

    @property
    def kind(self) -> Literal["vjp", "jvp"]:
        """``RuleReport.kind``."""
        ...

    def probe_directions(self, inputs: RuleInputs) -> list[list[np.ndarray]]:
        """Input directions ``u`` along which finite differences of ``f`` run."""
        ...

    def rule_at(
        self, inputs: RuleInputs, directions: list[list[np.ndarray]]
    ) -> tuple[PyTree, Callable[[Any], Any]]:
        """The rule's primal output, and the rule at the primals (``apply``)."""
        ...

    def compare(
        self, run: RuleRun
    ) -> tuple[tuple[DotTest, ...], tuple[tuple[str, Report], ...]]:
        """Dot-product tests, and localised reports (path and index)."""
        ...

    def structure(self, run: RuleRun) -> list[Check]:
        """Zero in gives zero out, determinism, jit, vmap (and direction-specific)."""
        ...

    def derivative(self, run: RuleRun) -> Callable[..., Any]:
        """The rule as a function of the primals, for ``order=2``."""
        ...


def check_order(order: Any) -> int:
    """``order=`` of a rule check: 1 or 2."""
    if order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2; got {order!r}.")
    return int(order)


def check_rule(
    f: Callable[..., Any],
    primals: tuple,
    direction: Direction,
    *,
    nondiff_argnums: tuple[int, ...],
    order: int,
    opts: Options,
) -> RuleReport:
    """Test the rule of ``f`` at ``primals`` in ``direction``'s mode.

    The steps of :func:`jgradcheck.check_vjp` and :func:`jgradcheck.check_jvp`
    (whose docstrings say what is checked); ``opts`` holds ``key`` and the
    options of the finite differences and of the localisation's sweeps.
    """
    check_order(order)
    inputs = rule_inputs(f, primals, nondiff_argnums, opts)
    directions = direction.probe_directions(inputs)
    y, apply = direction.rule_at(inputs, directions)
    primal = check_primal("primal", y, inputs.want)
    out_infos, out_def = outputs(y)
    if not any(o.is_checked for o in out_infos):
        raise ValueError(
            "`f` has no floating-point outputs: there is no "
            f"{direction.kind.upper()} to test."
        )
    with reference_precision(opts.precision):
        at_reference = [
            widen(v) if opts.precision == "float64" else v for v in inputs.floats
        ]
        differences = fd_directional(inputs.of_floats, at_reference, directions)
    run = RuleRun(
        inputs, out_infos, out_def, directions, apply, at_reference, differences
    )
    dot_tests, localized = direction.compare(run)
    checks = direction.structure(run)
    second = None
    if order == 2:
        second = check_rule(
            direction.derivative(run),
            primals,
            direction,
            nondiff_argnums=nondiff_argnums,
            order=1,
            opts=opts,
        )
    return RuleReport(
        kind=direction.kind,
        primal=primal,
        dot_tests=dot_tests,
        localized=localized,
        structure=tuple(checks),
        held=held_paths(inputs.flat),
        second_order=second,
    )


def within(localize: int | None, n: int) -> bool:
    """Whether ``n`` input coordinates are few enough to localise (``localize=``)."""
    return localize is None or n <= localize


# --------------------------------------------------------------- primals


def rule_inputs(
    f: Callable[..., Any],
    primals: tuple,
    nondiff_argnums: tuple[int, ...],
    opts: Options,
) -> RuleInputs:
    """The primals flattened and checked, ``f(*primals)`` and the seed."""
    flat = inputs(f, primals, tuple(nondiff_argnums))
    return RuleInputs(
        f=f,
        primals=tuple(primals),
        flat=flat,
        of_floats=of_floats(f, flat),
        floats=floats(flat),
        want=f(*flat.rebuild(flat.leaves)),
        seed=seed_of(opts.key),
        opts=opts,
    )


def inputs(
    f: Callable[..., Any], args: tuple, nondiff_argnums: tuple[int, ...]
) -> Flat:
    """``args`` as one flattened pytree; ``nondiff_argnums`` leaves are held."""
    if not callable(f):
        raise TypeError(f"`f` must be callable; got {type(f).__name__}.")
    if not args:
        raise ValueError("no primal arguments were given: call check_vjp(f, *primals).")
    for n in nondiff_argnums:
        if not 0 <= n < len(args):
            raise ValueError(
                f"`nondiff_argnums` names argument {n}, but f gets {len(args)} argument(s)."
            )
    flat = flatten_params(tuple(args))
    infos = []
    for info in flat.infos:
        held = info.is_checked and int(info.path[1:].split("]")[0]) in nondiff_argnums
        infos.append(info._replace(kind="held") if held else info)
    flat = Flat(flat.treedef, flat.leaves, with_offsets(infos))
    if not flat.checked:
        raise ValueError(
            "`f` has no floating-point primal inputs to differentiate; got "
            + ", ".join(f"{i.path} ({i.dtype or i.kind})" for i in flat.infos)
        )
    return flat


def of_floats(f: Callable[..., Any], flat: Flat) -> Callable[[list[Any]], Any]:
    """``f`` as a function of the list of differentiated leaves (others fixed)."""
    positions = [i.position for i in flat.checked]

    def on_floats(values: list[Any]) -> Any:
        return f(*flat.rebuild_with(dict(zip(positions, values))))

    return on_floats


def held_paths(flat: Flat) -> tuple[str, ...]:
    """Paths of the inputs that are not differentiated."""
    return tuple(i.path for i in flat.infos if not i.is_checked)


def floats(flat: Flat) -> list[Any]:
    """The differentiated leaves of ``flat``."""
    return [flat.leaves[i.position] for i in flat.checked]


def readable_directions(flat: Flat, seed: int, count: int) -> list[list[np.ndarray]]:
    """``count`` readable input directions (one array per differentiated leaf),
    drawn from the streams ``(seed, 1, leaf position, k)``."""
    return [
        [readable(i.shape, i.dtype, [seed, 1, i.position, k]) for i in flat.checked]
        for k in range(count)
    ]


def widen(x: jax.typing.ArrayLike) -> jax.Array:
    """``x`` as float64 (complex128 if complex): the reference precision.

    Must run where 64-bit types are enabled (:func:`reference_precision`).
    """
    dtype = jnp.complex128 if jnp.iscomplexobj(x) else jnp.float64
    return jnp.asarray(x, dtype)


def widen_np(x: jax.typing.ArrayLike) -> np.ndarray:
    """``x`` as a NumPy float64 (complex128 if complex) array."""
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def outputs(out: PyTree) -> tuple[list[LeafInfo], Any]:
    """The leaves of ``f``'s output, and its treedef."""
    flat_out = flatten_params(out)
    return list(flat_out.infos), flat_out.treedef


def check_primal(name: str, got: Any, want: Any) -> Check:
    g_leaves, w_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    if jax.tree_util.tree_structure(got) != jax.tree_util.tree_structure(want):
        return Check(name, False, "the rule's primal output has a different structure")
    worst = 0.0
    for a, b in zip(g_leaves, w_leaves):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return Check(name, False, f"shape {a.shape} differs from f's {b.shape}")
        if not np.issubdtype(a.dtype, np.inexact):
            if not np.array_equal(a, b):
                return Check(name, False, "integer outputs differ")
            continue
        eps = float(np.finfo(a.dtype).eps)
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        worst = max(worst, diff / (eps * max(scale, 1e-30)))
        if not diff <= 64 * eps * scale:
            return Check(
                name, False, f"max |rule − f| = {diff:.3e} (f's scale {scale:.3e})"
            )
    return Check(name, True, f"agrees with f to {worst:.1f} ulp of its scale")


# ------------------------------------------------------- finite differences


def narrowest_dtype(x: list[Any]) -> np.dtype:
    """The least precise dtype among ``x`` (it bounds the step)."""
    return max((np.dtype(v.dtype) for v in x), key=lambda d: np.finfo(d).eps)


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
    eps = max(float(np.finfo(v.dtype).eps) for v in x)
    xmax = max(float(jnp.max(jnp.abs(v))) if v.size else 0.0 for v in x64)
    umax = [max(float(np.max(np.abs(c))) for c in u) for u in directions]
    h0 = default_step(narrowest_dtype(x)) * max(1.0, xmax)
    P, levels = len(directions), 4
    steps = np.array([[h0 / m / 2.0**k for k in range(levels)] for m in umax])  # [P, L]
    u0 = np.sqrt(eps) * max(1.0, xmax) / np.asarray(umax)
    probes = probe_offsets(u0).T  # [P, 12]
    us = [
        jnp.asarray(np.stack([u[i] for u in directions]), x[i].dtype)
        for i in range(len(x))
    ]

    def at(t, u):
        return g([xi + t * ui for xi, ui in zip(x64, u)])

    ts = np.concatenate([steps, -steps, probes], axis=1)  # [P, 2L + 12]
    f_all = jax.jit(jax.vmap(jax.vmap(at, in_axes=(0, None)), in_axes=(0, 0)))(
        jnp.asarray(ts), us
    )
    leaves = jax.tree_util.tree_leaves(f_all)
    out = []
    for leaf in leaves:
        arr = widen_np(leaf)  # [P, 2L + 12, *shape]
        extra = (1,) * (arr.ndim - 2)
        noise = probe_rounding(np.moveaxis(arr[:, 2 * levels :], 1, 0))
        noise = np.where(np.isfinite(noise), noise, 0.0)
        # One probe per entry can see no rounding by chance: the leaf's median
        # is a floor (its entries come from the same computation).
        noise = np.maximum(noise, np.median(noise)) if noise.size else noise
        ds = []
        for k in range(levels):
            width = (2.0 * steps[:, k]).reshape((P,) + extra)
            ds.append(from_values(arr[:, k], arr[:, levels + k], width, eps, noise))
        out.append((richardson(ds), ds[0].roundoff))
    return out


# ------------------------------------------------------------- structure


def _close(a: Any, b: Any, ulps: float = 64.0) -> tuple[bool, float]:
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype == jax.dtypes.float0 or not np.issubdtype(x.dtype, np.inexact):
            continue
        eps = float(np.finfo(x.dtype).eps)
        scale = max(float(np.max(np.abs(y))) if y.size else 0.0, 1e-30)
        diff = float(np.max(np.abs(x - y))) if x.size else 0.0
        worst = max(worst, diff / (eps * scale))
    return worst <= ulps, worst


def _all_zero(tree: Any) -> bool:
    for x in jax.tree_util.tree_leaves(tree):
        x = np.asarray(x)
        if x.dtype != jax.dtypes.float0 and np.any(x != 0):
            return False
    return True


def structure(
    kind: str,
    apply: Callable[[Any], Any],
    jitted: Callable[[Any], Any],
    probe: Any,
    zero: Any,
) -> list[Check]:
    """Structural checks shared by VJP (probe = ȳ) and JVP (probe = u)."""
    first, second = apply(probe), apply(probe)
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
        for a, b in zip(
            jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second)
        )
    )
    checks = [
        Check(
            f"zero {kind} gives zero",
            _all_zero(apply(zero)),
            "a rule that adds a constant or ignores its input fails this",
        ),
        Check("deterministic", same, "two runs with the same inputs agree bit for bit"),
    ]
    ok, worst = _close(jitted(probe), first)
    checks.append(Check("jit agrees with eager", ok, f"within {worst:.1f} ulp"))
    pair = jax.tree_util.tree_map(lambda a: jnp.stack([a, -0.5 * a]), probe)
    try:
        batched = jax.vmap(apply)(pair)
        loop = [
            apply(jax.tree_util.tree_map(lambda a, k=k: a[k], pair)) for k in range(2)
        ]
        stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *loop)
        ok, worst = _close(batched, stacked)
        checks.append(
            Check(f"vmap over 2 {kind}s equals a loop", ok, f"within {worst:.1f} ulp")
        )
    except Exception as e:  # noqa: BLE001 - a rule that cannot be vmapped is a finding
        checks.append(
            Check(f"vmap over 2 {kind}s equals a loop", False, f"vmap failed: {e}")
        )
    return checks


def check_per_coordinate(
    f_scalar: Callable[..., Any],
    primals: tuple,
    flat: Flat,
    derivative: Callable[[Flat], list[Any]],
    opts: Options,
) -> Report:
    """:func:`check_grad` of ``f_scalar(args)`` over the differentiated leaves.

    ``derivative(fl)`` gives the rule's derivative of ``f_scalar`` for each
    differentiated leaf of ``fl`` (the primals, possibly cast); held leaves get
    zeros and are not swept, fixed and static leaves are left alone. ``opts``:
    the rule check's options (precision, method, memory, devices, progress).
    """

    def grad(args: tuple) -> PyTree:
        fl = Flat(flat.treedef, tuple(jax.tree_util.tree_leaves(args)), flat.infos)
        new = dict(zip([i.position for i in fl.checked], derivative(fl)))
        for i in fl.infos:
            if i.kind == "held":
                new[i.position] = jnp.zeros_like(fl.leaves[i.position])
        return fl.rebuild_with(new)

    mask = flat.rebuild(
        [i.is_checked if i.is_checked or i.kind == "held" else None for i in flat.infos]
    )
    return check_grad_with(
        f_scalar, tuple(primals), (), grad=grad, opts=opts.replace(coords=mask)
    )
