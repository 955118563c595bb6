"""Matched precision: where a derivative program computes narrower than
another, and the other evaluated at that narrower precision.

A rule (or kernel) can have the right formula and still disagree with its
reference by more than the reference's own rounding, because it computes
part of its work in a narrower float: it stores its matrix products in
bfloat16 (``dot_general`` with ``preferred_element_type=bfloat16``) where the
reference keeps them in float32, or casts to float16 in its backward pass
(``convert_element_type``). Both show in the jaxpr of the rule's derivative
program; :func:`narrower_ops` finds them by comparing it with the
reference's.

:func:`rounded` gives the *reference at that precision*: its jaxpr evaluated
equation by equation with the inputs and every floating-point intermediate
rounded to the narrow dtype (values stay in their own dtype, so the program
is unchanged; each primitive still computes internally as the backend does,
as XLA accumulates a bfloat16 ``dot_general`` or sum in float32 on CPU, GPU
and TPU). That is a plain implementation storing everything it computes in
the narrow dtype: the least precise thing a correct rule at that precision
could be. Calls (``jit``, ``closed_call``, ``remat``) are evaluated the same
way inside; the bodies of other higher-order primitives (``scan``, ``cond``,
``while``) run as they are and only their outputs are rounded.

A reduced *matmul precision* changes no dtype: a float32 ``dot_general``
whose ``precision`` is DEFAULT rounds its operands to bfloat16 on a TPU and
to TensorFloat-32 on an NVIDIA GPU
(:mod:`.matmul_precision` has the table and its sources).
:func:`reduced_matmuls` finds a program whose float32 products run with
narrower operands on a platform than another's, and :func:`matmuls_rounded`
gives the other with the operands of all its float32 products rounded to
that format (everything else as it is).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from .._dtypes import eps as eps_of
from .._dtypes import is_real_float
from . import matmul_precision as mp
from .jaxprs import CALLS, bind, interpret


def _open(j: Any) -> tuple[Any, list[Any]]:
    """``(jaxpr, consts)`` of a closed or open jaxpr."""
    if hasattr(j, "jaxpr") and hasattr(j, "consts"):
        return j.jaxpr, list(j.consts)
    return j, []


def _subs(eqn: Any) -> list[Any]:
    """The jaxprs in ``eqn``'s params (bodies of calls, loops, branches)."""
    out = []
    for v in eqn.params.values():
        for x in v if isinstance(v, tuple) else (v,):
            if isinstance(x, jcore.Jaxpr | jcore.ClosedJaxpr):
                out.append(x)
    return out


def _float_dtype(v: Any) -> np.dtype | None:
    dtype = getattr(getattr(v, "aval", None), "dtype", None)
    return np.dtype(dtype) if dtype is not None and is_real_float(dtype) else None


EXACT = frozenset(
    "transpose reshape broadcast_in_dim squeeze expand_dims slice dynamic_slice "
    "dynamic_update_slice concatenate pad gather scatter select_n copy copy_p "
    "neg abs max min rev sign stop_gradient reduce_max reduce_min clamp floor "
    "ceil round sort".split()
)
"""Primitives whose float result is exact (no rounding): computing them in a
narrow dtype loses nothing, so they are no evidence."""


def _label(eqn: Any, dtype: np.dtype) -> str | None:
    """How an equation producing ``dtype`` is named in the evidence (None:
    it rounds nothing)."""
    name = eqn.primitive.name
    if name == "convert_element_type":
        return f"convert_element_type to {dtype}"
    if name == "dot_general":
        return f"dot_general → {dtype}"
    return None if name in EXACT else name


def float_ops(jaxpr: Any, *, body: bool = False) -> Counter[tuple[str, str]]:
    """``(label, dtype)`` → how many equations of ``jaxpr`` (calls and loop
    bodies included) round a floating-point intermediate to that dtype: a
    result that another equation goes on computing with (an output the
    program only returns is stored, whatever its precision, and exact
    primitives such as ``transpose`` round nothing). ``body``: ``jaxpr`` is
    the body of a call or loop, whose outputs its caller computes with."""
    inner = _open(jaxpr)[0]
    consumed = {id(v) for eqn in inner.eqns for v in eqn.invars}
    if body:
        consumed.update(id(v) for v in inner.outvars)
    out: Counter[tuple[str, str]] = Counter()
    for eqn in inner.eqns:
        for v in eqn.outvars:
            dtype = _float_dtype(v)
            label = _label(eqn, dtype) if dtype is not None else None
            if label is not None and id(v) in consumed:
                out[(label, str(dtype))] += 1
        for sub in _subs(eqn):
            out.update(float_ops(sub, body=True))
    return out


class Narrower(NamedTuple):
    """Where a derivative program computes with a narrower float than another."""

    dtype: np.dtype
    """The narrowest float dtype the program computes intermediates in."""
    where: tuple[tuple[str, int, int], ...]
    """``(equation kind, count in the program, count in the other)`` of the
    intermediates in ``dtype`` that the program has more of, e.g.
    ``("dot_general → bfloat16", 2, 0)``."""
    other: str
    """The narrowest float dtype of the other program's intermediates other
    than ``dtype`` (``"float32"``): what it keeps where the program goes
    narrow."""


