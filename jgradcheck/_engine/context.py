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

from .._errors import where_list
from .._numerics.stencil import (
    STENCILS,
    Central,
    Estimate,
    Kink,
    central,
    default_step,
    descend,
    kinks,
    ladder,
    probe_offsets,
    probe_rounding,
    richardson,
    stencil,
    stencil_step,
    steps_for,
)
from .._pytree.flat import Flat, LeafInfo, split_static
from .devices import Layout, resolve_devices
from .gradient import evaluate
from .progress import LeafProgress, check_progress
from .sweep import DEFAULT_MEMORY_BUDGET, LeafSweep, eval_bytes, group_evaluation

PRECISIONS = ("float64", "native")

NOISE_PROBES = 8
"""Coordinates per leaf at which J's rounding is measured."""


def NOISE_STEP(dtype: np.dtype) -> float:  # noqa: N802
    """Relative step of the rounding probes: ``√eps``.

    Large enough to move intermediates up to ~``eps^(-1/2)`` times larger than
    θ by an ulp. At high frequencies ``u³·J‴`` can exceed the rounding, which
    only makes the error bars wider (unsure, never a false failure).
    """
    return float(np.sqrt(np.finfo(dtype).eps))


GROUP_LEAF_MAX = 1024
"""Leaves of at most this many entries may share one compiled sweep."""

GROUP_BYTES = 2**30
"""Most intermediate bytes (:func:`eval_bytes` per evaluation × 2 evaluations
per entry) a group's first pass may produce. Compiling a sweep takes ~0.2 s
on a CPU whatever the leaf; a dense evaluation of a small leaf's entry costs
one full J. Past this, a leaf gets its own (sparse) sweep."""


def plan_groups(
    loss: Callable[..., Any],
    flat: Flat,
    args: Any,
    measured: dict[tuple[int, ...], tuple[int, int]] | None = None,
) -> dict[int, tuple[LeafInfo, ...]]:
    """``{position: group}``: the small leaves swept by one compiled function.

    Leaves of at most :data:`GROUP_LEAF_MAX` entries and one dtype share one
    dense compiled sweep (biases, norm scales: one compile instead of one per
    leaf), smallest first, while the group's first pass stays within
    :data:`GROUP_BYTES` of intermediates. Groups have at least two leaves.
    ``measured`` receives ``{group positions: eval_bytes}`` for the groups
    whose evaluation was traced here, so their sweep need not trace it again.
    """
    params = split_static(flat.rebuild(flat.leaves))
    by_dtype: dict[np.dtype, list[LeafInfo]] = {}
    for info in flat.checked:
        if info.size <= GROUP_LEAF_MAX:
            dtype = np.dtype(flat.leaves[info.position].dtype)
            by_dtype.setdefault(dtype, []).append(info)
    out: dict[int, tuple[LeafInfo, ...]] = {}
    for dtype, small in by_dtype.items():
        if len(small) < 2:
            continue
        positions = tuple(i.position for i in small)
        one = group_evaluation(loss, params, args, positions)
        per_eval, fixed = eval_bytes(one, dtype, params.dynamic, args.dynamic)
        kept, total = [], 0
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


