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

    @property
    def compile_seconds(self) -> float: ...
    @property
    def run_seconds(self) -> float: ...
    @property
    def n_evals(self) -> int: ...
    @property
    def ran_on(self) -> frozenset[Any]:
        """The devices its results came from."""
        ...

    def close(self) -> None: ...


class Sweep(SweepCounters, Protocol):
    """J with single entries of one leaf replaced: what the stencils difference.

    ``sweep(idx, values)`` is J with ``leaf.flat[idx[k]] = values[k]`` for
    each k, as float64; ``base`` is the leaf's values at the reference
    precision (flattened, in ``dtype``); ``batch`` the evaluations per call.
    """

    @property
    def info(self) -> LeafInfo: ...
    @property
    def base(self) -> np.ndarray: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def batch(self) -> int: ...

    def __call__(self, idx: np.ndarray, values: np.ndarray) -> np.ndarray: ...
