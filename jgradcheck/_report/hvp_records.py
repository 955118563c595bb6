"""The record of check_hvp: Hessian-vector products against finite differences.

Data and what follows from it only; :mod:`jgradcheck._report.hvp_sections` says
what the report says and :mod:`jgradcheck._report.report` assembles the public
:class:`jgradcheck.HvpReport`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from .._numerics.verdict import FAIL, PASS, UNSURE
from .call import Call


class HvpDirection(NamedTuple):
    """One direction v: the HVP ``H·v`` against finite differences of ∇loss along v."""

    direction: int
    """Which direction (0-based), drawn from ``key``."""
    where: str
    """The entry of ``H·v`` with the largest ``|hvp − fd| / tolerance``."""
    hvp: float
    """``H·v`` at that entry, reverse over reverse (the derivative under test)."""
    fd: float
    """The finite-difference estimate there (Richardson-refined, float64)."""
    error_bar: float
    """The estimate's own error bar there."""
    tolerance: float
    """What the verdict allowed there (error bars and rounding)."""
    n_fail: int
    n_unsure: int
    size: int
    """Entries of ``H·v`` compared."""

    @property
    def status(self) -> int:
        """``PASS``, ``FAIL`` or ``UNSURE`` (codes of ``_numerics.verdict``)."""
        return FAIL if self.n_fail else (UNSURE if self.n_unsure else PASS)

    @property
    def ok(self) -> bool:
        return self.n_fail == 0 and self.n_unsure == 0


class Symmetry(NamedTuple):
    """``vᵢᵀ H vⱼ`` against ``vⱼᵀ H vᵢ`` over every pair of directions."""

    pairs: int
    worst: tuple[int, int]
    """The pair (i, j) with the largest ``|Δ| / allowance``."""
    left: float
    """``vᵢᵀ (H vⱼ)`` at the worst pair."""
    right: float
    """``vⱼᵀ (H vᵢ)`` at the worst pair."""
    allowance: float
    """The rounding allowed there."""
    ok: bool


@dataclasses.dataclass(frozen=True, repr=False)
class HvpRecord:
    """The data of a :class:`jgradcheck.HvpReport` and its verdict."""

    directions: tuple[HvpDirection, ...]
    symmetry: Symmetry | None
    """None with one direction (no pair to compare)."""
    inputs: tuple[str, ...]
    """Paths of the differentiated params leaves."""
    rounding: str
    """How the HVP's own rounding was allowed for."""
    _call: Call | None = dataclasses.field(default=None, compare=False, repr=False)
    """How :func:`jgradcheck.check_hvp` was called, for ``save_repro``; not
    compared and not serialised (None for reports built otherwise)."""

    @property
    def ok(self) -> bool:
        """Every direction agrees and the symmetry check passed."""
        return all(d.ok for d in self.directions) and (
            self.symmetry is None or self.symmetry.ok
        )
