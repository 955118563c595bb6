"""What a float32 matrix product's ``precision`` means on each platform, and
the rounding of its operands that it amounts to.

A float32 ``dot_general`` keeps its dtype whatever its precision; what
changes is what the hardware does with the operands. The jaxpr records the
precision as the ``precision`` param of the equation: ``None`` (unset: XLA's
DEFAULT), a pair of :class:`jax.lax.Precision`, or a
:class:`jax.lax.DotAlgorithmPreset`. ``jax.default_matmul_precision`` (the
``jax_default_matmul_precision`` config) reaches the jaxpr the same way:
``jax.lax.dot_general`` resolves an unset ``precision=`` from the config
when it is traced (``canonicalize_precision`` in ``jax/_src/lax/lax.py``;
the config is part of the jit cache key), and :func:`effective` applies it
again to a param left unset, for JAX versions that resolve it later.

What each precision means for float32 operands (:data:`TABLE`):

- **cpu**: full float32 whatever the setting (``jax.lax.Precision``'s
  docstring: "Has no impact on CPU backends"; the presets are ignored too:
  ``BF16_BF16_F32`` computes ``(1 + 2⁻¹²)·1`` exactly on CPU, jax 0.10).
- **tpu**: DEFAULT: one bfloat16 pass (operands rounded to bfloat16, float32
  accumulation); HIGH: three bfloat16 passes (``bfloat16_3x``: each operand
  as the sum of two bfloat16, ≈ 16 significant bits); HIGHEST: six passes,
  float32 (the ``jax.lax.Precision`` docstring).
- **gpu** (NVIDIA, Ampere and later): DEFAULT and HIGH may run as
  TensorFloat-32 (operands rounded to 10 explicit mantissa bits, float32
  accumulation), HIGHEST as float32. XLA decides per product:
  ``IsTf32Allowed`` in ``xla/service/gpu/matmul_utils.cc`` (cuBLAS: allowed
  when the larger operand precision is DEFAULT or HIGH) and in XLA's Triton
  emitter (allowed when both are DEFAULT), both also gated on
  ``tsl::tensor_float_32_execution_enabled()`` (on unless
  ``NVIDIA_TF32_OVERRIDE=0``); jax-ml/jax#12008, #14022 and #14157 are the
  history (precision was ignored on A100 until XLA honoured it). HIGH is
  taken as TF32 here (the cuBLAS path). Pre-Ampere GPUs compute float32.

Explicit algorithms mean the same on every accelerator: ``BF16_BF16_F32``
(bfloat16), ``BF16_BF16_F32_X3`` (bfloat16_3x), ``TF32_TF32_F32``
(TensorFloat-32); the others (``F32_F32_F32``, the ``_X6``/``_X9``
bfloat16 and ``_X3`` TF32 schemes) reach float32 or better, and float8 /
float16 algorithms and custom :class:`jax.lax.DotAlgorithm` are not
modelled (treated as full precision: no claim is made).

The roundings are integer operations on the float32 bit pattern
(:func:`round_mantissa`: round to nearest, ties to even, as the hardware and
``ml_dtypes`` convert), so they run the same on every backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

P = lax.Precision

TABLE: dict[str, dict[P, str | None]] = {
    "cpu": {P.DEFAULT: None, P.HIGH: None, P.HIGHEST: None},
    "tpu": {P.DEFAULT: "bfloat16", P.HIGH: "bfloat16_3x", P.HIGHEST: None},
    "gpu": {P.DEFAULT: "tensorfloat32", P.HIGH: "tensorfloat32", P.HIGHEST: None},
}
"""Platform → precision → the format float32 operands are rounded to (None:
full float32). Sources in the module docstring."""

ALGORITHMS: dict[str, str] = {
    "BF16_BF16_F32": "bfloat16",
    "BF16_BF16_F32_X3": "bfloat16_3x",
    "TF32_TF32_F32": "tensorfloat32",
}
"""Explicit algorithms whose operands are narrower than float32 (on an
accelerator; the CPU ignores them)."""

EPS: dict[str, float] = {
    "bfloat16": 2.0**-7,
    "tensorfloat32": 2.0**-10,
    "bfloat16_3x": 2.0**-15,
}
"""Machine epsilon of each operand format (bfloat16_3x: two bfloat16 of 8
significant bits each, 16 in all)."""

_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jgradcheck_matmul_platform", default=None
)


def current_platform() -> str:
    """The platform whose matmul precision explains a failure: the one set
    by :func:`as_on`, else JAX's default backend (``"cpu"``, ``"gpu"``,
    ``"tpu"``)."""
    return _PLATFORM.get() or jax.default_backend()


@contextlib.contextmanager
def as_on(platform: str) -> Iterator[None]:
    """Explain failures as if the rule had run on ``platform`` (a key of
    :data:`TABLE`), e.g. a rule that emulates a TPU's bfloat16 pass checked
    on the CPU.

    >>> with as_on("tpu"):
    ...     current_platform()
    'tpu'
    """
    if platform not in TABLE:
        raise ValueError(
            f"`platform` must be one of {sorted(TABLE)}; got {platform!r}."
        )
    token = _PLATFORM.set(platform)
    try:
        yield
    finally:
        _PLATFORM.reset(token)


def effective(precision: Any, default: Any = None) -> Any:
    """A ``dot_general``'s precision param with an unset one resolved:
    ``default`` (the ``jax_default_matmul_precision`` config value, a string
    such as ``"bfloat16"`` or a preset name), else DEFAULT. A pair is kept,
    a single :class:`jax.lax.Precision` doubled, a preset as it is.

    >>> effective(None, "float32")
    (Precision.HIGHEST, Precision.HIGHEST)
    >>> effective(None)
    (Precision.DEFAULT, Precision.DEFAULT)
    """
    if precision is None:
        if default is None:
            return (P.DEFAULT, P.DEFAULT)
        if isinstance(default, str) and default in lax.DotAlgorithmPreset.__members__:
            return lax.DotAlgorithmPreset[default]
        precision = P(default)
    if isinstance(precision, P):
        return (precision, precision)
    return precision


def operand_format(precision: Any, *, platform: str) -> str | None:
    """The format float32 operands of a ``dot_general`` with ``precision``
    (as :func:`effective` returns it) are rounded to on ``platform``: a key
    of :data:`EPS`, or None (full float32, or not modelled).

    >>> operand_format((P.DEFAULT, P.DEFAULT), platform="tpu")
    'bfloat16'
    >>> operand_format((P.DEFAULT, P.DEFAULT), platform="cpu") is None
    True
    """
    row = TABLE.get(platform)
    if row is None:
        return None
    if isinstance(precision, lax.DotAlgorithmPreset):
        if precision == lax.DotAlgorithmPreset.DEFAULT:
            return row[P.DEFAULT]
        return None if platform == "cpu" else ALGORITHMS.get(precision.name)
    if isinstance(precision, tuple) and all(isinstance(p, P) for p in precision):
        return row[max(precision, key=lambda p: p.value)]
    return None  # a custom DotAlgorithm: not modelled


def label(precision: Any) -> str:
    """How a precision is named in a report: ``precision=DEFAULT``,
    ``precision=(DEFAULT, HIGHEST)``, ``precision=BF16_BF16_F32``."""
    if isinstance(precision, tuple) and len(set(precision)) == 1:
        precision = precision[0]
    if isinstance(precision, tuple):
        return (
            "precision=("
            + ", ".join(str(getattr(p, "name", p)) for p in precision)
            + ")"
        )
    return f"precision={getattr(precision, 'name', precision)}"


@functools.partial(jax.jit, static_argnames="bits")
def round_mantissa(x: Any, bits: int) -> jax.Array:
    """float32 ``x`` rounded to ``bits`` explicit mantissa bits (of 23), to
    nearest with ties to even, by integer operations on its bit pattern;
    float32 again. Subnormals round at the same bit position (bfloat16 and
    TF32 have float32's exponent range), a carry out of the largest finite
    values gives ±inf, ±inf stay, NaN stays NaN.

    >>> float(round_mantissa(jnp.float32(1 + 2**-8), 7))  # a tie: to even
    1.0
    """
    x = jnp.asarray(x, jnp.float32)
    drop = 23 - bits
    u = lax.bitcast_convert_type(x, jnp.uint32)
    lsb = (u >> drop) & jnp.uint32(1)
    up = u + jnp.uint32((1 << (drop - 1)) - 1) + lsb
    kept = up & jnp.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return jnp.where(jnp.isnan(x), x, lax.bitcast_convert_type(kept, jnp.float32))


def round_bf16(x: Any) -> jax.Array:
    """float32 ``x`` rounded to bfloat16 (7 explicit mantissa bits), kept in
    float32."""
    return round_mantissa(x, 7)


def round_tf32(x: Any) -> jax.Array:
    """float32 ``x`` rounded to TensorFloat-32 (10 explicit mantissa bits),
    kept in float32.

    >>> float(round_tf32(jnp.float32(1 + 2**-11 + 2**-20)))  # above the tie
    1.0009765625
    """
    return round_mantissa(x, 10)


def round_bf16_3x(x: Any) -> jax.Array:
    """float32 ``x`` as a TPU's three-pass product sees it: ``hi + lo``,
    ``hi`` its bfloat16 rounding and ``lo`` that of the rest (16 significant
    bits; the pass the three-pass scheme drops, ``lo·lo``, is smaller still).
    Non-finite values as :func:`round_bf16` gives them; where the rest is
    zero (or flushed to zero: XLA's CPU flushes subnormal results), ``hi``."""
    hi = round_bf16(x)
    lo = round_bf16(jnp.asarray(x, jnp.float32) - hi)
    return jnp.where(jnp.isfinite(hi) & (lo != 0), hi + lo, hi)


ROUND = {
    "bfloat16": round_bf16,
    "tensorfloat32": round_tf32,
    "bfloat16_3x": round_bf16_3x,
}
"""Operand format → its rounding of float32 values."""
