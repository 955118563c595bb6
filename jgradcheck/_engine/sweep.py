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

With several devices the batch axis is split over them (:mod:`._devices`).
The batch size follows a memory budget: :func:`eval_bytes` measures, from the
traced program, what one more coordinate in a batch costs (a copy of the leaf
when the evaluation materialises it), and :func:`choose_batch` fits the batch
to the budget. Large leaves are swept in many batches.

The engine only evaluates ``J``; stencils and verdicts live elsewhere.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._options import EngineSettings
from .._pytree.flat import Flat, LeafInfo, Split, split_static
from .devices import Layout, resolve_devices
from .progress import LeafProgress
from .sparse import CALLS, sparse_loss

DEFAULT_MEMORY_BUDGET = 2 * 2**30
"""Default bound on the memory one batch of evaluations may take (bytes)."""

SPARSE = True
"""Default for :class:`LeafSweep`'s ``sparse`` (bench/sweep.py compares both)."""

_CPU_WORKING_SET = 16 * 2**20
# On a CPU, batches whose working set exceeds the caches run slower per
# coordinate: on the 26k-parameter MLP of bench/sweep.py (0.2 MiB of
# intermediates per evaluation) batches of 64 evaluations beat 16 and 256.
_MAX_BATCH = {"cpu": 512, "default": 8192}
"""Most evaluations per device in one batch."""


def _aval_bytes(v: Any) -> int:
    aval = getattr(v, "aval", None)
    shape = getattr(aval, "shape", None)
    dtype = getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 8
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def _inner_jaxprs(p: Any) -> list[Any]:
    if isinstance(p, (tuple, list)):
        return [j for x in p for j in _inner_jaxprs(x)]
    inner = getattr(p, "jaxpr", None)
    if inner is not None and hasattr(inner, "eqns"):
        return [inner]
    return [p] if hasattr(p, "eqns") else []


_VIEWS = frozenset({"reshape", "squeeze", "broadcast_in_dim"})
"""Not counted: reshapes are new views of a buffer, and XLA fuses broadcasts
into their consumers (``vmap`` of a select broadcasts both branches to the
batch: a copy of the leaf that is never materialised)."""


def _jaxpr_bytes(jaxpr: Any) -> int:
    """Sum of the sizes of every intermediate, nested jaxprs included."""
    total = 0
    for eqn in jaxpr.eqns:
        # A call's outputs are its body's last intermediates, counted there.
        if eqn.primitive.name not in _VIEWS and eqn.primitive.name not in CALLS:
            total += sum(_aval_bytes(v) for v in eqn.outvars)
        for p in eqn.params.values():
            total += sum(_jaxpr_bytes(j) for j in _inner_jaxprs(p))
    return total


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


def batch_bytes(
    one: Callable[..., Any],
    batched: Callable[[int], tuple[Any, ...]],
    shared: tuple[Any, ...],
) -> tuple[int, int]:
    """``(per evaluation, per batch)`` bytes of ``vmap(one)``, from two traces.

    ``batched(k)`` gives the batched arguments for a batch of ``k``
    (``jax.ShapeDtypeStruct`` is enough); ``shared`` are passed unbatched.
    """

    def total(k: int) -> int:
        args = batched(k)
        axes = (0,) * len(args) + (None,) * len(shared)
        fn = jax.vmap(one, in_axes=axes)
        return _jaxpr_bytes(jax.make_jaxpr(fn)(*args, *shared).jaxpr)

    one_, two = total(1), total(2)
    per = max(two - one_, 1)
    return per, max(one_ - per, 0)


