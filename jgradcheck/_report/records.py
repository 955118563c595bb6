"""The records of a gradient check: what was checked, what disagreed, and where.

The engine and the verdict fill these immutable records; they hold data and
what follows from it (counts, verdicts, the worst entries) and import no
presentation. :mod:`jgradcheck._report.sections` says what a report says,
:mod:`~jgradcheck._report.text`, :mod:`~jgradcheck._report.html`,
:mod:`~jgradcheck._report.serialize` and :mod:`~jgradcheck._report.plot` render
it, and :mod:`jgradcheck._report.report` assembles the public
:class:`jgradcheck.Report`. In every table ``a`` is the gradient under test,
``n`` the finite-difference estimate and ``±err`` the estimate's own error bar.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .._numerics.reference import reference_ratio
from .._numerics.verdict import (
    FAIL,
    KINK,
    PASS,
    STATUS_NAMES,
    UNSURE,
    norm_ratio,
    rel_error,
)
from .._pytree.flat import LeafInfo
from .._typing import Method, Mode
from .call import Call
from .precision_records import PrecisionMatch


class Entry(NamedTuple):
    """One checked entry of one leaf."""

    where: str
    """Path and full index, e.g. ``['decoder'][3, 17]``."""
    path: str
    index: tuple[int, ...]  # type: ignore[assignment]  # public name; shadows tuple.index
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
    leaf_index: int = -1
    """Flat (row-major) index within the leaf: ``leaf.reshape(-1)[leaf_index]``
    is this entry (``index`` is the same place, one int per axis)."""


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
    """Direction k is ``jgradcheck._leaf.fast.direction(seed, info, k, support)``."""

    @property
    def count(self) -> int:  # type: ignore[override]  # public name; shadows tuple.count
        """How many directions were checked."""
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
    held: np.ndarray | None = None
    """Flat indices of entries whose values are NaN or inf: held fixed, not
    checked (None when there are none)."""

    @classmethod
    def unchecked(
        cls,
        info: LeafInfo,
        grad_dtype: np.dtype,
        directions: Directions | None = None,
    ) -> LeafResult:
        """A leaf no entry of which was compared on its own (fast mode's
        agreeing leaves, leaves whose every entry is held fixed).

        >>> import numpy as np
        >>> info = LeafInfo("['b']", 0, (3,), np.dtype(np.float32), "float", 0)
        >>> r = LeafResult.unchecked(info, np.dtype(np.float32))
        >>> r.checked, r.path, r.idx.size
        (0, "['b']", 0)
        """
        none = np.zeros(0)
        return cls(
            info=info,
            idx=np.zeros(0, np.int64),
            grad=none,
            numeric=none,
            error_bar=none,
            tolerance=none,
            status=np.zeros(0, np.uint8),
            step=none,
            refined=np.zeros(0, bool),
            grad_dtype=grad_dtype,
            directions=directions,
        )

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
        if not self.ok and d is not None:  # only directions can be left unsure here
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
            leaf_index=flat,
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
    mode: Mode = "full"
    """``"full"`` (every selected entry) or ``"fast"`` (random directions)."""
    directions: int | None = None
    """Fast mode: random directions per leaf."""
    method: Method = "auto"
    """The ``method=`` asked for."""
    notes: tuple[str, ...] = ()
    """How the check ran where the caller might expect otherwise (under
    ``jax.disable_jit()``: compiled anyway)."""


class Timing(NamedTuple):
    """What the check cost: seconds, evaluations of J and the devices used."""

    compile_seconds: float
    sweep_seconds: float
    evaluations: int
    """Evaluations of J made by the sweeps (in fast mode: directional and
    explaining sweeps together)."""
    devices: tuple[str, ...] = ()
    """The devices the sweeps ran on (their results' shardings)."""
    wall_seconds: float | None = None
    """The whole call, from the options to the report (None: not measured)."""


class ReferenceLeaf(NamedTuple):
    """One leaf of the derivative under test against the reference
    (:mod:`jgradcheck._numerics.reference`): ``|rule − ref64| ≤ k·ref_err + floor``."""

    label: str
    """Which leaf: an input path, and for a VJP the output whose cotangent it is."""
    rule_err: float
    """``max |rule − ref64|`` over the leaf."""
    ref_err: float
    """``max |ref_native − ref64|``: the reference's own error at the native precision."""
    allowed: float
    """``k·ref_err + ρ·max|ref64|`` (ρ: the verdicts' rounding floor of the
    native dtype): every entry's tolerance."""
    n_fail: int
    """Entries beyond ``allowed``."""
    size: int
    """Entries compared."""
    worst: str
    """Path and index of the entry with the largest ``|rule − ref64|``."""

    @property
    def ratio(self) -> float:
        """``rule_err / ref_err``: below 1, more accurate than the reference
        (:func:`jgradcheck._numerics.reference.reference_ratio`)."""
        return reference_ratio(self.rule_err, self.ref_err)

    @property
    def ok(self) -> bool:
        return self.n_fail == 0


class ReferenceCheck(NamedTuple):
    """The derivative under test against JAX's derivative of a reference
    implementation (``reference=``), the flash-attention rule."""

    name: str
    """The reference function's name."""
    factor: float
    """``k`` (``reference_factor=``)."""
    native: str
    """The precision the reference ran at for the yardstick (``bfloat16``)."""
    leaves: tuple[ReferenceLeaf, ...]
    reference_agrees: bool
    """Whether the reference's float64 derivative agrees with the float64
    finite differences: if not, the reference is wrong, not the rule."""
    evidence: str
    """What the finite differences said about the reference."""

    @property
    def ok(self) -> bool:
        return self.reference_agrees and all(leaf.ok for leaf in self.leaves)

    @property
    def verdict(self) -> str:
        """One line: agrees, disagrees (where), or the reference is in doubt."""
        if not self.reference_agrees:
            return (
                "the reference disagrees with finite differences: the reference "
                f"is wrong, not the rule ({self.evidence})"
            )
        bad = [leaf for leaf in self.leaves if not leaf.ok]
        if bad:
            worst = max(bad, key=lambda leaf: leaf.ratio)
            return (
                f"FAIL: {sum(leaf.n_fail for leaf in bad)} entries beyond "
                f"{self.factor:g}x the reference's own error, worst {worst.worst} "
                f"({worst.ratio:.3g}x)"
            )
        ratio = max((leaf.ratio for leaf in self.leaves), default=0.0)
        if np.isinf(ratio):  # the reference rounds exactly here (float64)
            return (
                f"ok: within the rounding floor (the reference at {self.native} "
                "is its own float64 truth, so its error is 0)"
            )
        return (
            f"ok: within {self.factor:g}x the reference's own error at "
            f"{self.native} (worst leaf {ratio:.3g}x)"
        )


@dataclasses.dataclass(frozen=True, repr=False)
class ReportRecord:
    """The data of a :class:`jgradcheck.Report` and what follows from it.

    :class:`jgradcheck.Report` adds the renderings (``str``, HTML, ``to_dict``,
    ``plot``); renderers take this record, so they never import the public class.
    """

    leaves: tuple[LeafResult, ...]
    """One :class:`LeafResult` per checked leaf."""
    skipped: tuple[LeafInfo, ...]
    """Leaves held fixed: integer, boolean, key and non-array leaves."""
    settings: Settings
    """How the check was made: gradient source, reference dtype, step, tolerance."""
    timing: Timing
    """Compile and sweep seconds, and evaluations of J."""
    terms: tuple[tuple[str, ReportRecord], ...] = ()
    """For a loss of named terms: (name, report) for each term; ``self`` is the sum."""
    reference: ReferenceCheck | None = None
    """With ``reference=``: the gradient against JAX's gradient of the reference."""
    precision_match: PrecisionMatch | None = None
    """When the check failed and the gradient under test computes with
    narrower float intermediates than its yardstick: the comparison again at
    its precision (:mod:`jgradcheck._checks.precision_match`)."""
    _call: Call | None = dataclasses.field(default=None, compare=False, repr=False)
    """How :func:`jgradcheck.check_grad` was called, for ``save_repro``; not
    compared and not serialised (None for reports built otherwise)."""

    @property
    def ok(self) -> bool:
        """True when no checked entry failed, none was left unsure, and
        something was verified (:attr:`verified`), in every term too, and the
        reference check (``reference=``) passed."""
        return (
            self.verified
            and all(leaf.ok for leaf in self.leaves)
            and all(r.ok for _, r in self.terms)
            and (self.reference is None or self.reference.ok)
        )

    @property
    def verified(self) -> bool:
        """Whether some entry agreed with its finite difference (or, in fast
        mode, the gradient along some direction did). False when params' only
        floating-point leaves have no entries, every entry is NaN/inf (held),
        or every checked entry sits at a kink: nothing was compared, and such a
        report is not a pass (``ok`` is False, the headline says "nothing was
        verified")."""
        return any(
            bool(np.any(leaf.status == PASS))
            or (
                leaf.directions is not None
                and bool(np.any(leaf.directions.status == PASS))
            )
            for leaf in self.leaves
        )

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
        out: list[Entry] = []
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
        scored: list[tuple[bool, float, LeafResult, int]] = []
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