NARROW_EPS = 2.0**-23
"""Dtypes with a larger machine epsilon than float32's are *narrow*: XLA
accumulates them in float32, so two correct programs in such a dtype can
differ in which intermediates they keep at float32 (counted kind by kind);
float32 and float64 programs can only differ by a narrower dtype."""


def narrower_ops(program: Any, other: Any) -> Narrower | None:
    """The narrowest float dtype ``D`` ``program`` (a jaxpr) computes
    intermediates in, if ``other`` computes none that narrow, or (``D``
    narrower than float32, where ``other`` computes some in ``D`` too) if
    ``program`` computes more of some kind in ``D``; else None.

    >>> import jax.numpy as jnp
    >>> x = jnp.ones((2, 2), jnp.bfloat16)
    >>> narrow = jax.make_jaxpr(lambda a: jnp.sin(a @ a).astype(jnp.float32))(x)
    >>> wide = jax.make_jaxpr(
    ...     lambda a: jnp.sin(jnp.dot(a, a, preferred_element_type=jnp.float32)))(x)
    >>> n = narrower_ops(narrow, wide)
    >>> str(n.dtype), n.where, n.other
    ('bfloat16', (('dot_general → bfloat16', 1, 0), ('sin', 1, 0)), 'float32')
    >>> narrower_ops(wide, narrow) is None
    True
    """
    mine, theirs = float_ops(program), float_ops(other)
    if not mine:
        return None
    dtype = max((np.dtype(d) for _, d in mine), key=eps_of)
    kept = {np.dtype(d) for _, d in theirs}
    if any(eps_of(d) > eps_of(dtype) for d in kept):
        return None  # the other is narrower still
    if dtype in kept and eps_of(dtype) <= NARROW_EPS:
        return None  # both compute in float32 (float64): nothing to match
    where = tuple(
        sorted(
            (
                (label, n, theirs[(label, d)])
                for (label, d), n in mine.items()
                if d == str(dtype) and n > theirs[(label, d)]
            ),
            key=lambda w: (not w[0].startswith(("convert", "dot_general")), -w[1]),
        )
    )
    if not where:
        return None
    wider = [d for d in kept if d != dtype]
    other = str(max(wider, key=eps_of)) if wider else "no float intermediates"
    return Narrower(dtype, where, other)


def jaxpr_of(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn``'s jaxpr at ``args`` (no FLOPs)."""
    return jax.make_jaxpr(fn)(*args)


def _round(x: Any, dtype: np.dtype) -> Any:
    """``x`` rounded to ``dtype`` and kept in its own dtype (floats wider
    than ``dtype`` only)."""
    own = getattr(x, "dtype", None)
    if own is None or not is_real_float(own) or eps_of(own) >= eps_of(dtype):
        return x
    return jnp.asarray(x).astype(dtype).astype(own)


def eval_rounded(
    jaxpr: Any, consts: list[Any], args: list[Any], dtype: np.dtype
) -> list[Any]:
    """Evaluate ``jaxpr`` with its inputs and every float intermediate
    rounded to ``dtype``."""

    def step(eqn: Any, invals: list[Any]) -> list[Any]:
        name = eqn.primitive.name
        if name in CALLS and CALLS[name] in eqn.params:
            inner, inner_consts = _open(eqn.params[CALLS[name]])
            return eval_rounded(inner, inner_consts, invals, dtype)
        return bind(eqn, invals)

    return interpret(jaxpr, consts, args, step, lambda x: _round(x, dtype))


def rounded(fn: Callable[..., Any], dtype: Any) -> Callable[..., Any]:
    """``fn`` evaluated with its inputs and every float intermediate rounded
    to ``dtype`` (see the module docstring); outputs keep ``fn``'s dtypes.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([1.0, 2.0**-9], jnp.float32)
    >>> f = lambda x: jnp.sum(x + 1.0)  # 1 + 2⁻⁹ is 1 in bfloat16
    >>> float(f(x)), float(rounded(f, jnp.bfloat16)(x))
    (3.001953125, 3.0)
    """
    return _evaluated_by(fn, eval_rounded, np.dtype(dtype))


def _evaluated_by(
    fn: Callable[..., Any], evaluate: Callable[..., list[Any]], how: Any
) -> Callable[..., Any]:
    """``fn`` traced at its arguments and its jaxpr evaluated by
    ``evaluate(jaxpr, consts, args, how)``; outputs in ``fn``'s structure."""

    def g(*args: Any) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = evaluate(
            closed.jaxpr, list(closed.consts), jax.tree_util.tree_leaves(args), how
        )
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)

    return g


def _is_f32_matmul(eqn: Any) -> bool:
    """A ``dot_general`` of two float32 operands: the products whose
    precision setting changes what the hardware does."""
    return eqn.primitive.name == "dot_general" and all(
        _float_dtype(v) == np.float32 for v in eqn.invars
    )