def choose_batch(
    per_eval: int,
    n_evals: int,
    *,
    memory_budget: int,
    backend: str,
    fixed: int = 0,
    devices: int = 1,
) -> int:
    """Evaluations per compiled call, from a memory budget and the backend.

    Args:
      per_eval: bytes one more evaluation in a batch costs (:func:`eval_bytes`).
      n_evals: evaluations the sweep is expected to make (the batch is never
        much larger).
      memory_budget: bytes one batch may take on each device (``fixed`` plus
        ``per_eval`` per evaluation). CPU devices share the host's memory, so
        there it bounds the whole batch, and the evaluations' own
        intermediates are further kept within a cache-sized working set.
      backend: the devices' platform (``"cpu"``, ``"gpu"``, ``"tpu"``).
      fixed: bytes a batch takes whatever its size (:func:`eval_bytes`).
      devices: the number of devices the batch is split over.

    Returns:
      The batch size: ``devices`` times a power of two, at least ``devices``
      (one evaluation per device, even when that exceeds the budget).
    """
    devices = max(int(devices), 1)
    per = max(per_eval, 1)
    cap = _MAX_BATCH.get(backend, _MAX_BATCH["default"])
    if backend == "cpu":
        fits = (memory_budget - fixed) // devices // per
        cap = min(cap, _CPU_WORKING_SET // devices // per)
    else:
        fits = (memory_budget - fixed) // per
    per_device = max(1, min(cap, fits))
    per_device = min(per_device, max(1, -(-n_evals // devices)))
    # Round to a power of two so leaves of similar size share batch shapes.
    per_device = 2 ** int(math.floor(math.log2(per_device)))
    return per_device * devices


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

    def one(i, v, pdyn, adyn):
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
    sparse: bool | None = None,
) -> Callable[..., Any]:
    """``one(i, v, pdyn, adyn)``: J with ``params`` leaf ``position``'s ``flat[i] = v``.

    ``pdyn`` and ``adyn`` are the dynamic leaves of ``params`` and ``args``.
    With ``sparse`` (default :data:`SPARSE`) the leaf goes through
    :mod:`jgradcheck._engine.sparse`, sharing its matrix products across a batch;
    otherwise a perturbed copy of the leaf is made per coordinate.
    """
    if not (SPARSE if sparse is None else sparse):
        return group_evaluation(loss, params, args, (position,))
    base = params.dynamic[position]

    def of_leaf(leaf, rest):
        pdyn, adyn = rest
        leaves = list(pdyn)
        leaves[position] = leaf
        return loss(params.merge(leaves), *args.merge(adyn))

    def split(pdyn):
        return tuple(None if k == position else x for k, x in enumerate(pdyn))

    f = sparse_loss(of_leaf, base, (split(params.dynamic), args.dynamic))

    def one(i, v, pdyn, adyn):
        return f(i, v, pdyn[position], (split(pdyn), adyn))

    return one


class LeafSweep:
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
        None: the module default ``SPARSE``).
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
        self.info = info
        self.layout = layout or Layout(resolve_devices(None))
        self.progress = progress
        self.compile_seconds = 0.0
        self.run_seconds = 0.0
        self.n_evals = 0
        self.ran_on: frozenset = frozenset()
        """The devices the batches' results came from."""
        params = split_static(flat.rebuild(flat.leaves))
        pos = info.position
        if group is None:
            one = leaf_evaluation(loss, params, args, pos, sparse=sparse)
            self.offsets = {pos: 0}
        else:
            positions = tuple(g.position for g in group)
            one = group_evaluation(loss, params, args, positions)
            sizes = np.cumsum([0] + [g.size for g in group])
            self.offsets = {p: int(o) for p, o in zip(positions, sizes)}
        self.dtype = np.dtype(flat.leaves[pos].dtype)
        self.per_eval, self.fixed_bytes = None, None
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
            )
        n = self.layout.n
        self.batch = -(-int(batch) // n) * n  # a multiple of the device count
        if operands is None:
            operands = self.layout.replicate((params.dynamic, args.dynamic))
        self._operands = operands
        self._fn = self.layout.jit(one)
        self._shared: dict[str, Any] = {"compiled": None}
        self._leaves = flat.leaves
        self.base = np.asarray(flat.leaves[pos], self.dtype).reshape(-1)
        """The leaf's values at the reference precision, flattened."""

    @property
    def _compiled(self) -> Any:
        return self._shared["compiled"]

    @_compiled.setter
    def _compiled(self, value: Any) -> None:
        self._shared["compiled"] = value

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
        other.compile_seconds = other.run_seconds = 0.0
        other.n_evals = 0
        other.ran_on = frozenset()
        leaf = self._leaves[info.position]
        other.base = np.asarray(leaf, self.dtype).reshape(-1)
        return other

    def _ensure_compiled(self) -> None:
        if self._compiled is not None:
            return
        t0 = time.perf_counter()
        sharding = self.layout.batch_sharding
        idx = jax.ShapeDtypeStruct((self.batch,), jnp.int32, sharding=sharding)
        vals = jax.ShapeDtypeStruct((self.batch,), self.dtype, sharding=sharding)
        self._compiled = self._fn.lower(idx, vals, *self._operands).compile()
        self.compile_seconds += time.perf_counter() - t0

    def __call__(self, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``J`` with ``leaf.flat[idx[k]] = values[k]`` for each k, as float64."""
        self._ensure_compiled()
        if self.progress is not None:
            self.progress.start()
        idx = np.asarray(idx, np.int32)
        values = np.asarray(values, self.dtype)
        n = idx.shape[0]
        offset = self.offsets[self.info.position]
        out = np.empty((n,), np.float64)
        t0 = time.perf_counter()
        pending = []

        def fetch() -> None:
            s0, s1, r = pending.pop(0)
            if not self.ran_on:
                self.ran_on = frozenset(r.sharding.device_set)
            out[s0:s1] = np.asarray(r, np.float64)[: s1 - s0]
            if self.progress is not None:
                self.progress.update(s1 - s0)

        for start in range(0, n, self.batch):
            stop = min(start + self.batch, n)
            bi = np.full((self.batch,), offset, np.int32)
            bv = np.full((self.batch,), self.base[0], self.dtype)
            bi[: stop - start] = idx[start:stop] + offset
            bv[: stop - start] = values[start:stop]
            put = self.layout.put_batch
            pending.append(
                (start, stop, self._compiled(put(bi), put(bv), *self._operands))
            )
            # Keep a couple of batches in flight; fetch the older ones.
            if len(pending) > 2:
                fetch()
        while pending:
            fetch()
        self.run_seconds += time.perf_counter() - t0
        self.n_evals += n
        return out

    def close(self) -> None:
        """The leaf is done: close its progress bar and free its compiled code
        (kept for the other leaves when it is shared)."""
        if self.progress is not None:
            self.progress.close()
        if not self.grouped:
            self._compiled = None
