"""Reports: what was checked, what disagreed, and where.

The engine and the verdict fill these immutable records; this module only reads
and formats them. In every table ``a`` is the gradient under test, ``n`` the
finite-difference estimate and ``±err`` the estimate's own error bar.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any, NamedTuple

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
    """``"pass"``, ``"FAIL"``, ``"unsure"`` or ``"kink"``."""


class Directions(NamedTuple):
    """Fast mode: the gradient of one leaf projected on random directions.

    For direction ``u`` (readable values ±0.01 … ±9.00 on the leaf's checked
    entries, zero elsewhere) ``rule`` is ``⟨a, u⟩`` with ``a`` the gradient
    under test and ``numeric`` the finite difference of J along ``u``. Arrays
    have one value per direction.
    """

    rule: np.ndarray
    """``⟨a, u⟩``: the gradient under test along each direction."""
    numeric: np.ndarray
    """``(J(θ + t·u) − J(θ − t·u)) / 2t``, Richardson-refined where needed."""
    error_bar: np.ndarray
    tolerance: np.ndarray
    status: np.ndarray
    step: np.ndarray
    """The step ``t`` of the estimate kept (``t·max|u|`` ≈ the full mode's step)."""
    support: int
    """How many entries of the leaf the directions span (nonzero in ``u``)."""
    evaluations: int
    """Evaluations of J spent on this leaf's directions."""
    seed: int
    """Direction k is ``jgradcheck._fast.direction(seed, info, k, support)``."""

    @property
    def count(self) -> int:
        return int(self.status.shape[0])

    @property
    def n_fail(self) -> int:
        return int(np.sum(self.status == FAIL))

    @property
    def n_unsure(self) -> int:
        return int(np.sum(self.status == UNSURE))

    @property
    def ok(self) -> bool:
        return bool(np.all(self.status == PASS))


class LeafResult(NamedTuple):
    """Everything measured on one leaf. Arrays are indexed like ``idx``.

    In fast mode a leaf whose random directions all agree has ``checked == 0``
    (no entry was compared on its own) and its evidence in ``directions``.
    """

    info: LeafInfo
    """The leaf's ``path``, ``shape``, ``dtype`` and ``offset``."""
    idx: np.ndarray
    """Flat indices (within the leaf) that were checked."""
    grad: np.ndarray
    """The gradient under test (float64 copy)."""
    numeric: np.ndarray
    """The finite-difference estimate."""
    error_bar: np.ndarray
    """The estimate's own error bar (truncation + roundoff)."""
    tolerance: np.ndarray
    """The tolerance on ``|a − n|`` per entry (see "How close is close enough?")."""
    status: np.ndarray
    """uint8 codes: 0 pass, 1 FAIL, 2 unsure, 3 kink."""
    step: np.ndarray
    """The step h of the kept estimate (half of ``θ₊ − θ₋``)."""
    refined: np.ndarray
    """True where the estimate was extrapolated from several steps."""
    grad_dtype: np.dtype
    """The dtype of the gradient under test."""
    diagnosis: str | None = None
    """How the mismatch looks when the evidence is clear (sign, scale, ...)."""
    directions: Directions | None = None
    """Fast mode: the leaf's directional checks (None in full mode)."""
    note: str | None = None
    """How this leaf's estimates were made, when not as asked (e.g. why the
    complex step fell back to finite differences)."""

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
    def n_fail_directions(self) -> int:
        """Fast mode: directions along which the gradient disagrees."""
        return 0 if self.directions is None else self.directions.n_fail

    @property
    def ok(self) -> bool:
        """No entry failed or is unsure; in fast mode also no direction failed,
        and an unsure direction was resolved by sweeping every entry it spans."""
        entries = bool(np.all((self.status == PASS) | (self.status == KINK)))
        d = self.directions
        if d is None or not entries:
            return entries
        return d.n_fail == 0 and (d.n_unsure == 0 or self.checked >= d.support)

    @property
    def verdict(self) -> str:
        d = self.directions
        if self.n_fail:
            return f"FAIL ({self.n_fail} wrong)"
        if d is not None and d.n_fail:
            return f"FAIL ({d.n_fail} of {d.count} directions)"
        if self.n_unsure:
            return f"unsure ({self.n_unsure})"
        if not self.ok:
            return f"unsure ({d.n_unsure} of {d.count} directions)"
        if self.n_kink:
            return f"ok ({self.n_kink} at kinks)"
        if d is not None and not self.checked:
            return f"ok ({d.count} directions)"
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
    mode: str = "full"
    """``"full"`` (every selected entry) or ``"fast"`` (random directions)."""
    directions: int | None = None
    """Fast mode: random directions per leaf."""
    method: str = "auto"
    """The ``method=`` asked for."""


class Timing(NamedTuple):
    compile_seconds: float
    sweep_seconds: float
    evaluations: int
    """Evaluations of J made by the sweeps (in fast mode: directional and
    explaining sweeps together)."""
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
    """One :class:`LeafResult` per checked leaf."""
    skipped: tuple[LeafInfo, ...]
    """Leaves held fixed: integer, boolean, key and non-array leaves."""
    settings: Settings
    """How the check was made: gradient source, reference dtype, step, tolerance."""
    timing: Timing
    """Compile and sweep seconds, and evaluations of J."""
    terms: tuple[tuple[str, Report], ...] = ()
    """For a loss of named terms: (name, report) for each term; ``self`` is the sum."""

    @property
    def ok(self) -> bool:
        """True when no checked entry failed and none was left unsure (any term)."""
        return all(leaf.ok for leaf in self.leaves) and all(r.ok for _, r in self.terms)

    @property
    def n_checked(self) -> int:
        """Entries checked, over all leaves."""
        return sum(leaf.checked for leaf in self.leaves)

    @property
    def n_fail(self) -> int:
        """Entries that failed."""
        return sum(leaf.n_fail for leaf in self.leaves)

    @property
    def n_unsure(self) -> int:
        """Entries whose error bar was too wide to judge them."""
        return sum(leaf.n_unsure for leaf in self.leaves)

    @property
    def n_kink(self) -> int:
        """Entries at a kink of J (the gradient between the one-sided slopes)."""
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

    def to_dict(self, *, max_entries: int | None = None) -> dict[str, Any]:
        """The report as a plain dict that :func:`json.dumps` accepts.

        Only ``bool``, ``int``, ``float``, ``str``, ``None``, lists and dicts
        appear. Non-finite floats are the strings ``"nan"``, ``"inf"`` and
        ``"-inf"``; ``None`` means "not set" (``rtol``/``atol`` under the
        error-bar rule, a leaf with no diagnosis, the dtype of a non-array leaf).

        Keys: ``kind`` (``"grad"``), ``ok``, ``summary`` (the headline),
        ``counts`` (``checked``, ``fail``, ``unsure``, ``kink``), ``settings``
        (``gradient``, ``reference_dtype``, ``rel_step``, ``rounding``,
        ``rtol``, ``atol``), ``timing`` (``compile_seconds``,
        ``sweep_seconds``, ``evaluations``), ``leaves`` (one dict per checked
        leaf: ``path``, ``shape``, ``dtype``, ``grad_dtype``, ``checked``,
        ``total``, ``max_abs_err``, ``max_rel_err``, ``norm_ratio``, ``fail``,
        ``unsure``, ``kink``, ``ok``, ``verdict``, ``diagnosis``, ``note``),
        ``failures`` (worst first), ``unsure`` and ``kinks`` (entries: ``where``,
        ``path``, ``index``, ``flat_index``, ``a`` the gradient under test,
        ``n`` the finite-difference estimate, ``err`` its error bar,
        ``abs_err``, ``rel_err``, ``tolerance``, ``status``), ``skipped``
        (``path``, ``shape``, ``dtype``, ``kind`` of each leaf not checked) and
        ``terms`` (term name → that term's dict, for a loss of named terms).

        Args:
          max_entries: keep at most this many entries in each of ``failures``,
            ``unsure`` and ``kinks`` (``counts`` stay complete). Default: all.

        Returns:
          A dict; ``json.dumps(report.to_dict(), allow_nan=False)`` works.

        Example:
          >>> import json, jax.numpy as jnp, jgradcheck as jgc
          >>> loss = lambda p: jnp.sum(p ** 2)
          >>> report = jgc.check_grad(loss, jnp.array([1.0, 2.0]), grad=lambda p: 3 * p)
          >>> d = json.loads(json.dumps(report.to_dict()))
          >>> d["ok"], d["counts"]["fail"], d["failures"][0]["where"]
          (False, 2, '[1]')
          >>> d["failures"][0]["a"], round(d["failures"][0]["n"], 6)
          (6.0, 4.0)
        """
        from ._serialize import report_dict

        return report_dict(self, max_entries)

    def __str__(self) -> str:
        return format_text(self)

    def __repr__(self) -> str:
        return (
            f"Report(ok={self.ok}, checked={self.n_checked}, failed={self.n_fail}, "
            f"unsure={self.n_unsure}, leaves={len(self.leaves)})"
        )

    def _repr_html_(self) -> str:
        return format_html(self)

    def plot(self, ax: Any = None, *, terms: bool = True) -> Any:
        """Per leaf, each entry's ``|a − n|`` against its tolerance (matplotlib).

        See :func:`jgradcheck.plot_report`, which this calls; returns the Axes.
        """
        from ._plot import plot_report

        return plot_report(self, ax, terms=terms)


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
        rows.append(
            [
                leaf.path or "<root>",
                str(j),
                _g(float(d.rule[j])),
                _g(float(d.numeric[j])),
                _g(float(d.error_bar[j])),
                _g(abs(float(d.rule[j] - d.numeric[j]))),
                _g(float(d.tolerance[j])),
                STATUS_NAMES[int(d.status[j])],
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
