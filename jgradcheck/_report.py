"""Reports: what was checked, what disagreed, and where.

The engine and the verdict fill these immutable records; this module only reads
and formats them. In every table ``a`` is the gradient under test, ``n`` the
finite-difference estimate and ``±err`` the estimate's own error bar.
"""

from __future__ import annotations

import dataclasses
import html
from typing import NamedTuple

import numpy as np

from ._tree import LeafInfo
from ._verdict import FAIL, KINK, PASS, STATUS_NAMES, UNSURE, norm_ratio, rel_error


class Entry(NamedTuple):
    """One checked entry of one leaf."""

    where: str
    """Path and full index, e.g. ``['decoder'][3, 17]``."""
    path: str
    index: tuple[int, ...]
    flat_index: int
    """Index into the raveled vector of checked leaves (``ravel_pytree`` order)."""
    grad: float
    """The gradient under test."""
    numeric: float
    """The finite-difference estimate."""
    error_bar: float
    """The finite-difference estimate's own error bar."""
    abs_err: float
    rel_err: float
    """``|a − n| / max(|a|, |n|)``."""
    tolerance: float
    status: str
    """``"pass"``, ``"FAIL"`` or ``"unsure"``."""


class LeafResult(NamedTuple):
    """Everything measured on one leaf. Arrays are indexed like ``idx``."""

    info: LeafInfo
    idx: np.ndarray
    """Flat indices (within the leaf) that were checked."""
    grad: np.ndarray
    numeric: np.ndarray
    error_bar: np.ndarray
    tolerance: np.ndarray
    status: np.ndarray
    step: np.ndarray
    refined: np.ndarray
    grad_dtype: np.dtype
    diagnosis: str | None = None
    """How the mismatch looks when the evidence is clear (sign, scale, ...)."""

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def checked(self) -> int:
        return int(self.idx.shape[0])

    @property
    def total(self) -> int:
        return self.info.size

    @property
    def abs_err(self) -> np.ndarray:
        return np.abs(self.grad - self.numeric)

    @property
    def rel_err(self) -> np.ndarray:
        return rel_error(self.grad, self.numeric)

    @property
    def max_abs_err(self) -> float:
        return float(self.abs_err.max()) if self.checked else 0.0

    @property
    def max_rel_err(self) -> float:
        return float(self.rel_err.max()) if self.checked else 0.0

    @property
    def norm_ratio(self) -> float:
        """``‖a − n‖ / (‖a‖ + ‖n‖)`` over the checked entries."""
        return norm_ratio(self.grad, self.numeric)

    @property
    def n_fail(self) -> int:
        return int(np.sum(self.status == FAIL))

    @property
    def n_unsure(self) -> int:
        return int(np.sum(self.status == UNSURE))

    @property
    def n_kink(self) -> int:
        return int(np.sum(self.status == KINK))

    @property
    def ok(self) -> bool:
        return bool(np.all((self.status == PASS) | (self.status == KINK)))

    @property
    def verdict(self) -> str:
        if self.n_fail:
            return f"FAIL ({self.n_fail} wrong)"
        if self.n_unsure:
            return f"unsure ({self.n_unsure})"
        if self.n_kink:
            return f"ok ({self.n_kink} at kinks)"
        return "ok"

    def entry(self, k: int) -> Entry:
        """The k-th checked entry of this leaf."""
        flat = int(self.idx[k])
        a, n = float(self.grad[k]), float(self.numeric[k])
        return Entry(
            where=self.info.where(flat),
            path=self.info.path,
            index=self.info.index(flat),
            flat_index=self.info.offset + flat,
            grad=a,
            numeric=n,
            error_bar=float(self.error_bar[k]),
            abs_err=abs(a - n),
            rel_err=float(rel_error(np.array([a]), np.array([n]))[0]),
            tolerance=float(self.tolerance[k]),
            status=STATUS_NAMES[int(self.status[k])],
        )


class Settings(NamedTuple):
    """How the check was made."""

    gradient: str
    """Where the gradient under test came from."""
    reference_dtype: str
    """The dtype J was evaluated in for finite differences."""
    rel_step: float
    """Default step is ``rel_step · max(1, |θᵢ|)``."""
    rounding: str
    """How the gradient under test's own rounding was allowed for."""
    rtol: float | None
    atol: float | None


class Timing(NamedTuple):
    compile_seconds: float
    sweep_seconds: float
    evaluations: int
    """Evaluations of J made by the sweep."""
    devices: tuple[str, ...] = ()
    """The devices the sweeps ran on (their results' shardings)."""


