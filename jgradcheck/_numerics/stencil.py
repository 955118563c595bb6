"""Finite-difference stencils, step selection and their error estimates.

Everything here works on NumPy arrays of J values returned by the sweep engine.

* :func:`central` takes the central difference ``(J(θ+h) − J(θ−h)) / (θ₊ − θ₋)``
  with the step actually represented in floating point (``θ₊ − θ₋``, not ``2h``)
  and a roundoff bound ``eps_J·max|J±| / h``.
* :func:`ladder` adds steps h/2, h/4, h/8 and :func:`richardson` extrapolates pairs of
  them. Each candidate gets an error estimate (the size of the correction, or
  the disagreement between successive extrapolants, plus roundoff) and the most
  accurate candidate is kept. Pairs that use only the small steps survive a kink
  or a singularity a little way from θ; if no pair agrees the error bar is large
  and the verdict says the entry cannot be judged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .._dtypes import eps as eps_of

Evaluate = Callable[[np.ndarray, np.ndarray], np.ndarray]

REFINE_LEVELS = 3
"""Extra halvings of the step tried by :func:`ladder` (h/2, h/4, h/8)."""

DESCENT_LEVELS = 9
"""Further halvings tried by :func:`descend` (down to h/4096)."""


def default_step(dtype: np.dtype) -> float:
    """The relative step ``cbrt(eps)`` that balances O(h²) truncation and roundoff.

    The central difference's truncation error is ``h²|J'''|/6`` and its roundoff
    error ``≈ eps|J|/h``; their sum is smallest near ``h = cbrt(3 eps |J|/|J'''|)``,
    which for unit-scale functions is ``cbrt(eps)`` (6.1e-6 in float64, 4.9e-3 in
    float32).
    """
    return float(np.cbrt(eps_of(dtype)))


def steps_for(theta: np.ndarray, rel_step: float) -> np.ndarray:
    """Per-coordinate steps ``rel_step · max(1, |θᵢ|)``."""
    theta = np.asarray(theta, np.float64)
    return rel_step * np.maximum(1.0, np.abs(theta))


class Central(NamedTuple):
    """Central differences at one step, per coordinate."""

    value: np.ndarray
    roundoff: np.ndarray
    step: np.ndarray  # the half-width actually taken, (θ₊ − θ₋) / 2
    j_plus: np.ndarray
    j_minus: np.ndarray

    def take(self, k: np.ndarray) -> Central:
        """The same differences for the coordinates at positions ``k`` only."""
        return Central(*(field[k] for field in self))


class Estimate(NamedTuple):
    """A numeric derivative per coordinate, with its error bar."""

    value: np.ndarray
    error: np.ndarray
    step: np.ndarray
    refined: np.ndarray  # bool: extrapolated from several steps
    roundoff: np.ndarray | None = None
    """The roundoff part of ``error``, where it is known separately."""


class Kink(NamedTuple):
    """One-sided slopes at the smallest step, for coordinates at a kink."""

    found: np.ndarray
    """bool: left and right slopes differ by a gap that does not shrink with h."""
    left: np.ndarray
    right: np.ndarray
    noise: np.ndarray
    """Roundoff bound of the slopes at the smallest step."""


def kinks(ds: list[Central], j0: float) -> Kink:
    """Where J has a kink within the smallest step of θ.

    With J(θ) and J(θ ± h) the one-sided slopes are ``(J(θ+h) − J(θ))/h`` and
    ``(J(θ) − J(θ−h))/h``. For a smooth J their gap is ``≈ h·J''`` and halves
    with h; across a jump in J it is ``jump/h`` and doubles; across a kink it is
    the jump in slope and stays. A gap that stays (within a factor 0.75–1.5
    from step h/4 to h/8), is above 0.1% of the slopes and well above roundoff
    marks a kink.
    """

    def gap(c: Central) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            right = (c.j_plus - j0) / c.step
            left = (j0 - c.j_minus) / c.step
        return left, right, np.abs(right - left)

    left, right, g_small = gap(ds[-1])
    _, _, g_big = gap(ds[-2])
    noise = 8.0 * ds[-1].roundoff
    scale = np.maximum(np.abs(left), np.abs(right))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = g_small / g_big
    found = (
        (ratio > 0.75)
        & (ratio < 1.5)
        & (g_small > noise)
        & (g_small > 1e-3 * scale)
        & np.isfinite(g_small)
    )
    return Kink(found, left, right, noise)


def _differences(
    evaluate: Evaluate,
    idx: np.ndarray,
    base: np.ndarray,
    steps: list[np.ndarray],
    eps_j: float,
    noise: float = 0.0,
) -> list[Central]:
    """Central differences at each of ``steps``, from one call of ``evaluate``.

    One call for all steps keeps the compiled batches full.
    """
    dtype = base.dtype
    theta = base[idx]
    tps = [(theta + h.astype(dtype)).astype(dtype) for h in steps]
    tms = [(theta - h.astype(dtype)).astype(dtype) for h in steps]
    j = evaluate(np.tile(idx, 2 * len(steps)), np.concatenate(tps + tms))
    n, out = idx.shape[0], []
    for k, (tp, tm) in enumerate(zip(tps, tms)):
        jp = j[k * n : (k + 1) * n]
        jm = j[(len(steps) + k) * n : (len(steps) + k + 1) * n]
        width = tp.astype(np.float64) - tm.astype(np.float64)
        out.append(from_values(jp, jm, width, eps_j, noise))
    return out


def central(
    evaluate: Evaluate,
    idx: np.ndarray,
    base: np.ndarray,
    h: np.ndarray,
    eps_j: float,
    noise: float = 0.0,
) -> Central:
    """Central differences of J along the coordinates ``idx`` of one leaf.

    Args:
      evaluate: J with ``leaf.flat[idx] = value`` (the sweep engine).
      idx: flat indices into the leaf.
      base: the leaf's flattened values (the dtype J is evaluated in).
      h: the intended step per coordinate.
      eps_j: machine epsilon of J's output, for the roundoff bound.
      noise: J's measured rounding near θ (absolute), if known.
    """
    return _differences(evaluate, idx, base, [h], eps_j, noise)[0]


def ladder(
    evaluate: Evaluate,
    idx: np.ndarray,
    base: np.ndarray,
    first: Central,
    eps_j: float,
    levels: int = REFINE_LEVELS,
    noise: float = 0.0,
) -> list[Central]:
    """Central differences at h (``first``) and h/2, ..., h/2^levels.

    ``richardson(ladder(...))`` is the refined estimate with its error bar.
    """
    halved = [first.step / 2.0**k for k in range(1, levels + 1)]
    return [first] + _differences(evaluate, idx, base, halved, eps_j, noise)


NOISE_SCALES = (0.7311, 0.7311 / 15.7, 0.7311 / 251.3)
"""Steps of the rounding probes, relative to ``√eps·max(1, |θ|)``: about
1, 1/16 and 1/256, but not powers of two. A perturbation that is a whole
number of ulps of a larger intermediate (``θ + C``) rounds exactly, and would
show none of the rounding that the finite differences' own steps see."""


def probe_offsets(u: np.ndarray) -> np.ndarray:
    """The rounding probes' offsets for base steps ``u``: ``[12, *u.shape]``,
    ``(+u, −u, +2u, −2u)`` at each of :data:`NOISE_SCALES`."""
    return np.stack(
        [m * s * u for s in NOISE_SCALES for m in (1.0, -1.0, 2.0, -2.0)], axis=0
    )


def probe_rounding(j: np.ndarray) -> np.ndarray:
    """J's rounding per probe from J at :func:`probe_offsets` (axis 0, 12 values;
    complex J: the modulus of the complex gaps).

    ``J(θ+2u) − J(θ−2u) − 2·(J(θ+u) − J(θ−u))`` is O(u³·J‴) plus the rounding
    that central differences see (a symmetric probe such as
    ``J(θ+u) + J(θ−u) − 2J(θ)`` can cancel it exactly). Each of the four values
    rounds by up to d, so this is at most 6d; half of it is a generous
    estimate of d. Rounding that comes from a quantised intermediate (θ + C
    with C large) can cancel at one scale and not at another, so each probe
    takes the largest of its three scales, except scales where ``u³·J‴``
    dominates (a high frequency): there the median gap over all probes falls
    ~4000-fold (``15.7³``) to the next scale, as a cube does, and that scale
    is dropped.
    """
    j = np.asarray(j)
    j = j.astype(np.complex128 if np.iscomplexobj(j) else np.float64)
    blocks = np.split(j, len(NOISE_SCALES), axis=0)
    gaps = np.stack(
        [np.abs((jp2 - jm2) - 2.0 * (jp1 - jm1)) for jp1, jm1, jp2, jm2 in blocks]
    )
    gaps = np.where(np.isfinite(gaps), gaps, 0.0)
    first = 0
    for s in range(len(NOISE_SCALES) - 1):
        big, small = np.median(gaps[s]), np.median(gaps[s + 1])
        cube = (NOISE_SCALES[s] / NOISE_SCALES[s + 1]) ** 3
        if not (small > 0 and cube / 16 <= big / small <= cube * 16):
            break
        first = s + 1
    return np.max(gaps[first:], axis=0) / 2.0


def rounding_of(
    j_abs: np.ndarray, eps_j: float, noise: float | np.ndarray
) -> np.ndarray:
    """The rounding error of one evaluation of J: ``max(eps_J·|J|, noise)``.

    ``noise`` is J's measured rounding near θ (``EvalContext.prime``), which
    exceeds ``eps_J·|J|`` when J sums large terms that cancel.
    """
    return np.maximum(eps_j * j_abs, noise)


def descend(
    evaluate: Evaluate,
    idx: np.ndarray,
    base: np.ndarray,
    ds: list[Central],
    eps_j: float,
    levels: int = DESCENT_LEVELS,
    noise: float = 0.0,
) -> list[Central]:
    """The ladder ``ds`` continued by ``levels`` more halvings of its smallest step.

    For entries whose extrapolation has not converged: at a step wider than a
    high frequency's period the differences vary erratically, and only
    smaller steps reach the regime where the Taylor model, and so the error
    estimate, holds. :func:`richardson` of the longer ladder keeps the best
    candidate, so its error bar can only shrink.
    """
    last = ds[-1].step
    more = [last / 2.0**k for k in range(1, levels + 1)]
    return ds + _differences(evaluate, idx, base, more, eps_j, noise)


def from_values(
    j_plus: np.ndarray,
    j_minus: np.ndarray,
    width: np.ndarray,
    eps_j: float,
    noise: float | np.ndarray = 0.0,
) -> Central:
    """Central differences from J(θ+h), J(θ−h) and the width θ₊ − θ₋ (any shape)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (j_plus - j_minus) / width
        j_abs = np.maximum(np.abs(j_plus), np.abs(j_minus))
        roundoff = 2.0 * rounding_of(j_abs, eps_j, noise) / width
    return Central(
        value, roundoff, np.broadcast_to(width / 2.0, value.shape), j_plus, j_minus
    )


class _Ladder(NamedTuple):
    """Which differences of a halving ladder behave like a Taylor series."""

    settled: np.ndarray
    """[L, n]: ``|D_{k+1} − D_k|`` within 4 roundoff bars."""
    shrinking: np.ndarray
    """[L, n]: ``(D_k − D_{k+1}) / (D_{k+1} − D_{k+2})`` in [3, 5.5] (the h²
    term shrinking by 4 with its sign kept); False for the last pair."""


def _behaviour(d: np.ndarray, r: np.ndarray) -> _Ladder:
    diff = np.diff(d, axis=0)
    settled = np.abs(diff) <= 4.0 * (r[1:] + r[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = diff[:-1] / diff[1:]  # complex for complex J: ≈ 4 + 0j
    shrinking = np.zeros_like(settled)
    shrinking[:-1] = (
        (np.real(ratio) >= 3.0)
        & (np.real(ratio) <= 5.5)
        & (np.abs(np.imag(ratio)) <= 1.0)
    )
    return _Ladder(settled, shrinking)


def converging(ds: list[Central]) -> np.ndarray:
    """Per entry: does some part of the ladder ``ds`` behave like a Taylor series?

    In the asymptotic regime successive differences ``D_k − D_{k+1}`` of
    halving steps shrink by a factor 4 with the same sign (the h² term); once
    they reach roundoff they stay at its level. At steps wider than a high
    frequency's period the differences vary erratically, and no error
    estimate drawn from them is to be believed.
    """
    b = _behaviour(np.stack([c.value for c in ds]), np.stack([c.roundoff for c in ds]))
    return np.any(b.shrinking, axis=0) | np.any(b.settled[:-1] & b.settled[1:], axis=0)


def richardson(ds: list[Central]) -> Estimate:
    """The best Richardson extrapolant of central differences at halving steps.

    ``ds[k]`` holds the differences at step h/2^k (any array shape, the same for
    every k). Returns, per entry, the candidate with the smallest error estimate
    among those whose differences behave like a Taylor series (settled at
    roundoff, or shrinking by 4 next to a neighbour; see :func:`converging`).
    Where none does, the smallest-error candidate is returned with an error bar
    widened to the spread of all the differences: the estimate cannot be
    trusted beyond what the ladder shows. Where valid candidates disagree
    beyond their error bars, the error bar widens to their disagreement.
    """
    levels = len(ds) - 1
    d = np.stack([c.value for c in ds])  # [levels+1, n]
    r = np.stack([c.roundoff for c in ds])
    steps = np.stack([c.step for c in ds])
    b = _behaviour(d, r)
    # Richardson for halved steps: R_k = D_{k+1} + (D_{k+1} − D_k)/3, O(h⁴).
    corr = (d[1:] - d[:-1]) / 3.0
    rich = d[1:] + corr
    rich_round = 1.5 * r[1:]
    # Candidate A_k: R_k with the size of its own correction as the error bar
    # (conservative: that is the truncation error of D_{k+1}). Valid when the
    # pair (k, k+1) is settled or shrinks like h² with a neighbouring pair.
    cand_val = [rich[k] for k in range(levels)]
    cand_err = [np.abs(corr[k]) + rich_round[k] for k in range(levels)]
    cand_round = [rich_round[k] for k in range(levels)]
    cand_step = [steps[k + 1] for k in range(levels)]
    cand_ok = [
        b.settled[k] | b.shrinking[k] | (b.shrinking[k - 1] if k else False)
        for k in range(levels)
    ]
    # Candidate B_k: R_k with |R_k − R_{k−1}| as the error bar (tighter where
    # three successive steps are all in the smooth regime).
    for k in range(1, levels):
        cand_val.append(rich[k])
        cand_err.append(
            np.abs(rich[k] - rich[k - 1]) + rich_round[k] + rich_round[k - 1]
        )
        cand_round.append(rich_round[k] + rich_round[k - 1])
        cand_step.append(steps[k + 1])
        cand_ok.append(b.shrinking[k - 1] | (b.settled[k - 1] & b.settled[k]))
    errs = np.stack(cand_err)
    errs = np.where(np.isfinite(errs), errs, np.inf)
    ok = np.stack([np.broadcast_to(o, errs.shape[1:]) for o in cand_ok])
    trusted = ok.any(axis=0)
    best = np.argmin(np.where(ok | ~trusted, errs, np.inf), axis=0)[None]

    def pick(cands: list[np.ndarray]) -> np.ndarray:
        return np.take_along_axis(np.stack(cands), best, 0)[0]

    error = np.take_along_axis(errs, best, 0)[0]
    value = pick(cand_val)
    vals = np.stack(cand_val)
    with np.errstate(invalid="ignore"):
        spread = 2.0 * np.max(np.abs(d - d[-1]), axis=0)
        # Valid candidates that disagree with the chosen one beyond both
        # error bars (a wide step that aliases a high frequency can look
        # smooth too): the estimate is ambiguous by that much.
        gap = np.abs(vals - value)
        clash = ok & (gap > 2.0 * (errs + error))
        ambiguity = np.max(np.where(clash, gap, 0.0), axis=0)
    error = np.where(trusted, np.maximum(error, ambiguity), np.maximum(error, spread))
    return Estimate(
        value=value,
        error=error,
        step=pick(cand_step),
        refined=np.ones(errs.shape[1:], bool),
        roundoff=pick(cand_round),
    )


STENCILS = {
    "central": ((1.0, -1.0), (0.5, -0.5), 2),
    "central4": ((1.0, -1.0, 2.0, -2.0), (2 / 3, -2 / 3, -1 / 12, 1 / 12), 4),
    "central6": (
        (1.0, -1.0, 2.0, -2.0, 3.0, -3.0),
        (3 / 4, -3 / 4, -3 / 20, 3 / 20, 1 / 60, -1 / 60),
        6,
    ),
}
"""name -> (offsets in units of h, weights, order p): f' ≈ Σ wₖ·J(θ + oₖh) / h."""


def stencil_step(dtype: np.dtype, order: int) -> float:
    """The relative step ``eps^(1/(p+1))`` balancing O(h^p) truncation and roundoff."""
    return float(eps_of(dtype) ** (1.0 / (order + 1)))


def _stencil_at(
    evaluate: Evaluate,
    idx: np.ndarray,
    base: np.ndarray,
    h: np.ndarray,
    eps_j: float,
    method: str,
    noise: float = 0.0,
) -> Estimate:
    """One stencil at steps 2h and h; the error bar from their difference."""
    offsets, weights, p = STENCILS[method]
    dtype, theta, n = base.dtype, base[idx], idx.shape[0]
    scales = (2.0, 1.0)
    pts = [
        (theta + (o * s * h).astype(dtype)).astype(dtype)
        for s in scales
        for o in offsets
    ]
    # One call for both steps keeps the compiled batches full.
    j = evaluate(np.tile(idx, len(pts)), np.concatenate(pts))
    values, rounds, steps = [], [], []
    for k in range(len(scales)):
        js = [
            j[(k * len(offsets) + m) * n : (k * len(offsets) + m + 1) * n]
            for m in range(len(offsets))
        ]
        first = pts[k * len(offsets)]
        second = pts[k * len(offsets) + 1]
        width = (first.astype(np.float64) - second.astype(np.float64)) / 2.0
        with np.errstate(invalid="ignore", divide="ignore"):
            values.append(sum(w * jk for w, jk in zip(weights, js)) / width)
            jmax = np.max(np.abs(np.stack(js)), axis=0)
            rounds.append(
                sum(abs(w) for w in weights)
                * 2
                * rounding_of(jmax, eps_j, noise)
                / width
            )
        steps.append(width)
    error = np.abs(values[0] - values[1]) / (2.0**p - 1.0) + rounds[1]
    return Estimate(values[1], error, steps[1], np.zeros((n,), bool), rounds[1])


ADAPT_MAX = 64.0
"""The adaptive stencil shrinks a coordinate's step by at most this factor."""


def better_step(est: Estimate, order: int) -> np.ndarray:
    """Per coordinate, the step minimising truncation + roundoff, as a ratio to ``est.step``.

    With truncation ``T = C·h^p`` (``est.error − est.roundoff``) and roundoff
    ``R = ρ/h`` (``est.roundoff``) measured at step h, the sum ``C·h'^p + ρ/h'``
    is smallest at ``h'/h = (R / (p·T))^(1/(p+1))``. Only shrinking is trusted:
    a truncation estimate below roundoff is itself noise, so a larger step is
    never proposed. Returns values in ``[1/ADAPT_MAX, 1]``.
    """
    trunc = np.maximum(est.error - est.roundoff, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (est.roundoff / (order * trunc)) ** (1.0 / (order + 1))
    ratio = np.where(np.isfinite(ratio), ratio, 1.0)
    return np.clip(ratio, 1.0 / ADAPT_MAX, 1.0)


def stencil(
    evaluate: Evaluate,
    idx: np.ndarray,
    base: np.ndarray,
    h: np.ndarray,
    eps_j: float,
    method: str,
    *,
    adaptive: bool = True,
    noise: float = 0.0,
) -> Estimate:
    """A fixed stencil at steps 2h and h; the error bar from their difference.

    Returns the estimate at step h with error ``|v(2h) − v(h)| / (2^p − 1)``
    (the asymptotic truncation error of v(h)) plus roundoff
    ``Σ|wₖ|·eps·max|J| / h``. The step is the one represented for offset ±1.

    With ``adaptive`` (default), coordinates whose truncation error at h is
    well above roundoff (high curvature or frequency) are evaluated again at
    the step :func:`better_step` proposes, and keep whichever estimate has
    the smaller error bar: the step is chosen per coordinate from the
    measured higher derivative and roundoff, at no cost for coordinates that
    are already at their optimum.
    """
    est = _stencil_at(evaluate, idx, base, h, eps_j, method, noise)
    if not adaptive:
        return est
    ratio = better_step(est, STENCILS[method][2])
    redo = np.flatnonzero(ratio < 0.5)
    if redo.size == 0:
        return est
    again = _stencil_at(
        evaluate, idx[redo], base, h[redo] * ratio[redo], eps_j, method, noise
    )
    take = again.error < est.error[redo]
    at = redo[take]

    def merged(old: np.ndarray, new: np.ndarray) -> np.ndarray:
        out = old.copy()
        out[at] = new[take]
        return out

    roundoff = est.roundoff
    if roundoff is not None and again.roundoff is not None:
        roundoff = merged(roundoff, again.roundoff)
    return Estimate(
        merged(est.value, again.value),
        merged(est.error, again.error),
        merged(est.step, again.step),
        merged(est.refined, again.refined),
        roundoff,
    )
