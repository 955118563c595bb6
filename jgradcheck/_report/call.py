"""How a check was called: the record behind ``save_repro``.

The public checks (:func:`jgradcheck.check_grad`, :func:`jgradcheck.check_vjp`,
:func:`jgradcheck.check_jvp`, :func:`jgradcheck.check_compositions`,
:func:`jgradcheck.check_hvp`) attach a :class:`Call` to the report they return,
in a field that is neither compared nor serialised, so that
:mod:`jgradcheck._report.repro` can write a file that makes the same call again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Call(NamedTuple):
    """One call of a public check, as :func:`jgradcheck._report.repro.save_repro`
    needs it to make the call again."""

    check: str
    """The check's name: ``"check_grad"``, ``"check_vjp"``, ``"check_jvp"``,
    ``"check_compositions"`` or ``"check_hvp"``."""
    f: Callable[..., Any]
    """The loss (``check_grad``, ``check_hvp``) or the function whose rule was
    tested."""
    args: tuple
    """The positional arguments after ``f``, as they were passed (params and
    ``*args`` for ``check_grad`` and ``check_hvp``, the primals for a rule
    check)."""
    options: dict[str, Any]
    """The keyword options that differ from the check's defaults; ``key``
    always, as the int seed every draw came from."""
    x64: bool
    """Whether ``jax_enable_x64`` was on."""
