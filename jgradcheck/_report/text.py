"""Reports as text (``str(report)``) and HTML (notebooks).

In every table ``a`` is the gradient under test, ``n`` the finite-difference
estimate and ``±err`` the estimate's own error bar.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import numpy as np

from .._numerics.verdict import PASS, STATUS_NAMES
from .records import Directions, Entry, Report

# ----------------------------------------------------------------- formatting


def _g(x: float) -> str:
    return f"{x:.3e}" if np.isfinite(x) else str(x)


def comparison_row(name: str, d: Any, k: int) -> list[str]:
    """One row of a directional or dot-product table: entry ``k`` of ``d``'s
    ``rule``, ``numeric``, ``error_bar``, ``tolerance`` and ``status``."""
    a, n = float(d.rule[k]), float(d.numeric[k])
    return [
        name,
        str(k),
        _g(a),
        _g(n),
        _g(float(d.error_bar[k])),
        _g(abs(a - n)),
        _g(float(d.tolerance[k])),
        STATUS_NAMES[int(d.status[k])],
    ]


def _headline(report: Report) -> str:
    bad_terms = [repr(name) for name, r in report.terms if not r.ok]
    if bad_terms:
        own = _headline(dataclasses.replace(report, terms=()))
        return (
            f"gradient check FAILED in term {', '.join(bad_terms)} "
            f"(sum of the terms: {own.removeprefix('gradient check ')})"
        )
    bad = [leaf for leaf in report.leaves if leaf.n_fail or leaf.n_fail_directions]
    if bad:
        paths = ", ".join(leaf.path or "<root>" for leaf in bad)
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
    unsure = [leaf for leaf in report.leaves if not leaf.ok]
    if unsure:
        paths = ", ".join(leaf.path or "<root>" for leaf in unsure)
        return (
            "gradient check UNSURE: along some random directions in "
            f"{paths} the finite-difference error bar was too wide, and the "
            "sampled sweep of those leaves does not cover every entry"
        )
    if report.settings.mode == "fast":
        return _fast_headline(report)
    if report.n_kink:
        return (
            f"gradient check passed: {report.n_checked - report.n_kink} entries agree; "
            f"{report.n_kink} sit at a kink of the loss (the gradient lies between the "
            "one-sided slopes there: not judged)"
        )
    return f"gradient check passed: {report.n_checked} entries agree"


def _leaves(n: int) -> str:
    return f"{n} leaf" if n == 1 else f"{n} leaves"


def _fast_headline(report: Report) -> str:
    k = report.settings.directions
    unswept = [leaf for leaf in report.leaves if not leaf.checked]
    parts = []
    if unswept:
        parts.append(
            f"{len(unswept)} of {_leaves(len(report.leaves))} agree along {k} random "
            f"directions each (their {sum(leaf.total for leaf in unswept)} entries "
            "were not checked one by one; docs/fast_mode.md: what this can miss)"
        )
    if report.n_checked:
        swept = len(report.leaves) - len(unswept)
        kinks = f", {report.n_kink} at kinks" if report.n_kink else ""
        parts.append(
            f"{report.n_checked} entries of {_leaves(swept)} swept one by one "
            f"agree{kinks}"
        )
    return "gradient check passed (fast mode): " + "; ".join(parts)


def _about(report: Report) -> list[str]:
    s = report.settings
    tol = (
        f"rtol={s.rtol}, atol={s.atol}"
        if s.rtol is not None or s.atol is not None
        else "error-bar rule (README: 'How close is close enough?')"
    )
    t = report.timing
    if s.mode == "fast":
        n = [
            f"n   = finite differences in {s.reference_dtype} along {s.directions} "
            "random directions u per leaf: (J(θ+tu)−J(θ−tu))/2t against ⟨a,u⟩,",
            "      Richardson-refined where needed; leaves that disagree along u "
            f"are swept entry by entry (step {s.rel_step:.2g}·max(1,|θ|))",
        ]
    elif s.method == "complex":
        n = [
            f"n   = complex step Im J(θ+ih)/h in {s.reference_dtype}, probed against "
            "central differences; entries that disagree re-estimated by them"
        ]
    elif s.method != "auto":
        n = [
            f"n   = method {s.method!r} in {s.reference_dtype}; entries that disagree "
            f"re-estimated from step {s.rel_step:.2g}·max(1,|θ|) down, Richardson"
        ]
    else:
        n = [
            f"n   = central finite differences in {s.reference_dtype}, step "
            f"{s.rel_step:.2g}·max(1,|θ|), Richardson-refined where needed"
        ]
    return [
        f"a   = gradient under test: {s.gradient}",
        *n,
        f"err = error bar of n (truncation + roundoff); tolerance: {tol}",
        f"rounding of a: {s.rounding}",
        f"{t.evaluations} evaluations of J, {t.sweep_seconds:.2f} s "
        f"(+ {t.compile_seconds:.2f} s compile)"
        + (f" on {len(t.devices)} devices" if len(t.devices) > 1 else ""),
    ]


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            r[c].rjust(widths[c]) if c in right else r[c].ljust(widths[c])
            for c in range(len(r))
        ]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _has_directions(report: Report) -> bool:
    return any(leaf.directions is not None for leaf in report.leaves)


def _agree(d: Directions | None) -> str:
    if d is None:
        return "-"
    return f"{d.count - d.n_fail - d.n_unsure}/{d.count} agree"


def _leaf_rows(report: Report) -> list[list[str]]:
    fast = _has_directions(report)
    head = ["leaf", "shape", "dtype", "checked"]
    head += ["directions"] if fast else []
    rows = [head + ["max|a-n|", "max rel", "norm ratio", "verdict"]]
    for leaf in report.leaves:
        stats = (
            [_g(leaf.max_abs_err), _g(leaf.max_rel_err), _g(leaf.norm_ratio)]
            if leaf.checked
            else ["-", "-", "-"]
        )
        rows.append(
            [
                leaf.path or "<root>",
                str(leaf.info.shape),
                str(leaf.info.dtype),
                f"{leaf.checked}/{leaf.total}",
                *([_agree(leaf.directions)] if fast else []),
                *stats,
                leaf.verdict,
            ]
        )
    return rows


def _leaf_right(report: Report) -> set[int]:
    return {3, 4, 5, 6, 7} if _has_directions(report) else {3, 4, 5, 6}


def _direction_rows(report: Report, k: int) -> list[list[str]]:
    """Every direction that did not agree; if all agree, each leaf's closest call."""
    picked = []
    all_agree = all(
        leaf.directions is None or leaf.directions.ok for leaf in report.leaves
    )
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
        picked += [(d.status[j] == PASS, -float(ratio[j]), leaf, int(j)) for j in ks]
    picked.sort(key=lambda p: (p[0], p[1]))
    rows = [["leaf", "u", "⟨a,u⟩", "n along u", "±err", "|a-n|", "tolerance"]]
    rows[0].append("status")
    for _, _, leaf, j in picked[:k]:
        d = leaf.directions
        rows.append(comparison_row(leaf.path or "<root>", d, j))
    return rows


