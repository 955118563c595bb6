"""What a check_vjp / check_jvp report says, as :class:`~.sections.Section` records.

The same section model as :mod:`jgradcheck._report.sections`: the localised
reports nest their own gradient-check sections, and the text renderer lays
everything out.
"""

from __future__ import annotations

import dataclasses

from .records import ReportRecord
from .rule_records import Check, LocatedPoint, PointsResult, RuleReportRecord
from .sections import Section, reference_section, report_sections
from .tables import Table, Tone, comparison_row, format_number, path_label


def rule_headline(r: RuleReportRecord) -> str:
    """``check_vjp: passed`` or ``check_jvp: FAILED`` (and where, when only
    other input points than the given values fail)."""
    head = f"check_{r.kind}: {'passed' if r.ok else 'FAILED'}"
    p = r.points
    if p is None:
        return head
    at = f"{p.judged} judged input points of {p.count}"
    if p.ok:
        return f"{head} (at the given values and {at})"
    given_ok = dataclasses.replace(r, points=None).ok
    where = "passed at the given values" if given_ok else "and at the given values"
    return f"{head} at {len(p.failing)} of {at} ({where})"


def rule_failure_lines(r: RuleReportRecord, limit: int | None = 20) -> list[str]:
    """One line per failed part, most specific first (``RuleReport.failures``):
    at most ``limit`` failing entries per localised report (the worst), then
    ``… and N more`` (``None``: every entry)."""
    out = []
    for label, rep in r.localized:
        failing = [e for e in rep.worst(rep.n_fail) if e.status == "FAIL"]
        shown = failing if limit is None else failing[:limit]
        for e in shown:
            out.append(
                f"{label}: {e.where} rule={format_number(e.grad)} "
                f"fd={format_number(e.numeric)}"
            )
        if len(failing) > len(shown):
            out.append(
                f"{label}: … and {len(failing) - len(shown)} more failing entries"
            )
    out += [
        f"dot-product test, output {path_label(d.output)}"
        for d in r.dot_tests
        if not d.ok
    ]
    out += [f"primal: {r.primal.detail}"] if not r.primal.ok else []
    if r.reference is not None and not r.reference.ok:
        out.append(f"reference: {r.reference.verdict}")
    if r.precision_match is not None:
        out.append(r.precision_match.line)
    out += [f"{c.name}: {c.detail}" for c in r.structure if not c.ok]
    if r.points is not None and not r.points.ok:
        out.append(f"points: {_points_summary(r.points)}")
        out += [f"points: simplest failing input: {line}" for line in r.points.simplest]
    return out


def _indices(ks: tuple[int, ...], limit: int = 12) -> str:
    shown = ", ".join(map(str, ks[:limit]))
    return shown + (f", … ({len(ks) - limit} more)" if len(ks) > limit else "")


def _points_summary(p: PointsResult) -> str:
    """``fails at 3 of 13 judged input points (16 in all), all with …``."""
    if p.ok:
        return f"passes at all {p.judged} judged input points ({p.count} in all)"
    line = f"fails at {len(p.failing)} of {p.judged} judged input points ({p.count} in all)"
    if p.unsure:
        line += f", unsure at {len(p.unsure)}"
    if p.common:
        line += f", all with {p.common} (no passing point has)"
    return line


def _located(q: LocatedPoint, limit: int = 6) -> str:
    if q.ok:
        return "passes the full check (the batch and the full check disagree)"
    if not q.entries:
        return "fails the full check; no entry named"
    shown = ", ".join(q.entries[:limit])
    return shown + (
        f" and {len(q.entries) - limit} more" if len(q.entries) > limit else ""
    )


def _points_section(p: PointsResult, kind: str) -> Section:
    """The rule at many input points: verdict, domain, the simplest failing input."""
    lines = [f"{_points_summary(p)}; point 0 is the given values"]
    if p.failing:
        lines.append(
            "failing points: "
            + _indices(p.failing)
            + " (e.g. "
            + "; ".join(dict.fromkeys(p.labels[k] for k in p.failing[:3]))
            + ")"
        )
    if p.out_of_domain:
        lines.append(
            "out of the domain (the primal or its finite differences not finite; "
            "not judged): points " + _indices(p.out_of_domain)
        )
    if p.at_threshold:
        lines.append(
            "failing only where the finite differences straddle a threshold of "
            "the rule (a kink or branch; not counted): points "
            + _indices(p.at_threshold)
        )
    if p.underflow:
        lines.append(
            "below the smallest normal number (the rule's values there are "
            "flushed to zero; not judged): points " + _indices(p.underflow)
        )
    if p.unsure:
        lines.append(
            "unsure (the finite differences cannot decide, and the rule does not "
            "match float64 autodiff of the primal): points " + _indices(p.unsure)
        )
    if p.unresolved:
        lines.append(
            "failing against the finite differences but agreeing with JAX's "
            "float64 autodiff of the primal (the differences cannot resolve f "
            "there; not judged): points " + _indices(p.unresolved)
        )
    if p.thresholds:
        lines.append(
            "thresholds the rule compares with, straddled: "
            + ", ".join(f"{t:g}" for t in p.thresholds)
        )
    if p.located:
        more = len(p.failing) - len(p.located)
        lines.append(
            "where the full check at each failing point finds the error"
            + (f" (the first {len(p.located)} points)" if more > 0 else "")
            + ":"
        )
        lines += [f"  point {q.point}: {_located(q)}" for q in p.located]
    if p.note:
        lines.append(f"evaluated point by point (f cannot be vmapped: {p.note})")
    nested: tuple[Section, ...] = ()
    if p.simplest:
        still = p.simplest_report is not None and not p.simplest_report.ok
        lines.append(
            "simplest failing input (shrunk; the full check there "
            + ("fails" if still else "passes: the batch and the full check disagree")
            + "):"
        )
        lines += [f"  {code}" for code in p.simplest]
        if p.simplest_report is not None:
            nested = (
                Section(
                    "part",
                    f"check_{kind} at the simplest failing input:",
                    nested=rule_report_sections(p.simplest_report),
                    tone=_tone(p.simplest_report.ok),
                ),
            )
    return Section(
        "part",
        "input points:",
        nested=(Section("lines", lines=tuple(lines), tone=None if p.ok else "fail"),)
        + nested,
        tone=_tone(p.ok),
    )


