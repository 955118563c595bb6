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
  rank-one correction for each coordinate: the product changes in one block
  (a row or column), held as a :class:`Patch` (base, block position, block);
* carries a patch through elementwise operations (activations, bias adds and
  other operands broadcast along size-1 dims, ``where``/``select``), sums, and
  calls, applying each to the base (once per batch) and to the block (per
  coordinate);
* at the next ``dot_general`` adds the product of the block's change with
  the slice of the other operand it meets to the base's product (a rank-k
  update instead of the whole product), which is dense from there on;
* anywhere else, materialises the perturbed leaf or patch and runs the
  primitive as is.

The result equals ``J(W + δ·eᵢ)`` up to floating-point rounding, but a batch of
coordinates shares the leaf's matmul and the next layer's, which are most of the
cost for a weight matrix inside a network: for the first layer of bench/'s
26k-parameter MLP, 11.5x fewer operations by XLA's count and the whole check_grad
sweep 3.8x faster (bench/RESULTS.md, bench/sweep.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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


class _Product(NamedTuple):
    """A ``dot_general`` of one sparse or patched operand (``ours``) and a
    dense one (``a``): each one's contracting and batch dims, and the product
    of ``ours``'s base with ``a`` (shared by the batch)."""

    ours: Any
    a: Any
    on_lhs: bool
    contract: tuple[int, ...]
    a_contract: tuple[int, ...]
    batch: tuple[int, ...]
    a_batch: tuple[int, ...]
    out_base: Any

    @property
    def free(self) -> list[int]:
        """``ours``'s dims neither contracted nor batched."""
        dims = self.contract + self.batch
        return [d for d in range(self.ours.base.ndim) if d not in dims]

    @property
    def a_free(self) -> list[int]:
        """``a``'s dims neither contracted nor batched."""
        return [
            d for d in range(self.a.ndim) if d not in self.a_contract + self.a_batch
        ]


def _product(eqn: Any, lhs: Any, rhs: Any, kind: type) -> _Product | None:
    """The product's parts when exactly one operand is a ``kind`` and the
    other is dense (else None: the caller makes both dense)."""
    if isinstance(lhs, kind) == isinstance(rhs, kind):
        return None
    if any(
        isinstance(x, (Sparse, Patch)) for x in (lhs, rhs) if not isinstance(x, kind)
    ):
        return None  # e.g. the leaf meets its own earlier change
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    on_lhs = isinstance(lhs, kind)
    ours, a = (lhs, rhs) if on_lhs else (rhs, lhs)
    (out_base,) = bind(eqn, [ours.base, a] if on_lhs else [a, ours.base])
    return _Product(
        ours,
        a,
        on_lhs,
        *((tuple(lc), tuple(rc)) if on_lhs else (tuple(rc), tuple(lc))),
        *((tuple(lb), tuple(rb)) if on_lhs else (tuple(rb), tuple(lb))),
        out_base,
    )


def _dot_general(eqn: Any, lhs: Any, rhs: Any) -> list[Any] | None:
    prod = _product(eqn, lhs, rhs, Sparse)
    if prod is None:
        return None
    s, a, s_is_lhs, out_base = prod.ours, prod.a, prod.on_lhs, prod.out_base
    s_contract, a_contract, s_batch = prod.contract, prod.a_contract, prod.batch
    a_batch = prod.a_batch

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
    add = lax.broadcast_in_dim((delta * t).astype(out_base.dtype), upd_shape, t_dims)
    return [_plus(out_base, starts, add)]


def _rule(eqn: Any, invals: list[Any], patches: bool) -> list[Any] | None:
    name = eqn.primitive.name
    if name in CALLS and CALLS[name] in eqn.params:
        return _call(eqn, invals, patches)
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


class Patch(NamedTuple):
    """``base`` with the block at ``starts`` (one int32 scalar per dim)
    replaced by ``update``: what a one-entry change of a leaf has become
    after a matrix product (a row or column of the product), and stays
    through elementwise operations and sums. ``base`` does not depend on the
    perturbed coordinate (one evaluation per batch under ``vmap``); only
    ``update`` does."""

    base: Any
    starts: tuple[Any, ...]
    update: Any


def _plus(base: Any, starts: list[Any], delta: Any) -> Any:
    """``base`` with ``delta`` added to its block at ``starts``: a
    :class:`Patch`, or the dense sum when the block is all of ``base``."""
    if tuple(delta.shape) == tuple(base.shape):
        return base + delta
    cur = lax.dynamic_slice(base, starts, delta.shape)
    return Patch(base, tuple(starts), cur + delta)


def _block(x: Any, p: Patch) -> Any:
    """``x``'s block where ``p`` is patched (all of a dim of size 1, which
    an elementwise operation broadcasts)."""
    zero = jnp.zeros((), jnp.int32)
    starts = [zero if n == 1 else i for n, i in zip(x.shape, p.starts)]
    sizes = [1 if n == 1 else k for n, k in zip(x.shape, p.update.shape)]
    return lax.dynamic_slice(x, starts, sizes)


def _dense(x: Any) -> Any:
    if isinstance(x, Sparse):
        return densify(x)
    if isinstance(x, Patch):
        return lax.dynamic_update_slice(x.base, x.update.astype(x.base.dtype), x.starts)
    return x


ELEMENTWISE = frozenset(
    {
        *("abs", "acos", "acosh", "asin", "asinh", "atan", "atanh", "cbrt", "ceil"),
        *("cos", "cosh", "erf", "erfc", "exp", "exp2", "expm1", "floor", "integer_pow"),
        *("is_finite", "log", "log1p", "logistic", "neg", "not", "round", "rsqrt"),
        *("sign", "sin", "sinh", "sqrt", "square", "tan", "tanh", "real", "imag"),
        *("conj", "convert_element_type", "reduce_precision"),
        *("add", "add_any", "sub", "mul", "div", "rem", "pow", "max", "min", "atan2"),
        *("nextafter", "and", "or", "xor", "eq", "ne", "gt", "ge", "lt", "le"),
        *("select_n", "clamp"),
    }
)
"""Primitives applied entry by entry, whose parameters do not depend on the
shape: on a :class:`Patch` they are applied to the base and to the block."""


def _elementwise(eqn: Any, invals: list[Any]) -> list[Any] | None:
    """The patched result of an elementwise equation: its operands are
    patches of one block (the same ``starts``), scalars, or dense arrays of
    the output's shape (their block is cut out)."""
    patches = [x for x in invals if isinstance(x, Patch)]
    first = patches[0]
    shape = tuple(eqn.outvars[0].aval.shape)
    if tuple(first.base.shape) != shape:
        return None
    bases, blocks = [], []
    for x in invals:
        if isinstance(x, Patch):
            if x.starts is not first.starts:
                return None  # patched in another block: not the same change
            bases.append(x.base)
            blocks.append(x.update)
        elif np.shape(x) == ():
            bases.append(x)
            blocks.append(x)
        elif np.ndim(x) == len(shape) and all(
            n in (1, m) for n, m in zip(np.shape(x), shape)
        ):  # the output's shape, or 1 along dims it is broadcast in
            bases.append(x)
            blocks.append(_block(x, first))
        else:
            return None
    (base,) = bind(eqn, bases)
    (update,) = bind(eqn, blocks)
    return [Patch(base, first.starts, update)]


def _patched_dot(eqn: Any, lhs: Any, rhs: Any) -> list[Any] | None:
    """``dot_general`` of a patch and a dense array: the base's product (shared
    by the batch) plus the product of the block's change with the slice of
    the other operand it meets."""
    prod = _product(eqn, lhs, rhs, Patch)
    if prod is None:
        return None
    p = prod.ours
    change = p.update - _block(p.base, p)
    zero = jnp.zeros((), jnp.int32)
    # The slice of the other operand the block meets: the block's range along
    # the contracting and batch dims paired with its own, all of the rest.
    a_starts, a_sizes = [zero] * prod.a.ndim, list(prod.a.shape)
    for d, ad in zip(prod.contract + prod.batch, prod.a_contract + prod.a_batch):
        a_starts[ad], a_sizes[ad] = p.starts[d], p.update.shape[d]
    part = lax.dynamic_slice(prod.a, a_starts, a_sizes)
    (delta,) = bind(eqn, [change, part] if prod.on_lhs else [part, change])
    # Output dims: batch, then the lhs's free dims, then the rhs's.
    ours = [p.starts[d] for d in prod.free]
    theirs = [zero] * len(prod.a_free)
    starts = [p.starts[d] for d in prod.batch] + (
        ours + theirs if prod.on_lhs else theirs + ours
    )
    return [_plus(prod.out_base, starts, delta)]


def _patched_sum(eqn: Any, p: Patch) -> list[Any]:
    """``reduce_sum`` of a patch: the base's sum plus the sum of the block's change."""
    axes = tuple(eqn.params["axes"])
    (out_base,) = bind(eqn, [p.base])
    (delta,) = bind(eqn, [p.update - _block(p.base, p)])
    return [
        _plus(out_base, [x for d, x in enumerate(p.starts) if d not in axes], delta)
    ]


def _call(eqn: Any, invals: list[Any], patches: bool) -> list[Any] | None:
    """A call or custom rule evaluated inline (its primal body), its results
    left sparse or patched where they are."""
    inner = eqn.params[CALLS[eqn.primitive.name]]
    if not hasattr(inner, "jaxpr"):
        return None
    return _evaluate(inner.jaxpr, inner.consts, invals, patches)


def _patch_rule(eqn: Any, invals: list[Any]) -> list[Any] | None:
    name = eqn.primitive.name
    if name in CALLS and CALLS[name] in eqn.params:
        return _call(eqn, invals, True)
    if eqn.primitive.multiple_results:
        return None
    if name == "dot_general":
        return _patched_dot(eqn, *invals)
    if name == "reduce_sum" and len(invals) == 1:
        return _patched_sum(eqn, invals[0])
    if name in ELEMENTWISE:
        return _elementwise(eqn, invals)
    return None


def eval_jaxpr(
    jaxpr: Any, consts: list[Any], args: list[Any], *, patches: bool = True
) -> list[Any]:
    """Evaluate ``jaxpr`` where some inputs may be :class:`Sparse` (and
    values computed from them :class:`Patch`): its outputs, dense.
    ``patches=False``: a product's change is made dense at once (the sparse
    leaf's own product is still shared; bench/sweep.py compares)."""
    return [_dense(x) for x in _evaluate(jaxpr, consts, args, patches)]


def _evaluate(
    jaxpr: Any, consts: list[Any], args: list[Any], patches: bool
) -> list[Any]:
    def step(eqn: Any, invals: list[Any]) -> list[Any]:
        outs = None
        if any(isinstance(x, Sparse) for x in invals):
            outs = _rule(eqn, invals, patches)
        elif any(isinstance(x, Patch) for x in invals):
            outs = _patch_rule(eqn, invals)
        if outs is None:
            outs = bind(eqn, [_dense(x) for x in invals])
        if not patches:
            outs = [_dense(x) if isinstance(x, Patch) else x for x in outs]
        return outs

    return interpret(jaxpr, consts, args, step)


def sparse_loss(
    loss_of_leaf: Any, base: Any, rest: Any, *, patches: bool = True
) -> Any:
    """Trace ``loss_of_leaf(leaf, rest)`` once; return ``f(i, v, base, rest)``.

    ``f`` computes ``loss_of_leaf(base with flat[i] = v, rest)`` through
    :func:`eval_jaxpr`, so that ``jax.vmap(f, (0, 0, None, None))`` shares the
    leaf's matrix products across the batch.
    """
    closed = jax.make_jaxpr(loss_of_leaf)(base, rest)

    def f(i: Any, v: Any, base: Any, rest: Any) -> Any:
        args = [Sparse(base, i, v)] + jax.tree_util.tree_leaves(rest)
        (out,) = eval_jaxpr(closed.jaxpr, closed.consts, args, patches=patches)
        return out

    return f
