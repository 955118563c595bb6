"""What the engine's sweeps are, as protocols: what the context counts, what
the stencils difference.

:class:`jgradcheck._engine.sweep.LeafSweep` (a leaf's sweep, the complex
step's too) is a :class:`Sweep`; fast mode's directional sweep, which
perturbs along directions rather than entries, is only :class:`SweepCounters`.
Sweeps made outside the evaluation context are registered with it
(:meth:`jgradcheck._engine.context.EvalContext.register`) for the timing.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .._pytree.flat import LeafInfo


class SweepCounters(Protocol):
    """What every sweep keeps for the report's timing, and can close."""

    compile_seconds: float
    run_seconds: float
    n_evals: int
    ran_on: frozenset[Any]
    """The devices its results came from."""

    def close(self) -> None: ...


class Sweep(SweepCounters, Protocol):
    """J with single entries of one leaf replaced: what the stencils difference.

    ``sweep(idx, values)`` is J with ``leaf.flat[idx[k]] = values[k]`` for
    each k, as float64; ``base`` is the leaf's values at the reference
    precision (flattened, in ``dtype``); ``batch`` the evaluations per call.
    """

    info: LeafInfo
    base: np.ndarray
    dtype: np.dtype
    batch: int

    def __call__(self, idx: np.ndarray, values: np.ndarray) -> np.ndarray: ...
