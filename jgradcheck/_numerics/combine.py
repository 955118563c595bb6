"""Two estimates of the same derivatives, combined into one with an honest error bar.

Used wherever an entry is estimated twice (the refine and widen stages of
``check_leaf``): no failure rests on a single, unchecked number.
"""

from __future__ import annotations

import numpy as np


def combine_estimates(
    v1: np.ndarray, e1: np.ndarray, v2: np.ndarray, e2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two estimates of the same entries: ``(value, error, took_second)``.

    Where they agree within their error bars (``|v2 − v1| ≤ 2·(e1 + e2)``)
    the tighter one is kept; where they do not, one error bar is wrong (a
    step that aliases a high frequency or reaches a kink) and the error widens
    to cover both, so the entry is reported unsure rather than judged on a
    number nobody can vouch for.

    Args:
      v1: the first estimates; ``e1`` their error bars.
      e1: see ``v1``.
      v2: the second estimates (same shape); ``e2`` their error bars.
      e2: see ``v2``.

    Returns:
      The kept value, its error bar, and where the second estimate was kept.

    Example:
      >>> v, e, took = combine_estimates(
      ...     np.array([1.0, 1.0]), np.array([0.1, 0.1]),
      ...     np.array([1.05, 2.0]), np.array([0.01, 0.01]))
      >>> v.tolist(), e.tolist(), took.tolist()
      ([1.05, 1.0], [0.01, 1.0], [True, False])
    """
    gap = np.abs(v2 - v1)
    agree = gap <= 2.0 * (e1 + e2)
    take = agree & (e2 < e1)
    value = np.where(take, v2, v1)
    error = np.where(agree, np.minimum(e1, e2), np.maximum(np.maximum(e1, e2), gap))
    return value, error, take
