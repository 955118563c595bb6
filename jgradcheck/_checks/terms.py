"""Losses made of named terms: check each term, then their sum.

A large, simple term (an L2 penalty) can dominate the total gradient and hide
an error in a small, complicated one (the data term). When ``loss`` returns a
dict of scalars, :func:`jgradcheck.check_grad` checks the sum and every term
separately, so an error is attributed to the term that has it. A loss that
returns a scalar can name its terms with ``terms=`` (functions that add up to
it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np

from .._dtypes import eps as eps_of
from .._dtypes import is_real_float
from .._engine.tracing import trace_shape
from .._options import Options
from .._report.report import Report
from .._typing import PyTree


class CheckWith(Protocol):
    """:func:`jgradcheck._checks.grad.check_grad_with`'s signature (passed in,
    so that this module does not import the one that imports it)."""

    def __call__(
        self,
        loss: Callable[..., Any],
        params: PyTree,
        args: tuple,
        *,
        grad: Callable[..., PyTree] | None = None,
        terms: dict[str, Callable[..., Any]] | None = None,
        opts: Options,
    ) -> Report: ...


def returns_terms(loss: Callable[..., Any], params: PyTree, args: tuple) -> bool:
    """Whether ``loss(params, *args)`` is a dict of named terms (traced, no FLOPs)."""
    if not callable(loss):
        return False
    out = trace_shape(lambda: loss(params, *args), "loss")
    return isinstance(out, dict) and len(out) > 0


def validate_terms(
    terms: Any, loss: Callable[..., Any], params: PyTree, args: tuple
) -> dict[str, Callable[..., Any]]:
    """Check ``terms=`` (named scalar functions that add up to ``loss``).

    Raises TypeError/ValueError for anything but a non-empty dict of callables
    with string names, a term that does not return a real scalar, or terms
    whose sum at ``params`` differs from ``loss`` by more than rounding (the
    per-term reports would then not explain the loss).
    """
    if not isinstance(terms, dict) or not terms:
        raise TypeError(
            "`terms` must be a non-empty dict {name: term(params, *args)} whose "
            f"values add up to `loss`; got {type(terms).__name__}."
        )
    for name, fn in terms.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(
                f"`terms` maps names (str) to functions; got {name!r}: "
                f"{type(fn).__name__}."
            )
    if returns_terms(loss, params, args):
        raise ValueError(
            "`loss` already returns a dict of named terms: pass either that "
            "or `terms=`, not both."
        )
    values = {}
    for name, fn in terms.items():
        out = fn(params, *args)
        shape, dtype = np.shape(out), getattr(out, "dtype", np.asarray(out).dtype)
        if shape != () or not is_real_float(dtype):
            raise ValueError(
                f"term {name!r} must return a real floating-point scalar; it "
                f"returned shape {shape}, dtype {dtype}."
            )
        values[name] = float(out)
    out = loss(params, *args)
    total = float(out)
    parts = sum(values.values())
    scale = max(sum(abs(v) for v in values.values()), abs(total), 1e-300)
    eps = eps_of(getattr(out, "dtype", np.float64))
    if not abs(total - parts) <= 2**10 * eps * scale:
        listed = ", ".join(f"{n}={v:.6g}" for n, v in values.items())
        raise ValueError(
            f"the terms do not add up to `loss`: loss = {total:.10g}, sum of the "
            f"terms = {parts:.10g} ({listed}). Each term's report explains the "
            "loss only if they do; pass the terms of this loss (with their "
            "weights, e.g. `lambda p, *a: 1e-4 * l2(p)`)."
        )
    return dict(terms)


def check_terms(
    check: CheckWith,
    loss: Callable[..., Any],
    params: PyTree,
    args: tuple,
    *,
    grad: Callable[..., Any] | None,
    terms: dict[str, Callable[..., Any]] | None,
    opts: Options,
) -> Report:
    """The report for ``Σ terms``, with one report per term in ``report.terms``.

    The terms are ``loss``'s dict entries, or ``terms`` (scalar functions that
    add up to ``loss``, see :func:`validate_terms`; the sum is then ``loss``
    itself). ``grad``, if given, returns a dict with the same keys: one
    gradient pytree per term (the gradient of the sum is their sum). Every
    report is ``check(..., opts=opts)``.
    """
    if terms is None:
        names = list(jax.eval_shape(lambda: loss(params, *args)))

        def total(p: PyTree, *a: Any) -> Any:
            return sum(loss(p, *a).values())

        def term(name: str) -> Callable[..., Any]:
            def one(p: PyTree, *a: Any) -> Any:
                return loss(p, *a)[name]

            one.__name__ = f"term {name!r}"
            return one

    else:
        names, total = list(terms), loss

        def term(name: str) -> Callable[..., Any]:
            return terms[name]

    per_term: dict[str, Callable[..., Any] | None] = {n: None for n in names}
    total_grad = None
    if grad is not None:
        g = grad(params, *args)
        if not isinstance(g, dict) or sorted(g) != sorted(names):
            got = sorted(g) if isinstance(g, dict) else type(g).__name__
            raise ValueError(
                f"`loss` has the terms {sorted(names)}, so `grad` must return a "
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
    report = check(total, params, args, grad=total_grad, opts=opts)
    reports = tuple(
        (n, check(term(n), params, args, grad=per_term[n], opts=opts)) for n in names
    )
    return dataclasses.replace(report, terms=reports)