@dataclasses.dataclass(frozen=True)
class Report:
    """The result of :func:`jgradcheck.check_grad`.

    ``report.ok`` is True when every checked entry agrees. ``print(report)``
    shows one row per leaf and the worst entries; ``report.worst(k)`` and
    ``report.failures()`` return :class:`Entry` records for programmatic use.
    """

    leaves: tuple[LeafResult, ...]
    skipped: tuple[LeafInfo, ...]
    settings: Settings
    timing: Timing
    terms: tuple[tuple[str, Report], ...] = ()
    """For a loss of named terms: (name, report) for each term; ``self`` is the sum."""

    @property
    def ok(self) -> bool:
        """True when no checked entry failed and none was left unsure (any term)."""
        return all(leaf.ok for leaf in self.leaves) and all(r.ok for _, r in self.terms)

    @property
    def n_checked(self) -> int:
        return sum(leaf.checked for leaf in self.leaves)

    @property
    def n_fail(self) -> int:
        return sum(leaf.n_fail for leaf in self.leaves)

    @property
    def n_unsure(self) -> int:
        return sum(leaf.n_unsure for leaf in self.leaves)

    @property
    def n_kink(self) -> int:
        return sum(leaf.n_kink for leaf in self.leaves)

    def kinks(self) -> tuple[Entry, ...]:
        """Entries at a kink of J: the gradient is between the one-sided slopes."""
        return tuple(self._entries(KINK))

    def leaf(self, path: str) -> LeafResult:
        """The result for the leaf whose path (``keystr``) is ``path``."""
        for leaf in self.leaves:
            if leaf.path == path:
                return leaf
        known = ", ".join(leaf.path for leaf in self.leaves)
        raise KeyError(f"no checked leaf at path {path!r}; checked leaves: {known}")

    def _entries(self, status: int | None) -> list[Entry]:
        out = []
        for leaf in self.leaves:
            ks = (
                range(leaf.checked)
                if status is None
                else np.flatnonzero(leaf.status == status)
            )
            out.extend(leaf.entry(int(k)) for k in ks)
        return out

    def worst(self, k: int = 10) -> tuple[Entry, ...]:
        """The ``k`` worst entries: failures first, then by ``|a − n| / tolerance``."""
        scored = []
        for leaf in self.leaves:
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = leaf.abs_err / np.where(
                    leaf.tolerance > 0, leaf.tolerance, np.inf
                )
            ratio = np.where(np.isnan(ratio), np.inf, ratio)
            failing = leaf.status == FAIL
            top = np.lexsort((-ratio, ~failing))[:k]
            scored.extend(
                (bool(failing[t]), float(ratio[t]), leaf, int(t)) for t in top
            )
        scored.sort(key=lambda s: (not s[0], -s[1]))
        return tuple(leaf.entry(t) for _, _, leaf, t in scored[:k])

    def failures(self) -> tuple[Entry, ...]:
        """Every failing entry, leaf by leaf."""
        return tuple(self._entries(FAIL))

    def unsure(self) -> tuple[Entry, ...]:
        """Every entry whose finite-difference error bar was too wide to judge."""
        return tuple(self._entries(UNSURE))

    def __str__(self) -> str:
        return format_text(self)

    def __repr__(self) -> str:
        return (
            f"Report(ok={self.ok}, checked={self.n_checked}, failed={self.n_fail}, "
            f"unsure={self.n_unsure}, leaves={len(self.leaves)})"
        )

    def _repr_html_(self) -> str:
        return format_html(self)


# ----------------------------------------------------------------- formatting


def _g(x: float) -> str:
    return f"{x:.3e}" if np.isfinite(x) else str(x)


def _headline(report: Report) -> str:
    bad_terms = [repr(name) for name, r in report.terms if not r.ok]
    if bad_terms:
        own = _headline(dataclasses.replace(report, terms=()))
        return (
            f"gradient check FAILED in term {', '.join(bad_terms)} "
            f"(sum of the terms: {own.removeprefix('gradient check ')})"
        )
    bad = [leaf for leaf in report.leaves if leaf.n_fail]
    if bad:
        paths = ", ".join(leaf.path or "<root>" for leaf in bad)
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
    if report.n_kink:
        return (
            f"gradient check passed: {report.n_checked - report.n_kink} entries agree; "
            f"{report.n_kink} sit at a kink of the loss (the gradient lies between the "
            "one-sided slopes there: not judged)"
        )
    return f"gradient check passed: {report.n_checked} entries agree"


def _about(report: Report) -> list[str]:
    s = report.settings
    tol = (
        f"rtol={s.rtol}, atol={s.atol}"
        if s.rtol is not None or s.atol is not None
        else "error-bar rule (README: 'How close is close enough?')"
    )
    t = report.timing
    return [
        f"a   = gradient under test: {s.gradient}",
        f"n   = central finite differences in {s.reference_dtype}, step "
        f"{s.rel_step:.2g}·max(1,|θ|), Richardson-refined where needed",
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


def _leaf_rows(report: Report) -> list[list[str]]:
    rows = [
        [
            "leaf",
            "shape",
            "dtype",
            "checked",
            "max|a-n|",
            "max rel",
            "norm ratio",
            "verdict",
        ]
    ]
    for leaf in report.leaves:
        rows.append(
            [
                leaf.path or "<root>",
                str(leaf.info.shape),
                str(leaf.info.dtype),
                f"{leaf.checked}/{leaf.total}",
                _g(leaf.max_abs_err),
                _g(leaf.max_rel_err),
                _g(leaf.norm_ratio),
                leaf.verdict,
            ]
        )
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
    lines += _table(_leaf_rows(report), right={3, 4, 5, 6})
    diagnoses = [leaf for leaf in report.leaves if leaf.diagnosis]
    if diagnoses:
        lines += ["", "diagnosis:"]
        lines += [f"  {leaf.path or '<root>'}: {leaf.diagnosis}" for leaf in diagnoses]
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
    color = "#1a7f37" if report.ok else ("#cf222e" if report.n_fail else "#9a6700")
    parts = [f"<p style='color:{color}'><b>{html.escape(_headline(report))}</b></p>"]
    parts.append("<p>" + "<br>".join(html.escape(s) for s in _about(report)) + "</p>")
    parts.append(_html_table(_leaf_rows(report)))
    worst = report.worst(k)
    if worst:
        parts.append("<p>worst entries:</p>" + _html_table(_entry_rows(worst)))
    skipped = _skipped(report)
    if skipped:
        parts.append(f"<p>{html.escape(skipped)}</p>")
    return "\n".join(parts)
