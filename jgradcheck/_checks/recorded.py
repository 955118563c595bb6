"""The public checks record how they were called (for ``save_repro``).

:func:`records_call` decorates a public check; :func:`recorded` attaches a :class:`jgradcheck._report.call.Call` to the
report a public check returns: the function, its positional arguments, the
keyword options that differ from the check's defaults, ``key`` as its int seed
and the x64 setting. The field is not compared and not serialised, so reports
are equal and print the same with or without it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import jax

from .._pytree.coords import seed_of
from .._report.call import Call

R = TypeVar("R")
P = ParamSpec("P")


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    if type(value) is not type(default):
        return False
    try:
        return bool(value == default)
    except Exception:  # noqa: BLE001 - arrays and the like: not a default
        return False


def recorded(
    report: R,
    check: Callable[..., Any],
    f: Callable[..., Any],
    args: tuple,
    options: dict[str, Any],
) -> R:
    """``report`` with the call ``check(f, *args, **options)`` recorded."""
    params = inspect.signature(check).parameters
    kept: dict[str, Any] = {"key": seed_of(options.get("key", 0))}
    for name, value in options.items():
        if name != "key" and not _is_default(value, params[name].default):
            kept[name] = value
    call = Call(
        check=check.__name__,
        f=f,
        args=tuple(args),
        options=kept,
        x64=bool(jax.config.read("jax_enable_x64")),
    )
    return dataclasses.replace(report, _call=call)  # type: ignore[type-var]


def records_call(check: Callable[P, R]) -> Callable[P, R]:
    """``check`` whose report records how it was called (:func:`recorded`).

    The call is read from ``check``'s own signature: its first parameter is
    the function checked, the other positional ones (and ``*args``) its
    arguments, the keyword-only ones the options as passed.
    """
    signature = inspect.signature(check)
    first, *rest = signature.parameters.values()
    positional = [
        p.name
        for p in rest
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]

    @functools.wraps(check)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        report = check(*args, **kwargs)
        bound = signature.bind(*args, **kwargs).arguments
        values: list[Any] = []
        for name in positional:
            if name in bound:
                value = bound[name]
                kind = signature.parameters[name].kind
                values += (
                    list(value) if kind == inspect.Parameter.VAR_POSITIONAL else [value]
                )
        options = {
            k: v for k, v in bound.items() if k != first.name and k not in positional
        }
        return recorded(report, check, bound[first.name], tuple(values), options)

    return checked
