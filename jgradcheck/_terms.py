"""Losses made of named terms: check each term, then their sum.

A large, simple term (an L2 penalty) can dominate the total gradient and hide
an error in a small, complicated one (the data term). When ``loss`` returns a
dict of scalars, :func:`jgradcheck.check_grad` checks the sum and every term
separately, so an error is attributed to the term that has it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

PyTree = Any


def returns_terms(loss: Callable[..., Any], params: PyTree, args: tuple) -> bool:
    """Whether ``loss(params, *args)`` is a dict of named terms (traced, no FLOPs)."""
    if not callable(loss):
        return False
    out = jax.eval_shape(lambda: loss(params, *args))
    return isinstance(out, dict) and len(out) > 0


def check_terms(
    check: Callable[..., Any],
    loss: Callable[..., Any],
    params: PyTree,
    args: tuple,
    grad: Callable[..., Any] | None,
    options: dict[str, Any],
) -> Any:
    """The report for ``Σ terms``, with one report per term in ``report.terms``.

    ``grad``, if given, returns a dict with the same keys: one gradient pytree
    per term (the gradient of the sum is their sum).
    """
    names = list(jax.eval_shape(lambda: loss(params, *args)))

    def total(p: PyTree, *a: Any) -> Any:
        return sum(loss(p, *a).values())

    def term(name: str) -> Callable[..., Any]:
        def one(p: PyTree, *a: Any) -> Any:
            return loss(p, *a)[name]

        one.__name__ = f"term {name!r}"
        return one

    per_term: dict[str, Callable[..., Any] | None] = {n: None for n in names}
    total_grad = None
    if grad is not None:
        g = grad(params, *args)
        if not isinstance(g, dict) or sorted(g) != sorted(names):
            got = sorted(g) if isinstance(g, dict) else type(g).__name__
            raise ValueError(
                f"`loss` returns the terms {sorted(names)}, so `grad` must return a "
                f"dict with the same keys, one gradient pytree per term; got {got}."
            )

        def pick(name: str) -> Callable[..., Any]:
            def one(p: PyTree, *a: Any) -> PyTree:
                return grad(p, *a)[name]

            one.__name__ = f"{getattr(grad, '__name__', 'grad')}[{name!r}]"
            return one

        per_term = {n: pick(n) for n in names}

        def total_grad(p: PyTree, *a: Any) -> PyTree:
            parts = grad(p, *a)
            return jax.tree_util.tree_map(lambda *x: sum(x), *[parts[n] for n in names])

        total_grad.__name__ = f"sum of {getattr(grad, '__name__', 'grad')}'s terms"
    report = check(total, params, *args, grad=total_grad, **options)
    terms = tuple(
        (n, check(term(n), params, *args, grad=per_term[n], **options)) for n in names
    )
    return dataclasses.replace(report, terms=terms)
