"""The yardstick: JAX's autodiff of the primal, custom rules replaced by their bodies.

A custom rule (``jax.custom_vjp`` / ``jax.custom_jvp``) is judged against
finite differences with an allowance for its rounding. That allowance must
not come from the rule itself (a rule that computes in float16 would excuse
its own error); it is what a correct implementation at the same precision
reaches: differentiate the *primal* implementation with JAX's own AD, at the
same (native) precision, and measure that result's rounding against the same
AD at float64 (:func:`jgradcheck._numerics.verdict.yardstick_rounding`).

:func:`inlined` does the replacement: it traces a function to a jaxpr and
evaluates it equation by equation; a ``custom_jvp_call`` / ``custom_vjp_call``
defined outside JAX has its primal body (``call_jaxpr``) evaluated instead of
its rule, recursively, so rules nested in ``jit`` or ``closed_call`` bodies
are inlined too, and so are those inside the bodies of other higher-order
primitives (``scan``, ``cond``, ``while``: their jaxprs are traced again with
the rules inlined). Rules defined in JAX itself (``jax.nn.relu``,
``jax.numpy.logaddexp``, …) are part of JAX's AD and are kept. Every other
equation binds as usual.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.extend import core as jcore

from .._numerics.verdict import yardstick_reach, yardstick_rounding
from .._pytree.flat import Flat
from .gradient import autodiff_gradient
from .jaxprs import CALLS, RULES, bind, interpret

_JAX_SOURCE = os.path.dirname(jax.__file__) + os.sep


def _open(j: Any) -> tuple[Any, list[Any]]:
    """``(jaxpr, consts)`` of a closed or open jaxpr."""
    if hasattr(j, "jaxpr") and hasattr(j, "consts"):
        return j.jaxpr, list(j.consts)
    return j, []


def _rule_name(eqn: Any) -> str | None:
    """The name of a custom rule defined outside JAX, or None."""
    if eqn.primitive.name not in RULES:
        return None
    inner = eqn.params.get(RULES[eqn.primitive.name])
    info = getattr(_open(inner)[0], "debug_info", None) if inner is not None else None
    src = getattr(info, "func_src_info", None) or ""
    if " at " in src and src.split(" at ", 1)[1].startswith(_JAX_SOURCE):
        return None  # JAX's own rule: part of its AD
    name = eqn.params.get("name") or (src.split(" at ")[0] if src else "")
    return str(name or eqn.primitive.name)


def _sub_jaxprs(eqn: Any) -> list[tuple[str, int | None, Any]]:
    """``(param, position in a tuple or None, jaxpr)`` for each jaxpr in the params."""
    out = []
    for k, v in eqn.params.items():
        items = v if isinstance(v, tuple) else (v,)
        for i, x in enumerate(items):
            if isinstance(x, jcore.Jaxpr) or isinstance(x, jcore.ClosedJaxpr):
                out.append((k, i if isinstance(v, tuple) else None, x))
    return out


def user_rules(jaxpr: Any) -> list[str]:
    """Names of the custom rules defined outside JAX in ``jaxpr`` (recursively)."""
    found: list[str] = []
    for eqn in _open(jaxpr)[0].eqns:
        name = _rule_name(eqn)
        if name is not None:
            found.append(name)
        else:
            for _, _, sub in _sub_jaxprs(eqn):
                found.extend(user_rules(sub))
    return found


def rules_in(fn: Callable[..., Any], *args: Any) -> list[str]:
    """:func:`user_rules` of ``fn`` traced at ``args`` (no FLOPs)."""
    return user_rules(jax.make_jaxpr(fn)(*args))


def _retraced(sub: Any) -> Any:
    """A closed jaxpr with ``sub``'s signature, its user rules inlined."""
    jaxpr, consts = _open(sub)
    avals = [v.aval for v in jaxpr.invars]
    new = jax.make_jaxpr(lambda *xs: eval_inlined(jaxpr, consts, list(xs)))(*avals)
    if isinstance(sub, jcore.ClosedJaxpr):
        return new
    if new.consts:
        raise NotImplementedError("an open jaxpr gained constants when inlined")
    return new.jaxpr


def _with_inlined_params(eqn: Any) -> Any:
    """``eqn`` with every sub-jaxpr holding a user's rule traced again, inlined."""
    params = dict(eqn.params)
    for k, i, sub in _sub_jaxprs(eqn):
        if not user_rules(sub):
            continue
        if i is None:
            params[k] = _retraced(sub)
        else:
            items = list(params[k])
            items[i] = _retraced(sub)
            params[k] = tuple(items)
    return eqn.replace(params=params)


def eval_inlined(jaxpr: Any, consts: list[Any], args: list[Any]) -> list[Any]:
    """Evaluate ``jaxpr``, every custom rule defined outside JAX replaced by
    its primal body."""

    def step(eqn: Any, invals: list[Any]) -> list[Any]:
        name = eqn.primitive.name
        if _rule_name(eqn) is not None:
            inner, inner_consts = _open(eqn.params[RULES[name]])
            return eval_inlined(inner, inner_consts, invals)
        if name in CALLS and CALLS[name] in eqn.params:
            body = eqn.params[CALLS[name]]
            if user_rules(body):
                inner, inner_consts = _open(body)
                return eval_inlined(inner, inner_consts, invals)
            return bind(eqn, invals)
        if any(user_rules(sub) for _, _, sub in _sub_jaxprs(eqn)):
            return bind(_with_inlined_params(eqn), invals)
        return bind(eqn, invals)

    return interpret(jaxpr, consts, args, step)


