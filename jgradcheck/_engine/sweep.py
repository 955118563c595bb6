"""The sweep engine: J(θ) with entries of one leaf replaced, many at once.

For each checked leaf ``L`` the engine compiles (once) a function that takes a
batch of ``(flat index, new value)`` pairs and returns ``J`` with
``L.flat[index] = value`` for each pair, ``vmap``-ped over the batch. The other
leaves and ``args`` are passed as unbatched arguments, so work that does not
depend on ``L`` is done once per batch, not once per coordinate. Batches have a
fixed size (the last one is padded), so each leaf compiles exactly once. Small
leaves (biases, norm scales) share one dense compiled function, compiled once
for all of them (``group``; :func:`jgradcheck._engine.groups.plan_groups`): on a
CPU a compile costs ~0.2 s whatever the leaf, more than sweeping a small leaf.

The batches run through :class:`jgradcheck._engine.batch.BatchRunner`, the
runner of every sweep: padding, batches in flight, timing, and the split of
each batch over several devices (:mod:`jgradcheck._engine.devices`). The batch
size follows a memory budget: :func:`eval_bytes` measures, from the traced
program, what one more coordinate in a batch costs (a copy of the leaf when the
evaluation materialises it), and :func:`choose_batch` fits the batch to the
budget. Large leaves are swept in many batches.

The engine only evaluates ``J``; stencils and verdicts live elsewhere.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._options import DEFAULT_MEMORY_BUDGET, EngineSettings
from .._pytree.flat import Flat, LeafInfo, Split, split_static
from .batch import BatchedSweep, BatchRunner, batch_bytes, choose_batch
from .devices import Layout, resolve_devices
from .progress import LeafProgress
from .sparse import sparse_loss

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "LeafSweep",
    "batch_bytes",
    "choose_batch",
    "eval_bytes",
    "group_evaluation",
    "leaf_evaluation",
]


def eval_bytes(
    one: Callable[..., Any], dtype: Any, pdyn: Any, adyn: Any
) -> tuple[int, int]:
    """Memory of a batch of ``one``'s evaluations: (per evaluation, per batch).

    Traces ``vmap(one)`` over batches of one and two coordinates and sums the
    sizes of every intermediate (nested jaxprs included). What grows with the
    batch (activations, and a copy of the leaf wherever the evaluation
    materialises it) is the cost per evaluation; what does not (products of
    the unperturbed leaf, shared by the batch) is paid once per batch. Both
    err high: XLA fuses elementwise chains and reuses buffers (measured
    against XLA's own buffer sizes in bench/memory.py). Nothing is allocated;
    ``pdyn`` and ``adyn`` may be :class:`jax.ShapeDtypeStruct`.
    """

    return batch_bytes(
        one,
        lambda k: (
            jax.ShapeDtypeStruct((k,), jnp.int32),
            jax.ShapeDtypeStruct((k,), dtype),
        ),
        (pdyn, adyn),
    )


def group_evaluation(
    loss: Callable[..., Any],
    params: Split,
    args: Split,
    positions: tuple[int, ...],
) -> Callable[..., Any]:
    """``one(i, v, pdyn, adyn)``: J with entry ``i`` of the concatenated
    flattened leaves at ``positions`` set to ``v``.

    Dense: every evaluation makes a copy of each of these leaves, so that one
    compiled function serves several leaves (see :class:`LeafSweep`'s
    ``group``).
    """
    shapes = [tuple(params.dynamic[p].shape) for p in positions]
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)

    def one(i: jax.Array, v: jax.Array, pdyn: Any, adyn: Any) -> jax.Array:
        leaves = list(pdyn)
        for pos, shape, size, off in zip(positions, shapes, sizes, offsets):
            # A select, not a scatter: under vmap this is one fused pass that
            # writes each perturbed copy of the leaf once.
            flat = leaves[pos].reshape(-1)
            hit = jax.lax.iota(jnp.int32, size) == i - int(off)
            leaves[pos] = jnp.where(hit, v.astype(flat.dtype), flat).reshape(shape)
        return loss(params.merge(leaves), *args.merge(adyn))

    return one


def leaf_evaluation(
    loss: Callable[..., Any],
    params: Split,
    args: Split,
    position: int,
    *,
    sparse: bool = True,
    patches: bool = True,
) -> Callable[..., Any]:
    """``one(i, v, pdyn, adyn)``: J with ``params`` leaf ``position``'s ``flat[i] = v``.

    ``pdyn`` and ``adyn`` are the dynamic leaves of ``params`` and ``args``.
    With ``sparse`` the leaf goes through :mod:`jgradcheck._engine.sparse`,
    sharing its matrix products across a batch (and, with ``patches``, the
    next products its change reaches); otherwise a perturbed copy of the leaf
    is made per coordinate.
    """
    if not sparse:
        return group_evaluation(loss, params, args, (position,))
    base = params.dynamic[position]

    def of_leaf(leaf: jax.Array, rest: tuple[Any, Any]) -> jax.Array:
        pdyn, adyn = rest
        leaves = list(pdyn)
        leaves[position] = leaf
        return loss(params.merge(leaves), *args.merge(adyn))

    def split(pdyn: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(None if k == position else x for k, x in enumerate(pdyn))

    f = sparse_loss(
        of_leaf, base, (split(params.dynamic), args.dynamic), patches=patches
    )

    def one(i: jax.Array, v: jax.Array, pdyn: Any, adyn: Any) -> jax.Array:
        return f(i, v, pdyn[position], (split(pdyn), adyn))

    return one


def _evaluation(
    loss: Callable[..., Any],
    params: Split,
    args: Split,
    info: LeafInfo,
    group: tuple[LeafInfo, ...] | None,
    sparse: bool,
    patches: bool = True,
) -> tuple[Callable[..., Any], dict[int, int]]:
    """A sweep's ``one(i, v, pdyn, adyn)`` and each swept leaf's offset in ``i``."""
    if group is None:
        one = leaf_evaluation(
            loss, params, args, info.position, sparse=sparse, patches=patches
        )
        return one, {info.position: 0}
    positions = tuple(g.position for g in group)
    sizes = np.cumsum([0] + [g.size for g in group])
    offsets = {p: int(o) for p, o in zip(positions, sizes)}
    return group_evaluation(loss, params, args, positions), offsets


class LeafSweep(BatchedSweep):
    """Evaluates J with single entries of one leaf replaced, in compiled batches.

    Args:
      loss: the user's scalar function ``loss(params, *args)``.
      flat: the parameters at reference precision.
      args: the fixed extra arguments.
      info: the leaf to perturb.
      batch: evaluations per compiled call (fixed, so one compile); None
        chooses it from ``memory_budget`` and ``n_evals`` (:func:`choose_batch`).
      sparse: evaluate through :mod:`jgradcheck._engine.sparse`, sharing the leaf's
        matrix products across the batch (False: perturb a dense copy;
        None: ``engine.sparse``).
      n_evals: evaluations expected (only to size ``batch``).
      memory_budget: bytes per batch and device (only to size ``batch``).
      layout: the devices to run on (default: every local device).
      operands: ``layout.replicate((params dynamic leaves, args dynamic
        leaves))``, when the caller shares one copy between sweeps.
      progress: where to report evaluations done.
      group: leaves (``info`` among them) whose entries one dense compiled
        function sweeps (:func:`group_evaluation`): one compile for several
        small leaves; :meth:`view` gives the sweep of another of them.
      measured: :func:`eval_bytes` of this sweep's evaluation, when already
        traced (only to size ``batch``).
      engine: the engine's knobs (``sparse``, ``cpu_working_set``); default
        :class:`jgradcheck._options.EngineSettings`.

    Attributes:
      runner: the :class:`jgradcheck._engine.batch.BatchRunner` that runs the
        batches; ``batch``, ``compile_seconds``, ``run_seconds``, ``n_evals``
        and ``ran_on`` are its.
      base: the leaf's values at the reference precision, flattened.
      dtype: the leaf's dtype at the reference precision.
      per_eval, fixed_bytes: :func:`eval_bytes` when the batch was sized here.
    """

    def __init__(
        self,
        loss: Callable[..., Any],
        flat: Flat,
        args: Split,
        info: LeafInfo,
        batch: int | None = None,
        *,
        sparse: bool | None = None,
        n_evals: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        layout: Layout | None = None,
        operands: tuple[Any, Any] | None = None,
        progress: LeafProgress | None = None,
        group: tuple[LeafInfo, ...] | None = None,
        measured: tuple[int, int] | None = None,
        engine: EngineSettings | None = None,
    ):
        engine = engine or EngineSettings()
        self.info = info
        self.layout = layout or Layout(resolve_devices(None))
        self.progress = progress
        params = split_static(flat.rebuild(flat.leaves))
        sparse = engine.sparse if sparse is None else sparse
        one, self.offsets = _evaluation(
            loss, params, args, info, group, sparse, engine.patches
        )
        self.dtype = np.dtype(flat.leaves[info.position].dtype)
        self.per_eval: int | None = None
        self.fixed_bytes: int | None = None
        if batch is None:
            self.per_eval, self.fixed_bytes = measured or eval_bytes(
                one, self.dtype, params.dynamic, args.dynamic
            )
            batch = choose_batch(
                self.per_eval,
                info.size if n_evals is None else n_evals,
                memory_budget=memory_budget,
                backend=self.layout.platform,
                fixed=self.fixed_bytes,
                devices=self.layout.n,
                cpu_working_set=engine.cpu_working_set,
            )
        if operands is None:
            operands = self.layout.replicate((params.dynamic, args.dynamic))
        rows = (
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct((), self.dtype),
        )
        self.runner = BatchRunner(
            one, rows, tuple(operands), batch=batch, layout=self.layout
        )
        self._leaves = flat.leaves
        self.base = np.asarray(flat.leaves[info.position], self.dtype).reshape(-1)
        """The leaf's values at the reference precision, flattened."""

    @property
    def grouped(self) -> bool:
        """Whether the compiled function is shared with other leaves."""
        return len(self.offsets) > 1

    def view(self, info: LeafInfo, progress: LeafProgress | None = None) -> LeafSweep:
        """The sweep of another leaf of this sweep's ``group``, sharing its
        compiled function (compiled at most once); its own counters."""
        if info.position not in self.offsets:
            raise ValueError(f"{info.path} is not in this sweep's group.")
        other = copy.copy(self)
        other.info, other.progress = info, progress
        other.runner = self.runner.view()
        leaf = self._leaves[info.position]
        other.base = np.asarray(leaf, self.dtype).reshape(-1)
        return other

    def __call__(self, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``J`` with ``leaf.flat[idx[k]] = values[k]`` for each k, as float64."""
        self.runner.compile()
        if self.progress is not None:
            self.progress.start()
        offset = self.offsets[self.info.position]
        return self.runner(
            np.asarray(idx, np.int32) + np.int32(offset),
            np.asarray(values, self.dtype),
            fill=(offset, self.base[0]),
            on_batch=None if self.progress is None else self.progress.update,
        )

    def close(self) -> None:
        """The leaf is done: close its progress bar and free its compiled code
        (kept for the other leaves when it is shared)."""
        if self.progress is not None:
            self.progress.close()
        if not self.grouped:
            self.runner.release()
