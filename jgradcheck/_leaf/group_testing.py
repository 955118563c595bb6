"""Group testing: which entries of a leaf whose random directions disagree are wrong.

Fast mode (:mod:`jgradcheck._leaf.fast`) knows that a leaf is wrong when one
of its random directions disagrees; sweeping the leaf entry by entry to say
*which* entries costs 2n evaluations. When only a few entries are wrong,
halving finds them in O(log n) directional evaluations instead:

1. The leaf's checked entries (``idx``, in order) form one group. Every level
   splits each live group into two halves of consecutive entries.
2. Each half is checked along ``K_g = max(2, K)`` random directions of its own
   (a stream apart from the leaf's, restricted to the half: zero outside it),
   with :func:`jgradcheck._leaf.fast_directions.check_directions`: the same
   differences, refinement, kink test and verdict formula as the leaf's
   directions (module docstring of :mod:`jgradcheck._leaf.fast`). The
   formula holds on any fixed support: ``S`` sums or Hoeffding-bounds the
   projected per-entry allowance over the group's entries, whose random signs
   are independent of the gradient, and θ + τ·u is rounded only there.
   All halves of one level are differenced in one compiled ``vmap``
   (:class:`jgradcheck._engine.directions.DirectionSweep` with ranges).
3. A half that disagrees along some direction, or cannot be judged along one
   (``unsure``: a kink, noise), stays live; a half that agrees along all of
   them is vouched for by its directions only. A live group of at most
   :data:`SMALLEST` entries is not split further: its entries are swept one
   by one with the full mode's machinery, so the wrong ones are reported with
   path, index, estimate, error bar and diagnosis.

Group testing gives up, and the leaf is swept as without it, when

- every group of a level of at least :data:`MAX_LIVE` groups disagrees (an
  error across the leaf: a wrong sign, scale or transpose; given up after
  three levels), more than :data:`MAX_LIVE` groups are live at one level, the
  evaluations would exceed :data:`BUDGET` of the full sweep's 2n, or more
  than :data:`MAX_SWEPT` entries are to be swept (many wrong entries: the
  sweep is then the cheaper way);
- a group that disagrees splits into two halves that both agree (an error
  spread thinly over many entries, or wrong entries cancelling along every
  direction of both halves);
- the sweep of the small groups finds no wrong entry, or a group that
  disagreed holds no wrong entry, or the wrong entries found do not account
  for the leaf's own directions (:func:`explains`): evidence that some wrong
  entry is elsewhere.

Cost: with ``w`` wrong entries, about ``w·log₂(n/64)`` levels' worth of
groups, each ``2 + 2·K_g·(2 groups)`` evaluations plus 6 per direction
refined, then the sweep of ``≤ 64·w`` entries: for one wrong entry among
262,144 with K = 4, 12 levels and a few hundred evaluations against 524,288.

What it can miss: a wrong entry in a half that agrees along all K_g
directions. For a single wrong entry ``i`` off by ``δᵢ``, the projection
``⟨δ, u⟩`` over the half takes, as ``uᵢ`` runs over its 1,800 values
±0.01 … ±9.00 with the other entries fixed, values spaced ``0.01·|δᵢ|`` apart,
so at most ``1 + 200·tol/|δᵢ|`` of them fall within the tolerance: one
direction misses with probability at most ``(1 + 200·tol/|δᵢ|)/1800``,
``K_g`` independent ones with that to the power ``K_g`` (about 3e-7 for two
directions and ``|δᵢ| ≫ tol``; exact cancellation of two entries with equal
errors needs ``uᵢ = −uⱼ`` along each). An error below the tolerance of every
direction is missed as at the leaf level (docs/fast_mode.md). Entries in
halves that agree are reported as checked by directions only, never as
compared one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .._engine.context import EvalContext
from .._engine.directions import DirectionSweep
from .._numerics.verdict import FAIL, PASS, SAFETY, UNSURE
from .._report.records import Directions, LeafResult
from .fast_directions import PlannedLeaf, check_directions, direction, restrict

MIN_ENTRIES = 2048
"""Leaves with fewer checked entries are swept in full (that is cheap)."""
SMALLEST = 64
"""Groups this small are swept entry by entry, not split further."""
MAX_LIVE = 8
"""Most groups live after one level before group testing gives up."""
MAX_SWEPT = 1024
"""Most entries handed to the entry-by-entry sweep before giving up."""
BUDGET = 1 / 8
"""Most directional evaluations, as a fraction of the full sweep's 2n."""
_PURPOSE = 4
"""Purpose tag of group testing's draws (fast mode's own directions use 2)."""


