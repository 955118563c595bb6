"""Compiled programs shared by every check whose traced computation is the same.

``jax.jit`` caches a compiled program per Python function object. A check
builds new closures on every call (the loss with its leaves rebuilt, the
rule's pullback, a sweep's batch), so with plain ``jax.jit`` a second check of
the same rule compiles everything again: about ten programs and two seconds
for a small custom_vjp on a 2-core CPU.

Here a function is first traced to a jaxpr (``jax.make_jaxpr``, milliseconds)
and the jaxpr is evaluated by a jitted evaluator looked up by a
:class:`Program` (hashable by what the jaxpr computes), with its closed-over
constants as ordinary arguments (the last ``MAX_PROGRAMS`` programs and
``MAX_COMPILED`` batches are kept, so memory stays bounded). Two checks whose
functions trace to the same computation, whatever their Python identity, share
one compiled program; different constant values (another batch of data, other
parameters) reuse it too.

What makes two programs "the same" (:func:`fingerprint`): the jaxpr's
equations in order, each with its primitive, the wiring of its operands and
results (variables numbered in order of appearance) and their avals (shape,
dtype, weak type), the value of every equation parameter and literal, nested
jaxprs the same way with the constants of nested closed jaxprs, and the avals
of the inputs. A parameter that is not plain data (a callback, a kernel's grid
mapping) is compared by equality when hashable, else by identity (kept alive
with the program, so the identity cannot be reused). The key is built in one
walk over the equations: printing the jaxpr, as an earlier version did, cost
about a sixth of a repeat check.

The programs are only ever *evaluated*, never differentiated: JAX's derivative
of a ``custom_vjp``/``custom_jvp`` call is already inlined into the jaxpr of a
function that differentiates it (``jax.vjp(f, x)[1](ct)`` contains the
rule's backward pass as plain equations). What such a call computes when
evaluated is its ``call_jaxpr``, so its rule parameters (``bwd``,
``fwd_jaxpr_thunk``, ``jvp_jaxpr_fun`` …, printed by name only) are left out of
the fingerprint: the rule is in the program wherever it is used.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core

RULE_PARAMS = {
    "custom_vjp_call": frozenset({"bwd", "fwd_jaxpr_thunk", "out_trees"}),
    "custom_vjp_call_jaxpr": frozenset({"bwd", "fwd_jaxpr_thunk", "out_trees"}),
    "custom_jvp_call": frozenset({"jvp_jaxpr_fun", "jvp_jaxpr_thunk"}),
}
"""Parameters that only matter when JAX differentiates the equation."""

MAX_COMPILED = 256
"""Ahead-of-time compiled batches kept (least recently used dropped)."""

CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
"""XLA options for the programs a check compiles on a CPU.

XLA's CPU backend has two code generators for fused operations; the older one
(``xla_cpu_use_fusion_emitters=False``) compiles the small programs of a check
faster, and its code runs about as fast. Measured on the 2-core CPU of
bench/RESULTS.md (jaxlib 0.10.2): first calls of bench/suite.py's 12 rule checks
35.2 → 24.6 s (medians of 3 alternating runs); the whole ``check_grad`` of
bench/run.py's MLP, CNN and transformer 3.7 → 3.4, 3.0 → 2.4 and 5.7 → 5.1 s
(one run each; sweep times within 10%). Only the programs jgradcheck compiles
are affected (its finite differences, the rule's derivative and the
yardsticks, each the same computation either way, rounded as XLA rounds it),
never the user's own ``jax.jit`` or eager operations. Results
may differ from the default code generator's in the last bits, as between two
XLA versions, which no verdict depends on. Set ``JGC_XLA_DEFAULT_EMITTERS=1``
to compile with XLA's defaults; on other platforms, or a jaxlib without the
option, the defaults are used."""


@functools.cache
def compiler_options() -> dict[str, Any] | None:
    """:data:`CPU_OPTIONS` where the default backend is a CPU that accepts
    them (checked once per process by compiling a one-operation program),
    else None (XLA's defaults)."""
    if os.environ.get("JGC_XLA_DEFAULT_EMITTERS", "") not in ("", "0"):
        return None
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(
            jax.ShapeDtypeStruct((2,), np.float32)
        ).compile()
    except Exception:  # noqa: BLE001 - an option this jaxlib does not know
        return None
    return dict(CPU_OPTIONS)


def jit(fn: Callable[..., Any], **options: Any) -> Any:
    """``jax.jit(fn, **options)`` with :func:`compiler_options`: for the
    programs jgradcheck compiles itself."""
    return jax.jit(fn, compiler_options=compiler_options(), **options)


class Program:
    """A jaxpr, hashable and comparable by :func:`fingerprint`.

    Only :func:`evaluate`'s static argument: build it with :func:`trace`.
    """

    __slots__ = ("jaxpr", "_key", "_hash", "_pins")

    def __init__(self, jaxpr: Any, in_avals: tuple[Any, ...]) -> None:
        pins: list[Any] = []
        self.jaxpr = jaxpr
        self._key = (in_avals, fingerprint(jaxpr, pins))
        self._hash = hash(self._key)
        self._pins = tuple(pins)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Program) and (
            self is other or (self._hash == other._hash and self._key == other._key)
        )


