"""Input points for ``points=``: which to try, what the failing ones share, how
to shrink one, and how to print it. Pure NumPy.

A *point* is a list of arrays, one per differentiated input leaf, with the
primals' shapes (values in float64; the caller casts them to the leaves'
dtypes). Nothing here evaluates anything: the checks layer judges points and
hands back which fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Point = list[np.ndarray]
"""One array per differentiated input leaf."""

SPREAD_SCALES = (1e-3, 1e-1, 1.0, 10.0)
"""Scales (times max(1, |given|)) of the random spreads around the given values."""

TOWARD_BASE = (0.1, 0.5, 0.75, 0.9, 0.97, 0.99)
"""Fractions of its distance from the base point an entry keeps in a shrinking
candidate."""

MAX_KINKS = 6
"""Thresholds straddled at most (the first found)."""


def _flat(p: Point) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in p]) if p else np.zeros(0)


def _unflat(v: np.ndarray, like: Point) -> Point:
    out, at = [], 0
    for leaf in like:
        out.append(v[at : at + leaf.size].reshape(leaf.shape))
        at += leaf.size
    return out


def _uniform(like: Point, value: float) -> Point:
    return [np.full(v.shape, value, np.float64) for v in like]


def straddle(c: float, rel: float) -> tuple[float, float]:
    """Values just below and just above the threshold ``c`` (relative ``rel``)."""
    d = rel * max(abs(c), 1.0)
    return c - d, c + d


def point_set(
    given: Point,
    count: int,
    *,
    seed: int,
    kinks: Sequence[float],
    large: tuple[float, float],
    beyond: tuple[float, float],
    tiny: float,
    rel: float,
) -> tuple[list[Point], list[str]]:
    """``count`` points and what each is, deterministic given ``seed``.

    In order: the given values; 0, ±1 and each threshold ``c`` of ``kinks``
    straddled (every entry ``c ∓ rel·max(1, |c|)``); ±``tiny``; the largest
    magnitudes ``large`` (negative, positive) where the primal is finite, and
    ``beyond`` (where it is not); the given values spread at
    :data:`SPREAD_SCALES`; then mixtures, each entry drawn from the given or
    spread values or the values above short of the large magnitudes.

    >>> pts, what = point_set([np.array([2.0, 3.0])], 6, seed=0, kinks=[15.0],
    ...     large=(-1e30, 1e30), beyond=(-4e30, 4e30), tiny=1e-38, rel=1e-3)
    >>> what
    ['the given values', 'every entry 0', 'every entry 1', 'every entry -1', 'every entry 14.985', 'every entry 15.015']
    """
    rng = np.random.default_rng([seed, 15])
    labels = ["the given values"]
    points = [[np.asarray(v, np.float64) for v in given]]
    values = [0.0, 1.0, -1.0]
    for c in list(kinks)[:MAX_KINKS]:
        values += list(straddle(c, rel))
    values += [tiny, -tiny, large[1], large[0], beyond[1], beyond[0]]
    for v in values:
        points.append(_uniform(given, v))
        labels.append(f"every entry {v:.6g}")
    g = _flat(points[0])
    width = max(1.0, float(np.max(np.abs(g)))) if g.size else 1.0
    for s in SPREAD_SCALES:
        points.append(_unflat(g + s * width * rng.standard_normal(g.size), given))
        labels.append(f"the given values spread by {s:g}·{width:.3g}")
    # Not the large magnitudes: the steps scale with the largest entry, and
    # would swamp the others (beyond would leave the domain).
    pool = np.array(values[:-4])
    while len(points) < count:
        s = SPREAD_SCALES[rng.integers(len(SPREAD_SCALES))]
        spread = g + s * width * rng.standard_normal(g.size)
        edge = pool[rng.integers(pool.size, size=g.size)]
        points.append(_unflat(np.where(rng.random(g.size) < 0.5, spread, edge), given))
        labels.append("a mixture of the values above")
    return points[:count], labels[:count]


# ------------------------------------------------------ what failures share


def simplest_between(lo: float, hi: float, *, near: str = "hi") -> float:
    """A number with fewest significant digits in ``[lo, hi)`` (``lo < hi``):
    0 if it is inside, else a power of ten, else one with fewest digits; the
    one nearest ``near`` (``"lo"`` or ``"hi"``) among equals.

    >>> simplest_between(14.9, 15.2), simplest_between(-0.5, 0.25)
    (15.0, 0.0)
    >>> simplest_between(0.00999, 0.5, near="lo"), simplest_between(95, 120)
    (0.01, 100.0)
    >>> simplest_between(-0.02, -0.003, near="hi"), simplest_between(0.04, 0.07)
    (-0.01, 0.06)
    """
    if lo <= 0.0 < hi:
        return 0.0
    top = math.floor(math.log10(max(abs(lo), abs(hi))))
    bottom = math.floor(math.log10(min(abs(lo), abs(hi)) or 1e-300))
    tens = [
        sign * 10.0**e
        for e in range(bottom - 1, top + 2)
        for sign in (1.0, -1.0)
        if lo <= sign * 10.0**e < hi
    ]
    if tens:  # a power of ten is simplest of all
        return min(tens) if near == "lo" else max(tens)
    for d in range(1, 18):
        found = []
        for e in range(top, max(bottom, top - 20) - 1, -1):
            q = 10.0 ** (e - d + 1)
            k = math.ceil(lo / q) if near == "lo" else math.floor(hi / q)
            for t in (float(f"{j * q:.{d}g}") for j in (k - 1, k, k + 1)):
                if lo <= t < hi:
                    found.append(t)
        if found:
            return min(found) if near == "lo" else max(found)
    return lo


_STATS = (
    ("max", lambda a: a.max(), "some entry of {p} > {t}", "every entry of {p} < {t}"),
    ("min", lambda a: a.min(), "every entry of {p} > {t}", "some entry of {p} < {t}"),
    (
        "min abs",
        lambda a: np.abs(a).min(),
        "every entry of {p} with |x| > {t}",
        "some entry of {p} with |x| < {t}",
    ),
    (
        "abs",
        lambda a: np.abs(a).max(),
        "some entry of {p} with |x| > {t}",
        "every entry of {p} with |x| < {t}",
    ),
    (
        "near 0",
        lambda a: np.abs(a[a != 0]).min() if np.any(a != 0) else np.inf,
        "every nonzero entry of {p} with |x| > {t}",
        "some entry of {p} with 0 < |x| < {t}",
    ),
)


def common_property(
    failing: list[Point], passing: list[Point], paths: Sequence[str]
) -> str:
    """What every failing point has and no passing point has, or ``""``.

    Tried per input leaf, in order: its largest entry, its smallest, its
    smallest and largest magnitudes and its smallest nonzero magnitude, above or below a
    threshold (the simplest number that separates the two groups).

    >>> common_property([[np.array([0.0, 16.0])], [np.array([30.0, -1.0])]],
    ...                 [[np.array([1.0, 15.0])], [np.array([-40.0, 0.0])]], ["[0]"])
    'some entry of [0] > 15'
    """
    if not failing or not passing:
        return ""
    found = []
    for j, path in enumerate(paths):
        if failing[0][j].size == 0:
            continue
        for _, stat, above, below in _STATS:
            f = np.array([stat(np.asarray(p[j])) for p in failing], np.float64)
            q = np.array([stat(np.asarray(p[j])) for p in passing], np.float64)
            if f.min() > q.max() and np.isfinite(q.max()):
                hi = f.min() if np.isfinite(f.min()) else 2 * abs(q.max()) + 1
                t = simplest_between(q.max(), hi, near="hi")
                found.append(above.format(p=path, t=f"{t:g}"))
            elif f.max() < q.min() and np.isfinite(f.max()):
                lo = -q.min() if np.isfinite(q.min()) else -(2 * abs(f.max()) + 1)
                t = 0.0 - simplest_between(lo, -f.max(), near="hi")
                found.append(below.format(p=path, t=f"{t:g}"))
    return found[0] if found else ""


# ----------------------------------------------------------------- shrinking


def moved(point: Point, base: Point) -> np.ndarray:
    """Indices (into the flattened point) of the entries that differ from ``base``."""
    return np.flatnonzero(_flat(point) != _flat(base))


def reset_candidates(point: Point, base: Point, cap: int) -> list[Point]:
    """``point`` with chunks of its moved entries put back to ``base``'s values,
    largest chunks first (halves, quarters, … single entries), at most ``cap``.

    >>> [c[0].tolist() for c in reset_candidates([np.array([1.0, 2.0])],
    ...                                          [np.zeros(2)], 8)]
    [[0.0, 2.0], [1.0, 0.0]]
    """
    idx = moved(point, base)
    if idx.size < 2:
        return []
    p, b = _flat(point), _flat(base)
    out: list[Point] = []
    size = idx.size
    while size > 1 and len(out) < cap:
        size = (size + 1) // 2
        for start in range(0, idx.size, size):
            v = p.copy()
            chunk = idx[start : start + size]
            v[chunk] = b[chunk]
            out.append(_unflat(v, point))
    return out[:cap]


def _rounded(v: float, digits: int) -> float:
    return float(f"{v:.{digits}g}")


def digits_of(v: float, dtype: Any) -> int:
    """Significant digits of the shortest repr of ``v`` in ``dtype``."""
    text = str(np.asarray(v).astype(dtype)[()]).lower().lstrip("-")
    mantissa = text.split("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return max(len(mantissa), 1)


def simplicity(point: Point, base: Point, dtypes: Sequence[Any]) -> tuple:
    """Sort key, smaller is simpler: how many entries moved away from ``base``,
    how far (to 2 digits: a rounding that adds a little is simpler), and how
    many digits they take to write."""
    p, b = _flat(point), _flat(base)
    kinds = np.concatenate([[j] * v.size for j, v in enumerate(point)]).astype(int)
    idx = moved(point, base)
    with np.errstate(over="ignore"):  # float64 points near the largest finite
        dist = float(np.sum(np.abs(p[idx] - b[idx])))
    digits = sum(digits_of(p[i], dtypes[kinds[i]]) for i in idx)
    return (idx.size, _rounded(dist, 2) if dist else 0.0, digits)


def simpler_candidates(point: Point, base: Point, cap: int) -> list[Point]:
    """``point`` with one moved entry made simpler: rounded to 1, 2, 3
    or 4 significant digits, or moved part of the way back to ``base``
    (:data:`TOWARD_BASE`: a bisection-like search for the edge of the failing
    region, one round at a time)."""
    p, b = _flat(point), _flat(base)
    out = []
    for i in moved(point, base):
        tries = [_rounded(p[i], d) for d in (1, 2, 3, 4)]
        tries += [b[i] + f * (p[i] - b[i]) for f in TOWARD_BASE]
        for t in dict.fromkeys(tries):
            if t != p[i] and np.isfinite(t):
                v = p.copy()
                v[i] = t
                out.append(_unflat(v, point))
    return out[:cap]


# ------------------------------------------------------------------ printing


def _literal(v: Any) -> str:
    text = str(v)
    return text if any(c in text for c in ".en") else text + ".0"


def _nested(a: np.ndarray) -> str:
    if a.ndim == 0:
        return _literal(a[()])
    return "[" + ", ".join(_nested(r) for r in a) + "]"


def as_code(point: Point, paths: Sequence[str], dtypes: Sequence[Any]) -> list[str]:
    """Lines that build ``point`` with ``jax.numpy``, to paste into a test:
    ``x = jnp.array([0.0, 16.0], dtype=jnp.float32)``; with several leaves,
    ``x0``, ``x1``, … each with its path as a comment.

    >>> as_code([np.array([0.0, 15.02])], ["[0]"], [np.dtype(np.float32)])
    ['x = jnp.array([0.0, 15.02], dtype=jnp.float32)']
    """
    lines = []
    for j, (v, path, dtype) in enumerate(zip(point, paths, dtypes)):
        name = "x" if len(point) == 1 else f"x{j}"
        values = _nested(np.asarray(v).astype(dtype))
        line = f"{name} = jnp.array({values}, dtype=jnp.{np.dtype(dtype).name})"
        lines.append(line if len(point) == 1 else f"{line}  # {path}")
    return lines
