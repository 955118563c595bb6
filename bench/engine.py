"""``check_grad`` with the engine's knobs, for the benchmarks.

The engine's knobs (:class:`jgradcheck._options.EngineSettings`: sparse or
dense leaf evaluation, the CPU working set, a callback that receives every
sweep) are not public options of ``check_grad``. The benchmarks vary them
through the internal entry point that takes one validated
:class:`jgradcheck._options.Options`, instead of patching module globals: an
engine refactor then breaks a benchmark loudly, not silently.

    >>> from engine import EngineSettings, check_grad_with_engine
    >>> report = check_grad_with_engine(
    ...     loss, params, x, y, engine=EngineSettings(sparse=False)
    ... )  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jgradcheck._checks.grad import check_grad_with
from jgradcheck._options import EngineSettings, Options

__all__ = ["EngineSettings", "check_grad_with_engine"]


def check_grad_with_engine(
    loss: Callable[..., Any],
    params: Any,
    *args: Any,
    engine: EngineSettings,
    grad: Callable[..., Any] | None = None,
    **options: Any,
) -> Any:
    """``jgradcheck.check_grad(loss, params, *args, grad=grad, **options)``, with
    the engine's knobs ``engine``.

    Args:
      loss, params, args, grad: as in :func:`jgradcheck.check_grad`.
      engine: the engine's knobs.
      **options: :func:`jgradcheck.check_grad`'s keyword options.

    Returns:
      The :class:`jgradcheck.Report`.
    """
    opts = Options.build(engine=engine, **options)
    return check_grad_with(loss, params, args, grad=grad, opts=opts)
