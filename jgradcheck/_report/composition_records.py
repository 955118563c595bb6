"""The record of check_compositions: one row per JAX transformation of a rule.

Data and what follows from it only; :mod:`jgradcheck._report.composition_sections`
says what the report says and :mod:`jgradcheck._report.report` assembles the
public :class:`jgradcheck.CompositionReport`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, TypeAlias

from .call import Call
from .rule_records import RuleKind

RowStatus: TypeAlias = Literal["ok", "FAIL", "not defined", "skipped"]
"""``ok``: the same derivative; ``FAIL``: a different one, or the composition
raised; ``not defined``: JAX defines no such composition for this rule (forward
mode of a ``jax.custom_vjp``): not a failure; ``skipped``: not run here (one
device visible)."""


class Composition(NamedTuple):
    """One composition of the rule with the evidence behind its status."""

    name: str
    """The transformation, e.g. ``"vmap over 3 points"``."""
    status: RowStatus
    detail: str
    """What was compared: the largest difference and its allowance, the error
    raised, or why the row was not run."""

    @property
    def ok(self) -> bool:
        """True unless the row FAILed (``not defined`` and ``skipped`` are ok)."""
        return self.status != "FAIL"


@dataclasses.dataclass(frozen=True, repr=False)
class CompositionRecord:
    """The data of a :class:`jgradcheck.CompositionReport` and its verdict."""

    kind: RuleKind
    """Which derivative the rows transform: ``"vjp"`` (Jᵀȳ) or ``"jvp"`` (J·u)."""
    rows: tuple[Composition, ...]
    points: int
    """How many input points the batched rows (vmap, scan, shard_map) ran on."""
    rounding: str
    """How the allowance was measured (``"float32 rule re-run in float64"``...)."""
    _call: Call | None = dataclasses.field(default=None, compare=False, repr=False)
    """How :func:`jgradcheck.check_compositions` was called, for ``save_repro``;
    not compared and not serialised (None for reports built otherwise)."""

    @property
    def ok(self) -> bool:
        """True when no row FAILed."""
        return all(r.ok for r in self.rows)

    def row(self, name: str) -> Composition:
        """The row whose name starts with ``name`` (``report.row("vmap")``).

        Raises:
          KeyError: no row starts with ``name``; the message lists the rows.
        """
        for r in self.rows:
            if r.name.startswith(name):
                return r
        raise KeyError(
            f"no row named {name!r}; the rows are: "
            + ", ".join(repr(r.name) for r in self.rows)
        )
