"""Exceptions."""

from __future__ import annotations

from typing import Any


class GradCheckError(AssertionError):
    """A gradient did not match its finite-difference estimate.

    An :class:`AssertionError`, so test runners report it as a failed check. The
    full report is in ``error.report``; the message is its text table.
    """

    def __init__(self, report: Any):
        self.report = report
        super().__init__("\n" + str(report))


class NondeterministicLossError(ValueError):
    """The loss gave different values at the same parameters.

    A ``ValueError``: finite differences of a random function measure noise,
    not a gradient, so the input cannot be checked as it is.
    """


class NonFiniteGradientError(ValueError):
    """The gradient under test is NaN or inf at finite params.

    A ``ValueError`` from Python (nothing can be compared there); the command
    line reports it as a failed check (exit 1): the gradient is broken, the
    setup is not.
    """


def raise_unless_ok(report: Any) -> Any:
    """Return ``report`` if it passed, else raise :class:`GradCheckError` with it."""
    if not report.ok:
        raise GradCheckError(report)
    return report


def where_list(places: list[str], limit: int = 10) -> str:
    """``a, b, c`` with at most ``limit`` items and a count of the rest."""
    shown = ", ".join(places[:limit])
    if len(places) > limit:
        shown += f", ... ({len(places) - limit} more)"
    return shown
