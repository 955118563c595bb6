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


class LocatedPoint(NamedTuple):
    """The full check at one failing input point (``points=``)."""

    point: int
    """Index of the point (``PointsResult.labels`` says what it is)."""
    ok: bool
    """Whether the full check passes there (the batch and it disagree)."""
    entries: tuple[str, ...]
    """What the full check's localisation names there, path and index: the
    input entries of the VJP's Jᵀȳ, the output entries of the JVP's J·u."""


@dataclasses.dataclass(frozen=True)
class PointsResult:
    """The rule at many input points (``points=``): which fail, what they
    share, and the simplest failing input with its full check."""

    count: int
    """How many input points were tried (the given values are point 0)."""
    labels: tuple[str, ...]
    """What each point is (``"every entry 15.015"``, ``"a mixture …"``)."""
    failing: tuple[int, ...]
    """Indices of the in-domain points where a comparison failed."""
    out_of_domain: tuple[int, ...]
    """Indices of the points where the primal, or one of its finite-difference
    evaluations, is not finite: listed, not judged."""
    at_threshold: tuple[int, ...] = ()
    """Indices of the in-domain points that fail, but where the finite
    differences reach across a threshold of the rule (a kink or branch): not
    counted, neither failing nor judged."""
    underflow: tuple[int, ...] = ()
    """Indices of the in-domain points where every failing comparison is within
    what the rule's dtype loses below its smallest normal (flushed to zero):
    not judged."""
    unsure: tuple[int, ...] = ()
    """Indices of the in-domain points where no comparison failed but some
    were unsure (the finite differences' error bar too wide to decide) and
    the rule does not match float64 autodiff of the primal: counted, not
    passed (as an unsure dot test at the primals is not ok)."""
    unresolved: tuple[int, ...] = ()
    """Indices of the in-domain points where the rule fails against the finite
    differences but agrees with JAX's float64 autodiff of the primal: the
    differences cannot resolve ``f`` there (steps far wider than its own
    scale, ``sin`` at 1e22): not judged."""
    thresholds: tuple[float, ...] = ()
    """The scalar constants the rule compares with (straddled by points)."""
    common: str = ""
    """What every failing point has and no passing point has (``"some entry of
    [0] > 15"``), or ``""`` when nothing simple separates them."""
    simplest: tuple[str, ...] = ()
    """The simplest failing input after shrinking, as lines of code to paste."""
    simplest_report: RuleReportRecord | None = None
    """The full check at the simplest failing input (paths and indices)."""
    note: str = ""
    """Why the points were evaluated one by one (``""``: in one program)."""
    located: tuple[LocatedPoint, ...] = ()
    """The first failing points (up to ``MAX_LOCATED`` of
    :mod:`jgradcheck._checks.points`) checked in full: where the error is."""
    values: tuple[np.ndarray, ...] = ()
    """The points themselves: per differentiated input leaf, its values at
    every point stacked (``[count, *shape]``, the leaf's dtype). Not in
    ``to_dict`` (``labels`` says what each point is)."""

    @property
    def in_domain(self) -> int:
        return self.count - len(self.out_of_domain)

    @property
    def judged(self) -> int:
        """In the domain and counted: not at a threshold, in underflow or
        unresolved."""
        return (
            self.in_domain
            - len(self.at_threshold)
            - len(self.underflow)
            - len(self.unresolved)
        )

    @property
    def ok(self) -> bool:
        return not self.failing and not self.unsure


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
    points: PointsResult | None = None
    """With ``points=K``: the rule at ``K`` input points."""
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
            and (self.points is None or self.points.ok)
        )