def matmul_formats(jaxpr: Any, *, platform: str) -> Counter[tuple[str, str]]:
    """``(precision label, operand format)`` → how many float32
    ``dot_general`` equations of ``jaxpr`` (calls and loop bodies included)
    run that way on ``platform`` (format ``"float32"``: full precision). An
    unset precision is resolved with the ``jax_default_matmul_precision``
    config in effect now (call right after tracing)."""
    default = getattr(jax.config, "jax_default_matmul_precision", None)
    out: Counter[tuple[str, str]] = Counter()
    for eqn in _open(jaxpr)[0].eqns:
        if _is_f32_matmul(eqn):
            p = mp.effective(eqn.params.get("precision"), default)
            fmt = mp.operand_format(p, platform=platform) or "float32"
            out[(mp.label(p), fmt)] += 1
        for sub in _subs(eqn):
            out.update(matmul_formats(sub, platform=platform))
    return out


class ReducedMatmuls(NamedTuple):
    """Where a derivative program's float32 matrix products run with
    narrower operands than another's on a platform."""

    format: str
    """The narrowest operand format (a key of ``matmul_precision.EPS``)."""
    where: tuple[tuple[str, int, int], ...]
    """``(precision label, count in the program, count in the other)`` of
    the program's products in ``format``, e.g. ``("dot_general
    precision=DEFAULT", 2, 0)``."""
    other: str
    """What the other's float32 products keep: ``"float32"``, or its
    narrowest operand format (wider than ``format``)."""
    platform: str


def reduced_matmuls(
    program: Any, other: Any, *, platform: str
) -> ReducedMatmuls | None:
    """The narrowest operand format ``F`` of ``program``'s float32 matrix
    products on ``platform`` (jaxprs; :func:`matmul_formats`), if ``program``
    has more products in ``F`` or narrower than ``other`` and ``other`` has
    float32 products to round; else None (full precision everywhere, as on
    the CPU, or both as narrow).

    >>> import jax.numpy as jnp
    >>> x = jnp.ones((2, 2), jnp.float32)
    >>> fast = jax.make_jaxpr(lambda a: a @ a)(x)
    >>> full = jax.make_jaxpr(lambda a: jnp.dot(a, a, precision="highest"))(x)
    >>> reduced_matmuls(fast, full, platform="tpu").where
    (('dot_general precision=DEFAULT', 1, 0),)
    >>> reduced_matmuls(fast, full, platform="cpu") is None
    True
    """
    mine = matmul_formats(program, platform=platform)
    theirs = matmul_formats(other, platform=platform)
    narrow = [f for _, f in mine if f != "float32"]
    if not narrow or not theirs:
        return None
    fmt = max(narrow, key=lambda f: mp.EPS[f])

    def as_narrow(counts: Counter[tuple[str, str]]) -> int:
        return sum(n for (_, f), n in counts.items() if mp.EPS.get(f, 0) >= mp.EPS[fmt])

    if as_narrow(mine) <= as_narrow(theirs):
        return None
    where = tuple(
        sorted(
            (
                (f"dot_general {label}", n, theirs[(label, f)])
                for (label, f), n in mine.items()
                if f == fmt
            ),
            key=lambda w: -w[1],
        )
    )
    wider = [f for _, f in theirs if f != "float32"]
    kept = max(wider, key=lambda f: mp.EPS[f]) if wider else "float32"
    return ReducedMatmuls(fmt, where, kept, platform)


def eval_matmuls_rounded(
    jaxpr: Any, consts: list[Any], args: list[Any], fmt: str
) -> list[Any]:
    """Evaluate ``jaxpr`` with the operands of every float32 ``dot_general``
    rounded to ``fmt`` (``matmul_precision.ROUND``); all else as it is."""
    rounding = mp.ROUND[fmt]

    def step(eqn: Any, invals: list[Any]) -> list[Any]:
        name = eqn.primitive.name
        if name in CALLS and CALLS[name] in eqn.params:
            inner, inner_consts = _open(eqn.params[CALLS[name]])
            return eval_matmuls_rounded(inner, inner_consts, invals, fmt)
        if _is_f32_matmul(eqn):
            return bind(eqn, [rounding(v) for v in invals])
        return bind(eqn, invals)

    return interpret(jaxpr, consts, args, step)


def matmuls_rounded(fn: Callable[..., Any], fmt: str) -> Callable[..., Any]:
    """``fn`` with the operands of its float32 matrix products rounded to
    ``fmt`` (``"bfloat16"``, ``"tensorfloat32"``, ``"bfloat16_3x"``): what
    ``fn`` computes on a platform whose products round their operands so
    (the bodies of ``scan``, ``cond`` and ``while`` run as they are).

    >>> import jax.numpy as jnp
    >>> a = jnp.array([[1 + 2.0**-9]], jnp.float32)
    >>> float(matmuls_rounded(lambda a: a @ a, "bfloat16")(a)[0, 0])
    1.0
    """
    return _evaluated_by(fn, eval_matmuls_rounded, fmt)
