"""The one batch runner of every sweep, and how large its batches are.

A sweep evaluates ``J`` at many perturbed parameters. Each sweep describes one
evaluation as ``one(*row, *shared)``: ``row`` holds the few numbers that say
what is perturbed (a flat index and a value for a leaf sweep; a step and a
direction per leaf for fast mode's directional sweep), ``shared`` the
parameters and ``args`` every evaluation reads. :class:`BatchRunner` turns it
into compiled batches:

- **one compile**: ``vmap(one)`` over a fixed number of rows, compiled once
  (views of a runner share its compiled code); a short last batch is padded;
- **devices**: the batch axis is split over the :class:`Layout`'s devices
  (``shard_map``), ``shared`` replicated, and the devices the results came
  from are recorded (``ran_on``);
- **in flight**: up to :data:`IN_FLIGHT` batches are dispatched before the
  oldest is fetched, so the host pads the next batch while devices work;
- **timing**: compile seconds, run seconds and evaluations, per runner.

How many rows a batch holds follows a memory budget: :func:`batch_bytes`
measures, from the traced program, what one more row costs and what a batch
costs whatever its size, and :func:`choose_batch` fits the batch to the budget.

Leaf sweeps (:class:`jgradcheck._engine.sweep.LeafSweep`, the complex step's
sweep among them) and fast mode's directional sweep
(:class:`jgradcheck._engine.directions.DirectionSweep`) all run through it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from .._options import EngineSettings
from . import programs
from .devices import Layout
from .sparse import CALLS

DEFAULT_CPU_WORKING_SET = EngineSettings().cpu_working_set
"""Bytes of intermediates a CPU batch is kept within, unless the engine says."""

MAX_BATCH = {"cpu": 512, "default": 8192}
"""Most evaluations per device in one batch."""

IN_FLIGHT = 2
"""Batches dispatched before the oldest one's results are fetched."""

_VIEWS = frozenset({"reshape", "squeeze", "broadcast_in_dim"})
"""Not counted: reshapes are new views of a buffer, and XLA fuses broadcasts
into their consumers (``vmap`` of a select broadcasts both branches to the
batch: a copy of the leaf that is never materialised)."""


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


def jaxpr_bytes(jaxpr: Any) -> int:
    """Sum of the sizes of every intermediate of ``jaxpr``, nested jaxprs included.

    Args:
      jaxpr: a ``jax.core.Jaxpr`` (``jax.make_jaxpr(f)(...).jaxpr``).

    Returns:
      Bytes. Reshapes and broadcasts are not counted (views, or fused into
      their consumers), nor a call's outputs (its body's last intermediates).
    """
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name not in _VIEWS and eqn.primitive.name not in CALLS:
            total += sum(_aval_bytes(v) for v in eqn.outvars)
        for p in eqn.params.values():
            total += sum(jaxpr_bytes(j) for j in _inner_jaxprs(p))
    return total


