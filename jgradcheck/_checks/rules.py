"""What check_vjp and check_jvp share: primals, draws, directional FD, structure.

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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._numerics.rounding import ENTRY_FLOOR_QUANTILE, rounding_from_probes
from .._numerics.stencil import (
    Estimate,
    default_step,
    from_values,
    probe_offsets,
    probe_rounding,
    richardson,
)
from .._options import METHOD_NAMES, check_precision
from .._pytree.coords import readable as readable
from .._pytree.flat import Flat, LeafInfo, flatten_params, with_offsets
from .._report.records import Report
from .._report.rule_report import Check
from .grad import check_grad

PyTree = Any


# --------------------------------------------------------------- primals


def inputs(
    f: Callable[..., Any], args: tuple, nondiff_argnums: tuple[int, ...]
) -> Flat:
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
    positions = [i.position for i in flat.checked]

    def g(floats: list[Any]) -> Any:
        return f(*flat.replace(dict(zip(positions, floats))))

    return g


def held_paths(flat: Flat) -> tuple[str, ...]:
    """Paths of the inputs that are not differentiated."""
    return tuple(i.path for i in flat.infos if not i.is_checked)


def floats(flat: Flat) -> list[Any]:
    return [flat.leaves[i.position] for i in flat.checked]


def wide(x: Any) -> Any:
    """``x`` as float64 (complex128 if complex): the reference precision."""
    dtype = jnp.complex128 if jnp.iscomplexobj(x) else jnp.float64
    return jnp.asarray(x, dtype)


def wide_np(x: Any) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def outputs(out: Any) -> tuple[list[LeafInfo], Any]:
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


def _widest(x: list[Any]) -> np.dtype:
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
    h0 = default_step(_widest(x)) * max(1.0, xmax)
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
        arr = wide_np(leaf)  # [P, 2L + 12, *shape]
        extra = (1,) * (arr.ndim - 2)
        # Each entry's own probe, floored by the leaf's median (one probe can
        # see no rounding by chance; the entries share one computation).
        noise = rounding_from_probes(
            probe_rounding(np.moveaxis(arr[:, 2 * levels :], 1, 0)),
            quantile=ENTRY_FLOOR_QUANTILE,
            per_entry=True,
        )
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


def fd_options(
    precision: str,
    method: str,
    memory_budget: int | None,
    devices: Any,
    progress: Any,
) -> dict[str, Any]:
    """check_vjp/check_jvp's options for their :func:`check_grad` sweeps, checked."""
    check_precision(precision)
    if method not in METHOD_NAMES:
        raise ValueError(f"`method` must be one of {METHOD_NAMES}; got {method!r}.")
    return dict(
        precision=precision,
        method=method,
        memory_budget=memory_budget,
        devices=devices,
        progress=progress,
    )


def check_per_coordinate(
    f_scalar: Callable[..., Any],
    primals: tuple,
    flat: Flat,
    derivative: Callable[[Flat], list[Any]],
    fd: dict[str, Any],
) -> Report:
    """:func:`check_grad` of ``f_scalar(args)`` over the differentiated leaves.

    ``derivative(fl)`` gives the rule's derivative of ``f_scalar`` for each
    differentiated leaf of ``fl`` (the primals, possibly cast); held leaves get
    zeros and are not swept, fixed and static leaves are left alone. ``fd``:
    :func:`check_grad`'s options (:func:`fd_options`).
    """

    def grad(args: tuple) -> Any:
        fl = Flat(flat.treedef, tuple(jax.tree_util.tree_leaves(args)), flat.infos)
        new = dict(zip([i.position for i in fl.checked], derivative(fl)))
        for i in fl.infos:
            if i.kind == "held":
                new[i.position] = jnp.zeros_like(fl.leaves[i.position])
        return fl.replace(new)

    mask = flat.rebuild(
        [i.is_checked if i.is_checked or i.kind == "held" else None for i in flat.infos]
    )
    return check_grad(f_scalar, tuple(primals), grad=grad, coords=mask, **fd)
