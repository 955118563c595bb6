"""The tables of a report, as formatted cells (one number format everywhere).

In every table ``a`` is the gradient under test, ``n`` the finite-difference
estimate and ``±err`` the estimate's own error bar. The text and HTML renderers
lay out a :class:`Table`; they never format numbers themselves.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, TypeAlias

import numpy as np

from .._numerics.verdict import PASS, STATUS_NAMES
from .records import Directions, Entry, ReportRecord
from .rule_records import DotTest

Tone: TypeAlias = Literal["pass", "fail", "unsure", "info"]
"""How a verdict reads: passed, FAILED, UNSURE, or ``info`` (no verdict: a kink
not judged, a sweep that only measures)."""


class Table(NamedTuple):
    """A table of already formatted cells."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: frozenset[int] = frozenset()
    """Columns aligned right in plain text (numbers)."""
    status: int | None = None
    """The column holding each row's verdict (``ok``, ``FAIL (2 wrong)``,
    ``unsure``…; :func:`status_tone` reads it), or None."""


def status_tone(cell: str) -> Tone:
    """How a verdict cell of a table reads (the words the tables write)."""
    word = cell.split(" ", 1)[0]
    if word == "FAIL":
        return "fail"
    if word == "unsure":
        return "unsure"
    return "pass" if word in ("ok", "pass") else "info"


def format_number(x: float) -> str:
    """A number as every report cell shows it: ``1.234e-05`` (``nan``/``inf`` as is)."""
    return f"{x:.3e}" if np.isfinite(x) else str(x)


def comparison_row(name: str, d: Directions | DotTest, k: int) -> tuple[str, ...]:
    """One row of a directional or dot-product table: entry ``k`` of ``d``'s
    ``rule``, ``numeric``, ``error_bar``, ``tolerance`` and ``status``."""
    a, n = float(d.rule[k]), float(d.numeric[k])
    return (
        name,
        str(k),
        format_number(a),
        format_number(n),
        format_number(float(d.error_bar[k])),
        format_number(abs(a - n)),
        format_number(float(d.tolerance[k])),
        STATUS_NAMES[int(d.status[k])],
    )


def path_label(path: str) -> str:
    """A leaf's path as reports show it (the root of the pytree is ``<root>``)."""
    return path or "<root>"


def has_directions(report: ReportRecord) -> bool:
    """Fast mode: some leaf was checked along random directions."""
    return any(leaf.directions is not None for leaf in report.leaves)


def directions_agree(report: ReportRecord) -> bool:
    """Every leaf's random directions agree (or it has none)."""
    return all(leaf.directions is None or leaf.directions.ok for leaf in report.leaves)


def _agree(d: Directions | None) -> str:
    if d is None:
        return "-"
    return f"{d.count - d.n_fail - d.n_unsure}/{d.count} agree"


def leaf_table(report: ReportRecord) -> Table:
    """One row per checked leaf: sizes, largest errors and the verdict."""
    fast = has_directions(report)
    header: tuple[str, ...] = ("leaf", "shape", "dtype", "checked")
    header += ("directions",) if fast else ()
    header += ("max|a-n|", "max rel", "norm ratio", "verdict")
    rows = []
    for leaf in report.leaves:
        stats = (
            [
                format_number(leaf.max_abs_err),
                format_number(leaf.max_rel_err),
                format_number(leaf.norm_ratio),
            ]
            if leaf.checked
            else ["-", "-", "-"]
        )
        rows.append(
            (
                path_label(leaf.path),
                str(leaf.info.shape),
                str(leaf.info.dtype),
                f"{leaf.checked}/{leaf.total}",
                *([_agree(leaf.directions)] if fast else []),
                *stats,
                leaf.verdict,
            )
        )
    right = {3, 4, 5, 6, 7} if fast else {3, 4, 5, 6}
    return Table(header, tuple(rows), frozenset(right), len(header) - 1)


def direction_table(report: ReportRecord, k: int) -> Table:
    """Every direction that did not agree; if all agree, each leaf's closest call."""
    picked = []
    all_agree = directions_agree(report)
    for leaf in report.leaves:
        d = leaf.directions
        if d is None or not (all_agree or d.n_fail or d.n_unsure):
            continue
        diff = np.abs(d.rule - d.numeric)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(d.tolerance > 0, diff / d.tolerance, np.inf)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        ks = np.flatnonzero(d.status != PASS)
        if not ks.size:
            ks = np.argsort(-ratio)[:1]
        picked += [
            (d.status[j] == PASS, -float(ratio[j]), d, leaf.path, int(j)) for j in ks
        ]
    picked.sort(key=lambda p: (p[0], p[1]))
    header = ("leaf", "u", "⟨a,u⟩", "n along u", "±err", "|a-n|", "tolerance", "status")
    rows = tuple(
        comparison_row(path_label(path), d, j) for *_, d, path, j in picked[:k]
    )
    return Table(header, rows, frozenset({1, 2, 3, 4, 5, 6}), len(header) - 1)


def entry_table(entries: tuple[Entry, ...]) -> Table:
    """One row per entry: where, ``a``, ``n``, ``±err``, errors, tolerance, status."""
    header = (
        "where",
        "a (under test)",
        "n (finite diff)",
        "±err",
        "|a-n|",
        "rel err",
        "tolerance",
        "status",
    )
    rows = tuple(
        (
            e.where,
            format_number(e.grad),
            format_number(e.numeric),
            format_number(e.error_bar),
            format_number(e.abs_err),
            format_number(e.rel_err),
            format_number(e.tolerance),
            e.status,
        )
        for e in entries
    )
    return Table(header, rows, frozenset({1, 2, 3, 4, 5, 6}), len(header) - 1)