def batch_bytes(
    one: Callable[..., Any],
    batched: Callable[[int], tuple[Any, ...]],
    shared: tuple[Any, ...],
) -> tuple[int, int]:
    """``(per evaluation, per batch)`` bytes of ``vmap(one)``, from two traces.

    Traces ``vmap(one)`` over batches of one and two rows: what grows with the
    batch is the cost per evaluation; what does not (products of the
    unperturbed parameters, shared by the batch) is paid once per batch. Both
    err high: XLA fuses elementwise chains and reuses buffers. Nothing is
    allocated.

    Args:
      one: one evaluation, ``one(*row, *shared)``.
      batched: ``batched(k)`` gives the batched arguments for a batch of ``k``
        rows (``jax.ShapeDtypeStruct`` is enough).
      shared: the unbatched arguments (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
      ``(per evaluation, per batch)`` in bytes; at least 1 per evaluation.
    """

    def total(k: int) -> int:
        args = batched(k)
        axes = (0,) * len(args) + (None,) * len(shared)
        fn = jax.vmap(one, in_axes=axes)
        return jaxpr_bytes(jax.make_jaxpr(fn)(*args, *shared).jaxpr)

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
    cpu_working_set: int = DEFAULT_CPU_WORKING_SET,
) -> int:
    """Evaluations per compiled call, from a memory budget and the backend.

    Args:
      per_eval: bytes one more evaluation in a batch costs (:func:`batch_bytes`).
      n_evals: evaluations the sweep is expected to make (the batch is never
        much larger).
      memory_budget: bytes one batch may take on each device (``fixed`` plus
        ``per_eval`` per evaluation). CPU devices share the host's memory, so
        there it bounds the whole batch, and the evaluations' own
        intermediates are further kept within ``cpu_working_set``.
      backend: the devices' platform (``"cpu"``, ``"gpu"``, ``"tpu"``).
      fixed: bytes a batch takes whatever its size (:func:`batch_bytes`).
      devices: the number of devices the batch is split over.
      cpu_working_set: bytes of intermediates a CPU batch is kept within. On a
        CPU, batches whose working set exceeds the caches run slower per
        coordinate: on the 26k-parameter MLP of bench/sweep.py (0.2 MiB of
        intermediates per evaluation) batches of 64 evaluations beat 16 and 256.

    Returns:
      The batch size: ``devices`` times a power of two, at least ``devices``
      (one evaluation per device, even when that exceeds the budget).
    """
    devices = max(int(devices), 1)
    per = max(per_eval, 1)
    cap = MAX_BATCH.get(backend, MAX_BATCH["default"])
    if backend == "cpu":
        fits = (memory_budget - fixed) // devices // per
        cap = min(cap, cpu_working_set // devices // per)
    else:
        fits = (memory_budget - fixed) // per
    per_device = max(1, min(cap, fits))
    per_device = min(per_device, max(1, -(-n_evals // devices)))
    # Round to a power of two so leaves of similar size share batch shapes.
    per_device = 2 ** int(math.floor(math.log2(per_device)))
    return per_device * devices


@dataclasses.dataclass
class BatchTiming:
    """What one runner (or one view of it) has spent, and where it ran."""

    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    n_evals: int = 0
    """Evaluations fetched so far (padding excluded), counted batch by batch."""
    ran_on: frozenset[jax.Device] = frozenset()
    """The devices the batches' results came from (read from their sharding)."""


class BatchRunner:
    """``vmap(one)`` over rows, in compiled batches of a fixed size, on a layout.

    Args:
      one: one evaluation, ``one(*row, *shared)``, returning a scalar.
      rows: one row of each batched argument, without the batch axis
        (``jax.ShapeDtypeStruct``: shape and dtype).
      shared: the unbatched arguments, placed by ``layout.replicate`` (a
        pytree per argument).
      batch: rows per compiled call; rounded up to a multiple of the device
        count.
      layout: the devices the batch is split over.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jgradcheck._engine.devices import Layout
      >>> layout = Layout(tuple(jax.local_devices()[:1]))
      >>> row = (jax.ShapeDtypeStruct((), jnp.float32),)
      >>> shared = layout.replicate((jnp.float32(3.0),))
      >>> run = BatchRunner(lambda v, c: v * c, row, shared, batch=4, layout=layout)
      >>> run(np.arange(6, dtype=np.float32)).tolist()
      [0.0, 3.0, 6.0, 9.0, 12.0, 15.0]
      >>> run.timing.n_evals
      6
    """

    def __init__(
        self,
        one: Callable[..., Any],
        rows: Sequence[jax.ShapeDtypeStruct],
        shared: tuple[Any, ...],
        *,
        batch: int,
        layout: Layout,
    ):
        self.layout = layout
        self.rows = tuple(rows)
        self.shared = tuple(shared)
        n = layout.n
        self.batch = -(-int(batch) // n) * n
        """Rows per compiled call (a multiple of the device count)."""
        self._one = one
        self._code: dict[str, Any] = {"compiled": None, "temp_bytes": None}
        self.timing = BatchTiming()

    @property
    def compiled(self) -> Any:
        """The compiled batch (None before :meth:`compile` or after :meth:`release`)."""
        return self._code["compiled"]

    @property
    def temp_bytes(self) -> int | None:
        """XLA's temporary buffers for one compiled batch, when the backend says."""
        return self._code["temp_bytes"]

    def view(self) -> BatchRunner:
        """A runner sharing this one's compiled code (compiled at most once by
        either), with its own timing."""
        other = copy.copy(self)
        other.timing = BatchTiming()
        return other

    def release(self) -> None:
        """Free the compiled code (for every view; it is compiled again if called)."""
        self._code["compiled"] = None

    def compile(self) -> None:
        """Compile the batch now, unless it is compiled (timed in ``compile_seconds``)."""
        if self.compiled is not None:
            return
        t0 = time.perf_counter()
        sharding = self.layout.batch_sharding
        specs = [
            jax.ShapeDtypeStruct((self.batch, *r.shape), r.dtype, sharding=sharding)
            for r in self.rows
        ]
        batched, shared = len(self.rows), len(self.shared)
        if self.layout.mesh is None:  # shared with earlier checks (programs)
            one = self.layout.batch_of(self._one, batched=batched, shared=shared)
            code = programs.Batch(one, [*specs, *self.shared])
            compiled: Any = code
            executable = code.compiled
        else:
            fn = self.layout.jit(self._one, batched=batched, shared=shared)
            compiled = executable = fn.lower(*specs, *self.shared).compile()
        self._code["compiled"] = compiled
        self._code["temp_bytes"] = _temp_bytes(executable)
        self.timing.compile_seconds += time.perf_counter() - t0

    def __call__(
        self,
        *rows: np.ndarray,
        fill: Sequence[Any] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """``one`` at every row, as float64.

        Args:
          *rows: one array per batched argument, each of ``N`` rows.
          fill: the row a short last batch is padded with (default zeros);
            pad with a valid row, the padded results are dropped.
          on_batch: called with the number of rows of each batch fetched.

        Returns:
          ``[N]`` float64.
        """
        self.compile()
        arrays = [np.asarray(a, r.dtype) for a, r in zip(rows, self.rows)]
        n = arrays[0].shape[0] if arrays else 0
        out = np.empty((n,), np.float64)
        t0 = time.perf_counter()
        pending: list[tuple[int, int, jax.Array]] = []

        def fetch() -> None:
            start, stop, result = pending.pop(0)
            if not self.timing.ran_on:
                self.timing.ran_on = frozenset(result.sharding.device_set)
            out[start:stop] = np.asarray(result, np.float64)[: stop - start]
            self.timing.n_evals += stop - start
            if on_batch is not None:
                on_batch(stop - start)

        for start in range(0, n, self.batch):
            stop = min(start + self.batch, n)
            padded = self._padded(arrays, start, stop, fill)
            pending.append((start, stop, self.compiled(*padded, *self.shared)))
            if len(pending) > IN_FLIGHT:
                fetch()
        while pending:
            fetch()
        self.timing.run_seconds += time.perf_counter() - t0
        return out

    def _padded(
        self,
        arrays: list[np.ndarray],
        start: int,
        stop: int,
        fill: Sequence[Any] | None,
    ) -> list[jax.Array]:
        """Rows ``start:stop`` as one full batch per argument, on the devices."""
        out = []
        for k, (a, r) in enumerate(zip(arrays, self.rows)):
            b = np.zeros((self.batch, *r.shape), r.dtype)
            if fill is not None:
                b[...] = fill[k]
            b[: stop - start] = a[start:stop]
            out.append(self.layout.put_batch(b))
        return out


class BatchedSweep:
    """Base of a sweep that runs its batches through a :class:`BatchRunner`.

    Gives a sweep the counters the evaluation context sums over its sweeps
    (``compile_seconds``, ``run_seconds``, ``n_evals``, ``ran_on``) and its
    ``batch``, all read from ``self.runner``.
    """

    runner: BatchRunner

    @property
    def batch(self) -> int:
        """Rows per compiled call (a multiple of the device count)."""
        return self.runner.batch

    @property
    def compile_seconds(self) -> float:
        return self.runner.timing.compile_seconds

    @property
    def run_seconds(self) -> float:
        return self.runner.timing.run_seconds

    @property
    def n_evals(self) -> int:
        """Evaluations made so far (counted batch by batch)."""
        return self.runner.timing.n_evals

    @property
    def ran_on(self) -> frozenset[jax.Device]:
        """The devices the batches' results came from."""
        return self.runner.timing.ran_on


def _temp_bytes(compiled: Any) -> int | None:
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    temp = getattr(analysis, "temp_size_in_bytes", None)
    return None if temp is None else int(temp)
