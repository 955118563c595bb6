"""``points=K`` of check_vjp and check_jvp: the rule checked across its input domain.

:func:`with_points` adds a :class:`~jgradcheck._report.rule_records.PointsResult`
to a rule report: ``K`` input points with the primals' shapes and dtypes
(:func:`jgradcheck._numerics.points.point_set`: the given values, 0, ±1,
±tiny, the largest magnitudes where the primal is finite and one beyond,
the thresholds the rule compares with straddled, spreads, mixtures), judged
in one batch by the direction's dot tests
(:mod:`jgradcheck._checks.pointwise`); points where the primal or its finite
differences are not finite are out of the domain. The failing points are
summarised (what they share that no passing point has), the first is shrunk
towards the simplest passing point, and the shrunk point gets the full
check (:func:`~jgradcheck._checks.rules.check_rule`), which names the
failing path and index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._dtypes import eps as eps_of
from .._numerics import points as pts
from .._numerics.stencil import default_step
from .._options import Options
from .._report.report import RuleReport
from .._report.rule_records import LocatedPoint, PointsResult
from .rules import AtPoints, Direction, RuleInputs, check_rule, rule_inputs

SHRINK_ROUNDS = 24
"""Rounds of shrinking at most (each one batch of candidates)."""

MIN_BATCH = 8
"""Points per evaluation at least (the shrinking's candidates share the batch)."""

MAX_LOCATED = 8
"""Failing points checked in full (localised: path and index), the first
ones; each reuses the compiled programs of the others (same shapes)."""


def validate_points(count: Any) -> int | None:
    """``points=``: None or a positive int."""
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise ValueError(
            f"`points` must be a positive int (the number of input points) or "
            f"None; got {count!r}."
        )
    if count < 1:
        raise ValueError(
            f"`points` must be a positive int (the number of input points); got "
            f"{count}. The fix is e.g. `points=64`, or `points=None` for the "
            "primals alone."
        )
    return int(count)


def _largest_finite(
    judge: _Judge,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(large, beyond)``: per sign (negative, positive), the largest power of
    two at which the primal (every entry that value) is finite, and the next
    one tried, at which it is not (the dtype's largest finite if it never is).
    Evaluated with the rule's own compiled program, in its batches."""
    info = jnp.finfo(max((v.dtype for v in judge.x), key=eps_of))
    step = max(1, info.maxexp // 64)
    mags = 2.0 ** np.arange(0, info.maxexp, step, dtype=np.float64)
    signed = np.concatenate([-mags, mags])
    finite = judge.finite([[np.full(v.shape, m) for v in judge.x] for m in signed])
    large, beyond = [], []
    for sign, ok in ((-1.0, finite[: mags.size]), (1.0, finite[mags.size :])):
        last = np.flatnonzero(ok)
        k = int(last[-1]) if last.size else 0
        large.append(sign * mags[k])
        beyond.append(sign * (mags[k + 1] if k + 1 < mags.size else float(info.max)))
    return (large[0], large[1]), (beyond[0], beyond[1])


class _Judge:
    """Points (lists of float64 arrays) → failing and in-domain flags, in
    batches of one size (so every program compiles once)."""

    def __init__(
        self,
        at: AtPoints,
        x: list[Any],
        batch: int,
        base: pts.Point,
        kinks: list[float],
    ):
        self.at, self.x, self.batch, self.base = at, x, batch, base
        self.kinks = kinks
        self.underflow = np.zeros(0, bool)
        self.unresolved = np.zeros(0, bool)
        self.unsure = np.zeros(0, bool)

    def cast(self, p: pts.Point) -> pts.Point:
        """``p`` rounded to the leaves' dtypes (values as they will be used)."""
        return [
            np.asarray(jnp.asarray(v, xi.dtype), np.float64) for v, xi in zip(p, self.x)
        ]

    def _batches(self, points: list[pts.Point]) -> Any:
        """``(xs, n)`` per batch: the points stacked per leaf (padded with
        the base point to the batch size) and how many are real."""
        for start in range(0, len(points), self.batch):
            chunk = points[start : start + self.batch]
            padded = chunk + [self.base] * (self.batch - len(chunk))
            xs = [
                jnp.asarray(np.stack([p[j] for p in padded]), xi.dtype)
                for j, xi in enumerate(self.x)
            ]
            yield xs, len(chunk)

    def finite(self, points: list[pts.Point]) -> np.ndarray:
        """Per point: the primal is finite there."""
        return np.concatenate(
            [self.at.primal_finite(xs)[:n] for xs, n in self._batches(points)]
        )

    def __call__(
        self, points: list[pts.Point]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per point: failing, in the domain, not judged (near a threshold,
        within underflow, or unresolved by the finite differences);
        ``self.underflow`` and ``self.unresolved`` keep the last two."""
        failing, inside, kinked, tiny, blurred, undecided = [], [], [], [], [], []
        for xs, n in self._batches(points):
            v = self.at.verdicts(xs, self.kinks)
            failing.append(v.failing[:n])
            inside.append(v.in_domain[:n])
            kinked.append(v.at_threshold[:n] | v.underflow[:n] | v.unresolved[:n])
            tiny.append(v.underflow[:n])
            blurred.append(v.unresolved[:n])
            undecided.append(v.unsure[:n])
        self.underflow = np.concatenate(tiny)
        self.unresolved = np.concatenate(blurred)
        self.unsure = np.concatenate(undecided)
        return np.concatenate(failing), np.concatenate(inside), np.concatenate(kinked)


def _shrink(
    point: pts.Point, base: pts.Point, judge: _Judge, dtypes: list[Any]
) -> pts.Point:
    """``point`` (failing) with entries put back to ``base`` and made simpler
    while it still fails: fewest moved entries, then smallest and shortest."""
    for _ in range(SHRINK_ROUNDS):
        resets = pts.reset_candidates(point, base, judge.batch)
        if resets:
            fails, _, _ = judge(resets)
            if fails.any():
                point = resets[int(np.argmax(fails))]  # the largest chunk put back
                continue
        key = pts.simplicity(point, base, dtypes)
        simpler = [
            judge.cast(c) for c in pts.simpler_candidates(point, base, judge.batch)
        ]
        simpler = [c for c in simpler if pts.simplicity(c, base, dtypes) < key]
        if not simpler:
            break
        fails, _, _ = judge(simpler)
        if not fails.any():
            break
        point = min(
            (c for c, bad in zip(simpler, fails) if bad),
            key=lambda c: pts.simplicity(c, base, dtypes),
        )
    return point


def points_result(
    inputs: RuleInputs,
    at: AtPoints,
    count: int,
    recheck: Callable[[tuple], RuleReport],
) -> PointsResult:
    """The rule at ``count`` input points: which fail, what they share, the
    simplest failing one and its full check (``recheck(primals)``)."""
    flat, x = inputs.flat, inputs.floats
    _refuse_complex(flat)
    dtypes = [np.dtype(v.dtype) for v in x]
    paths = [i.path for i in flat.checked]
    given = [np.asarray(v, np.float64) for v in x]
    narrow = max(dtypes, key=eps_of)
    kinks = at.thresholds()
    kinks += [-c for c in kinks if -c not in kinks]
    judge = _Judge(at, x, max(count, MIN_BATCH), given, kinks)
    large, beyond = _largest_finite(judge)
    ref = np.dtype(np.float64) if inputs.opts.precision == "float64" else narrow
    points, labels = pts.point_set(
        given,
        count,
        seed=inputs.seed,
        kinks=[c for c in kinks if c != 0.0],
        large=large,
        beyond=beyond,
        tiny=float(jnp.finfo(narrow).tiny),
        # Beyond the finite differences' reach (so they do not straddle c).
        rel=max(1e-3, 4 * eps_of(narrow), 4 * default_step(ref)),
    )
    points = [judge.cast(p) for p in points]
    failing, inside, kinked = judge(points)
    underflow, unresolved, unsure = judge.underflow, judge.unresolved, judge.unsure
    passing = [
        p
        for p, bad, ok, kink, doubt in zip(points, failing, inside, kinked, unsure)
        if ok and not bad and not kink and not doubt
    ]
    zero = [np.zeros_like(v) for v in given]
    # Off the thresholds (a failure with an entry exactly on one is not
    # counted, so shrinking towards such a base could not keep failing), then
    # fewest nonzero entries, fewest digits, smallest.
    clear = [p for p in passing if not any(np.isin(v, kinks).any() for v in p)]
    if clear or passing:
        judge.base = min(
            clear or passing,
            key=lambda p: _digits_first(pts.simplicity(p, zero, dtypes)),
        )
    bad = np.flatnonzero(failing)
    code, report = _simplest([points[k] for k in bad], judge, flat, recheck)
    located = tuple(
        _located(int(k), points[k], judge, flat, recheck) for k in bad[:MAX_LOCATED]
    )
    return PointsResult(
        count=len(points),
        labels=tuple(labels),
        failing=tuple(int(k) for k in bad),
        out_of_domain=tuple(int(k) for k in np.flatnonzero(~inside)),
        at_threshold=tuple(
            int(k) for k in np.flatnonzero(kinked & ~underflow & ~unresolved)
        ),
        unresolved=tuple(int(k) for k in np.flatnonzero(unresolved)),
        unsure=tuple(int(k) for k in np.flatnonzero(unsure)),
        underflow=tuple(int(k) for k in np.flatnonzero(underflow)),
        thresholds=tuple(kinks),
        common=pts.common_property([points[k] for k in bad], passing, paths),
        simplest=code,
        simplest_report=report,
        note=at.note,
        located=located,
        values=tuple(
            np.stack([np.asarray(p[j]) for p in points]).astype(dtype)
            for j, dtype in enumerate(dtypes)
        ),
    )


def _refuse_complex(flat: Any) -> None:
    """``points=`` draws real values: complex inputs are refused."""
    complex_paths = [
        i.path for i in flat.checked if jnp.iscomplexobj(flat.leaves[i.position])
    ]
    if complex_paths:
        raise ValueError(
            "`points=` generates real input points; f has complex inputs "
            f"({', '.join(complex_paths)}). The fix is to check them at the "
            "primals (points=None)."
        )


def _simplest(
    failing: list[pts.Point],
    judge: _Judge,
    flat: Any,
    recheck: Callable[[tuple], RuleReport],
) -> tuple[tuple[str, ...], RuleReport | None]:
    """The simplest failing point after shrinking, as code, and the full
    check there (at the unshrunk point where the shrunk one passes it)."""
    if not failing:
        return (), None
    dtypes = [np.dtype(v.dtype) for v in judge.x]
    first = min(failing, key=lambda p: pts.simplicity(p, judge.base, dtypes))
    simplest = _shrink(first, judge.base, judge, dtypes)
    report = recheck(tuple(flat.rebuild_with(_at(flat, simplest, judge.x))))
    if report.ok and simplest is not first:  # shrunk too far for the full check
        simplest = first
        report = recheck(tuple(flat.rebuild_with(_at(flat, first, judge.x))))
    paths = [i.path for i in flat.checked]
    return tuple(pts.as_code(simplest, paths, dtypes)), report


def _located(
    k: int,
    point: pts.Point,
    judge: _Judge,
    flat: Any,
    recheck: Callable[[tuple], RuleReport],
) -> LocatedPoint:
    """The full check at failing point ``k``: what its localisation names.
    Same shapes as every other point, so it reuses their compiled programs."""
    report = recheck(tuple(flat.rebuild_with(_at(flat, point, judge.x))))
    named = (e.where for _, r in report.localized for e in r.failures())
    return LocatedPoint(k, report.ok, tuple(dict.fromkeys(named)))


def _digits_first(key: tuple) -> tuple:
    moved, distance, digits = key
    return moved, digits, distance


def _at(flat: Any, point: pts.Point, x: list[Any]) -> dict[int, Any]:
    """``{position: leaf}`` of the differentiated leaves at ``point``."""
    return {
        i.position: jnp.asarray(v, xi.dtype) for i, v, xi in zip(flat.checked, point, x)
    }


def with_points(
    report: RuleReport,
    f: Callable[..., Any],
    primals: tuple,
    direction: Direction,
    *,
    nondiff_argnums: tuple[int, ...],
    opts: Options,
    count: int | None,
) -> RuleReport:
    """``report`` with the rule checked at ``count`` input points (None: as is)."""
    if count is None:
        return report
    inputs = rule_inputs(f, primals, nondiff_argnums, opts)

    def recheck(at: tuple) -> RuleReport:
        return check_rule(
            f, at, direction, nondiff_argnums=nondiff_argnums, order=1, opts=opts
        )

    result = points_result(inputs, direction.at_points(inputs), count, recheck)
    return dataclasses.replace(report, points=result)
