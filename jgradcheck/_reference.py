"""The finite-difference reference: J at reference precision, swept per leaf.

``precision="float64"`` (the default) evaluates J with the checked leaves cast to
float64 inside ``jax.enable_x64(True)``: a scoped switch, so the user's global
JAX configuration is never changed. ``precision="native"`` keeps the params'
own dtypes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import where_list
from ._stencil import Central, Estimate, central, default_step, refine, steps_for
from ._sweep import DEFAULT_MEMORY_BUDGET, LeafSweep, bytes_per_eval, choose_batch
from ._tree import Flat, LeafInfo, split_static

PRECISIONS = ("float64", "native")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}; got {precision!r}.")


@contextlib.contextmanager
def reference_precision(precision: str) -> Iterator[None]:
    """Enable 64-bit types for the duration of the block only, when needed."""
    if precision == "float64" and not jax.config.jax_enable_x64:
        with jax.enable_x64(True):
            yield
    else:
        yield


def _to_float64(x: Any) -> Any:
    """Floating-point array args go to float64 too, so dtype-strict primitives
    (``lax.conv_general_dilated``, ``lax.dot_general`` with
    ``preferred_element_type``) see matching dtypes."""
    if isinstance(x, (jax.Array, np.ndarray)):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.asarray(x, jnp.float64)
        if jnp.issubdtype(x.dtype, jnp.complexfloating):
            return jnp.asarray(x, jnp.complex128)
    return x


class Reference:
    """J at reference precision and the machinery to difference it, leaf by leaf.

    Must be created and used inside :func:`reference_precision`.
    """

    def __init__(
        self,
        loss: Callable[..., Any],
        flat: Flat,
        args: tuple,
        *,
        precision: str,
        memory_budget: int | None,
    ):
        self.loss = loss
        cast = {}
        for info in flat.checked:
            leaf = jnp.asarray(flat.leaves[info.position])
            cast[info.position] = (
                leaf.astype(jnp.float64) if precision == "float64" else leaf
            )
        leaves = list(flat.leaves)
        for pos, v in cast.items():
            leaves[pos] = v
        self.flat = Flat(flat.treedef, tuple(leaves), flat.infos)
        if precision == "float64":
            args = jax.tree_util.tree_map(_to_float64, args)
        self.args = split_static(args)
        self.args_tuple = args
        params = self.flat.rebuild(self.flat.leaves)
        self.params = params
        self.j_dtype = np.dtype(jax.eval_shape(lambda: loss(params, *args)).dtype)
        self.eps_j = float(np.finfo(self.j_dtype).eps)
        self.memory_budget = int(memory_budget or DEFAULT_MEMORY_BUDGET)
        if self.memory_budget <= 0:
            raise ValueError(f"`memory_budget` must be positive; got {memory_budget}.")
        self.backend = jax.default_backend()
        self._per_eval: int | None = None
        self.value = float(loss(params, *args))
        if not np.isfinite(self.value):
            raise ValueError(
                f"`loss` is {self.value} at the given `params` (evaluated in "
                f"{self.j_dtype}); gradients cannot be checked at a non-finite loss."
            )
        self.sweeps: list[LeafSweep] = []

    def rel_step(self, info: LeafInfo) -> float:
        leaf_dtype = np.dtype(self.flat.leaves[info.position].dtype)
        # J's own precision bounds the roundoff, even if the leaf is wider.
        wider = leaf_dtype if np.finfo(leaf_dtype).eps >= self.eps_j else self.j_dtype
        return default_step(wider)

    def _bytes_per_eval(self) -> int:
        if self._per_eval is None:
            params = self.flat.rebuild(self.flat.leaves)
            args = self.args.merge(self.args.dynamic)
            self._per_eval = bytes_per_eval(lambda: self.loss(params, *args))
        return self._per_eval

    def sweep(self, info: LeafInfo, n_evals: int) -> LeafSweep:
        batch = choose_batch(
            self._bytes_per_eval(),
            n_evals,
            memory_budget=self.memory_budget,
            backend=self.backend,
        )
        sw = LeafSweep(self.loss, self.flat, self.args, info, batch)
        self.sweeps.append(sw)
        return sw

    def first_pass(self, sw: LeafSweep, idx: np.ndarray) -> Central:
        """Central differences at the default step for ``idx``; errors on NaN/inf."""
        h = steps_for(sw.base[idx], self.rel_step(sw.info))
        c = central(sw, idx, sw.base, h, self.eps_j)
        bad = ~(np.isfinite(c.j_plus) & np.isfinite(c.j_minus))
        if bad.any():
            places = [sw.info.where(int(k)) for k in idx[bad]]
            raise ValueError(
                f"`loss` is not finite at θ ± h for {int(bad.sum())} coordinate(s): "
                f"{where_list(places)} (h ≈ {float(np.median(c.step[bad])):.2g}). "
                "Finite differences cannot be taken across a singularity; check the "
                "loss near these parameters or move `params` away from it."
            )
        return c

    def refine(self, sw: LeafSweep, idx: np.ndarray, first: Central) -> Estimate:
        return refine(sw, idx, sw.base, first, self.eps_j)

    @property
    def compile_seconds(self) -> float:
        return sum(s.compile_seconds for s in self.sweeps)

    @property
    def sweep_seconds(self) -> float:
        return sum(s.run_seconds for s in self.sweeps)

    @property
    def evaluations(self) -> int:
        return sum(s.n_evals for s in self.sweeps)