def inlined(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its custom rules defined outside JAX replaced by their
    primal bodies: the same values, and JAX's autodiff of the primal.

    Traced again at every call (so at float64 inputs it is the float64
    program).

    >>> import jax, jax.numpy as jnp
    >>> @jax.custom_vjp
    ... def f(x):
    ...     return jnp.sin(x)
    >>> f.defvjp(lambda x: (f(x), x), lambda x, g: (2.0 * g,))  # wrong rule
    >>> float(jax.grad(f)(0.5)), round(float(jax.grad(inlined(f))(0.5)), 6)
    (2.0, 0.877583)
    """

    def g(*args: Any) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = eval_inlined(
            closed.jaxpr, list(closed.consts), jax.tree_util.tree_leaves(args)
        )
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)

    return g


# ------------------------------------------------------------ the yardstick


class LeafYardstick(NamedTuple):
    """One leaf's rounding allowance, from the yardstick."""

    rounding: np.ndarray
    """Per entry of the whole leaf (flattened): the rounding a correct
    gradient at this precision may carry."""
    counterpart: np.ndarray
    """The yardstick at float64 (``a₆₄`` or ``b₆₄``), flattened: where
    ``same``, its difference from the gradient under test is that gradient's
    own rounding, signed (fast mode projects it on its directions)."""
    same: np.ndarray
    """bool per entry: the gradient under test *is* the yardstick there (it is
    autodiff, or equals autodiff of the primal bit for bit)."""
    autodiff: np.ndarray
    """The yardstick at the native precision (``a`` or ``b``), flattened:
    ``|autodiff − counterpart|`` is autodiff's own rounding per entry."""
    reach: float | None
    """Autodiff's largest rounding in the leaf, as a fraction of the scale
    (None where the gradient under test is autodiff itself)."""


class Yardstick(NamedTuple):
    """The rounding allowance of every leaf, and how it was found."""

    leaves: dict[int, LeafYardstick]
    how: str
    """For the report's settings line, e.g. ``autodiff of the primal at float32``."""
    label: str
    """Who reaches ``reach``: ``autodiff of the primal at float32``."""


def exact_yardstick(
    a: dict[int, np.ndarray], a64: dict[int, np.ndarray], how: str
) -> Yardstick:
    """The gradient under test is autodiff itself: its rounding ``|a − a₆₄|``
    is measured entry by entry (``a₆₄``: the same gradient at float64)."""
    leaves = {
        p: LeafYardstick(
            np.abs(a[p] - a64[p]), a64[p], np.ones(a[p].shape, bool), a[p], None
        )
        for p in a
        if p in a64
    }
    return Yardstick(leaves, how, how)


def autodiff_yardstick(
    a: dict[int, np.ndarray],
    b: dict[int, np.ndarray],
    b64: dict[int, np.ndarray],
    dtypes: str,
) -> Yardstick:
    """The gradient under test ``a`` judged by autodiff ``b`` of the primal at
    its precision (``dtypes``) and ``b64`` at float64 (flattened float64
    arrays, by leaf position)."""
    leaves = {}
    for p, ap in a.items():
        same = ap == b[p]
        leaves[p] = LeafYardstick(
            yardstick_rounding(ap, b[p], b64[p]),
            b64[p],
            same,
            b[p],
            None if same.all() else yardstick_reach(b[p], b64[p]),
        )
    label = f"autodiff of the primal at {dtypes}"
    return Yardstick(leaves, label, label)


def flat64(values: dict[int, Any]) -> dict[int, np.ndarray]:
    """Leaves as flattened float64 NumPy arrays; raises on NaN/inf."""
    out = {p: np.asarray(v, np.float64).reshape(-1) for p, v in values.items()}
    if not all(np.all(np.isfinite(v)) for v in out.values()):
        raise FloatingPointError("its result is not finite")
    return out


def why_not(e: BaseException) -> str:
    """A one-line reason an autodiff of the primal failed, for the report."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text[:120] + ("…" if len(text) > 120 else "")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def fixed_note(reason: str) -> str:
    """The settings line when the primal could not be differentiated."""
    return f"fixed (the primal could not be differentiated: {reason})"


def loss_has_rules(loss: Callable[..., Any], flat: Flat, args: tuple) -> bool:
    """Whether ``loss(params, *args)`` uses a custom rule defined outside JAX."""
    params = flat.rebuild(flat.leaves)
    return bool(user_rules(jax.make_jaxpr(lambda: loss(params, *args))()))


def primal_gradient(
    loss: Callable[..., Any], flat: Flat, args: tuple
) -> tuple[dict[int, np.ndarray], str]:
    """Autodiff of the primal of ``loss`` (custom rules inlined) at the
    leaves' dtypes: flattened float64 arrays by leaf position, and the dtypes
    it computed in. Raises where AD cannot go (reverse mode through a
    ``while_loop``, a callback) or the result is not finite."""
    grads = autodiff_gradient(loss, flat, args, wrap=inlined)
    dtypes = sorted({str(np.dtype(g.dtype)) for g in grads.values()})
    return flat64(grads), ", ".join(dtypes)
