"""What a check_vjp / check_jvp report says, as :class:`~.sections.Section` records.

The same section model as :mod:`jgradcheck._report.sections`: the localised
reports nest their own gradient-check sections, and the text renderer lays
everything out.
"""

from __future__ import annotations

from .records import ReportRecord
from .rule_records import Check, RuleReportRecord
from .sections import Section, reference_section, report_sections
from .tables import Table, comparison_row, format_number, path_label


def rule_headline(r: RuleReportRecord) -> str:
    """``check_vjp: passed`` or ``check_jvp: FAILED``."""
    return f"check_{r.kind}: {'passed' if r.ok else 'FAILED'}"


def rule_failure_lines(r: RuleReportRecord) -> list[str]:
    """One line per failed part, most specific first (``RuleReport.failures``)."""
    out = []
    for label, rep in r.localized:
        for e in rep.failures():
            out.append(
                f"{label}: {e.where} rule={format_number(e.grad)} "
                f"fd={format_number(e.numeric)}"
            )
    out += [
        f"dot-product test, output {path_label(d.output)}"
        for d in r.dot_tests
        if not d.ok
    ]
    out += [f"primal: {r.primal.detail}"] if not r.primal.ok else []
    if r.reference is not None and not r.reference.ok:
        out.append(f"reference: {r.reference.verdict}")
    out += [f"{c.name}: {c.detail}" for c in r.structure if not c.ok]
    return out


def _mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _check_line(c: Check) -> str:
    return f"{_mark(c.ok):4s} {c.name} ({c.detail})"


def _dot_test_section(r: RuleReportRecord) -> Section:
    header = ("output", "pair", "rule", "fd", "±err", "|rule-fd|", "tolerance")
    rows = tuple(
        comparison_row(path_label(d.output), d, p)
        for d in r.dot_tests
        for p in range(d.rule.shape[0])
    )
    return Section(
        "table",
        "dot-product tests, one output at a time (rule = ⟨Jᵀȳ,u⟩ from the rule, "
        "fd = ⟨ȳ, finite-difference J·u⟩ in float64):",
        table=Table(header + ("status",), rows, frozenset({2, 3, 4, 5, 6})),
    )


def _localisation_section(label: str, rep: ReportRecord) -> Section:
    if rep.ok:
        worst = max((leaf.max_rel_err for leaf in rep.leaves), default=0.0)
        return Section(
            "part",
            f"localisation, {label}: ok, {rep.n_checked} entries agree "
            f"(max rel err {format_number(worst)})",
        )
    return Section("part", f"localisation, {label}:", nested=report_sections(rep))


def rule_report_sections(r: RuleReportRecord) -> tuple[Section, ...]:
    """What a rule report says, section by section.

    Args:
      r: the report of :func:`jgradcheck.check_vjp` or :func:`jgradcheck.check_jvp`.

    Returns:
      The sections in the order they are shown: headline (with how inputs are
      named and which were held fixed), primal, dot-product tests, structure,
      localisation and the second order.
    """
    under = ["inputs are named by position: [1]['w'] is f's 2nd argument, key 'w'"]
    if r.held:
        under.append("held fixed (not differentiated): " + ", ".join(r.held))
    if r.precision:
        under.append(f"precision: {r.precision}")
    if r.rounding not in ("", "fixed", "measured against float64"):
        under.append(f"rounding of the rule judged by: {r.rounding}")
    out = [
        Section(
            "headline",
            rule_headline(r),
            tuple(under),
            tone="pass" if r.ok else "fail",
        ),
        Section("lines", lines=(f"primal: {_mark(r.primal.ok)} ({r.primal.detail})",)),
    ]
    if r.dot_tests:
        out.append(_dot_test_section(r))
    if r.reference is not None:
        out.append(reference_section(r.reference, "rule"))
    out.append(Section("lines", "structure:", tuple(map(_check_line, r.structure))))
    out += [_localisation_section(label, rep) for label, rep in r.localized]
    if r.second_order is not None:
        what = "x ↦ Jᵀ(x)·ȳ" if r.kind == "vjp" else "x ↦ J(x)·u"
        out.append(
            Section(
                "part",
                f"second order: the rule's own output {what}, checked the same way:",
                nested=rule_report_sections(r.second_order),
            )
        )
    return tuple(out)
