"""What a gradient-check report says, as a list of sections, before any format.

:func:`report_sections` turns a :class:`~jgradcheck._report.records.ReportRecord`
into :class:`Section` records (a headline, lines, tables, named terms); the text
and HTML renderers (:mod:`jgradcheck._report.text`, :mod:`jgradcheck._report.html`)
only lay them out, so the two always say the same thing. In every table ``a`` is
the gradient under test, ``n`` the finite-difference estimate and ``±err`` the
estimate's own error bar.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, TypeAlias

from .records import ReferenceCheck, ReportRecord
from .tables import (
    Table,
    Tone,
    direction_table,
    directions_agree,
    entry_table,
    format_number,
    has_directions,
    leaf_table,
    path_label,
)

SectionKind: TypeAlias = Literal["headline", "lines", "table", "term", "part"]
"""``headline``: the verdict (``title``) and lines right under it; ``lines``: an
optional title over lines; ``table``: a title over a table; ``term``: one named
term of the loss (``nested``: its own report, when it failed); ``part``: a
nested report of a rule check (localisation, second order)."""


class Section(NamedTuple):
    """One block of a report, in the order it is shown."""

    kind: SectionKind
    title: str = ""
    """The heading (the headline itself for ``kind="headline"``); ``""``: none."""
    lines: tuple[str, ...] = ()
    table: Table | None = None
    nested: tuple[Section, ...] = ()
    """``term`` and ``part``: the sections of the nested report (``()``: none)."""
    tone: Tone | None = None
    """``headline``: passed, FAILED or UNSURE; ``term`` and ``part``: the verdict
    of that nested check; ``lines``: the lines call for attention in this tone
    (the diagnosis). The text says it in words; HTML adds colour and a symbol."""
    marks: tuple[Tone | None, ...] = ()
    """``lines``: the verdict each line states in words (``ok``/``FAIL``), one per
    line, for HTML to mark; ``()``: the lines state none."""


# ----------------------------------------------------------------- headline


def headline(report: ReportRecord) -> str:
    """The report's first line: passed, FAILED or UNSURE, and why."""
    bad_terms = [repr(name) for name, r in report.terms if not r.ok]
    if bad_terms:
        own = headline(dataclasses.replace(report, terms=()))
        return (
            f"gradient check FAILED in term {', '.join(bad_terms)} "
            f"(sum of the terms: {own.removeprefix('gradient check ')})"
        )
    bad = [leaf for leaf in report.leaves if leaf.n_fail or leaf.n_fail_directions]
    if bad:
        paths = ", ".join(path_label(leaf.path) for leaf in bad)
        if not report.n_fail:
            return (
                "gradient check FAILED: the gradient disagrees with finite "
                f"differences along random directions in {paths}, though no "
                "single swept entry is wrong beyond its tolerance"
            )
        return (
            f"gradient check FAILED: {report.n_fail} of {report.n_checked} checked "
            f"entries disagree, in {paths}"
        )
    if report.n_unsure:
        return (
            f"gradient check UNSURE: {report.n_unsure} of {report.n_checked} entries "
            "could not be judged (finite-difference error bar too wide: a kink, a "
            "discontinuity or a noisy loss near them)"
        )
    if not report.verified:
        return "gradient check UNSURE: nothing was verified: " + _unverified(report)
    unsure = [leaf for leaf in report.leaves if not leaf.ok]
    if not unsure and report.reference is not None and not report.reference.ok:
        return (
            f"gradient check FAILED against the reference: {report.reference.verdict}"
        )
    if unsure:
        paths = ", ".join(path_label(leaf.path) for leaf in unsure)
        return (
            "gradient check UNSURE: along some random directions in "
            f"{paths} the finite-difference error bar was too wide, and the "
            "sampled sweep of those leaves does not cover every entry"
        )
    if report.settings.mode == "fast":
        return _fast_headline(report)
    if report.n_kink:
        return (
            f"gradient check passed: {_entries(report, report.n_checked - report.n_kink)}"
            f" agree; {report.n_kink} sit at a kink of the loss (the gradient lies between the "
            "one-sided slopes there: not judged)"
        )
    return f"gradient check passed: {_entries(report, report.n_checked)} agree"


def _unverified(report: ReportRecord) -> str:
    """Why a report without a failure verified nothing, and what to do."""
    held = sum(0 if leaf.held is None else leaf.held.size for leaf in report.leaves)
    parts = []
    if report.n_kink:
        parts.append(
            f"all {report.n_kink} checked entries sit at a kink of the loss (the "
            "gradient lies between the one-sided slopes there: not judged)"
        )
    if held:
        parts.append(f"{held} entries of `params` are NaN or inf (held fixed)")
    if any(leaf.directions is not None for leaf in report.leaves):
        parts.append("no random direction agreed within its error bar")
    if not parts:
        return (
            "no entry was compared (the floating-point leaves of `params` have "
            "no entries); give params with at least one entry"
        )
    fix = (
        "; to verify the gradient, check it at params away from the kinks"
        if (report.n_kink)
        else ""
    )
    return "; ".join(parts) + fix


