"""Floating-point dtypes as JAX knows them: bfloat16, float16 and float8 included.

NumPy does not know the ml_dtypes types JAX computes in: ``np.finfo(bfloat16)``
raises "data type bfloat16 not inexact" and ``np.issubdtype(bfloat16,
np.floating)`` is False. Every place in jgradcheck that classifies a dtype or
measures its precision asks here instead (``jnp.finfo`` / ``jnp.issubdtype``,
which know them all), so that no layer refuses a bfloat16 loss, leaf or
gradient with NumPy's message.

Some dtypes JAX can store but not compute in on a backend (the float6 types on
CPU: "Invalid XLA PrimitiveType"). :func:`refuse_if_cannot_compute` turns that
into an error naming the leaf and the dtype, instead of a failure deep inside a
compiled sweep.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike


def cast(x: Any, dtype: DTypeLike) -> jax.Array:
    """``x`` as a JAX array of ``dtype``, converted by NumPy on the host.

    ``x.astype(dtype)`` on a JAX array runs a compiled ``convert_element_type``
    program, compiled anew for every shape (about 0.1 s each on CPU; a check
    casts every leaf and argument to float64). NumPy converts the same way
    (IEEE round to nearest even; widening is exact). Call it under the x64
    setting the result is meant for.

    >>> cast(jnp.ones(2, jnp.bfloat16), jnp.float32).dtype
    dtype('float32')
    """
    return on_device(np.asarray(x).astype(dtype))


def on_device(x: Any) -> jax.Array:
    """A host array as a JAX array (a JAX array as it is), without compiling.

    ``jnp.asarray`` of a NumPy array compiles a small program for every new
    shape (about 0.03 s on CPU); ``jax.device_put`` copies it, with the same
    dtype rules (float64 is float32 with x64 off).

    >>> on_device(np.ones(2, np.float32)).dtype
    dtype('float32')
    """
    if isinstance(x, jax.Array):
        return x
    return jax.device_put(np.asarray(x))


def eps(dtype: DTypeLike | None) -> float:
    """Machine epsilon of a float or complex ``dtype`` (bfloat16: 2⁻⁷; ``None``
    is float64, as for ``np.dtype(None)``)."""
    return float(jnp.finfo(np.float64 if dtype is None else dtype).eps)


def tiny(dtype: DTypeLike | None) -> float:
    """Smallest positive normal number of a float or complex ``dtype``
    (float32: 1.2e-38). Below it a value has fewer significant digits
    (subnormal), or none: XLA on a CPU flushes float32 and float64 results
    there to zero."""
    return float(jnp.finfo(np.float64 if dtype is None else dtype).tiny)


def is_real_float(dtype: DTypeLike) -> bool:
    """Whether ``dtype`` is a real floating-point type (bfloat16 and float8 too)."""
    return bool(jnp.issubdtype(dtype, jnp.floating))


def is_complex(dtype: DTypeLike) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.complexfloating))


def is_inexact(dtype: DTypeLike) -> bool:
    """A real or complex floating-point type."""
    return bool(jnp.issubdtype(dtype, jnp.inexact))


@functools.cache
def _why_no_arithmetic(dtype: np.dtype) -> str | None:
    """What JAX says when asked to compute ``x·x + x`` in ``dtype``, or None."""
    try:
        out = jax.jit(lambda x: x * x + x)(jnp.ones((2,), dtype))
        jax.block_until_ready(out)
    except Exception as e:  # noqa: BLE001 - any failure means no arithmetic
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0] if lines else ''}"
    return None


def refuse_if_cannot_compute(dtype: Any, where: str) -> None:
    """Raise a ``TypeError`` naming ``where`` if JAX cannot compute in ``dtype``.

    Args:
      dtype: a floating-point dtype.
      where: what has that dtype, e.g. ``"`params` leaf ['w']"``.

    Raises:
      TypeError: JAX cannot do arithmetic in ``dtype`` on the default backend.
    """
    # With x64 off JAX computes a float64 array in float32 (the caller's
    # setting: jgradcheck._engine.precision); ask about that dtype, without
    # the truncation warning that asking about float64 would raise.
    why = _why_no_arithmetic(np.dtype(jax.dtypes.canonicalize_dtype(dtype)))
    if why is not None:
        raise TypeError(
            f"{where} has dtype {np.dtype(dtype).name}, which JAX cannot compute "
            f"in on {jax.default_backend()} ({why}). Gradients cannot be checked "
            "in it; the fix is to cast it to a dtype JAX computes in, e.g. "
            "`x.astype(jnp.bfloat16)` or `x.astype(jnp.float32)`."
        )


def as_float64(x: Any) -> np.ndarray:
    """``x`` as a NumPy array, float64 if real floating-point (complex128 if complex).

    NumPy computes on bfloat16 arrays in bfloat16; differences and scales of
    them are taken after this cast.
    """
    x = np.asarray(x)
    if is_complex(x.dtype):
        return x.astype(np.complex128)
    return x.astype(np.float64) if is_real_float(x.dtype) else x


def _jaxprs_in(value: Any) -> list[Any]:
    """The jaxprs among an equation's params (``jit``, ``scan``, ``cond``, rules)."""
    out = []
    for v in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(v, "jaxpr", v)
        if hasattr(inner, "eqns"):
            out.append(inner)
    return out


