"""The public checks record how they were called (for ``save_repro``).

:func:`recorded` attaches a :class:`jgradcheck._report.call.Call` to the
report a public check returns: the function, its positional arguments, the
keyword options that differ from the check's defaults, ``key`` as its int seed
and the x64 setting. The field is not compared and not serialised, so reports
are equal and print the same with or without it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import jax

from .._pytree.coords import seed_of
from .._report.call import Call

R = TypeVar("R")


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
