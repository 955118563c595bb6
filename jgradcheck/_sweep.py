"""The sweep engine: J(θ) with entries of one leaf replaced, many at once.

For each checked leaf ``L`` the engine compiles (once) a function that takes a
batch of ``(flat index, new value)`` pairs and returns ``J`` with
``L.flat[index] = value`` for each pair, ``vmap``-ped over the batch. The other
leaves and ``args`` are passed as unbatched arguments, so work that does not
depend on ``L`` is done once per batch, not once per coordinate. Batches have a
fixed size (the last one is padded), so each leaf compiles exactly once.

The engine only evaluates ``J``; stencils and verdicts live elsewhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._sparse import sparse_loss
from ._tree import Flat, LeafInfo, Split, split_static

DEFAULT_MEMORY_BUDGET = 2 * 2**30

SPARSE = True
"""Default for :class:`LeafSweep`'s ``sparse`` (bench/sweep.py compares both)."""
"""Default bound on the memory one batch of evaluations may take (bytes)."""

_CPU_WORKING_SET = 16 * 2**20
# On a CPU, batches whose working set exceeds the caches run slower per
# coordinate: on the 26k-parameter MLP of bench/sweep.py (0.2 MiB of
# intermediates per evaluation) batches of 64 evaluations beat 16 and 256.
_MAX_BATCH = {"cpu": 512, "default": 8192}


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


def _jaxpr_bytes(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += sum(_aval_bytes(v) for v in eqn.outvars)
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                total += _jaxpr_bytes(inner)
            elif hasattr(p, "eqns"):
                total += _jaxpr_bytes(p)
    return total


def bytes_per_eval(fn: Callable[..., Any], *example: Any) -> int:
    """Sum of the sizes of every intermediate of one evaluation of ``fn``.

    An upper bound on the extra memory one more coordinate in a batch costs.
    """
    closed = jax.make_jaxpr(fn)(*example)
    return max(_jaxpr_bytes(closed.jaxpr), 1)


def choose_batch(
    per_eval: int, n_evals: int, *, memory_budget: int, backend: str
) -> int:
    """Evaluations per compiled call, from a memory budget and the backend.

    Each evaluation in a batch holds its own intermediates (``per_eval`` bytes,
    an upper bound that includes a copy of the leaf). On CPU the batch is also
    kept within a cache-sized working set; on accelerators only the budget
    applies. Never more than needed.
    """
    per = per_eval
    budget = memory_budget
    if backend == "cpu":
        budget = min(budget, _CPU_WORKING_SET)
    cap = _MAX_BATCH.get(backend, _MAX_BATCH["default"])
    batch = max(2, min(cap, budget // max(per, 1)))
    batch = min(batch, max(2, n_evals))
    # Round to a power of two so leaves of similar size share batch shapes.
    batch = 2 ** int(math.floor(math.log2(batch)))
    return max(2, batch)


class LeafSweep:
    """Evaluates J with single entries of one leaf replaced, in compiled batches.

    Args:
      loss: the user's scalar function ``loss(params, *args)``.
      flat: the parameters at reference precision.
      args: the fixed extra arguments.
      info: the leaf to perturb.
      batch: evaluations per compiled call (fixed, so one compile).
      sparse: evaluate through :mod:`jgradcheck._sparse`, sharing the leaf's
        matrix products across the batch (False: perturb a dense copy;
        None: the module default ``SPARSE``).
    """

    def __init__(
        self,
        loss: Callable[..., Any],
        flat: Flat,
        args: Split,
        info: LeafInfo,
        batch: int,
        *,
        sparse: bool | None = None,
    ):
        self.info = info
        self.batch = int(batch)
        self.compile_seconds = 0.0
        self.run_seconds = 0.0
        self.n_evals = 0
        params = split_static(flat.rebuild(flat.leaves))
        self._params_split = params
        self._args_split = args
        pos = info.position
        shape = info.shape

        size = info.size

        def dense(i, v, pdyn, adyn):
            leaves = list(pdyn)
            # A select, not a scatter: under vmap this is one fused pass that
            # writes each perturbed copy of the leaf once.
            flat = leaves[pos].reshape(-1)
            hit = jax.lax.iota(jnp.int32, size) == i
            leaves[pos] = jnp.where(hit, v.astype(flat.dtype), flat).reshape(shape)
            return loss(params.merge(leaves), *args.merge(adyn))

        one = dense
        if SPARSE if sparse is None else sparse:

            def of_leaf(leaf, rest):
                pdyn, adyn = rest
                leaves = list(pdyn)
                leaves[pos] = leaf
                return loss(params.merge(leaves), *args.merge(adyn))

            def split(pdyn):
                return tuple(None if k == pos else x for k, x in enumerate(pdyn))

            f = sparse_loss(
                of_leaf, params.dynamic[pos], (split(params.dynamic), args.dynamic)
            )

            def one(i, v, pdyn, adyn):
                return f(i, v, pdyn[pos], (split(pdyn), adyn))

        def batched(idx, vals, pdyn, adyn):
            return jax.vmap(one, in_axes=(0, 0, None, None))(idx, vals, pdyn, adyn)

        self._fn = jax.jit(batched)
        self._compiled = None
        self.dtype = np.dtype(flat.leaves[pos].dtype)
        self.base = np.asarray(flat.leaves[pos], self.dtype).reshape(-1)
        """The leaf's values at the reference precision, flattened."""

    def _ensure_compiled(self) -> None:
        if self._compiled is not None:
            return
        t0 = time.perf_counter()
        idx = jnp.zeros((self.batch,), jnp.int32)
        vals = jnp.zeros((self.batch,), self.dtype)
        self._compiled = self._fn.lower(
            idx, vals, self._params_split.dynamic, self._args_split.dynamic
        ).compile()
        self.compile_seconds += time.perf_counter() - t0

    def __call__(self, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``J`` with ``leaf.flat[idx[k]] = values[k]`` for each k, as float64."""
        self._ensure_compiled()
        idx = np.asarray(idx, np.int32)
        values = np.asarray(values, self.dtype)
        n = idx.shape[0]
        out = np.empty((n,), np.float64)
        t0 = time.perf_counter()
        pending = []
        for start in range(0, n, self.batch):
            stop = min(start + self.batch, n)
            bi = np.zeros((self.batch,), np.int32)
            bv = np.full((self.batch,), self.base[0], self.dtype)
            bi[: stop - start] = idx[start:stop]
            bv[: stop - start] = values[start:stop]
            res = self._compiled(
                bi, bv, self._params_split.dynamic, self._args_split.dynamic
            )
            pending.append((start, stop, res))
            # Keep a couple of batches in flight; fetch the older ones.
            if len(pending) > 2:
                s0, s1, r = pending.pop(0)
                out[s0:s1] = np.asarray(r, np.float64)[: s1 - s0]
        for s0, s1, r in pending:
            out[s0:s1] = np.asarray(r, np.float64)[: s1 - s0]
        self.run_seconds += time.perf_counter() - t0
        self.n_evals += n
        return out
