"""The public report classes: records with their renderings.

:class:`Report` and :class:`RuleReport` are the records of
:mod:`jgradcheck._report.records` and :mod:`jgradcheck._report.rule_records`
plus the ways to show them: ``str`` (plain text), ``_repr_html_`` (notebooks),
``to_dict`` (JSON), ``plot`` and ``save_repro``. This module, with
:mod:`jgradcheck._report.composition_report` and
:mod:`jgradcheck._report.hvp_report`, is where records meet their renderings;
the checks build these classes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .html import render_html
from .plot import plot_report
from .records import ReportRecord
from .repro import save_repro
from .rule_records import RuleReportRecord
from .rule_sections import rule_failure_lines, rule_headline, rule_report_sections
from .sections import headline, report_sections
from .serialize import report_dict, rule_report_dict
from .text import render_text


@dataclasses.dataclass(frozen=True, repr=False)
class Report(ReportRecord):
    """The result of :func:`jgradcheck.check_grad`.

    ``report.ok`` is True when every checked entry agrees and at least one was
    verified (entries at kinks alone verify nothing). ``print(report)``
    shows one row per leaf and the worst entries; ``report.worst(k)`` and
    ``report.failures()`` return :class:`Entry` records for programmatic use.
    """

    terms: tuple[tuple[str, Report], ...] = ()
    """For a loss of named terms: (name, report) for each term; ``self`` is the sum."""

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
        ``terms`` (term name → that term's dict, for a loss of named terms)
        and ``reference`` (with ``reference=``: ``name``, ``ok``, ``factor``,
        ``native``, ``reference_agrees``, ``evidence``, ``verdict`` and per
        leaf ``label``, ``rule_err``, ``ref_err``, ``ratio``, ``allowed``,
        ``fail``, ``size``, ``worst``; else ``None``) and ``precision_match``
        (after a failure of a gradient that computes with narrower float
        intermediates than its yardstick: ``dtype``, ``where``, ``agrees``,
        the numbers and ``line``; else ``None``).

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
        return report_dict(self, max_entries)

    def save_repro(self, path: str | os.PathLike[str]) -> Path:
        """Write this check's inputs, options and versions, and a pytest file
        that repeats it, into the directory ``path``.

        The directory gets ``inputs.npz`` (the arrays), ``repro.json`` (their
        pytree structure, the seed and options, the x64 setting, the versions
        of jgradcheck, JAX, jaxlib, NumPy and Python, and this report's
        headline) and ``test_repro_<name>.py``, which imports the loss by its
        module and name and calls :func:`jgradcheck.assert_grad` with the same
        inputs and options: it fails while the check fails, and passes once it
        passes. A loss (or ``grad=``) that cannot be imported, such as a
        lambda, gets a placeholder to fill in, its source as a comment, and a
        test that fails saying so. See docs/pytest.md.

        Args:
          path: the directory (made if missing; files in it are replaced).

        Returns:
          The path of the pytest file.

        Raises:
          ValueError: this report was not returned by :func:`jgradcheck.check_grad`
            (a term's report, or one built otherwise), or ``path`` is a file.
          TypeError: an input that cannot be saved (a custom pytree node),
            naming where it is.

        Example:
          >>> import tempfile, jax.numpy as jnp, jgradcheck as jgc
          >>> def loss(p):
          ...     return jnp.sum(p ** 2)
          >>> report = jgc.check_grad(loss, jnp.array([1.0, 2.0]), grad=lambda p: 3 * p)
          >>> test = report.save_repro(tempfile.mkdtemp())
          >>> test.name, sorted(p.name for p in test.parent.iterdir())
          ('test_repro_loss.py', ['inputs.npz', 'repro.json', 'test_repro_loss.py'])
          >>> lines = test.read_text().splitlines()
          >>> [line for line in lines if line.endswith("= None")]  # to fill in
          ['loss = None', 'grad = None']
          >>> print(next(line for line in lines if "`grad`" in line))
          # `grad` could not be imported: it is a lambda (...<lambda>).
        """
        return save_repro(self._call, path, [headline(self)], self.ok)

    def __str__(self) -> str:
        return render_text(report_sections(self))

    def __repr__(self) -> str:
        return (
            f"Report(ok={self.ok}, checked={self.n_checked}, failed={self.n_fail}, "
            f"unsure={self.n_unsure}, leaves={len(self.leaves)})"
        )

    def _repr_html_(self) -> str:
        return render_html(report_sections(self))

    def plot(self, ax: Any = None, *, terms: bool = True) -> Any:
        """Per leaf, each entry's ``|a − n|`` against its tolerance (matplotlib).

        See :func:`jgradcheck.plot_report`, which this calls; returns the Axes.
        """
        return plot_report(self, ax, terms=terms)


@dataclasses.dataclass(frozen=True, repr=False)
class RuleReport(RuleReportRecord):
    """The result of :func:`jgradcheck.check_vjp` or :func:`jgradcheck.check_jvp`.

    ``ok`` is True when the primal, every dot-product test, every localised
    comparison and every structural check passed (and, with ``points=K``,
    the rule at every judged input point: ``points``). ``localized`` holds
    :class:`jgradcheck.Report` objects that point at leaf paths and indices:
    for a VJP one per output leaf (numeric Jᵀȳ per input coordinate), for a JVP
    one for the random tangent (per output entry) and, when it fails, one per
    input leaf with the tangent on that leaf only.
    """

    localized: tuple[tuple[str, Report], ...]
    second_order: RuleReport | None = None
    """With ``order=2``: the same checks on the rule's own output as a function."""

    def failures(self, limit: int | None = 20) -> list[str]:
        """One line per failed part, most specific first: at most ``limit``
        failing entries per localised report, the worst, then a line
        ``… and N more failing entries`` (``None``: every entry)."""
        return rule_failure_lines(self, limit)

    def to_dict(self, *, max_entries: int | None = None) -> dict[str, Any]:
        """The report as a plain dict that :func:`json.dumps` accepts.

        The same conventions as :meth:`jgradcheck.Report.to_dict` (non-finite
        floats as ``"nan"``/``"inf"``/``"-inf"``, ``None`` for "not set").

        Keys: ``kind`` (``"vjp"`` or ``"jvp"``), ``ok``, ``summary``,
        ``failures`` (the lines of :meth:`failures`), ``primal`` and
        ``structure`` (checks: ``name``, ``ok``, ``detail``), ``dot_tests``
        (``output``, ``ok``, ``pairs``: ``rule``, ``fd``, ``err``,
        ``abs_diff``, ``tolerance``, ``status``), ``localized`` (``label`` and
        ``report``, a :meth:`jgradcheck.Report.to_dict`), ``held``,
        ``precision`` (what the x64 setting narrowed, or ``""``), ``rounding``
        (how the rule's rounding was allowed for), ``reference`` (as in
        :meth:`jgradcheck.Report.to_dict`), ``precision_match`` (after a
        failure of a rule that computes in a narrower float than its
        yardstick: ``dtype``, ``where``, ``agrees``, the numbers and
        ``line``; else ``None``), ``points`` (with ``points=K``:
        ``ok``, ``count``, ``judged``, ``failing``, ``out_of_domain``,
        ``at_threshold``, ``underflow``, ``unresolved``, ``unsure``,
        ``labels``, ``thresholds``, ``common``, ``simplest`` (lines of code),
        ``simplest_report`` (this dict for the full check there), ``located``
        (the first failing points checked in full: ``point``, ``ok``,
        ``entries``) and ``note``; else ``None``) and ``second_order`` (the same dict for
        ``order=2``, else ``None``).

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
        return rule_report_dict(self, max_entries)

    def save_repro(self, path: str | os.PathLike[str]) -> Path:
        """Write this check's inputs, options and versions, and a pytest file
        that repeats it, into the directory ``path``.

        As :meth:`jgradcheck.Report.save_repro`: ``inputs.npz``,
        ``repro.json`` and ``test_repro_<name>.py``, which imports ``f`` by its
        module and name and calls :func:`jgradcheck.assert_vjp` (or
        ``assert_jvp``) with the same primals, ``key`` and options. The pytest
        plugin writes one into a failing test's tmp dir (docs/pytest.md).

        Args:
          path: the directory (made if missing; files in it are replaced).

        Returns:
          The path of the pytest file.

        Raises:
          ValueError: this report was not returned by :func:`jgradcheck.check_vjp`
            or :func:`jgradcheck.check_jvp`, or ``path`` is a file.
          TypeError: an input that cannot be saved, naming where it is.

        Example:
          >>> import json, tempfile, jax.numpy as jnp, jgradcheck as jgc
          >>> report = jgc.check_vjp(jnp.sin, jnp.array([0.5, 1.0]), key=3)
          >>> test = report.save_repro(tempfile.mkdtemp())
          >>> test.name
          'test_repro_sin.py'
          >>> [line.strip() for line in test.read_text().splitlines()
          ...  if "import sin" in line or "jgc.assert_vjp" in line]
          ['from jax.numpy import sin as f', 'jgc.assert_vjp(f, *args, key=3)']
          >>> record = json.loads((test.parent / "repro.json").read_text())
          >>> record["check"], record["seed"], record["ok"], sorted(record["versions"])
          ('check_vjp', 3, True, ['backend', 'jax', 'jaxlib', 'jgradcheck', 'numpy', 'python'])
        """
        summary = [rule_headline(self), *self.failures(5)]
        return save_repro(self._call, path, summary, self.ok)

    def __str__(self) -> str:
        return render_text(rule_report_sections(self))

    def __repr__(self) -> str:
        return f"RuleReport(kind={self.kind!r}, ok={self.ok})"

    def _repr_html_(self) -> str:
        return render_html(rule_report_sections(self))
