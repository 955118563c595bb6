"""Structural checks of a rule: its primal output, zero in gives zero out,
determinism, ``jit`` against eager, ``vmap`` against a loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._dtypes import as_float64, is_inexact, on_device
from .._dtypes import eps as eps_of
from .._report.rule_records import Check


def check_primal(name: str, got: Any, want: Any) -> Check:
    g_leaves, w_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    same_structure: bool = jax.tree_util.tree_structure(
        got
    ) == jax.tree_util.tree_structure(want)  # type: ignore[operator]
    if not same_structure:
        return Check(name, False, "the rule's primal output has a different structure")
    worst = 0.0
    for a, b in zip(g_leaves, w_leaves):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return Check(name, False, f"shape {a.shape} differs from f's {b.shape}")
        if not is_inexact(a.dtype):
            if not np.array_equal(a, b):
                return Check(name, False, "integer outputs differ")
            continue
        eps = eps_of(a.dtype)
        a, b = as_float64(a), as_float64(b)
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        worst = max(worst, diff / (eps * max(scale, 1e-30)))
        if not diff <= 64 * eps * scale:
            return Check(
                name, False, f"max |rule − f| = {diff:.3e} (f's scale {scale:.3e})"
            )
    return Check(name, True, f"agrees with f to {worst:.1f} ulp of its scale")


def _close(a: Any, b: Any, ulps: float = 64.0) -> tuple[bool, float]:
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype == jax.dtypes.float0 or not is_inexact(x.dtype):
            continue
        eps = eps_of(x.dtype)
        x, y = as_float64(x), as_float64(y)
        scale = max(float(np.max(np.abs(y))) if y.size else 0.0, 1e-30)
        diff = float(np.max(np.abs(x - y))) if x.size else 0.0
        worst = max(worst, diff / (eps * scale))
    return worst <= ulps, worst


def _host_rows(a: np.ndarray, n: int) -> np.ndarray:
    """``[a, -a/2, a/4, -a/8, …]`` (``n`` rows) in ``a``'s dtype: scaling by
    a power of two is exact."""
    scales = [(-0.5) ** k for k in range(n)]
    return np.stack([(a * s).astype(a.dtype) for s in scales])


def _all_zero(tree: Any) -> bool:
    for x in jax.tree_util.tree_leaves(tree):
        x = np.asarray(x)
        if x.dtype != jax.dtypes.float0 and np.any(x != 0):
            return False
    return True


EAGER_BUDGET = 100
"""Most distinct operations the eager leg of "jit agrees with eager" runs.

Eagerly, JAX compiles every operation of a new shape or parameters on its own
(0.02-0.1 s each on a CPU), so the eager leg of a rule built from many
differently shaped steps costs far more than the check itself (the VJP of
``lax.cumprod`` at n=300, an associative scan of 160 distinct operations:
22 s eagerly against 1 s compiled on a loaded 2-core CPU; typical rules run
5-50). Above the budget the comparison is not run, and the report says so
(``Check.ran`` is False); the compiled rule is still checked by every other
step."""


def eager_operations(fn: Callable[[Any], Any], probe: Any) -> int:
    """How many distinct operations ``fn(probe)`` runs eagerly: equations of its
    jaxpr that differ in primitive, input types or parameters, custom rules'
    bodies included (eagerly they run op by op), a nested ``jit``, loop or
    branch counted once (it is compiled as a whole)."""
    jaxpr = jax.make_jaxpr(fn)(probe).jaxpr
    seen: set[tuple[str, str, str]] = set()
    _distinct(jaxpr, seen)
    return len(seen)


def _distinct(jaxpr: Any, seen: set[tuple[str, str, str]]) -> None:
    for eqn in jaxpr.eqns:
        inner = eqn.params.get("call_jaxpr")
        if eqn.primitive.name.startswith("custom_") and inner is not None:
            _distinct(getattr(inner, "jaxpr", inner), seen)
            continue
        avals = str([getattr(v, "aval", v) for v in eqn.invars])
        seen.add((eqn.primitive.name, avals, str(eqn.params)))


def _jit_agrees_with_eager(
    compiled: Any, eager: Callable[[Any], Any], probe: Any
) -> Check:
    """The compiled rule's output against an eager run, within the budget."""
    name = "jit agrees with eager"
    try:
        n = eager_operations(eager, probe)
    except Exception:  # noqa: BLE001 - untraceable: the eager run says why
        n = 0
    if n > EAGER_BUDGET:
        return Check(
            name,
            True,
            f"not compared: eagerly the rule runs {n} distinct operations, each "
            f"compiled on its own (budget {EAGER_BUDGET})",
            ran=False,
        )
    ok, worst = _close(compiled, eager(probe))
    return Check(name, ok, f"within {worst:.1f} ulp")


def structure(
    kind: str,
    apply: Callable[[Any], Any],
    eager: Callable[[Any], Any],
    probe: Any,
    zero: Any,
    batch: int = 2,
) -> list[Check]:
    """Structural checks shared by VJP (probe = ȳ) and JVP (probe = u).

    ``apply`` is the rule compiled (what the other steps of the check use),
    ``eager`` the same rule run op by op, once: "jit agrees with eager". The
    eager run is the only one, so its cost (one compile per primitive) is
    paid once per check. "vmap equals a loop" maps ``apply`` over ``batch``
    scaled copies of the probe: the batch size another step already maps
    it over reuses that compiled program.
    """
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
    checks.append(_jit_agrees_with_eager(first, eager, probe))
    # Stacked and sliced on the host: eager jnp would compile each step.
    rows = jax.tree_util.tree_map(lambda a: _host_rows(np.asarray(a), batch), probe)
    name = f"vmap over {batch} {kind}s equals a loop"
    try:
        batched = jax.vmap(apply)(jax.tree_util.tree_map(on_device, rows))
        loop = [
            apply(jax.tree_util.tree_map(lambda a, k=k: on_device(a[k]), rows))
            for k in range(batch)
        ]
        stacked = jax.tree_util.tree_map(
            lambda *a: np.stack([np.asarray(x) for x in a]), *loop
        )
        ok, worst = _close(batched, stacked)
        checks.append(Check(name, ok, f"within {worst:.1f} ulp"))
    except Exception as e:  # noqa: BLE001 - a rule that cannot be vmapped is a finding
        checks.append(Check(name, False, f"vmap failed: {e}"))
    return checks
