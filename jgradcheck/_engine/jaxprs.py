"""What the jaxpr interpreters of the engine share: binding an equation, and
the primitives whose bodies are jaxprs.

Three interpreters walk a jaxpr: :mod:`.sparse` (a perturbation carried
as a slice delta), :mod:`.primal_ad` (custom rules replaced by their
primal bodies) and :mod:`.matched` (every float intermediate rounded to a
narrower dtype). All re-bind every equation they do not rewrite, and all
descend into calls.
"""

from __future__ import annotations

from typing import Any

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
