"""Reports as plain JSON-serialisable dicts (``Report.to_dict``,
``RuleReport.to_dict``, ``CompositionReport.to_dict``, ``HvpReport.to_dict``).

Only Python ``bool``, ``int``, ``float``, ``str``, ``None``, ``list`` and ``dict``
appear, so ``json.dumps(report.to_dict(), allow_nan=False)`` always works.
Non-finite floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"``
(JSON has no literal for them); ``None`` (JSON ``null``) only ever means "not
set" or "not applicable" (``rtol`` when the error-bar rule was used, a leaf
without a diagnosis, the dtype of a non-array leaf).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._numerics.verdict import STATUS_NAMES
from .._pytree.flat import LeafInfo
from .composition_records import CompositionRecord
from .composition_sections import composition_headline
from .hvp_records import HvpDirection, HvpRecord, Symmetry
from .hvp_sections import hvp_headline
from .precision_records import PrecisionMatch
from .records import Entry, LeafResult, ReferenceCheck, ReportRecord
from .rule_records import Check, DotTest, PointsResult, RuleReportRecord
from .rule_sections import rule_failure_lines, rule_headline
from .sections import headline


def number(x: float | np.floating[Any] | None) -> float | str | None:
    """A float for JSON: finite values as floats, NaN/inf as strings, None kept."""
    if x is None:
        return None
    x = float(x)
    if np.isfinite(x):
        return x
    if np.isnan(x):
        return "nan"
    return "inf" if x > 0 else "-inf"


def _dtype(dtype: np.dtype | None) -> str | None:
    return None if dtype is None else str(dtype)


def entry_dict(e: Entry) -> dict[str, Any]:
    """One entry: where it is, ``a``, ``n``, ``err``, errors, tolerance, status."""
    return {
        "where": e.where,
        "path": e.path,
        "index": [int(i) for i in e.index],
        "flat_index": int(e.flat_index),
        "leaf_index": int(e.leaf_index),
        "a": number(e.grad),
        "n": number(e.numeric),
        "err": number(e.error_bar),
        "abs_err": number(e.abs_err),
        "rel_err": number(e.rel_err),
        "tolerance": number(e.tolerance),
        "status": e.status,
    }


def leaf_dict(leaf: LeafResult) -> dict[str, Any]:
    """One checked leaf: shape, dtypes, counts, largest errors and verdict."""
    return {
        "path": leaf.path,
        "shape": [int(s) for s in leaf.info.shape],
        "dtype": _dtype(leaf.info.dtype),
        "grad_dtype": _dtype(leaf.grad_dtype),
        "checked": leaf.checked,
        "total": leaf.total,
        "max_abs_err": number(leaf.max_abs_err),
        "max_rel_err": number(leaf.max_rel_err),
        "norm_ratio": number(leaf.norm_ratio),
        "fail": leaf.n_fail,
        "unsure": leaf.n_unsure,
        "kink": leaf.n_kink,
        "ok": leaf.ok,
        "verdict": leaf.verdict,
        "diagnosis": leaf.diagnosis,
        "note": leaf.note,
        "held": [] if leaf.held is None else [int(k) for k in leaf.held],
    }


def skipped_dict(info: LeafInfo) -> dict[str, Any]:
    """One leaf that was not checked: path, shape, dtype and kind."""
    return {
        "path": info.path,
        "shape": [int(s) for s in info.shape],
        "dtype": _dtype(info.dtype),
        "kind": info.kind,
    }


def report_dict(report: ReportRecord, max_entries: int | None = None) -> dict[str, Any]:
    """See :meth:`jgradcheck.Report.to_dict`."""
    if max_entries is not None and max_entries < 0:
        raise ValueError(f"`max_entries` must be >= 0 or None; got {max_entries}.")

    def cap(entries: tuple[Entry, ...]) -> list[dict[str, Any]]:
        kept = entries if max_entries is None else entries[:max_entries]
        return [entry_dict(e) for e in kept]

    n_fail = report.n_fail
    k = n_fail if max_entries is None else min(n_fail, max_entries)
    failures = report.worst(k) if k else ()
    s, t = report.settings, report.timing
    return {
        "kind": "grad",
        "ok": report.ok,
        "summary": headline(report),
        "counts": {
            "checked": report.n_checked,
            "fail": n_fail,
            "unsure": report.n_unsure,
            "kink": report.n_kink,
        },
        "settings": {
            "gradient": s.gradient,
            "reference_dtype": s.reference_dtype,
            "rel_step": number(s.rel_step),
            "rounding": s.rounding,
            "rtol": number(s.rtol),
            "atol": number(s.atol),
            "method": s.method,
            "mode": s.mode,
            "directions": s.directions,
        },
        "timing": {
            "compile_seconds": number(t.compile_seconds),
            "sweep_seconds": number(t.sweep_seconds),
            "evaluations": int(t.evaluations),
            "wall_seconds": number(t.wall_seconds),
        },
        "leaves": [leaf_dict(leaf) for leaf in report.leaves],
        "reference": reference_dict(report.reference),
        "precision_match": match_dict(report.precision_match),
        "failures": [entry_dict(e) for e in failures],
        "unsure": cap(report.unsure()),
        "kinks": cap(report.kinks()),
        "skipped": [skipped_dict(info) for info in report.skipped],
        "terms": {name: report_dict(term, max_entries) for name, term in report.terms},
    }


def _check_dict(c: Check) -> dict[str, Any]:
    return {"name": c.name, "ok": bool(c.ok), "ran": bool(c.ran), "detail": c.detail}


def _dot_test_dict(d: DotTest) -> dict[str, Any]:
    pairs: list[dict[str, Any]] = []
    for p in range(d.rule.shape[0]):
        rule, fd = float(d.rule[p]), float(d.numeric[p])
        pairs.append(
            {
                "rule": number(rule),
                "fd": number(fd),
                "err": number(d.error_bar[p]),
                "abs_diff": number(abs(rule - fd)),
                "tolerance": number(d.tolerance[p]),
                "status": STATUS_NAMES[int(d.status[p])],
            }
        )
    return {"output": d.output, "ok": d.ok, "pairs": pairs}


def reference_dict(ref: ReferenceCheck | None) -> dict[str, Any] | None:
    """The ``reference=`` comparison as a plain dict (None without one)."""
    if ref is None:
        return None
    return {
        "name": ref.name,
        "ok": ref.ok,
        "factor": number(ref.factor),
        "native": ref.native,
        "reference_agrees": ref.reference_agrees,
        "evidence": ref.evidence,
        "verdict": ref.verdict,
        "leaves": [
            {
                "label": leaf.label,
                "ok": leaf.ok,
                "rule_err": number(leaf.rule_err),
                "ref_err": number(leaf.ref_err),
                "ratio": number(leaf.ratio),
                "allowed": number(leaf.allowed),
                "fail": leaf.n_fail,
                "size": leaf.size,
                "worst": leaf.worst,
            }
            for leaf in ref.leaves
        ],
    }


def match_dict(m: PrecisionMatch | None) -> dict[str, Any] | None:
    """The comparison at matched precision as a plain dict (None without one)."""
    if m is None:
        return None
    return {
        "dtype": m.dtype,
        "where": [
            {"kind": label, "rule": n, "yardstick": k} for label, n, k in m.where
        ],
        "other": m.other,
        "platform": m.platform,
        "yardstick": m.yardstick,
        "agrees": m.agrees,
        "leaf": m.leaf,
        "rule_err": number(m.rule_err),
        "ref_err": number(m.ref_err),
        "matched_err": number(m.matched_err),
        "allowed": number(m.allowed),
        "line": m.line,
    }


def rule_report_dict(
    r: RuleReportRecord, max_entries: int | None = None
) -> dict[str, Any]:
    """See :meth:`jgradcheck.RuleReport.to_dict`."""
    failures = rule_failure_lines(r, None)
    if max_entries is not None:
        failures = failures[:max_entries]
    return {
        "kind": r.kind,
        "ok": r.ok,
        "summary": rule_headline(r),
        "failures": failures,
        "primal": _check_dict(r.primal),
        "dot_tests": [_dot_test_dict(d) for d in r.dot_tests],
        "structure": [_check_dict(c) for c in r.structure],
        "localized": [
            {"label": label, "report": report_dict(rep, max_entries)}
            for label, rep in r.localized
        ],
        "held": list(r.held),
        "held_outputs": list(r.held_outputs),
        "precision": r.precision,
        "rounding": r.rounding,
        "reference": reference_dict(r.reference),
        "precision_match": match_dict(r.precision_match),
        "points": _points_dict(r.points, max_entries),
        "second_order": (
            None
            if r.second_order is None
            else rule_report_dict(r.second_order, max_entries)
        ),
    }


def _points_dict(
    p: PointsResult | None, max_entries: int | None
) -> dict[str, Any] | None:
    """``points=``: the counts, failing and out-of-domain indices, the
    summary and the simplest failing input with its full check. The points'
    values are left out (``labels`` says what each is; the failing one that
    matters is ``simplest``)."""
    if p is None:
        return None
    return {
        "ok": p.ok,
        "count": p.count,
        "in_domain": p.in_domain,
        "failing": list(p.failing),
        "out_of_domain": list(p.out_of_domain),
        "at_threshold": list(p.at_threshold),
        "underflow": list(p.underflow),
        "unresolved": list(p.unresolved),
        "unsure": list(p.unsure),
        "judged": p.judged,
        "labels": list(p.labels),
        "thresholds": [number(t) for t in p.thresholds],
        "common": p.common,
        "simplest": list(p.simplest),
        "simplest_report": (
            None
            if p.simplest_report is None
            else rule_report_dict(p.simplest_report, max_entries)
        ),
        "note": p.note,
        "located": [
            {"point": q.point, "ok": q.ok, "entries": list(q.entries)}
            for q in p.located
        ],
    }


def composition_dict(r: CompositionRecord) -> dict[str, Any]:
    """See :meth:`jgradcheck.CompositionReport.to_dict`."""
    return {
        "kind": "compositions",
        "ok": r.ok,
        "summary": composition_headline(r),
        "rule": r.kind,
        "points": r.points,
        "rounding": r.rounding,
        "rows": [
            {"name": c.name, "status": c.status, "ok": c.ok, "detail": c.detail}
            for c in r.rows
        ],
    }


def _direction_dict(d: HvpDirection) -> dict[str, Any]:
    return {
        "direction": d.direction,
        "where": d.where,
        "hvp": number(d.hvp),
        "fd": number(d.fd),
        "err": number(d.error_bar),
        "abs_diff": number(abs(d.hvp - d.fd)),
        "tolerance": number(d.tolerance),
        "fail": d.n_fail,
        "unsure": d.n_unsure,
        "size": d.size,
        "status": STATUS_NAMES[d.status],
        "ok": d.ok,
    }


def _symmetry_dict(s: Symmetry | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "ok": bool(s.ok),
        "pairs": s.pairs,
        "worst": [int(i) for i in s.worst],
        "left": number(s.left),
        "right": number(s.right),
        "abs_diff": number(abs(s.left - s.right)),
        "allowance": number(s.allowance),
    }


def hvp_dict(r: HvpRecord) -> dict[str, Any]:
    """See :meth:`jgradcheck.HvpReport.to_dict`."""
    return {
        "kind": "hvp",
        "ok": r.ok,
        "summary": hvp_headline(r),
        "inputs": list(r.inputs),
        "rounding": r.rounding,
        "directions": [_direction_dict(d) for d in r.directions],
        "symmetry": _symmetry_dict(r.symmetry),
    }
