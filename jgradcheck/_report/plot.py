"""plot_report: every checked entry's error against its tolerance, leaf by leaf.

One strip per leaf; each point is one checked entry at height
``|a − n| / allowed``, where ``allowed`` is the difference the verdict allows
(the tolerance; with explicit ``rtol``/``atol`` the tolerance plus ten error
bars). Points above the line at 1 are the failures. matplotlib is imported only
when a plot is drawn, so it stays an optional dependency.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._numerics.verdict import FAIL, KINK, PASS, SAFETY, STATUS_NAMES, UNSURE
from .records import LeafResult, ReportRecord

COLORS = {PASS: "#1a7f37", KINK: "#0969da", UNSURE: "#9a6700", FAIL: "#cf222e"}
"""Point colour per status (the HTML report's green, amber and red; kinks blue)."""

FLOOR = 1e-6
"""Entries with ``|a − n| / allowed`` below this (exact agreement) sit at it."""


def _matplotlib() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(
            "plotting a report needs matplotlib, an optional dependency of "
            "jgradcheck; install it with `pip install matplotlib` (or the "
            "package's `dev` extra)."
        ) from e
    return plt


def _strips(report: ReportRecord, terms: bool) -> list[tuple[str, LeafResult, bool]]:
    """(label, LeafResult, explicit tolerance?) for each strip, in order."""
    explicit = report.settings.rtol is not None or report.settings.atol is not None
    prefix = "sum: " if terms and report.terms else ""
    out = [(prefix + (leaf.path or "<root>"), leaf, explicit) for leaf in report.leaves]
    if terms:
        for name, term in report.terms:
            out += [
                (f"{name!r}: {label}", leaf, e)
                for label, leaf, e in _strips(term, terms=False)
            ]
    return out


def error_ratio(leaf: LeafResult, explicit: bool) -> np.ndarray:
    """``|a − n| / allowed`` per checked entry; above 1 means the entry failed.

    ``allowed`` is the tolerance (plus ten error bars when the tolerance was
    explicit ``rtol``/``atol``). Kinks are judged by the one-sided slopes
    instead, so a ``kink`` entry can lie above 1.
    """
    allowed = leaf.tolerance + (SAFETY * leaf.error_bar if explicit else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = leaf.abs_err / allowed
    return np.where(np.isnan(ratio), np.inf, ratio)


def plot_report(report: ReportRecord, ax: Any = None, *, terms: bool = True) -> Any:
    """Draw each checked entry's ``|a − n|`` against the difference allowed.

    One vertical strip per leaf (and, with ``terms=True`` and a loss of named
    terms, per leaf of the sum and of each term); each point is one checked entry at height
    ``|a − n| / tolerance`` on a log scale, coloured by status: pass (green),
    kink (blue), unsure (amber), FAIL (red, drawn larger and on top). The
    dashed line at 1 is the verdict's boundary: a point above it failed. Exact
    agreements are drawn at 1e-6 (the floor of the axis), NaN differences at
    the top.

    Args:
      report: a :class:`jgradcheck.Report` (from :func:`check_grad`).
      ax: an existing matplotlib Axes (default: a new figure).
      terms: also draw the leaves of each named loss term (``report.terms``).

    Returns:
      The matplotlib Axes.

    Raises:
      ImportError: when matplotlib is not installed.

    Example:
      >>> import matplotlib; matplotlib.use("Agg")
      >>> import jax.numpy as jnp, jgradcheck as jgc
      >>> loss = lambda p: jnp.sum(jnp.sin(p["w"]) * p["b"])
      >>> params = {"w": jnp.linspace(0.0, 1.0, 6), "b": jnp.ones(6)}
      >>> report = jgc.check_grad(loss, params, grad=lambda p: {
      ...     "w": jnp.cos(p["w"]) * p["b"], "b": jnp.sin(p["w"]) + 0.1})
      >>> ax = report.plot()
      >>> [t.get_text() for t in ax.get_xticklabels()]
      ["['b']", "['w']"]
    """
    plt = _matplotlib()
    strips = _strips(report, terms)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(strips) + 2.5), 4.0))
    rng = np.random.default_rng(0)  # the same jitter every time
    points: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {
        s: ([], []) for s in (PASS, KINK, UNSURE, FAIL)
    }
    ratios = [error_ratio(leaf, explicit) for _, leaf, explicit in strips]
    finite = [r[np.isfinite(r)] for r in ratios]
    top = 10 * max([1.0] + [float(r.max()) for r in finite if r.size])
    for k, ((_, leaf, _), ratio) in enumerate(zip(strips, ratios)):
        # Exact agreement sits on the floor; a NaN difference or a zero
        # tolerance (always a failure) at the top.
        ratio = np.clip(np.where(np.isfinite(ratio), ratio, top), FLOOR, top)
        x = k + rng.uniform(-0.3, 0.3, ratio.shape)
        for s, (x_parts, y_parts) in points.items():
            m = leaf.status == s
            x_parts.append(x[m])
            y_parts.append(ratio[m])
    for s, (x_parts, y_parts) in points.items():
        xs, ys = np.concatenate(x_parts), np.concatenate(y_parts)
        if not xs.size:
            continue
        ax.scatter(
            xs,
            ys,
            s=30 if s == FAIL else 8,
            c=COLORS[s],
            alpha=0.9 if s == FAIL else 0.5,
            zorder=3 if s == FAIL else 2,
            label=f"{STATUS_NAMES[s]} ({xs.size})",
            linewidths=0,
        )
    ax.axhline(1.0, color="black", ls="--", lw=0.8, label="allowed (tolerance)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(strips)))
    ax.set_xticklabels(
        [label for label, _, _ in strips],
        rotation=30 if len(strips) > 3 else 0,
        ha="right" if len(strips) > 3 else "center",
    )
    ax.set_xlim(-0.6, len(strips) - 0.4)
    ax.set_ylabel("|a − n| / tolerance")
    ax.set_xlabel(
        "leaf   (a: gradient under test, n: finite difference; a dot per entry)"
    )
    ax.set_title(f"gradient check {'passed' if report.ok else 'FAILED'}")
    ax.legend(fontsize=7, loc="best")
    return ax