def fingerprint(jaxpr: Any, pins: list[Any]) -> tuple[Hashable, ...]:
    """What ``jaxpr`` computes, as a hashable value: its variables' avals and
    wiring, every equation's primitive, literals and parameters (nested jaxprs
    recursively, rule parameters left out: see the module docstring). Objects
    compared by identity are appended to ``pins``."""
    numbers: dict[Any, int] = {}

    def ref(v: Any) -> Hashable:
        if isinstance(v, core.Literal):
            return ("literal", _array_key(v.val), v.aval)
        number = numbers.get(v)
        if number is None:
            number = numbers[v] = len(numbers)
        return number

    def bound(v: Any) -> Hashable:
        if isinstance(v, core.DropVar):
            return ("dropped", v.aval)
        return (ref(v), v.aval)

    out: list[Hashable] = [
        tuple(bound(v) for v in jaxpr.constvars),
        tuple(bound(v) for v in jaxpr.invars),
    ]
    for eqn in jaxpr.eqns:
        skip = RULE_PARAMS.get(eqn.primitive.name, frozenset())
        out.append(
            (
                eqn.primitive.name,
                tuple(ref(v) for v in eqn.invars),
                tuple(bound(v) for v in eqn.outvars),
                tuple(
                    (name, _value_key(eqn.params[name], pins))
                    for name in sorted(eqn.params)
                    if name not in skip
                ),
            )
        )
    out.append(tuple(ref(v) for v in jaxpr.outvars))
    if jaxpr.effects:
        out.append(("effects", frozenset(jaxpr.effects)))
    return tuple(out)


def _array_key(x: Any) -> Hashable:
    a = np.asarray(x)
    digest = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16)
    return (a.dtype.str, a.shape, digest.hexdigest())


def _value_key(v: Any, pins: list[Any]) -> Hashable:
    if isinstance(v, core.ClosedJaxpr):
        return (
            "closed",
            fingerprint(v.jaxpr, pins),
            tuple(_array_key(c) for c in v.consts),
        )
    if isinstance(v, core.Jaxpr):
        return ("jaxpr", fingerprint(v, pins))
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_value_key(x, pins) for x in v))
    if isinstance(v, (np.ndarray, jax.Array)):
        return _array_key(v)
    try:
        hash(v)
    except TypeError:
        pins.append(v)
        return ("id", id(v))
    return v


def trace(fn: Callable[..., Any], *args: Any) -> tuple[Program, list[Any], Any]:
    """``fn`` traced at ``args`` (arrays or their ``ShapeDtypeStruct``):
    ``(program, constants, output treedef)``."""
    flat, in_tree = jax.tree_util.tree_flatten(args)

    def flat_fn(*leaves: Any) -> Any:
        return fn(*jax.tree_util.tree_unflatten(in_tree, list(leaves)))

    closed, shape = jax.make_jaxpr(flat_fn, return_shape=True)(*flat)
    avals = tuple(v.aval for v in closed.jaxpr.invars)
    program = Program(closed.jaxpr, avals)
    return program, list(closed.consts), jax.tree_util.tree_structure(shape)


