"""What an :func:`jgradcheck.eps_sweep` result says, as :class:`~.sections.Section`
records: the text (``str(sweep)``) and the notebook view lay out the same ones.

An ε sweep measures; it does not judge, so its headline reads ``info``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from .sections import Section
from .tables import Table, format_number

_POWERS = {2: "h²", 4: "h⁴"}


class EpsSweepRecord(Protocol):
    """The fields of :class:`jgradcheck.EpsSweep` a rendering reads."""

    @property
    def eps(self) -> np.ndarray: ...
    @property
    def where(self) -> tuple[str, ...]: ...
    @property
    def grad(self) -> np.ndarray: ...
    @property
    def errors(self) -> dict[str, np.ndarray]: ...
    @property
    def best_eps(self) -> dict[str, np.ndarray]: ...
    @property
    def dtype(self) -> str: ...


def smallest_errors(errors: np.ndarray) -> np.ndarray:
    """Per coordinate (row), the smallest finite error over the steps (NaN: none)."""
    finite = np.isfinite(errors)
    safe = np.where(finite, errors, np.inf)
    return np.where(finite.any(axis=1), safe.min(axis=1, initial=np.inf), np.nan)


def _step(x: float) -> str:
    return f"{x:.1e}" if np.isfinite(x) else str(x)


def _stats(x: np.ndarray) -> tuple[float, float, float]:
    """Median, min and max of the finite values (NaN when there are none)."""
    x = x[np.isfinite(x)]
    if not x.size:
        return (np.nan, np.nan, np.nan)
    return (float(np.median(x)), float(x.min()), float(x.max()))


def _method_table(s: EpsSweepRecord, orders: Mapping[str, int]) -> Table:
    header = (
        "method",
        "error ∝",
        "best ε (median)",
        "(min)",
        "(max)",
        "smallest error (median)",
        "(max)",
    )
    rows = []
    for m, err in s.errors.items():
        best = _stats(s.best_eps[m])
        smallest = _stats(smallest_errors(err))
        p = orders.get(m)
        rows.append(
            (
                m,
                _POWERS.get(p, f"h^{p}") if p else "?",
                *map(_step, best),
                format_number(smallest[0]),
                format_number(smallest[2]),
            )
        )
    return Table(header, tuple(rows), frozenset({2, 3, 4, 5, 6}))


def _coordinate_table(s: EpsSweepRecord) -> Table:
    methods = list(s.errors)
    header: tuple[str, ...] = ("where", "a (under test)")
    for m in methods:
        header += (f"best ε ({m})", f"error there ({m})")
    smallest = {m: smallest_errors(s.errors[m]) for m in methods}
    rows = tuple(
        (
            w,
            format_number(float(s.grad[k])),
            *(
                cell
                for m in methods
                for cell in (
                    _step(float(s.best_eps[m][k])),
                    format_number(float(smallest[m][k])),
                )
            ),
        )
        for k, w in enumerate(s.where)
    )
    return Table(header, rows, frozenset(range(1, len(header))))


def eps_sweep_sections(
    s: EpsSweepRecord, orders: Mapping[str, int]
) -> tuple[Section, ...]:
    """What an ε sweep says, section by section.

    Args:
      s: the sweep.
      orders: method name -> order p of its truncation error (``∝ h^p``).

    Returns:
      A headline (what was swept), what the error is, one row per method (the
      best ε over the coordinates) and one row per coordinate.
    """
    n = len(s.where)
    lo, hi = float(np.min(s.eps)), float(np.max(s.eps))
    headline = (
        f"eps_sweep: finite-difference error against ε at {n} "
        f"coordinate{'s' if n != 1 else ''}, {s.eps.size} steps from "
        f"{_step(lo)} to {_step(hi)}, J in {s.dtype}"
    )
    about = (
        "error = |n(h) − a| / |a|: n the finite-difference estimate at step "
        "h = ε·max(1,|θ|), a the gradient under test",
        "best ε = the step of smallest error; .plot() draws the curves",
    )
    return (
        Section("headline", headline, tone="info"),
        Section("lines", lines=about),
        Section(
            "table",
            "best step per method, over the coordinates:",
            table=_method_table(s, orders),
        ),
        Section(
            "table",
            "per coordinate (the best ε and the error there):",
            table=_coordinate_table(s),
        ),
    )