def _narrower(dtype: Any, than: np.dtype | None) -> np.dtype | None:
    """``dtype`` if it is a real float less precise than ``than`` (or ``than``
    is None), else ``than``."""
    if dtype is None or not is_real_float(dtype):
        return than
    if than is None or eps(dtype) > eps(than):
        return np.dtype(dtype)
    return than


def _narrowest_of_eqn(eqn: Any, start: np.dtype | None) -> np.dtype | None:
    """The least precise real float among ``start``, an equation's outputs
    and every value its sub-jaxprs compute."""
    narrowest = start
    for var in eqn.outvars:
        narrowest = _narrower(
            getattr(getattr(var, "aval", None), "dtype", None), narrowest
        )
    for p in eqn.params.values():
        for inner in _jaxprs_in(p):
            for sub in inner.eqns:
                narrowest = _narrowest_of_eqn(sub, narrowest)
    return narrowest


def narrowest_computed(jaxpr: Any, start: np.dtype) -> np.dtype:
    """The least precise real float dtype among ``start`` and the values a
    jaxpr computes (sub-jaxprs included): the precision a computation really
    rounds at, even when its output is wider (``x.astype(bfloat16)`` inside a
    float32 loss)."""
    narrowest = np.dtype(start)
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        narrowest = _narrowest_of_eqn(eqn, narrowest) or narrowest
    return narrowest


def narrowest_along(jaxpr: Any, n_inputs: int) -> list[np.dtype | None]:
    """For each of the jaxpr's first ``n_inputs`` inputs, the least precise
    real float dtype among the values computed from it (None: none is a real
    float): the precision the computation rounds that input's contribution at.

    A float64 leaf that the loss casts to float32 (``p.astype(jnp.float32)``)
    is computed in float32 although J and the leaf are float64; a float32
    constant the loss computes apart from the leaf does not count. An
    equation that reads the input counts with everything its sub-jaxprs
    compute (``jit``, ``scan``, custom rules: conservative).
    """
    jx = getattr(jaxpr, "jaxpr", jaxpr)
    # Keyed by id: JAX's Literal is not always hashable; the jaxpr keeps the
    # variables alive while this runs.
    reads = {id(v): 1 << k for k, v in enumerate(jx.invars[:n_inputs])}
    out: list[np.dtype | None] = [None] * n_inputs
    for eqn in jx.eqns:
        mask = 0
        for v in eqn.invars:
            mask |= reads.get(id(v), 0)
        if not mask:
            continue
        for v in eqn.outvars:
            reads[id(v)] = mask
        narrowest = _narrowest_of_eqn(eqn, None)
        k = 0
        while mask >> k:
            if (mask >> k) & 1:
                out[k] = _narrower(narrowest, out[k])
            k += 1
    return out