def _mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _tone(ok: bool) -> Tone:
    return "pass" if ok else "fail"


def _check_line(c: Check) -> str:
    return f"{_mark(c.ok) if c.ran else 'skip':4s} {c.name} ({c.detail})"


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
        table=Table(header + ("status",), rows, frozenset({2, 3, 4, 5, 6}), 7),
    )


def _localisation_section(label: str, rep: ReportRecord) -> Section:
    if rep.ok:
        closest = rep.worst(1)
        ratio = (
            closest[0].abs_err / closest[0].tolerance
            if closest and closest[0].tolerance > 0
            else 0.0
        )
        return Section(
            "part",
            f"localisation, {label}: ok, {rep.n_checked} entries agree "
            f"(largest |a-n|/tolerance {ratio:.2g})",
            tone="pass",
        )
    nested = report_sections(rep)
    return Section(
        "part", f"localisation, {label}:", nested=nested, tone=nested[0].tone
    )


def _ordinal(n: int) -> str:
    suffix = (
        "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    )
    return f"{n}{suffix}"


def _naming_line(paths: tuple[str, ...]) -> str:
    """How inputs are named, with an example from ``f``'s own inputs."""
    example = next((p for p in paths if p.count("[") + p.count(".") > 1), paths[0])
    head, _, rest = example.partition("]")
    arg = int(head.lstrip("["))
    n_args = len({p.partition("]")[0] for p in paths})
    which = "argument" if n_args == 1 and arg == 0 else f"{_ordinal(arg + 1)} argument"
    line = f"inputs are named by position: {example} is f's {which}"
    if rest.startswith("['"):
        line += f", key {rest[2:].partition(chr(39))[0]!r}"
    elif rest.startswith("["):
        line += f", item {rest[1:].partition(']')[0]}"
    elif rest.startswith("."):
        line += f", field {rest[1:].partition('[')[0].partition('.')[0]!r}"
    return line


def rule_report_sections(r: RuleReportRecord) -> tuple[Section, ...]:
    """What a rule report says, section by section.

    Args:
      r: the report of :func:`jgradcheck.check_vjp` or :func:`jgradcheck.check_jvp`.

    Returns:
      The sections in the order they are shown: headline (with how inputs are
      named and which were held fixed), primal, dot-product tests, structure,
      localisation and the second order.
    """
    under = [_naming_line(r.inputs)] if r.inputs else []
    if r.held:
        under.append(
            "held fixed (not differentiated, or no entries): " + ", ".join(r.held)
        )
    if r.held_outputs:
        under.append(
            "outputs not checked (integer, boolean or empty: nothing to differentiate): "
            + ", ".join(r.held_outputs)
        )
    if r.precision:
        under.append(f"precision: {r.precision}")
    if r.rounding not in ("", "fixed", "measured against float64"):
        under.append(f"rounding of the rule judged by: {r.rounding}")
    out = [
        Section(
            "headline",
            rule_headline(r),
            tuple(under),
            tone=_tone(r.ok),
        ),
        Section(
            "lines",
            lines=(f"primal: {_mark(r.primal.ok)} ({r.primal.detail})",),
            marks=(_tone(r.primal.ok),),
        ),
    ]
    if r.dot_tests:
        out.append(_dot_test_section(r))
    if r.reference is not None:
        out.append(reference_section(r.reference, "rule"))
    if r.precision_match is not None:
        out.append(Section("lines", lines=(r.precision_match.line,), tone="fail"))
    out.append(
        Section(
            "lines",
            "structure:",
            tuple(map(_check_line, r.structure)),
            marks=tuple(_tone(c.ok) if c.ran else "info" for c in r.structure),
        )
    )
    out += [_localisation_section(label, rep) for label, rep in r.localized]
    if r.points is not None:
        out.append(_points_section(r.points, r.kind))
    if r.second_order is not None:
        what = "x ↦ Jᵀ(x)·ȳ" if r.kind == "vjp" else "x ↦ J(x)·u"
        out.append(
            Section(
                "part",
                f"second order: the rule's own output {what}, checked the same way:",
                nested=rule_report_sections(r.second_order),
                tone=_tone(r.second_order.ok),
            )
        )
    return tuple(out)