def headline_tone(report: ReportRecord) -> Tone:
    """Whether :func:`headline` says passed, FAILED or UNSURE."""
    if report.ok:
        return "pass"
    failed = (
        report.n_fail
        or any(leaf.n_fail_directions for leaf in report.leaves)
        or any(not r.ok for _, r in report.terms)
        or (report.reference is not None and not report.reference.ok)
    )
    return "fail" if failed else "unsure"


def _count_leaves(n: int) -> str:
    return f"{n} leaf" if n == 1 else f"{n} leaves"


def _fast_headline(report: ReportRecord) -> str:
    k = report.settings.directions
    unswept = [leaf for leaf in report.leaves if not leaf.checked]
    parts = []
    if unswept:
        parts.append(
            f"{len(unswept)} of {_count_leaves(len(report.leaves))} agree along {k} "
            f"random directions each (their {sum(leaf.total for leaf in unswept)} "
            "entries were not checked one by one; docs/fast_mode.md: what this can "
            "miss)"
        )
    if report.n_checked:
        swept = len(report.leaves) - len(unswept)
        kinks = f", {report.n_kink} at kinks" if report.n_kink else ""
        parts.append(
            f"{report.n_checked} entries of {_count_leaves(swept)} swept one by one "
            f"agree{kinks}"
        )
    return "gradient check passed (fast mode): " + "; ".join(parts)


# ----------------------------------------------------------------- how it was made


def _estimate_lines(report: ReportRecord) -> list[str]:
    """The ``n = ...`` lines: how the finite-difference estimates were made."""
    s = report.settings
    if s.mode == "fast":
        return [
            f"n   = finite differences in {s.reference_dtype} along {s.directions} "
            "random directions u per leaf: (J(θ+tu)−J(θ−tu))/2t against ⟨a,u⟩,",
            "      Richardson-refined where needed; leaves that disagree along u "
            f"are swept entry by entry (step {s.rel_step:.2g}·max(1,|θ|))",
        ]
    if s.method == "complex":
        return [
            f"n   = complex step Im J(θ+ih)/h in {s.reference_dtype}, probed against "
            "central differences; entries that disagree re-estimated by them"
        ]
    if s.method != "auto":
        return [
            f"n   = method {s.method!r} in {s.reference_dtype}; entries that disagree "
            f"re-estimated from step {s.rel_step:.2g}·max(1,|θ|) down, Richardson"
        ]
    return [
        f"n   = central finite differences in {s.reference_dtype}, step "
        f"{s.rel_step:.2g}·max(1,|θ|), Richardson-refined where needed"
    ]


def about_lines(report: ReportRecord) -> list[str]:
    """What ``a``, ``n`` and ``err`` are, the tolerance rule and the cost."""
    s = report.settings
    tol = (
        f"rtol={s.rtol}, atol={s.atol}"
        if s.rtol is not None or s.atol is not None
        else "error-bar rule (README: 'How close is close enough?')"
    )
    return [
        f"a   = gradient under test: {s.gradient}",
        *_estimate_lines(report),
        f"err = error bar of n (truncation + roundoff); tolerance: {tol}",
        f"rounding of a: {s.rounding}",
        _timing_line(report),
        *(f"note: {note}" for note in s.notes),
    ]


def _timing_line(report: ReportRecord) -> str:
    """The call's wall time and its parts (sweeps, compiling, the rest)."""
    t = report.timing
    on = f" on {len(t.devices)} devices" if len(t.devices) > 1 else ""
    if t.wall_seconds is None:
        return (
            f"{t.evaluations} evaluations of J, {t.sweep_seconds:.2f} s "
            f"(+ {t.compile_seconds:.2f} s compile){on}"
        )
    rest = max(0.0, t.wall_seconds - t.sweep_seconds - t.compile_seconds)
    return (
        f"{t.wall_seconds:.2f} s in all: {t.evaluations} evaluations of J in "
        f"{t.sweep_seconds:.2f} s{on}, compiling the sweeps {t.compile_seconds:.2f} s, "
        f"the rest {rest:.2f} s (the gradient under test, tracing, checks of J)"
    )


def _entries(report: ReportRecord, n: int) -> str:
    """``n entries``, or ``n of N entries (p%)`` when only a sample was checked."""
    total = sum(
        leaf.total - (0 if leaf.held is None else leaf.held.size)
        for leaf in report.leaves
    )
    if report.n_checked >= total:
        return f"{n} entries"
    return f"{n} of {total:,} entries ({100 * report.n_checked / total:.2g}% sampled)"


def skipped_line(report: ReportRecord) -> str | None:
    """The leaves held fixed (not floating point), or None when there are none."""
    if not report.skipped:
        return None
    parts = []
    for info in report.skipped:
        what = str(info.dtype) if info.dtype is not None else info.kind
        parts.append(f"{path_label(info.path)} ({what})")
    return "not checked (not floating point): " + ", ".join(parts)


