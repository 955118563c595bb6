"""The precision a computation really ran at, under the caller's x64 setting.

An array's dtype is not always the precision JAX computed with it. With x64
off (JAX's default), a float64 array made inside ``with jax.enable_x64(True):``
keeps its float64 dtype, but every primitive that asks for its dtype
explicitly (``dot``, the accumulation of ``sum``, ``convert_element_type``)
gets float32 instead, with a "truncated to dtype float32" UserWarning: the loss
and its gradient are float32 computations in float64 arrays (``jax.grad`` even
returns float64 arrays whose values carry float32's rounding). Judging such a
gradient at float64's eps fails correct entries at relative errors of 1e-7.

The *effective dtype* of a JAX array is the dtype JAX computes in for it under
the caller's x64 setting: ``jax.dtypes.canonicalize_dtype`` (float64 → float32,
complex128 → complex64 with x64 off; the identity with x64 on, so nothing
changes for a float32 or float64 check with a consistent x64 setting). Some of
such a computation may still run in float64 (elementwise primitives keep their
operands' dtype), so the effective dtype bounds its rounding from above: every
operation rounds at float32's eps or finer.

NumPy arrays are NumPy's computations at their own dtype: a ``grad=`` written
in NumPy computes in float64 whatever JAX's setting, and keeps its dtype.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from .._dtypes import cast
from .._pytree.flat import Flat

TRUNCATION_WARNING = r"Explicitly requested dtype .* is not available"
"""The message of JAX's UserWarning when x64 is off and an operation asks for
a 64-bit dtype (``… will be truncated to dtype float32``)."""


def x64_enabled() -> bool:
    """The caller's JAX x64 setting (read outside any scope jgradcheck opens)."""
    return bool(jax.config.read("jax_enable_x64"))


def effective_dtype(dtype: DTypeLike) -> np.dtype:
    """The dtype JAX computes in for an array of ``dtype`` under the current
    x64 setting: float64 → float32 and complex128 → complex64 while x64 is off.

    Call it where the caller's setting is current (not inside a scoped
    ``jax.enable_x64``).
    """
    return np.dtype(jax.dtypes.canonicalize_dtype(np.dtype(dtype)))


def computed_dtype(x: Any) -> np.dtype:
    """The precision ``x`` was computed at: a JAX array's effective dtype
    (:func:`effective_dtype`), any other array's own dtype."""
    dtype = np.dtype(getattr(x, "dtype", np.asarray(x).dtype))
    return effective_dtype(dtype) if isinstance(x, jax.Array) else dtype


def as_computed(x: Any) -> Any:
    """``x`` in the dtype it was computed at (:func:`computed_dtype`).

    A float32 computation stored in a float64 array is judged as the float32
    result it is: the cast rounds by at most half an ulp of float32, far
    inside the gradient's rounding allowance (``GRAD_ULPS`` = 16 ulps of its
    dtype, :mod:`jgradcheck._numerics.verdict`).
    """
    dtype = computed_dtype(x)
    if dtype == np.dtype(getattr(x, "dtype", dtype)):
        return x
    with quiet_truncation():
        return cast(x, dtype)


def truncated(dtypes: Iterable[DTypeLike]) -> list[np.dtype]:
    """The ``dtypes`` (sorted, unique) that the current x64 setting narrows."""
    wide = {np.dtype(d) for d in dtypes}
    return sorted((d for d in wide if effective_dtype(d) != d), key=str)


def to_effective(x: Any) -> Any:
    """An inexact array (JAX or NumPy) as a JAX array of its effective dtype;
    anything else unchanged. Where JAX computes with ``x`` it would narrow it
    anyway; this does it once, without the warning."""
    if not isinstance(x, (jax.Array, np.ndarray)):
        return x
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    dtype = effective_dtype(x.dtype)
    if dtype == x.dtype:
        return x
    with quiet_truncation():
        return cast(x, dtype)


def in_effective_dtypes(flat: Flat) -> Flat:
    """``flat`` with its checked leaves in their effective dtypes
    (:func:`to_effective`); ``flat`` itself when the x64 setting narrows none."""
    leaves = [to_effective(x) for x in flat.leaves]
    if all(a is b for a, b in zip(leaves, flat.leaves)):
        return flat
    checked = {i.position for i in flat.checked}
    return Flat(
        flat.treedef,
        tuple(x if k in checked else flat.leaves[k] for k, x in enumerate(leaves)),
        flat.infos,
    )


def truncation_phrase(dtypes: Iterable[DTypeLike]) -> str:
    """What ran at which precision: ``"float64 arrays, computed in float32:
    x64 is off"``, or ``""`` when the x64 setting narrows none of ``dtypes``."""
    wide = truncated(dtypes)
    if not wide:
        return ""
    to = ", ".join(str(effective_dtype(d)) for d in wide)
    return f"{', '.join(map(str, wide))} arrays, computed in {to}: x64 is off"


def truncation_note(dtypes: Iterable[DTypeLike]) -> str:
    """:func:`truncation_phrase` in parentheses after a space, or ``""``."""
    phrase = truncation_phrase(dtypes)
    return f" ({phrase})" if phrase else ""


@contextlib.contextmanager
def quiet_truncation() -> Iterator[None]:
    """Silence JAX's "truncated to dtype float32" UserWarning in the block.

    jgradcheck's own evaluations of a loss at 64-bit arrays with x64 off
    would raise it once per trace; the report says instead what ran at which
    precision (:func:`truncation_note`).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", TRUNCATION_WARNING, UserWarning)
        yield
