"""What the jaxpr interpreters of the engine share: their loop
(:func:`interpret`), binding an equation, and the primitives whose bodies are
jaxprs.

Three interpreters walk a jaxpr: :mod:`.sparse` (a perturbation carried
as a slice delta), :mod:`.primal_ad` (custom rules replaced by their
primal bodies) and :mod:`.matched` (every float intermediate rounded to a
narrower dtype). All re-bind every equation they do not rewrite, and all
descend into calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from jax.extend import core as jcore

RULES = {
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}
"""Custom-rule primitives of this JAX version, and the param holding the primal."""

CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
}
"""Call primitives, and the param holding their body."""


def bind(eqn: Any, invals: list[Any]) -> list[Any]:
    """Bind ``eqn``'s primitive to ``invals`` with its own params: its outputs."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    # Older JAX returns (subfuns, params); newer returns params only.
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
    out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def interpret(
    jaxpr: Any,
    consts: list[Any],
    args: list[Any],
    step: Callable[[Any, list[Any]], list[Any]],
    keep: Callable[[Any], Any] | None = None,
) -> list[Any]:
    """Evaluate ``jaxpr``: each equation's outputs are ``step(eqn, invals)``.

    Every value stored (constants, inputs, literals read, outputs) passes
    through ``keep`` first (default: as it is). The loop of the three
    interpreters; what they do to an equation is their ``step``.
    """
    env: dict[Any, Any] = {}

    def stored(x: Any) -> Any:
        return x if keep is None else keep(x)

    def read(v: Any) -> Any:
        return stored(v.val) if isinstance(v, jcore.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = stored(x)
    for v, x in zip(jaxpr.invars, args):
        env[v] = stored(x)
    for eqn in jaxpr.eqns:
        outs = step(eqn, [read(v) for v in eqn.invars])
        for v, x in zip(eqn.outvars, outs):
            if not isinstance(v, jcore.DropVar):
                env[v] = stored(x)
    return [read(v) for v in jaxpr.outvars]


COMPARISONS = frozenset({"gt", "ge", "lt", "le", "max", "min", "clamp"})
"""Primitives whose scalar constant operands are thresholds of a branch or kink."""

KINKED_AT_ZERO = frozenset({"abs", "sign"})
"""Primitives with a kink or jump at 0 of their operand."""


def _scalar(value: Any) -> float | None:
    """``value`` as a finite Python float if it is a real scalar, else None."""
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - not an array (a tracer, a token)
        return None
    if arr.size != 1 or arr.dtype.kind not in "fi":
        return None
    v = float(arr.reshape(()))
    return v if np.isfinite(v) else None


def thresholds(closed: Any) -> list[float]:
    """The scalar constants a jaxpr compares with (``x > 15.0``, ``max(x, 0)``,
    ``|x| < 1e-3``), and 0 where it takes ``abs`` or ``sign``; sub-jaxprs
    included, in order of appearance, each once.

    >>> import jax, jax.numpy as jnp
    >>> thresholds(jax.make_jaxpr(lambda x: jnp.where(x > 15.0, x, jnp.exp(x)))(1.0))
    [15.0]
    """
    found: dict[float, None] = {}

    def walk(jaxpr: Any, consts: list[tuple[Any, Any]]) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in KINKED_AT_ZERO:
                found[0.0] = None
            if eqn.primitive.name in COMPARISONS:
                for var in eqn.invars:
                    if hasattr(var, "val"):  # a Literal
                        value = var.val
                    else:
                        value = next((c for w, c in consts if w is var), None)
                    v = None if value is None else _scalar(value)
                    if v is not None:
                        found[v] = None
            for p in eqn.params.values():
                for sub in p if isinstance(p, (tuple, list)) else (p,):
                    inner: Any = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        consts_in = getattr(sub, "consts", ())
                        walk(inner, list(zip(inner.constvars, consts_in)))

    top: Any = getattr(closed, "jaxpr", closed)
    consts = getattr(closed, "consts", ())
    walk(top, list(zip(top.constvars, consts)))
    return list(found)
