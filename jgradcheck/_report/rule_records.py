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
from .records import ReferenceCheck, ReportRecord

RuleKind: TypeAlias = Literal["vjp", "jvp"]
"""Which derivative rule a :class:`RuleReportRecord` tested."""


class Check(NamedTuple):
    """One yes/no check with the evidence behind it."""

    name: str
    ok: bool
    detail: str


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


class PrecisionMatch(NamedTuple):
    """A failing rule compared again with its yardstick at the rule's own,
    narrower precision (:mod:`jgradcheck._checks.precision_match`): is the
    disagreement a precision mismatch or a wrong formula?"""

    dtype: str
    """The narrowest float dtype the rule's derivative program computes in."""
    where: tuple[tuple[str, int], ...]
    """``(equation kind, count)`` of the rule's intermediates in ``dtype``
    (the yardstick computes with none that narrow), e.g.
    ``("dot_general → bfloat16", 2)``."""
    other: str
    """The narrowest float the yardstick computes with (``"float32"``)."""
    yardstick: str
    """Who the rule was compared with: ``the reference attention_reference``,
    ``autodiff of the primal``."""
    program: str
    """``"VJP"`` or ``"JVP"``."""
    leaf: str
    """The leaf whose numbers are shown (the worst by ``rule_err / allowed``)."""
    rule_err: float
    """``max |rule − ref64|`` over that leaf."""
    ref_err: float
    """The yardstick's own error at the native precision there (before matching)."""
    matched_err: float
    """The yardstick's error with matched precision: ``max |ref_matched − ref64|``."""
    factor: float
    """``k``: the allowance is ``k·matched_err + floor``."""
    floor: float
    """The rounding floor of the leaf's scale (native dtype)."""
    scale: float
    """The leaf's scale ``max |ref64|``."""
    eps: float
    """Machine epsilon of ``dtype``: the lost digits are counted in its ulps."""
    native: str
    """The dtype of the derivative (the yardstick's at the native precision)."""
    native_eps: float
    """Its machine epsilon."""
    agrees: bool
    """Whether the rule is within ``k`` times the matched yardstick's error
    on every leaf."""

    @property
    def allowed(self) -> float:
        """``k·matched_err + floor``: the allowance with matched precision."""
        return self.factor * self.matched_err + self.floor

    @property
    def line(self) -> str:
        """What the comparison says, in one line."""
        shown = ", ".join(f"{label} ×{n}" for label, n in self.where[:3])
        more = len(self.where) - 3
        where = shown + (f"; {more} more kind{'s' * (more > 1)}" if more > 0 else "")
        matched = (
            f"with matched precision ({self.yardstick} with its inputs and every "
            f"intermediate rounded to {self.dtype})"
        )
        numbers = (
            f"{self.leaf}: max|rule − ref64| = {self.rule_err:.3g}, allowance "
            f"{self.factor:g}·{self.matched_err:.3g} + {self.floor:.2g} = "
            f"{self.allowed:.3g}"
        )
        if not self.agrees:
            return (
                f"not a precision mismatch: the rule computes with {self.dtype} "
                f"intermediates ({where}), but {matched} they still disagree "
                f"({numbers}): "
                "precision does not explain the disagreement — the formula is wrong"
            )
        s = max(self.scale, float(np.finfo(np.float64).tiny))
        also = (
            f" ({_count(self.rule_err / s / self.native_eps)} {self.native} ulps)"
            if self.native != self.dtype
            else ""
        )
        return (
            f"precision mismatch: the rule computes with {self.dtype} "
            f"intermediates ({where}) where {self.yardstick} keeps {self.other}; "
            f"{matched} they agree "
            f"({numbers}) — the formula is right; the lost digits are "
            f"{self.dtype}'s: the rule is off by {_count(self.rule_err / s / self.eps)}"
            f" {self.dtype} ulps of the leaf's scale{also}, "
            f"{self.yardstick} at {self.native} by "
            f"{_count(self.ref_err / s / self.native_eps)} {self.native} ulps"
        )


def _count(x: float) -> str:
    """A count of ulps: ``3,822`` or ``0.47``."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.2g}"


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
    """Outputs held out of the checks (integer, boolean: no derivative), by path."""
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