def _entry_rows(entries: tuple[Entry, ...]) -> list[list[str]]:
    rows = [
        [
            "where",
            "a (under test)",
            "n (finite diff)",
            "±err",
            "|a-n|",
            "rel err",
            "tolerance",
            "status",
        ]
    ]
    for e in entries:
        rows.append(
            [
                e.where,
                _g(e.grad),
                _g(e.numeric),
                _g(e.error_bar),
                _g(e.abs_err),
                _g(e.rel_err),
                _g(e.tolerance),
                e.status,
            ]
        )
    return rows


def _skipped(report: Report) -> str | None:
    if not report.skipped:
        return None
    parts = []
    for info in report.skipped:
        what = str(info.dtype) if info.dtype is not None else info.kind
        parts.append(f"{info.path or '<root>'} ({what})")
    return "not checked (not floating point): " + ", ".join(parts)


def format_text(report: Report, k: int = 8) -> str:
    """The report as an aligned plain-text table."""
    lines = [_headline(report), ""]
    lines += _about(report)
    lines += ["", "per leaf (norm ratio = ‖a−n‖/(‖a‖+‖n‖), rel = |a−n|/max(|a|,|n|)):"]
    lines += _table(_leaf_rows(report), right=_leaf_right(report))
    if _has_directions(report):
        title = (
            "closest directional call per leaf"
            if all(
                leaf.directions is None or leaf.directions.ok for leaf in report.leaves
            )
            else "directions that disagree"
        )
        lines += [
            "",
            f"{title} (u = direction k of the leaf; |a-n| = |⟨a,u⟩ − n along u|):",
        ]
        lines += _table(_direction_rows(report, k), right={1, 2, 3, 4, 5, 6})
    diagnoses = [leaf for leaf in report.leaves if leaf.diagnosis]
    if diagnoses:
        lines += ["", "diagnosis:"]
        lines += [f"  {leaf.path or '<root>'}: {leaf.diagnosis}" for leaf in diagnoses]
    notes = [leaf for leaf in report.leaves if leaf.note]
    if notes:
        lines += ["", "notes:"]
        lines += [f"  {leaf.path or '<root>'}: {leaf.note}" for leaf in notes]
    worst = report.worst(k)
    if worst:
        title = (
            "worst entries"
            if not report.ok
            else "closest calls (largest |a-n| / tolerance)"
        )
        lines += ["", f"{title}:"]
        lines += _table(_entry_rows(worst), right={1, 2, 3, 4, 5, 6})
    skipped = _skipped(report)
    if skipped:
        lines += ["", skipped]
    if report.terms:
        lines += [
            "",
            "the loss has named terms; the report above is their sum. Each term:",
        ]
    for name, term in report.terms:
        if term.ok:
            lines += [f"  term {name!r}: ok, {term.n_checked} entries agree"]
        else:
            lines += ["", f"  term {name!r}:"]
            lines += [
                "    " + line if line else ""
                for line in format_text(term, k).splitlines()
            ]
    return "\n".join(lines)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
        for r in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def format_html(report: Report, k: int = 8) -> str:
    """The report as HTML, for Jupyter."""
    failed = report.n_fail or any(leaf.n_fail_directions for leaf in report.leaves)
    color = "#1a7f37" if report.ok else ("#cf222e" if failed else "#9a6700")
    parts = [f"<p style='color:{color}'><b>{html.escape(_headline(report))}</b></p>"]
    parts.append("<p>" + "<br>".join(html.escape(s) for s in _about(report)) + "</p>")
    parts.append(_html_table(_leaf_rows(report)))
    for title, field in (("diagnosis", "diagnosis"), ("notes", "note")):
        lines = [
            f"{leaf.path or '<root>'}: {getattr(leaf, field)}"
            for leaf in report.leaves
            if getattr(leaf, field)
        ]
        if lines:
            parts.append(
                f"<p>{title}:<br>" + "<br>".join(html.escape(d) for d in lines) + "</p>"
            )
    if _has_directions(report):
        parts.append("<p>directional checks:</p>")
        parts.append(_html_table(_direction_rows(report, k)))
    worst = report.worst(k)
    if worst:
        parts.append("<p>worst entries:</p>" + _html_table(_entry_rows(worst)))
    skipped = _skipped(report)
    if skipped:
        parts.append(f"<p>{html.escape(skipped)}</p>")
    if report.terms:
        parts.append(
            "<p>the loss has named terms; the report above is their sum. Each term:</p>"
        )
    for name, term in report.terms:
        label = html.escape(f"term {name!r}")
        if term.ok:
            parts.append(f"<p>{label}: ok, {term.n_checked} entries agree</p>")
        else:
            parts.append(
                f"<div style='margin-left:2em'><p><b>{label}:</b></p>"
                f"{format_html(term, k)}</div>"
            )
    return "\n".join(parts)