# ------------------------------------------------------------ the plan (pure)


class Group(NamedTuple):
    """Consecutive checked entries ``idx[start:stop]`` of a leaf."""

    start: int
    stop: int
    status: int
    """Its directions' verdict: FAIL or UNSURE (live), PASS."""

    @property
    def size(self) -> int:
        return self.stop - self.start


def halves(g: Group) -> tuple[Group, Group]:
    """The two halves of a group (status unknown yet: PASS).

    >>> halves(Group(0, 5, 1))
    (Group(start=0, stop=2, status=0), Group(start=2, stop=5, status=0))
    """
    mid = (g.start + g.stop) // 2
    return Group(g.start, mid, PASS), Group(mid, g.stop, PASS)


class Search(NamedTuple):
    """Where the halving stands: live groups, groups to sweep, and the cost."""

    n: int
    """Checked entries of the leaf."""
    live: tuple[Group, ...]
    swept: tuple[Group, ...] = ()
    evaluations: int = 0
    levels: int = 0
    gave_up: str | None = None
    """Why group testing stopped before it found the groups (None: it did not)."""

    @property
    def done(self) -> bool:
        return self.gave_up is not None or not self.live

    def children(self) -> list[Group]:
        """The groups the next level checks: both halves of every live group."""
        return [h for g in self.live for h in halves(g)]

    def entries(self, idx: np.ndarray) -> np.ndarray:
        """The flat indices of the groups to sweep, in order."""
        parts = [idx[g.start : g.stop] for g in sorted(self.swept)]
        return np.concatenate(parts) if parts else idx[:0]


def start(n: int, status: int) -> Search:
    """A search over ``n`` checked entries whose leaf's directions gave ``status``.

    >>> s = start(256, 1)
    >>> s = advance(s, [1, 0], evaluations=40)
    >>> s = advance(s, [0, 1], evaluations=40)
    >>> s.done, s.swept, s.levels
    (True, (Group(start=64, stop=128, status=1),), 2)
    """
    return Search(n=n, live=(Group(0, n, status),))


def advance(s: Search, statuses: Sequence[int], *, evaluations: int) -> Search:
    """The next level, given the statuses of :meth:`Search.children`."""
    kids = [k._replace(status=int(st)) for k, st in zip(s.children(), statuses)]
    spent = s.evaluations + evaluations
    s = s._replace(evaluations=spent, levels=s.levels + 1)
    for g, pair in zip(s.live, zip(kids[::2], kids[1::2])):
        if g.status == FAIL and all(k.status == PASS for k in pair):
            return s._replace(
                gave_up=f"entries {g.start}…{g.stop - 1} disagree, but both "
                "halves agree (an error spread over many entries, or cancelling)"
            )
    bad = [k for k in kids if k.status != PASS]
    if len(kids) >= MAX_LIVE and len(bad) == len(kids):
        return s._replace(
            gave_up=f"all {len(kids)} groups of a level disagree: an error across "
            "the leaf"
        )
    live = tuple(k for k in bad if k.size > SMALLEST)
    swept = s.swept + tuple(k for k in bad if k.size <= SMALLEST)
    s = s._replace(live=live, swept=swept)
    if len(live) > MAX_LIVE:
        return s._replace(gave_up=f"{len(live)} groups disagree at one level")
    if spent > BUDGET * 2 * s.n:
        return s._replace(gave_up=f"{spent} evaluations exceed {BUDGET:g} of a sweep")
    if sum(g.size for g in swept) > MAX_SWEPT:
        return s._replace(gave_up=f"more than {MAX_SWEPT} entries left to sweep")
    return s