class NondeterministicLossError(ValueError):
    """The loss gave different values at the same parameters."""


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

    Must be created and used inside :func:`reference_precision`. ``devices``
    and ``progress`` are ``check_grad``'s options (:mod:`jgradcheck._engine.devices`,
    :mod:`jgradcheck._engine.progress`); call :meth:`close` when done.
    """

    def __init__(
        self,
        loss: Callable[..., Any],
        flat: Flat,
        args: tuple,
        *,
        precision: str,
        memory_budget: int | None,
        devices: Any = None,
        progress: Any = None,
    ):
        self.loss = loss
        self.layout = Layout(resolve_devices(devices))
        check_progress(progress)
        self.progress = progress
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
        self._operands: tuple[Any, Any] | None = None
        # Compiled, not eager (one compile, not one per primitive). Whether J
        # is deterministic is tested by :meth:`prime`: twice in one compiled
        # batch (callbacks, runtime randomness), and against this value from
        # another trace (randomness drawn when the loss is traced).
        self.value = float(evaluate(loss, self.flat, args))
        if not np.isfinite(self.value):
            raise ValueError(
                f"`loss` is {self.value} at the given `params` (evaluated in "
                f"{self.j_dtype}); gradients cannot be checked at a non-finite loss."
            )
        self.sweeps: list[LeafSweep] = []
        self._groups: dict[int, tuple[LeafInfo, ...]] | None = None
        self._group_sweeps: dict[tuple[int, ...], LeafSweep] = {}
        self._group_bytes: dict[tuple[int, ...], tuple[int, int]] = {}

    def _same_value(self, other: float, how: str, noise: float = 0.0) -> None:
        """Raise when J(θ) evaluated again differs by more than rounding.

        ``noise`` is J's measured rounding near θ, when known.
        """
        # Two compiled programs may round differently (fusion, FMA), by ulps
        # of the terms J sums, which can exceed ulps of J itself when the
        # terms cancel (J = 0 exactly, say): hence the floor of 1 and the
        # measured rounding. A random loss differs by far more than this.
        tol = 2**10 * self.eps_j * max(abs(self.value), abs(other), 1.0)
        tol = max(tol, 64.0 * noise)
        if abs(other - self.value) <= tol:
            return
        rel = abs(other - self.value) / max(abs(self.value), abs(other))
        raise NondeterministicLossError(
            f"`loss` is not deterministic: {how} at the same params gave "
            f"{self.value!r} and {other!r} (relative difference {rel:.2g}). "
            "Finite differences of a random function measure noise, not a "
            "gradient. The usual cause is dropout or other randomness whose key "
            "changes between calls (a global counter, NumPy or Python random "
            "numbers inside the loss or a callback); the fix is to pass a fixed "
            "`jax.random` key as an argument, or turn dropout off, while checking."
        )

    def same_function_as(
        self,
        native: float,
        native_dtype: np.dtype,
        noise: Callable[[], float] | None = None,
    ) -> None:
        """Raise when J at the params' own precision is not J at the reference's.

        A float32 loss differs from its float64 evaluation by rounding; a loss
        whose random draws depend on the default dtype (``jax.random`` under
        x64) is a different function, and finite differences of it say nothing
        about the gradient under test. The rounding allowed is ``eps·|J|`` or,
        when the values differ by more, ``noise()``: the native J's measured
        rounding (a sum of large terms that cancel rounds far more than its
        value suggests).
        """
        eps = float(np.finfo(native_dtype).eps)
        scale = max(abs(native), abs(self.value))
        gap = abs(native - self.value)
        if gap <= max(1e-3, 64 * eps) * scale:
            return
        if noise is not None and gap <= 8.0 * noise():
            return
        # A random loss differs from itself too: say that, not "different".
        again = float(evaluate(self.loss, self.flat, self.args_tuple))
        self._same_value(again, f"two evaluations in {self.j_dtype}")
        raise ValueError(
            f"`loss` is {native!r} at the params' own precision ({native_dtype}) but "
            f"{self.value!r} when evaluated in {self.j_dtype}: more than rounding "
            "apart, so the float64 reference would check a different function. "
            "The usual cause is randomness drawn in the default dtype (under x64, "
            "`jax.random.bernoulli(key, 0.5, ...)` or `uniform` draw float64 numbers "
            "and a different dropout mask); the fix is to give the draw an explicit "
            "dtype (e.g. `p=jnp.float32(0.5)`, `dtype=jnp.float32`) or to pass "
            "precision='native'."
        )

    def rel_step(self, info: LeafInfo) -> float:
        leaf_dtype = np.dtype(self.flat.leaves[info.position].dtype)
        # J's own precision bounds the roundoff, even if the leaf is wider.
        wider = leaf_dtype if np.finfo(leaf_dtype).eps >= self.eps_j else self.j_dtype
        return default_step(wider)

    def sweep(
        self, info: LeafInfo, n_evals: int, *, coords: int | None = None
    ) -> LeafSweep:
        """The sweep of one leaf, expected to make ``n_evals`` evaluations for
        ``coords`` coordinates (the progress bar's total; default ``n_evals``).
        Closes the previous leaf's sweep."""
        self.close()
        if self._operands is None:
            params = split_static(self.params)
            self._operands = self.layout.replicate((params.dynamic, self.args.dynamic))
        progress = LeafProgress(
            self.progress, info.path or "params", coords or n_evals, n_evals
        )
        if self._groups is None:
            self._groups = plan_groups(
                self.loss, self.flat, self.args, self._group_bytes
            )
        group = self._groups.get(info.position)
        key = tuple(i.position for i in group or ())
        if key in self._group_sweeps:
            sw = self._group_sweeps[key].view(info, progress)
        else:
            if group is not None:  # the group's evaluations, at this leaf's rate
                n_evals = -(-n_evals * sum(i.size for i in group) // info.size)
            sw = LeafSweep(
                self.loss,
                self.flat,
                self.args,
                info,
                n_evals=n_evals,
                memory_budget=self.memory_budget,
                layout=self.layout,
                operands=self._operands,
                progress=progress,
                group=group,
                measured=self._group_bytes.get(key),
            )
            if group is not None:
                self._group_sweeps[key] = sw
        self.sweeps.append(sw)
        return sw

    def close(self) -> None:
        """Close the last leaf's sweep (its progress bar)."""
        if self.sweeps:
            self.sweeps[-1].close()

    def prime(self, sw: LeafSweep) -> None:
        """J(θ) twice from the compiled sweep (it must match the eager value),
        and J's rounding near θ (``sw.noise``).

        The rounding is measured, not assumed to be ``eps·|J|``: for up to
        :data:`NOISE_PROBES` coordinates spread over the leaf, central
        differences at ``u`` and ``2u`` must agree up to ``u³·J‴``; what they
        do not share is rounding. ``u = √eps·max(1, |θᵢ|)`` is large enough
        to move intermediates much larger than θ by an ulp; where ``u³·J‴``
        is not negligible there (a high frequency), the smaller scales
        ``u/16`` and ``u/256`` (:func:`jgradcheck._numerics.stencil.probe_rounding`) shrink it 4096-fold
        each, and the smallest scale at which the four values of J still
        differ is used. A loss that sums large terms which cancel rounds far
        more than ``eps·|J|``; the error bars of every stencil then include it.
        """
        k = np.unique(np.linspace(0, sw.base.size - 1, NOISE_PROBES).astype(np.int64))
        theta = sw.base[k]
        u = NOISE_STEP(sw.dtype) * np.maximum(1.0, np.abs(theta))
        offsets = probe_offsets(u)  # [12, probes]
        idx = np.concatenate([[0, 0], np.tile(k, offsets.shape[0])]).astype(np.int32)
        vals = np.concatenate(
            [sw.base[:1], sw.base[:1], (theta + offsets).astype(sw.dtype).reshape(-1)]
        )
        j = sw(idx, vals)
        sw.j0 = float(j[0])
        # The 75th percentile, not the max: a probe next to a jump must not
        # pass for noise.
        d = probe_rounding(j[2:].reshape(offsets.shape))
        d = d[np.isfinite(d)]
        sw.noise = float(np.quantile(d, 0.75)) if d.size else 0.0
        for v in j[:2]:
            self._same_value(
                float(v), f"the compiled sweep of {sw.info.path or 'params'}", sw.noise
            )

    @staticmethod
    def _finite(
        sw: LeafSweep, idx: np.ndarray, ok: np.ndarray, step: np.ndarray
    ) -> None:
        if ok.all():
            return
        bad = ~ok
        places = [sw.info.where(int(k)) for k in idx[bad]]
        raise ValueError(
            f"`loss` is not finite at θ ± h for {int(bad.sum())} coordinate(s): "
            f"{where_list(places)} (h ≈ {float(np.median(step[bad])):.2g}). "
            "Finite differences cannot be taken across a singularity; check the "
            "loss near these parameters or move `params` away from it."
        )

    def first_pass(
        self, sw: LeafSweep, idx: np.ndarray, rel_step: float | None = None
    ) -> Central:
        """Central differences at the default step for ``idx``; errors on NaN/inf.

        ``rel_step`` overrides the default relative step ``cbrt(eps)``.
        """
        self.prime(sw)
        h = steps_for(sw.base[idx], rel_step or self.rel_step(sw.info))
        c = central(sw, idx, sw.base, h, self.eps_j, sw.noise)
        self._finite(sw, idx, np.isfinite(c.j_plus) & np.isfinite(c.j_minus), c.step)
        return c

    def central_at(self, sw: LeafSweep, idx: np.ndarray, h: np.ndarray) -> Central:
        """Central differences at the steps ``h`` (the sweep must be primed)."""
        return central(sw, idx, sw.base, h, self.eps_j, sw.noise)

    def _widest(self, info: LeafInfo) -> np.dtype:
        """The coarser of the leaf's and J's dtypes: it bounds the roundoff."""
        return max(
            (np.dtype(self.flat.leaves[info.position].dtype), self.j_dtype),
            key=lambda d: np.finfo(d).eps,
        )

    def stencil_rel_step(self, info: LeafInfo, order: int) -> float:
        """``eps^(1/(p+1))``: the relative step of an order-p stencil."""
        return stencil_step(self._widest(info), order)

    def fixed_stencil(
        self, sw: LeafSweep, idx: np.ndarray, method: str, *, primed: bool = False
    ) -> Estimate:
        """Every coordinate with one stencil (see :func:`jgradcheck._numerics.stencil.stencil`).

        The step is ``eps^(1/(p+1))·max(1, |θ|)``, shrunk per coordinate where
        the measured truncation error calls for it.
        """
        if not primed:
            self.prime(sw)
        order = STENCILS[method][2]
        h = steps_for(sw.base[idx], self.stencil_rel_step(sw.info, order))
        est = stencil(sw, idx, sw.base, h, self.eps_j, method, noise=sw.noise)
        self._finite(sw, idx, np.isfinite(est.value), est.step)
        return est

    def refine(self, sw: LeafSweep, idx: np.ndarray, first: Central) -> Estimate:
        return richardson(ladder(sw, idx, sw.base, first, self.eps_j, noise=sw.noise))

    def refine_with_kinks(
        self, sw: LeafSweep, idx: np.ndarray, first: Central
    ) -> tuple[Estimate, Kink, list[Central]]:
        """Richardson-refined estimates, where a kink sits within h/8 of θ, and
        the ladder of central differences they come from."""
        ds = ladder(sw, idx, sw.base, first, self.eps_j, noise=sw.noise)
        return richardson(ds), kinks(ds, sw.j0), ds

    def descend(self, sw: LeafSweep, idx: np.ndarray, ds: list[Central]) -> Estimate:
        """Richardson over ``ds`` continued to much smaller steps."""
        return richardson(descend(sw, idx, sw.base, ds, self.eps_j, noise=sw.noise))

    @property
    def compile_seconds(self) -> float:
        return sum(s.compile_seconds for s in self.sweeps)

    @property
    def sweep_seconds(self) -> float:
        return sum(s.run_seconds for s in self.sweeps)

    @property
    def evaluations(self) -> int:
        return sum(s.n_evals for s in self.sweeps)

    @property
    def ran_on(self) -> tuple[str, ...]:
        """The devices the sweeps' results came from, by name."""
        seen = set().union(*(s.ran_on for s in self.sweeps))
        return tuple(str(d) for d in sorted(seen, key=lambda d: d.id))
