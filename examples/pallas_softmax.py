"""A Pallas kernel with a hand-written VJP, checked in bfloat16 against a reference.

The kernel is a row-wise scaled softmax, ``softmax(x / √d)`` over the last axis
(the attention-logits softmax): a ``jax.custom_vjp`` whose forward and
backward passes are both ``pallas_call`` kernels over blocks of rows. Both
accumulate in ``promote_types(x.dtype, float32)`` (float32 for bfloat16
inputs, float64 when the check evaluates the kernel at float64 for its finite
differences) and store the result in the input's dtype; the backward pass
recomputes the probabilities from ``x`` instead of keeping them in bfloat16,
as flash-attention's backward does.

``interpret=True`` runs the kernels on any backend (the CPU included), slowly;
on a GPU or TPU drop it. Run this file to see the reports::

    python examples/pallas_softmax.py
"""

from __future__ import annotations

# --8<-- [start:kernel]
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

BLOCK_ROWS = 4
"""Rows per program: the grid is ``rows / BLOCK_ROWS`` programs."""


def _probabilities(x: jax.Array) -> jax.Array:
    """softmax(x / √d) of a block of rows, in at least float32."""
    acc = jnp.promote_types(x.dtype, jnp.float32)
    s = x.astype(acc) / math.sqrt(x.shape[-1])
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _forward_kernel(x_ref: Any, p_ref: Any) -> None:
    p_ref[...] = _probabilities(x_ref[...]).astype(p_ref.dtype)


def _backward_kernel(x_ref: Any, g_ref: Any, dx_ref: Any, *, bug: str | None) -> None:
    x = x_ref[...]
    p = _probabilities(x)
    g = g_ref[...].astype(p.dtype)
    if bug == "term":  # forgets the softmax Jacobian's − Σ p·g
        dx = p * g
    else:
        dx = p * (g - jnp.sum(p * g, axis=-1, keepdims=True))
    scale: float | jax.Array = 1.0 / math.sqrt(x.shape[-1])
    if bug == "block":  # the last block of rows forgets the 1/√d
        last = pl.program_id(0) == pl.num_programs(0) - 1
        scale = jnp.where(last, 1.0, scale)
    dx_ref[...] = (dx * scale).astype(dx_ref.dtype)


def _rowwise(kernel: Any, x: jax.Array, *more: jax.Array) -> jax.Array:
    """``kernel`` over blocks of ``BLOCK_ROWS`` rows; the output is like ``x``."""
    rows, cols = x.shape
    if rows % BLOCK_ROWS:
        raise ValueError(f"rows must be a multiple of {BLOCK_ROWS}; got {rows}.")
    block = pl.BlockSpec((BLOCK_ROWS, cols), lambda i: (i, 0))
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        grid=(rows // BLOCK_ROWS,),
        in_specs=[block] * (1 + len(more)),
        out_specs=block,
        interpret=True,  # any backend; drop it on a GPU or TPU
    )(x, *more)


def make_softmax(bug: str | None = None) -> Any:
    """The kernel as a ``jax.custom_vjp``; ``bug`` plants a mistake in its
    backward pass: ``"term"`` drops the ``− Σ p·g`` term, ``"block"`` forgets
    the 1/√d in the last block of rows only."""
    backward = functools.partial(_backward_kernel, bug=bug)

    @jax.custom_vjp
    def softmax(x: jax.Array) -> jax.Array:
        return _rowwise(_forward_kernel, x)

    def fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return softmax(x), x  # keep x: the backward pass recomputes p

    def bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
        return (_rowwise(backward, x, g),)

    softmax.defvjp(fwd, bwd)
    return softmax


def softmax_reference(x: jax.Array) -> jax.Array:
    """The plain implementation, in the input's dtype: what the kernel fuses."""
    return jax.nn.softmax(x / math.sqrt(x.shape[-1]), axis=-1)


# --8<-- [end:kernel]


def logits(rows: int = 8, cols: int = 16, dtype: Any = jnp.bfloat16) -> jax.Array:
    """Attention-sized logits (standard deviation 3), in ``dtype``."""
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (rows, cols), jnp.float32)
    return x.astype(dtype)


if __name__ == "__main__":
    import jgradcheck as jgc

    x = logits()
    print(jgc.check_vjp(make_softmax(), x, reference=softmax_reference))
    print(jgc.check_vjp(make_softmax("block"), x, reference=softmax_reference))
