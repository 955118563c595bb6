"""Fast mode's sweep: J(θ + τ·u) along random directions of several leaves at once.

The directional counterpart of :class:`jgradcheck._engine.sweep.LeafSweep`:
each row of a call moves every planned leaf by its own multiple of one of its
directions, in one compiled ``vmap``, through the same
:class:`jgradcheck._engine.batch.BatchRunner` (and so on the same devices).
:mod:`jgradcheck._leaf.fast` plans the directions and judges the results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import cast
from .._options import EngineSettings
from .._pytree.flat import LeafInfo, Split, split_static
from .batch import BatchedSweep, BatchRunner, batch_bytes, choose_batch
from .context import EvalContext


def _moved(
    pdyn: Any,
    positions: tuple[int, ...],
    dtypes: tuple[np.dtype, ...],
    taus: jax.Array,
    dirs: list[jax.Array],
) -> list[Any]:
    """The dynamic params with leaf ``positions[j]`` moved by ``taus[j]·dirs[j]``."""
    new = list(pdyn)
    for j, (pos, dt) in enumerate(zip(positions, dtypes)):
        new[pos] = new[pos] + taus[j].astype(dt) * dirs[j]
    return new


def direction_evaluation(
    loss: Callable[..., Any],
    params: Split,
    args: Split,
    positions: tuple[int, ...],
    dtypes: tuple[np.dtype, ...],
) -> Callable[..., jax.Array]:
    """``one(taus, cols, us, pdyn, adyn)``: J with leaf ``positions[j]`` moved by
    ``taus[j] · us[j][cols[j]]`` for each j (``τ = 0`` leaves it as it is)."""

    def one(
        taus: jax.Array,
        cols: jax.Array,
        us: tuple[jax.Array, ...],
        pdyn: Any,
        adyn: Any,
    ) -> jax.Array:
        dirs = [us[j][cols[j]] for j in range(len(positions))]
        new = _moved(pdyn, positions, dtypes, taus, dirs)
        return loss(params.merge(new), *args.merge(adyn))

    return one


def range_evaluation(
    loss: Callable[..., Any],
    params: Split,
    args: Split,
    positions: tuple[int, ...],
    dtypes: tuple[np.dtype, ...],
) -> Callable[..., jax.Array]:
    """``one(taus, cols, los, his, us, pdyn, adyn)``: as
    :func:`direction_evaluation`, each direction kept on the flat indices
    ``los[j] ≤ i < his[j]`` of its leaf and zero elsewhere (group testing)."""

    def one(
        taus: jax.Array,
        cols: jax.Array,
        los: jax.Array,
        his: jax.Array,
        us: tuple[jax.Array, ...],
        pdyn: Any,
        adyn: Any,
    ) -> jax.Array:
        dirs = []
        for j in range(len(positions)):
            u = us[j][cols[j]]
            flat = jnp.arange(u.size, dtype=jnp.int32).reshape(u.shape)
            dirs.append(
                jnp.where((flat >= los[j]) & (flat < his[j]), u, jnp.zeros_like(u))
            )
        new = _moved(pdyn, positions, dtypes, taus, dirs)
        return loss(params.merge(new), *args.merge(adyn))

    return one


class DirectionSweep(BatchedSweep):
    """J(θ + τ·u) for directions u on single leaves; all leaves in one compiled vmap.

    Row r of a call perturbs leaf j by ``taus[r, j] · u_j[cols[r, j]]``
    (``τ = 0`` leaves it exactly as it is). The batches run through a
    :class:`jgradcheck._engine.batch.BatchRunner` on the reference's devices
    (``ref.layout``), like the leaf sweeps', and it keeps their counters, so an
    :class:`jgradcheck._engine.context.EvalContext` it is registered with reports its time,
    evaluations and devices.

    Args:
      ref: the evaluation context: its loss, parameters, ``args``, memory budget and
        devices.
      infos: the leaves moved, one column of ``taus``/``cols`` each.
      directions: per leaf, its directions ``[K, leaf size]`` (float64
        values the leaf's dtype holds exactly).
      n_evals: evaluations expected (only to size the batch).
      engine: the engine's knobs (``cpu_working_set``); default
        :class:`jgradcheck._options.EngineSettings`.
      operands: ``ref.layout.replicate((params dynamic leaves, args dynamic
        leaves))``, when the caller shares one copy with the leaf sweeps
        (default: a copy of its own).
      ranges: each row also gives, per leaf, a range ``lo ≤ i < hi`` of flat
        indices outside which the direction is zero (group testing:
        :mod:`jgradcheck._leaf.group_testing`); called as
        ``sweep(taus, cols, los, his)``.
    """

    def __init__(
        self,
        ref: EvalContext,
        infos: Sequence[LeafInfo],
        directions: Sequence[np.ndarray],
        n_evals: int,
        *,
        engine: EngineSettings | None = None,
        operands: tuple[Any, Any] | None = None,
        ranges: bool = False,
    ):
        engine = engine or EngineSettings()
        layout = ref.layout
        params = split_static(ref.flat.rebuild(ref.flat.leaves))
        positions = tuple(info.position for info in infos)
        dtypes = tuple(np.dtype(ref.flat.leaves[p].dtype) for p in positions)
        us = tuple(
            cast(u.reshape((-1,) + info.shape), dt)
            for info, u, dt in zip(infos, directions, dtypes)
        )
        build = range_evaluation if ranges else direction_evaluation
        one = build(ref.loss, params, ref.args, positions, dtypes)
        width = len(infos)
        tau_dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless x64
        index = jax.ShapeDtypeStruct((width,), jnp.int32)
        rows = (jax.ShapeDtypeStruct((width,), tau_dtype),) + (index,) * (
            3 if ranges else 1
        )
        shared = (us, params.dynamic, ref.args.dynamic)
        leaf_bytes = sum(info.size * dt.itemsize for info, dt in zip(infos, dtypes))

        def batched(k: int) -> tuple[jax.ShapeDtypeStruct, ...]:
            return tuple(jax.ShapeDtypeStruct((k, *r.shape), r.dtype) for r in rows)

        per, _ = batch_bytes(one, batched, shared)
        batch = choose_batch(
            per + 2 * leaf_bytes,
            n_evals,
            memory_budget=ref.memory_budget,
            backend=layout.platform,
            devices=layout.n,
            cpu_working_set=engine.cpu_working_set,
        )
        if operands is None:
            operands = layout.replicate(shared[1:])
        placed = (layout.replicate(us), *operands)
        self.runner = BatchRunner(one, rows, placed, batch=batch, layout=layout)

    def close(self) -> None:
        """Nothing to close (no progress bar for the directional checks)."""

    def __call__(self, taus: np.ndarray, *index: np.ndarray) -> np.ndarray:
        """J for each row of ``taus``/``cols`` ([N, leaves]), as float64 (with
        ``ranges``: ``taus, cols, los, his``)."""
        return self.runner(taus, *index)
