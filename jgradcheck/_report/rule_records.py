"""The records of check_vjp and check_jvp: checks, dot-product tests, localisation.

Data and what follows from it only; :mod:`jgradcheck._report.sections` says what
a rule report says and :mod:`jgradcheck._report.report` assembles the public
:class:`jgradcheck.RuleReport`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, TypeAlias

import numpy as np

from .._numerics.verdict import PASS
from .call import Call
from .precision_records import PrecisionMatch
from .records import ReferenceCheck, ReportRecord

RuleKind: TypeAlias = Literal["vjp", "jvp"]
"""Which derivative rule a :class:`RuleReportRecord` tested."""


class Check(NamedTuple):
    """One yes/no check with the evidence behind it."""

    name: str
    ok: bool
    detail: str
    ran: bool = True
    """False for a check that was not run (``ok`` is then True and ``detail``
    says why): it neither passes nor fails the report."""


class DotTest(NamedTuple):
    """⟨ȳ, FD(J·u)⟩ against ⟨Jᵀȳ, u⟩ for random pairs, for one output leaf."""

    output: str
    """Path of the output leaf whose cotangent was used (others were zero)."""
    rule: np.ndarray
    """⟨Jᵀȳ, u⟩ with the rule's Jᵀȳ, one per pair."""
    numeric: np.ndarray
    """⟨ȳ, FD(J·u)⟩, one per pair."""
    error_bar: np.ndarray
    tolerance: np.ndarray
    status: np.ndarray

    @property
    def ok(self) -> bool:
        return bool(np.all(self.status == PASS))


@dataclasses.dataclass(frozen=True, repr=False)
class RuleReportRecord:
    """The data of a :class:`jgradcheck.RuleReport` and its verdict.

    :class:`jgradcheck.RuleReport` adds the renderings (``str``, HTML,
    ``to_dict``) and the failure lines; renderers take this record.
    """

    kind: RuleKind
    """``"vjp"`` or ``"jvp"``."""
    primal: Check
    dot_tests: tuple[DotTest, ...]
    localized: tuple[tuple[str, ReportRecord], ...]
    structure: tuple[Check, ...]
    held: tuple[str, ...]
    """Inputs held fixed (not differentiated), by path."""
    second_order: RuleReportRecord | None = None
    """With ``order=2``: the same checks on the rule's own output as a function."""
    inputs: tuple[str, ...] = ()
    """Paths of the differentiated inputs (``[0]``: f's first argument)."""
    held_outputs: tuple[str, ...] = ()
    """Outputs held out of the checks (integer, boolean: no derivative; empty:
    no entries), by path."""
    precision: str = ""
    """What ran at which precision when the caller's x64 setting narrowed the
    inputs (``"float64 arrays, computed in float32: x64 is off"``), else ``""``."""
    rounding: str = ""
    """How the rule's own rounding was allowed for (the localised checks'
    ``settings.rounding``: ``"autodiff of the primal at float32"``, ...)."""
    reference: ReferenceCheck | None = None
    """With ``reference=``: the rule against JAX's derivative of the reference."""
    precision_match: PrecisionMatch | None = None
    """When the check failed and the rule computes in a narrower float than
    its yardstick: the comparison again at the rule's precision."""
    _call: Call | None = dataclasses.field(default=None, compare=False, repr=False)
    """How :func:`jgradcheck.check_vjp` / :func:`jgradcheck.check_jvp` was
    called, for ``save_repro``; not compared and not serialised."""

    @property
    def ok(self) -> bool:
        return (
            self.primal.ok
            and all(d.ok for d in self.dot_tests)
            and all(r.ok for _, r in self.localized)
            and all(c.ok for c in self.structure)
            and (self.second_order is None or self.second_order.ok)
            and (self.reference is None or self.reference.ok)
        )
