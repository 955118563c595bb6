"""Evaluate J with one entry of a leaf changed, without redoing the leaf's matmuls.

A perturbed leaf ``W + δ·eᵢ`` differs from ``W`` in one entry. When ``W`` feeds
a matrix product ``A·W``, the perturbed product is ``A·W`` plus ``δ`` times one
slice of ``A`` written into one slice of the output, exactly (the product is
linear in ``W``). This module runs the loss's jaxpr with the leaf held as a
:class:`Sparse` value (base array, flat index, new value) and

* keeps it sparse through shape-only ops (reshape, squeeze, transpose, dtype
  conversion) and into nested ``jit`` / ``custom_jvp`` / ``custom_vjp`` calls,
  whose primal bodies are evaluated inline;
* at a ``dot_general`` with an operand that is not sparse, computes the base
  product once per batch (it does not depend on the coordinate) and adds the
  rank-one correction for each coordinate;
* anywhere else, materialises the perturbed leaf and runs the primitive as is.

The result equals ``J(W + δ·eᵢ)`` up to floating-point rounding, but a batch of
coordinates shares the leaf's matmul, which is most of the cost for a weight
matrix inside a network (measured in bench/sweep.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .jaxprs import CALLS as CALLS_ONLY
from .jaxprs import RULES, bind, interpret


class Sparse(NamedTuple):
    """``base`` with the entry at flat position ``index`` replaced by ``value``."""

    base: Any
    index: Any
    value: Any


def densify(s: Sparse) -> Any:
    flat = s.base.reshape(-1)
    hit = lax.iota(jnp.int32, flat.shape[0]) == s.index
    return jnp.where(hit, s.value.astype(flat.dtype), flat).reshape(s.base.shape)


def _unravel(index: Any, shape: tuple[int, ...]) -> list[Any]:
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index = index // size
    return out[::-1]


def _ravel(multi: list[Any], shape: tuple[int, ...]) -> Any:
    index = jnp.zeros((), jnp.int32)
    for m, size in zip(multi, shape):
        index = index * size + m
    return index


CALLS = {**CALLS_ONLY, **RULES}
"""Primitives whose body :func:`eval_jaxpr` evaluates inline: calls, and custom
rules (their primal bodies: a sweep evaluates J, never its derivative)."""


def _dot_general(eqn: Any, lhs: Any, rhs: Any) -> list[Any] | None:
    if isinstance(lhs, Sparse) == isinstance(rhs, Sparse):
        return None
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    s_is_lhs = isinstance(lhs, Sparse)
    s, a = (lhs, rhs) if s_is_lhs else (rhs, lhs)
    s_contract, a_contract = (lc, rc) if s_is_lhs else (rc, lc)
    s_batch, a_batch = (lb, rb) if s_is_lhs else (rb, lb)
    (out_base,) = bind(eqn, [s.base, a] if s_is_lhs else [a, s.base])

    shape = s.base.shape
    m = _unravel(s.index, shape)
    delta = s.value.astype(s.base.dtype) - s.base.reshape(-1)[s.index]
    a_free = [d for d in range(a.ndim) if d not in a_contract and d not in a_batch]
    s_free = [d for d in range(len(shape)) if d not in s_contract and d not in s_batch]
    # The slice of A that multiplies entry m: fix A's batch and contracting
    # dims at m's coordinates, keep A's free dims.
    at = lax.transpose(a, list(a_batch) + list(a_contract) + a_free)
    fixed = [m[d] for d in s_batch] + [m[d] for d in s_contract]
    free_shape = [a.shape[d] for d in a_free]
    zero = jnp.zeros((), jnp.int32)
    t = lax.dynamic_slice(
        at,
        [jnp.asarray(i, jnp.int32) for i in fixed] + [zero] * len(a_free),
        [1] * len(fixed) + free_shape,
    ).reshape(free_shape)
    # Where it lands: output dims are (batch, lhs free, rhs free). Only the
    # slice at m's batch and free coordinates changes.
    nb, na, ns = len(s_batch), len(a_free), len(s_free)
    if s_is_lhs:
        coords = [m[d] for d in s_batch] + [m[d] for d in s_free] + [None] * na
        t_dims = tuple(range(nb + ns, nb + ns + na))
    else:
        coords = [m[d] for d in s_batch] + [None] * na + [m[d] for d in s_free]
        t_dims = tuple(range(nb, nb + na))
    starts = [jnp.asarray(0 if c is None else c, jnp.int32) for c in coords]
    upd_shape = tuple(n if c is None else 1 for c, n in zip(coords, out_base.shape))
    cur = lax.dynamic_slice(out_base, starts, upd_shape)
    add = lax.broadcast_in_dim((delta * t).astype(out_base.dtype), upd_shape, t_dims)
    return [lax.dynamic_update_slice(out_base, cur + add, starts)]


def _rule(eqn: Any, invals: list[Any]) -> list[Any] | None:
    name = eqn.primitive.name
    if name in CALLS and CALLS[name] in eqn.params:
        inner = eqn.params[CALLS[name]]
        if hasattr(inner, "jaxpr"):
            return eval_jaxpr(inner.jaxpr, inner.consts, invals)
        return None
    if len(invals) != 1 and name != "dot_general":
        return None
    if name == "dot_general":
        return _dot_general(eqn, *invals)
    (s,) = invals
    if name in ("reshape", "squeeze", "copy", "copy_p"):
        if eqn.params.get("dimensions") is not None:
            return None
        (base,) = bind(eqn, [s.base])
        return [Sparse(base, s.index, s.value)]
    if name == "convert_element_type":
        (base,) = bind(eqn, [s.base])
        return [Sparse(base, s.index, s.value.astype(base.dtype))]
    if name == "transpose":
        perm = eqn.params["permutation"]
        (base,) = bind(eqn, [s.base])
        m = _unravel(s.index, s.base.shape)
        return [Sparse(base, _ravel([m[p] for p in perm], base.shape), s.value)]
    return None


def eval_jaxpr(jaxpr: Any, consts: list[Any], args: list[Any]) -> list[Any]:
    """Evaluate ``jaxpr`` where some inputs may be :class:`Sparse`."""

    def step(eqn: Any, invals: list[Any]) -> list[Any]:
        outs = None
        if any(isinstance(x, Sparse) for x in invals):
            outs = _rule(eqn, invals)
            if outs is None:
                invals = [densify(x) if isinstance(x, Sparse) else x for x in invals]
        return bind(eqn, invals) if outs is None else outs

    outs = interpret(jaxpr, consts, args, step)
    return [densify(x) if isinstance(x, Sparse) else x for x in outs]


def sparse_loss(loss_of_leaf: Any, base: Any, rest: Any) -> Any:
    """Trace ``loss_of_leaf(leaf, rest)`` once; return ``f(i, v, base, rest)``.

    ``f`` computes ``loss_of_leaf(base with flat[i] = v, rest)`` through
    :func:`eval_jaxpr`, so that ``jax.vmap(f, (0, 0, None, None))`` shares the
    leaf's matrix products across the batch.
    """
    closed = jax.make_jaxpr(loss_of_leaf)(base, rest)

    def f(i: Any, v: Any, base: Any, rest: Any) -> Any:
        args = [Sparse(base, i, v)] + jax.tree_util.tree_leaves(rest)
        (out,) = eval_jaxpr(closed.jaxpr, closed.consts, args)
        return out

    return f
