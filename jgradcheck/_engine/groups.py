"""Which small leaves share one compiled sweep (group planning).

Compiling a sweep takes ~0.2 s on a CPU whatever the leaf, while a dense
evaluation of a small leaf's entry costs one full J. So leaves of at most
:data:`GROUP_LEAF_MAX` entries and one dtype are swept by one dense compiled
function (biases, norm scales: one compile instead of one per leaf), as long
as the group's first pass stays within :data:`GROUP_BYTES` of intermediates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._pytree.flat import Flat, LeafInfo, Split, split_static
from .sweep import eval_bytes, group_evaluation

GROUP_LEAF_MAX = 1024
"""Leaves of at most this many entries may share one compiled sweep."""

GROUP_BYTES = 2**30
"""Most intermediate bytes (:func:`eval_bytes` per evaluation × 2 evaluations
per entry) a group's first pass may produce. Past this, a leaf gets its own
(sparse) sweep."""

Groups = dict[int, tuple[LeafInfo, ...]]
"""``{leaf position: the leaves swept with it}``."""


def plan_groups(
    loss: Callable[..., Any],
    flat: Flat,
    args: Split,
    measured: dict[tuple[int, ...], tuple[int, int]] | None = None,
) -> Groups:
    """``{position: group}``: the small leaves swept by one compiled function.

    Leaves of at most :data:`GROUP_LEAF_MAX` entries and one dtype share one
    dense compiled sweep, smallest first, while the group's first pass stays
    within :data:`GROUP_BYTES` of intermediates. Groups have at least two
    leaves. ``measured`` receives ``{group positions: eval_bytes}`` for the
    groups whose evaluation was traced here, so their sweep need not trace it
    again.
    """
    params = split_static(flat.rebuild(flat.leaves))
    by_dtype: dict[np.dtype, list[LeafInfo]] = {}
    for info in flat.checked:
        if info.size <= GROUP_LEAF_MAX:
            dtype = np.dtype(flat.leaves[info.position].dtype)
            by_dtype.setdefault(dtype, []).append(info)
    out: Groups = {}
    for dtype, small in by_dtype.items():
        if len(small) < 2:
            continue
        positions = tuple(i.position for i in small)
        one = group_evaluation(loss, params, args, positions)
        per_eval, fixed = eval_bytes(one, dtype, params.dynamic, args.dynamic)
        kept: list[LeafInfo] = []
        total = 0
        for info in sorted(small, key=lambda i: (i.size, i.position)):
            total += 2 * info.size * per_eval
            if total > GROUP_BYTES:
                break
            kept.append(info)
        if len(kept) >= 2:
            group = tuple(sorted(kept, key=lambda i: i.position))
            out.update({i.position: group for i in group})
            if measured is not None and len(kept) == len(small):
                measured[positions] = (per_eval, fixed)
    return out
