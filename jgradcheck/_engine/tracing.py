"""Tracing the user's functions: where it cannot work, an error that says why.

A check evaluates the function thousands of times through ``jax.jit``; that
needs concrete inputs (not tracers of an enclosing ``jit``/``vmap``/``grad``),
a function that jit can trace (no Python control flow on values) and jit
itself (not switched off by ``jax.disable_jit()``). This module checks the
first two before anything runs, explaining failures at the user's line, and
re-enables jit for the check's own evaluations under the third.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import jax
from jax.tree_util import keystr

DISABLE_JIT_NOTE = (
    "jax.disable_jit() is on: jgradcheck compiled its own evaluations anyway "
    "(a check evaluates J thousands of times), so prints and breakpoints in "
    "the function see tracers here"
)
"""The report's note when the check ran under ``jax.disable_jit()``."""

_JIT_REENABLED: ContextVar[bool] = ContextVar("jgradcheck_jit_reenabled", default=False)


@contextlib.contextmanager
def jit_enabled() -> Iterator[None]:
    """jit on for the block, also under the caller's ``jax.disable_jit()``.

    Outside it nothing changes. Under it, the check's sweeps (ahead-of-time
    compiled batches, which ``disable_jit`` refuses) run compiled as usual, and
    :func:`jit_note` says so for the report. The caller's setting is restored
    on exit; the global configuration is never touched.
    """
    if not jax.config.jax_disable_jit:  # type: ignore[attr-defined]
        yield
        return
    token = _JIT_REENABLED.set(True)
    try:
        with jax.disable_jit(False):
            yield
    finally:
        _JIT_REENABLED.reset(token)


def jit_notes() -> tuple[str, ...]:
    """``(DISABLE_JIT_NOTE,)`` inside a :func:`jit_enabled` that re-enabled jit."""
    return (DISABLE_JIT_NOTE,) if _JIT_REENABLED.get() else ()


def refuse_traced(tree: Any, name: str) -> None:
    """Refuse ``tree`` (the ``name=`` argument) if a leaf is a JAX tracer.

    Raises:
      TypeError: naming the first traced leaf, and the fix.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError(
                f"`{name}` holds a traced value at {keystr(path) or '<root>'}: the "
                "check was called inside a JAX transformation (jax.jit, jax.vmap, "
                "jax.grad, lax.scan, ...). Checks run outside transformations; "
                "call check_grad (check_vjp, check_jvp) on concrete values: move "
                "the call out of the transformed function (for a vmapped batch, "
                "check one example)."
            )


def traced_value(value: Any, name: str) -> None:
    """Refuse a traced result of ``name``: it closes over a tracer."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"`{name}` closes over a traced value: the check was called inside a "
            "JAX transformation (jax.jit, jax.vmap, jax.grad). Checks run outside "
            "transformations; call the check on concrete values, outside the "
            "transformed function."
        )


_CAUSES: tuple[tuple[type[BaseException], str, str], ...] = (
    (
        jax.errors.TracerBoolConversionError,
        "uses Python control flow on the values of its inputs (`if x > 0:`, "
        "`while`, `and`/`or` on arrays)",
        "the fix is `jnp.where(cond, a, b)` or `jax.lax.cond` (`lax.while_loop` "
        "for loops); a branch on configuration should read a Python value passed "
        "in `args`, which is held fixed and not traced",
    ),
    (
        jax.errors.TracerIntegerConversionError,
        "turns a value of its inputs into a Python int (`int(x)`, `range(x)`, "
        "indexing a list with an array)",
        "the fix is to keep it an array (`jnp.take`, `lax.dynamic_slice`) or to "
        "pass the integer in `args`, which is held fixed and not traced",
    ),
    (
        jax.errors.TracerArrayConversionError,
        "turns a value of its inputs into a NumPy array (`np.asarray`, a NumPy "
        "function on a JAX array)",
        "the fix is to use `jax.numpy` (`jnp`) instead of `numpy` inside it",
    ),
    (
        jax.errors.ConcretizationTypeError,
        "needs a concrete value of its inputs where JAX traces them (a shape "
        "or a Python number computed from an array)",
        "the fix is to compute it from shapes or from Python values passed in "
        "`args`, which are held fixed and not traced",
    ),
)


def _user_line(error: BaseException) -> str:
    """``file:line: code`` of the innermost frame outside JAX and jgradcheck."""
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if "/jax/" not in f.filename
        and "/jaxlib/" not in f.filename
        and "/jgradcheck/" not in f.filename
        and "/contextlib.py" not in f.filename
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno}: `{(f.line or '').strip()}`)"


@contextlib.contextmanager
def explained_tracing(name: str) -> Iterator[None]:
    """Re-raise JAX's errors for untraceable code as a TypeError naming
    ``name``, the cause at the user's line, and the fix (chained)."""
    try:
        yield
    except tuple(c for c, _, _ in _CAUSES) as e:
        cause, fix = next((c, f) for t, c, f in _CAUSES if isinstance(e, t))
        raise TypeError(
            f"`{name}` {cause}{_user_line(e)}. jgradcheck compiles `{name}` with "
            "jax.jit to evaluate it thousands of times, and jit traces the inputs "
            f"as abstract values: {fix}."
        ) from e


def trace_shape(fn: Callable[[], Any], name: str) -> Any:
    """``jax.eval_shape(fn)`` (no FLOPs), explaining untraceable code
    (:func:`explained_tracing`)."""
    with explained_tracing(name):
        return jax.eval_shape(fn)