def held_line(report: ReportRecord, limit: int = 10) -> str | None:
    """The entries held fixed because their values are NaN or inf, or None."""
    places = [
        leaf.info.where(int(k))
        for leaf in report.leaves
        if leaf.held is not None
        for k in leaf.held
    ]
    if not places:
        return None
    shown = ", ".join(places[:limit])
    if len(places) > limit:
        shown += f", ... ({len(places) - limit} more)"
    return (
        f"not checked (NaN or inf in params, held fixed; the loss does not read "
        f"them): {shown}"
    )


# ----------------------------------------------------------------- sections


def _direction_section(report: ReportRecord, k: int) -> Section:
    title = (
        "closest directional call per leaf"
        if directions_agree(report)
        else "directions that disagree"
    )
    return Section(
        "table",
        f"{title} (u = direction k of the leaf; |a-n| = |⟨a,u⟩ − n along u|):",
        table=direction_table(report, k),
    )


def _leaf_lines(
    report: ReportRecord, title: str, field: str, tone: Tone | None = None
) -> list[Section]:
    """A titled ``path: text`` line for each leaf with a ``field`` (diagnosis, note)."""
    lines = tuple(
        f"{path_label(leaf.path)}: {getattr(leaf, field)}"
        for leaf in report.leaves
        if getattr(leaf, field)
    )
    return [Section("lines", title, lines, tone=tone)] if lines else []


def _term_sections(report: ReportRecord, k: int) -> list[Section]:
    if not report.terms:
        return []
    out = [
        Section(
            "lines",
            "the loss has named terms; the report above is their sum. Each term:",
        )
    ]
    for name, term in report.terms:
        if term.ok:
            title = f"term {name!r}: ok, {term.n_checked} entries agree"
            out.append(Section("term", title, tone="pass"))
        else:
            nested = report_sections(term, k=k)
            out.append(
                Section("term", f"term {name!r}:", nested=nested, tone=nested[0].tone)
            )
    return out


def reference_section(ref: ReferenceCheck, what: str) -> Section:
    """The comparison with ``reference=``: one row per leaf, and the verdict.

    ``what`` names the derivative under test (``gradient`` or ``rule``)."""
    header = (
        "leaf",
        f"max|{what}-ref64|",
        "max|ref-ref64|",
        "ratio",
        "allowed",
        "verdict",
    )
    rows = tuple(
        (
            leaf.label,
            format_number(leaf.rule_err),
            format_number(leaf.ref_err),
            format_number(leaf.ratio),
            format_number(leaf.allowed),
            "ok"
            if leaf.ok
            else f"FAIL ({leaf.n_fail} of {leaf.size})"
            if ref.reference_agrees
            else f"differs ({leaf.n_fail} of {leaf.size}): the reference is in doubt",
        )
        for leaf in ref.leaves
    )
    return Section(
        "table",
        f"against the reference {ref.name} ({what} vs JAX's derivative of the "
        f"reference in float64 = ref64; yardstick: the reference at {ref.native}; "
        f"allowed = {ref.factor:g}·max|ref-ref64| + the rounding floor of the leaf's scale): "
        + ref.verdict,
        table=Table(header, rows, frozenset({1, 2, 3, 4})),
    )


def report_sections(report: ReportRecord, *, k: int = 8) -> tuple[Section, ...]:
    """What a gradient-check report says, section by section.

    Args:
      report: the report.
      k: rows of the worst-entries and directions tables.

    Returns:
      The sections in the order they are shown: headline, how the check was
      made, one row per leaf, directions (fast mode), diagnosis, notes, the
      worst entries (the closest calls when the report passed), the skipped
      leaves and the named terms.
    """
    out = [
        Section("headline", headline(report), tone=headline_tone(report)),
        Section("lines", lines=tuple(about_lines(report))),
        Section(
            "table",
            "per leaf (norm ratio = ‖a−n‖/(‖a‖+‖n‖), rel = |a−n|/max(|a|,|n|)):",
            table=leaf_table(report),
        ),
    ]
    if report.reference is not None:
        out.append(reference_section(report.reference, "gradient"))
    if report.precision_match is not None:
        line = report.precision_match.line
        out.append(Section("lines", lines=(line,), tone="fail"))
    if has_directions(report):
        out.append(_direction_section(report, k))
    out += _leaf_lines(report, "diagnosis:", "diagnosis", headline_tone(report))
    out += _leaf_lines(report, "notes:", "note")
    worst = report.worst(k)
    if worst:
        title = (
            "worst entries:"
            if not report.ok
            else "closest calls (largest |a-n| / tolerance):"
        )
        out.append(Section("table", title, table=entry_table(worst)))
    lines = tuple(x for x in (skipped_line(report), held_line(report)) if x)
    if lines:
        out.append(Section("lines", lines=lines))
    out += _term_sections(report, k)
    return tuple(out)