_FUNCTIONS: collections.OrderedDict[Program, Any] = collections.OrderedDict()
"""One jitted evaluator per program, least recently used dropped beyond
``MAX_PROGRAMS`` (with its compiled code: memory stays bounded)."""

MAX_PROGRAMS = 512


def _run(jaxpr: Any, consts: list[Any], *args: Any) -> list[Any]:
    return core.jaxpr_as_fun(core.ClosedJaxpr(jaxpr, consts))(*args)


def evaluator(program: Program) -> Any:
    """``(consts, *args) ↦ outputs``, jitted: compiled once per argument types."""
    fn = _FUNCTIONS.get(program)
    if fn is None:
        fn = _FUNCTIONS[program] = jit(functools.partial(_run, program.jaxpr))
        if len(_FUNCTIONS) > MAX_PROGRAMS:
            _FUNCTIONS.popitem(last=False)
    else:
        _FUNCTIONS.move_to_end(program)
    return fn


def clear() -> None:
    """Drop every program and batch held (their compiled code with them)."""
    _FUNCTIONS.clear()
    Batch._compiled.clear()


def compiled_count() -> int:
    """Programs compiled and still held (evaluators per argument types, and
    batches): a repeat check adds none."""
    held = sum(fn._cache_size() for fn in _FUNCTIONS.values())
    return held + len(Batch._compiled)


class Function:
    """``fn`` evaluated through shared compiled programs, its traces
    remembered per argument types (as ``jax.jit`` remembers them for one
    function object): a function applied many times (a rule's pullback) is
    traced once per argument types, not once per call.

    Example:
      >>> import jax.numpy as jnp
      >>> from jgradcheck._engine import programs
      >>> w = jnp.arange(3.0)
      >>> f = programs.Function(lambda x: {"y": x @ w})
      >>> f(jnp.ones(3))["y"].item(), f(jnp.full(3, 2.0))["y"].item()
      (3.0, 6.0)
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._traces: dict[Hashable, tuple[Program, list[Any], Any]] = {}

    def __call__(self, *args: Any) -> Any:
        leaves, in_tree = jax.tree_util.tree_flatten(args)
        key = (in_tree, tuple(jax.typeof(x) for x in leaves))
        traced = self._traces.get(key)
        if traced is None:
            traced = self._traces[key] = trace(self.fn, *args)
        program, consts, out_tree = traced
        outputs = evaluator(program)(consts, *leaves)
        return jax.tree_util.tree_unflatten(out_tree, outputs)


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` through the shared compiled program of its computation.

    ``args`` are pytrees of arrays (tracers too: under ``jax.vmap`` the
    program is batched, once per program). For a function applied more than
    once, :class:`Function` also saves the tracing.

    Example:
      >>> import jax.numpy as jnp
      >>> from jgradcheck._engine import programs
      >>> w = jnp.arange(3.0)
      >>> programs.call(lambda x: {"y": x @ w}, jnp.ones(3))["y"].item()
      3.0
    """
    return Function(fn)(*args)


class Batch:
    """An ahead-of-time compiled batch function, shared across checks.

    ``Batch(fn, specs)`` traces ``fn`` at ``specs`` (pytrees of
    ``ShapeDtypeStruct`` and arrays, one per argument) and compiles it, unless
    a check already compiled the same computation for the same argument
    types; ``batch(*args)`` runs it on arguments of those types.
    """

    _compiled: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()

    def __init__(self, fn: Callable[..., Any], specs: Sequence[Any]) -> None:
        program, consts, out_tree = trace(fn, *specs)
        self.consts, self.out_tree = consts, out_tree
        flat = jax.tree_util.tree_leaves(specs)
        types = tuple(_type_key(s) for s in [*consts, *flat])
        key = (program, types)
        cache = Batch._compiled
        self.reused = key in cache
        if self.reused:
            cache.move_to_end(key)
        else:
            cache[key] = evaluator(program).lower(consts, *flat).compile()
            if len(cache) > MAX_COMPILED:
                cache.popitem(last=False)
        self.compiled = cache[key]

    def __call__(self, *args: Any) -> Any:
        out = self.compiled(self.consts, *jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(self.out_tree, out)


def _type_key(x: Any) -> Hashable:
    sharding = getattr(x, "sharding", None)
    return (tuple(np.shape(x)), str(x.dtype), sharding)
