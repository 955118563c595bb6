"""warm_up: a few optimizer steps before checking, away from the initialization.

Gradient-checking advice (CS231n's notes among others) is to let the network
learn for a short while and check once the loss has started to fall: at the
initialization the parameters sit at a special point (biases exactly 0,
symmetric weights) where a wrong gradient can coincide with the right one. A
hand-written backprop that forgets a term multiplied by a bias passes every
check while the bias is 0 and fails as soon as training moves it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._engine.gradient import loss_output_check
from .._pytree.flat import Flat, flatten_params, split_static
from .._typing import PyTree


class WarmUp(NamedTuple):
    """What :func:`warm_up` returns with ``return_losses=True``."""

    params: PyTree
    """The parameters after the last step, structured like the input ``params``."""
    losses: np.ndarray
    """``losses[k]`` is the loss step ``k + 1`` saw: on its batch, before its update
    (so ``losses[0]`` is the loss at the initial params), shape ``[steps]``."""


def _batches(batches: Any, steps: int) -> list[tuple]:
    """The argument tuple of each step: one tuple reused, or the first ``steps``."""
    if isinstance(batches, tuple):
        return [batches] * steps
    if hasattr(batches, "shape") or isinstance(batches, (str, bytes, dict)):
        raise TypeError(
            "`batches` must be a tuple of arguments to `loss` (reused at every "
            "step) or an iterable of such tuples; got a "
            f"{type(batches).__name__}. For a single batch `x`, pass `(x,)`."
        )
    if not isinstance(batches, Iterable):
        raise TypeError(
            "`batches` must be a tuple of arguments to `loss` or an iterable of "
            f"such tuples; got {type(batches).__name__}."
        )
    taken = list(itertools.islice(iter(batches), steps))
    if not taken:
        raise ValueError(
            "`batches` is empty: warm_up needs at least one batch of arguments. "
            "For a loss of `params` alone, pass `()`."
        )
    for k, b in enumerate(taken):
        if not isinstance(b, tuple):
            raise TypeError(
                f"`batches` must yield tuples of arguments to `loss`; item {k} is a "
                f"{type(b).__name__}. Wrap a single argument: `(x,)`."
            )
    return [taken[k % len(taken)] for k in range(steps)]


def _summed(loss: Callable[..., Any]) -> Callable[..., Any]:
    """``loss``, with a dict of named terms replaced by their sum."""

    def total(params: PyTree, *args: Any) -> Any:
        out = loss(params, *args)
        return sum(out.values()) if isinstance(out, dict) and out else out

    return total


def _checked_options(
    loss: Callable[..., Any],
    steps: Any,
    optimizer: optax.GradientTransformation | None,
) -> optax.GradientTransformation:
    """Check ``loss`` and ``steps``; the optimizer (default ``optax.adam(1e-3)``)."""
    if not callable(loss):
        raise TypeError(f"`loss` must be callable; got {type(loss).__name__}.")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"`steps` must be an int; got {type(steps).__name__}.")
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1; got {steps}.")
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            "`optimizer` must be an optax GradientTransformation (with `init` and "
            f"`update`), e.g. optax.adam(1e-3); got {type(optimizer).__name__}."
        )
    return optimizer


def _check_finite_params(
    flat: Flat, train: list[int], trained: list[Any], losses: np.ndarray
) -> None:
    """Raise FloatingPointError when the last update made a trained leaf non-finite."""
    steps = len(losses)
    bad = [
        flat.infos[p].path or "<root>"
        for p, leaf in zip(train, trained)
        if not bool(jnp.all(jnp.isfinite(leaf)))
    ]
    if bad:
        raise FloatingPointError(
            f"the params became non-finite at step {steps} of {steps} (the last "
            f"update), in {', '.join(bad)}; the loss was finite before it "
            f"({losses[-1]}). Lower the learning rate of `optimizer`, or look for "
            "a NaN in the gradient."
        )


def warm_up(
    loss: Callable[..., Any],
    params: PyTree,
    batches: Any,
    *,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 20,
    return_losses: bool = False,
) -> PyTree | WarmUp:
    """Train ``params`` for a few optimizer steps, to check gradients off the init.

    At the initialization the parameters often sit at a special point (zero
    biases, symmetric weights) where a wrong gradient can equal the right one;
    check again once the loss has started to fall::

        params = jgc.warm_up(loss, params, (x, y))
        jgc.check_grad(loss, params, x, y, grad=my_backprop)

    Each step is ``optimizer`` applied to ``jax.grad(loss)`` (the autodiff
    gradient, not a ``grad=`` under test), compiled once with ``jax.jit``.
    Floating-point leaves are trained (complex leaves along the conjugate of
    ``jax.grad``, the steepest-descent direction); integer, boolean and key
    leaves and non-array leaves are passed through unchanged. A loss that
    returns a dict of named terms is trained on their sum.

    Args:
      loss: ``loss(params, *args)`` returning a real scalar (or a dict of
        named scalar terms, as :func:`check_grad` accepts).
      params: a pytree of arrays, as for :func:`check_grad`.
      batches: the arguments of ``loss`` after ``params``. A tuple ``(x, y)``
        is one batch reused at every step (``()`` for a loss of ``params``
        alone); any other iterable (a list, a generator) yields one tuple per
        step, of which the first ``steps`` are used, and a shorter one is
        cycled. Use a list, not a tuple, to pass several batches.
      optimizer: an optax ``GradientTransformation``; default
        ``optax.adam(1e-3)``.
      steps: the number of optimizer steps, at least 1.
      return_losses: also return the loss each step saw.

    Returns:
      The trained params, structured like ``params`` with the same dtypes; with
      ``return_losses=True`` a :class:`WarmUp` ``(params, losses)``.

    Raises:
      TypeError, ValueError: for bad input (``steps`` < 1, empty ``batches``,
        a batch that is not a tuple, a loss that is not a real scalar, params
        without floating-point leaves, an optimizer without ``init``/``update``).
      FloatingPointError: when the loss or the params become non-finite, naming
        the step (lower the learning rate, or fix the NaN first).

    Example:
      >>> import jax.numpy as jnp, optax, jgradcheck as jgc
      >>> loss = lambda p, x: jnp.sum((x * p["w"] + p["b"] - 3.0) ** 2)
      >>> params = {"w": jnp.ones(3), "b": jnp.zeros(3)}
      >>> out = jgc.warm_up(loss, params, (jnp.arange(3.0),),
      ...                   optimizer=optax.sgd(0.05), steps=10, return_losses=True)
      >>> bool(out.losses[-1] < out.losses[0]), bool((out.params["b"] != 0).all())
      (True, True)
    """
    optimizer = _checked_options(loss, steps, optimizer)
    per_step = _batches(batches, steps)
    total = _summed(loss)
    flat = flatten_params(params)
    train = [i.position for i in flat.infos if i.is_checked]
    if not train:
        kinds = ", ".join(
            f"{i.path or '<root>'} ({i.dtype or i.kind})" for i in flat.infos
        )
        raise ValueError(
            "`params` has no floating-point leaves to train; its leaves are: "
            f"{kinds or 'none'}."
        )
    complex_at = [k for k, p in enumerate(train) if flat.infos[p].kind == "complex"]
    loss_output_check(total, flat.rebuild(flat.leaves), per_step[0])

    def of_trained(trained: list[Any], args: tuple) -> Any:
        return total(flat.rebuild_with(dict(zip(train, trained))), *args)

    def step(trained: Any, opt_state: Any, split: Any, dynamic: Any) -> Any:
        value, g = jax.value_and_grad(of_trained)(trained, split.merge(dynamic))
        for k in complex_at:
            g[k] = jnp.conj(g[k])
        updates, opt_state = optimizer.update(g, opt_state, trained)
        return optax.apply_updates(trained, updates), opt_state, value

    compiled = jax.jit(step, static_argnums=2)
    trained = [flat.leaves[p] for p in train]
    opt_state = optimizer.init(trained)
    losses = np.zeros(steps)
    for k, args in enumerate(per_step):
        split = split_static(args)
        static = split._replace(dynamic=())
        try:
            hash(static)
        except TypeError:
            raise TypeError(
                f"batch {k} holds an unhashable non-array value; warm_up compiles "
                "the step with non-array arguments as constants, so they must be "
                "hashable (numbers, strings, functions)."
            ) from None
        trained, opt_state, value = compiled(trained, opt_state, static, split.dynamic)
        losses[k] = float(value)
        recent = losses[max(0, k - 4) : k + 1].tolist()
        if not np.isfinite(losses[k]):
            raise FloatingPointError(
                f"the loss became {losses[k]} at step {k + 1} of {steps} (after "
                f"{k} updates; the last losses: {recent}). Lower the learning rate "
                "of `optimizer`, or fix the NaN/inf in `loss`."
            )
    _check_finite_params(flat, train, trained, losses)
    out = flat.rebuild_with(dict(zip(train, trained)))
    return WarmUp(out, losses) if return_losses else out
