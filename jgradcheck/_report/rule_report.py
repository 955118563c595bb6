"""Reports of check_vjp and check_jvp."""

from __future__ import annotations

import dataclasses
import html
from typing import Any, NamedTuple

import numpy as np

from .._numerics.verdict import PASS
from .records import Report
from .text import _g, _table, comparison_row


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


@dataclasses.dataclass(frozen=True)
class RuleReport:
    """The result of :func:`jgradcheck.check_vjp` or :func:`jgradcheck.check_jvp`.

    ``ok`` is True when the primal, every dot-product test, every localised
    comparison and every structural check passed. ``localized`` holds
    :class:`jgradcheck.Report` objects that point at leaf paths and indices:
    for a VJP one per output leaf (numeric Jᵀȳ per input coordinate), for a JVP
    one for the random tangent (per output entry) and, when it fails, one per
    input leaf with the tangent on that leaf only.
    """

    kind: str
    """``"vjp"`` or ``"jvp"``."""
    primal: Check
    dot_tests: tuple[DotTest, ...]
    localized: tuple[tuple[str, Report], ...]
    structure: tuple[Check, ...]
    held: tuple[str, ...]
    """Inputs held fixed (not differentiated), by path."""
    second_order: RuleReport | None = None
    """With ``order=2``: the same checks on the rule's own output as a function."""

    @property
    def ok(self) -> bool:
        return (
            self.primal.ok
            and all(d.ok for d in self.dot_tests)
            and all(r.ok for _, r in self.localized)
            and all(c.ok for c in self.structure)
            and (self.second_order is None or self.second_order.ok)
        )

    def failures(self) -> list[str]:
        """One line per failed part, most specific first."""
        out = []
        for label, r in self.localized:
            for e in r.failures():
                out.append(f"{label}: {e.where} rule={_g(e.grad)} fd={_g(e.numeric)}")
        out += [
            f"dot-product test, output {d.output or '<root>'}"
            for d in self.dot_tests
            if not d.ok
        ]
        out += [f"primal: {self.primal.detail}"] if not self.primal.ok else []
        out += [f"{c.name}: {c.detail}" for c in self.structure if not c.ok]
        return out

    def to_dict(self, *, max_entries: int | None = None) -> dict[str, Any]:
        """The report as a plain dict that :func:`json.dumps` accepts.

        The same conventions as :meth:`jgradcheck.Report.to_dict` (non-finite
        floats as ``"nan"``/``"inf"``/``"-inf"``, ``None`` for "not set").

        Keys: ``kind`` (``"vjp"`` or ``"jvp"``), ``ok``, ``summary``,
        ``failures`` (the lines of :meth:`failures`), ``primal`` and
        ``structure`` (checks: ``name``, ``ok``, ``detail``), ``dot_tests``
        (``output``, ``ok``, ``pairs``: ``rule``, ``fd``, ``err``,
        ``abs_diff``, ``tolerance``, ``status``), ``localized`` (``label`` and
        ``report``, a :meth:`jgradcheck.Report.to_dict`), ``held`` and
        ``second_order`` (the same dict for ``order=2``, else ``None``).

        Args:
          max_entries: passed to each localised report's ``to_dict``; also
            caps ``failures``. Default: all.

        Returns:
          A dict; ``json.dumps(report.to_dict(), allow_nan=False)`` works.

        Example:
          >>> import json, jax.numpy as jnp, jgradcheck as jgc
          >>> d = jgc.check_vjp(jnp.sin, jnp.array([0.5, 1.0])).to_dict()
          >>> d["kind"], d["ok"], d["primal"]["ok"]
          ('vjp', True, True)
          >>> json.loads(json.dumps(d))["localized"][0]["report"]["counts"]["checked"]
          2
        """
        from .serialize import rule_report_dict

        return rule_report_dict(self, max_entries)

    def __str__(self) -> str:
        return format_text(self)

    def __repr__(self) -> str:
        return f"RuleReport(kind={self.kind!r}, ok={self.ok})"

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(format_text(self)) + "</pre>"


def _mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def format_text(r: RuleReport) -> str:
    name = f"check_{r.kind}"
    lines = [f"{name}: {'passed' if r.ok else 'FAILED'}"]
    lines.append("inputs are named by position: [1]['w'] is f's 2nd argument, key 'w'")
    if r.held:
        lines.append("held fixed (not differentiated): " + ", ".join(r.held))
    lines += ["", f"primal: {_mark(r.primal.ok)} ({r.primal.detail})"]
    if r.dot_tests:
        lines += [
            "",
            "dot-product tests, one output at a time (rule = ⟨Jᵀȳ,u⟩ from the rule, "
            "fd = ⟨ȳ, finite-difference J·u⟩ in float64):",
        ]
        rows = [
            ["output", "pair", "rule", "fd", "±err", "|rule-fd|", "tolerance", "status"]
        ]
        for d in r.dot_tests:
            for p in range(d.rule.shape[0]):
                rows.append(comparison_row(d.output or "<root>", d, p))
        lines += _table(rows, right={2, 3, 4, 5, 6})
    lines += ["", "structure:"]
    lines += [f"  {_mark(c.ok):4s} {c.name} ({c.detail})" for c in r.structure]
    for label, rep in r.localized:
        if rep.ok:
            worst = max((leaf.max_rel_err for leaf in rep.leaves), default=0.0)
            lines += [
                "",
                f"localisation, {label}: ok, {rep.n_checked} entries agree "
                f"(max rel err {_g(worst)})",
            ]
            continue
        lines += ["", f"localisation, {label}:"]
        lines += ["  " + line if line else "" for line in str(rep).splitlines()]
    if r.second_order is not None:
        what = "x ↦ Jᵀ(x)·ȳ" if r.kind == "vjp" else "x ↦ J(x)·u"
        lines += [
            "",
            f"second order: the rule's own output {what}, checked the same way:",
        ]
        lines += [
            "  " + line if line else "" for line in str(r.second_order).splitlines()
        ]
    return "\n".join(lines)