def explains(
    search: Search, idx: np.ndarray, res: LeafResult, d: Directions, u: np.ndarray
) -> str | None:
    """Whether the sweep of the small groups accounts for what the directions saw.

    Returns None when it does, else why not. Along each of the leaf's own
    directions ``u`` the swept entries account for ``Σ uᵢ(aᵢ − nᵢ)`` of the
    gap ``⟨a,u⟩ − n``, up to ``Σ|uᵢ|·SAFETY·errᵢ``; what is left must be
    within the direction's tolerance, or some wrong entry was not swept.
    """
    if not res.n_fail:
        return "the sweep of the groups that disagree finds no wrong entry"
    wrong = res.idx[res.status == FAIL]
    for g in search.swept:
        if g.status == FAIL and not np.isin(idx[g.start : g.stop], wrong).any():
            return f"entries {g.start}…{g.stop - 1} disagree, but none is wrong alone"
    uw = u[:, res.idx]
    left = np.abs(d.rule - d.numeric - uw @ (res.grad - res.numeric))
    if np.any(~(left <= d.tolerance + np.abs(uw) @ (SAFETY * res.error_bar))):
        return "the wrong entries found do not account for the leaf's directions"
    return None


def summary(search: Search, res: LeafResult) -> str:
    """The note of a leaf localised by group testing."""
    k = res.n_fail
    return (
        f"{k} wrong {'entry' if k == 1 else 'entries'} found by group testing "
        f"({search.evaluations} directional evaluations, {search.levels} levels); "
        f"the {search.n - res.checked} other entries checked by directions only"
    )


# ------------------------------------------------------------ the evaluations


class _Groups:
    """``sweep(taus, cols)`` for groups of one leaf, as :func:`check_directions`
    calls it: column j of a row is group j; a row moves at most one group."""

    def __init__(self, sweep: DirectionSweep, lo: np.ndarray, hi: np.ndarray):
        self.sweep, self.lo, self.hi = sweep, lo, hi

    def __call__(self, taus: np.ndarray, cols: np.ndarray) -> np.ndarray:
        moved = taus != 0
        assert np.all(moved.sum(1) <= 1)
        j = np.argmax(moved, axis=1)
        rows = np.arange(taus.shape[0])
        on = moved.any(1)
        tau = np.where(on, taus[rows, j], 0.0)[:, None]
        col = np.where(on, cols[rows, j], 0)[:, None]
        lo = np.where(on, self.lo[j], 0)[:, None]
        hi = np.where(on, self.hi[j], 0)[:, None]
        return self.sweep(tau, col, lo, hi)


def locate(
    ctx: EvalContext,
    leaf: PlannedLeaf,
    status: int,
    *,
    directions: int,
    seed: int,
    rtol: float | None,
    atol: float | None,
) -> Search:
    """Halve the leaf's entries down to the small groups that disagree.

    Args:
      ctx: the evaluation context (the groups' sweep is registered with it).
      leaf: the planned leaf whose own directions gave ``status`` (FAIL or
        UNSURE).
      directions: K; each group is checked along ``max(2, K)`` directions.
      seed: the seed of the directions.
      rtol, atol: explicit tolerances, as in check_grad.

    Returns:
      The finished :class:`Search`: the groups to sweep, or why it gave up.
    """
    k = max(2, directions)
    dtype = ctx.leaf_dtype(leaf.info)
    base = np.stack(
        [direction(seed, leaf.info, j, leaf.idx, purpose=_PURPOSE) for j in range(k)]
    )
    base = base.astype(dtype).astype(np.float64)
    sweep = DirectionSweep(
        ctx,
        [leaf.info],
        [base],
        2 + 4 * k * MAX_LIVE,
        engine=ctx.opts.engine,
        operands=ctx.operands(),
        ranges=True,
    )
    ctx.register(sweep)
    s = start(leaf.idx.size, status)
    while not s.done:
        kids = s.children()
        parts = [leaf.idx[g.start : g.stop] for g in kids]
        groups = [restrict(leaf, e, base[:, e]) for e in parts]
        lo = np.array([e[0] for e in parts])
        hi = np.array([e[-1] + 1 for e in parts])
        before = sweep.n_evals
        checked = check_directions(
            _Groups(sweep, lo, hi), ctx, groups, seed, rtol, atol
        )
        statuses = [
            FAIL if d.n_fail else UNSURE if d.n_unsure else PASS for d, _ in checked
        ]
        s = advance(s, statuses, evaluations=sweep.n_evals - before)
    return s
