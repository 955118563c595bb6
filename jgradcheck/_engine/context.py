"""The evaluation context of one check: J at reference precision, and its sweeps.

``precision="float64"`` (the default) evaluates J with the checked leaves cast
to float64 inside ``jax.enable_x64(True)`` (:func:`reference_precision`: a
scoped switch, so the user's global JAX configuration is never changed).
``precision="native"`` keeps the params' own dtypes.

An :class:`EvalContext` owns, for one check:

* the params and args at the reference precision, and J(θ) there;
* the determinism check (:meth:`EvalContext.check_deterministic`) and the
  check that J at the params' own precision is the same function
  (:meth:`EvalContext.check_same_function`);
* the sweeps it hands out, one leaf at a time (:meth:`EvalContext.sweep`;
  small leaves share one, :func:`jgradcheck._engine.groups.plan_groups`), and
  their priming (:meth:`EvalContext.prime` returns J(θ) from the compiled
  sweep and J's measured rounding as a :class:`Primed`);
* the timing of every sweep it handed out or was given
  (:meth:`EvalContext.register`), and closing them.

Stencils are not here: the leaf layer applies :mod:`jgradcheck._numerics.stencil`
to a :class:`Sweep` directly. :func:`evaluation_context` opens the precision
scope and the context together and closes the sweeps however the block ends::

    with evaluation_context(loss, flat, args, opts) as ctx:
        sw = ctx.sweep(info, n_evals)
        primed = ctx.prime(sw)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import cast, narrowest_computed, on_device, tiny
from .._dtypes import eps as eps_of
from .._errors import NondeterministicLossError
from .._numerics.rounding import (
    PROBE_QUANTILE,
    narrowest_dtype,
    probe_step,
    rounding_from_probes,
)
from .._numerics.stencil import default_step, probe_offsets, probe_rounding
from .._numerics.verdict import EPS_ACCUMULATE
from .._options import Options
from .._pytree.flat import Flat, LeafInfo, split_static
from .._report.records import Timing
from .._typing import Precision, PyTree
from .devices import Layout, resolve_devices
from .gradient import evaluate, loss_jaxpr, path_dtypes, value_and_gradient
from .groups import Groups, plan_groups
from .precision import effective_dtype, x64_enabled
from .progress import LeafProgress, check_progress
from .protocols import Sweep, SweepCounters
from .sweep import LeafSweep

NOISE_PROBES = 8
"""Coordinates per leaf at which J's rounding is measured (:meth:`EvalContext.prime`)."""


REORDER_ULPS = 2.0**10
"""How far two compiled evaluations of a deterministic J may differ, in ulps
of the precision its sums accumulate in, relative to ``max(|J|, 1)``: a sum of
n terms reordered differs by up to ~n·eps·Σ|terms|."""

RESTORE_ULPS = 8.0
"""The same, in ulps of a narrow dtype J computes in (bfloat16, float16).

XLA accumulates narrow floats in float32, so reordering costs float32 ulps;
what differs in the narrow dtype is whether fusion stores an intermediate
(rounding it by half an ulp) or keeps it in float32: a few such roundings per
term, each at most an ulp, in each of two evaluations. 2¹⁰ ulps of bfloat16
would be 8·max(|J|, 1), and no random loss would ever be caught."""


def deterministic_rel(eps: float) -> float:
    """How far two evaluations of a deterministic J computed at machine
    epsilon ``eps`` may differ, relative to ``max(|J|, 1)``.

    ``REORDER_ULPS`` ulps of the accumulation precision (``eps`` itself, or
    float32's for narrower dtypes), and at least ``RESTORE_ULPS`` ulps of
    ``eps``: 2¹⁰·eps for float32 and float64, 2⁻⁴ for bfloat16, 2⁻⁷ for float16.
    """
    return max(REORDER_ULPS * min(eps, EPS_ACCUMULATE), RESTORE_ULPS * eps)


def different_function(
    native: float, value: float, native_dtype: np.dtype, reference_dtype: Any
) -> str:
    """Why J at the params' own precision and at the reference's differ by more
    than rounding, and what to do: randomness drawn in the default dtype, or an
    intermediate value outside the narrower dtype's range (said first when the
    native J is exactly zero: an underflow flushed to zero)."""
    info = jnp.finfo(native_dtype)
    random = (
        "randomness drawn in the default dtype (under x64, "
        "`jax.random.bernoulli(key, 0.5, ...)` or `uniform` draw float64 numbers "
        "and a different dropout mask); the fix is to give the draw an explicit "
        "dtype (e.g. `p=jnp.float32(0.5)`, `dtype=jnp.float32`)"
    )
    out_of_range = (
        f"an intermediate value that {native_dtype} cannot hold and "
        f"{reference_dtype} can (below {native_dtype}'s smallest normal number, "
        f"{float(info.tiny):.3g}, it becomes 0 on a CPU; above its largest, "
        f"{float(info.max):.3g}, inf); the fix is to compute that part in a "
        "range-safe form (logarithms: `jnp.logaddexp`, `jax.nn.log_softmax`; "
        "or rescale it)"
    )
    causes = (out_of_range, random) if native == 0.0 else (random, out_of_range)
    return (
        f"`loss` is {native!r} at the params' own precision ({native_dtype}) but "
        f"{value!r} when evaluated in {reference_dtype}: more than rounding apart, "
        "so the float64 reference would check a different function. The usual "
        f"causes: {causes[0]}; or {causes[1]}. Either way, precision='native' "
        "checks the loss as it is computed."
    )


class Primed(NamedTuple):
    """What priming a sweep measured (:meth:`EvalContext.prime`)."""

    j0: float
    """J(θ) from the compiled sweep."""
    rounding: float
    """J's measured rounding near θ (absolute), for the stencils' error bars."""


@contextlib.contextmanager
def reference_precision(precision: Precision) -> Iterator[None]:
    """Enable 64-bit types for the duration of the block only, when needed."""
    if precision == "float64" and not x64_enabled():
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
            return cast(x, np.float64)
        if jnp.issubdtype(x.dtype, jnp.complexfloating):
            return cast(x, np.complex128)
    return x


def to_float64_args(args: tuple) -> tuple:
    """``args`` with their floating-point arrays in float64 (call in x64 scope)."""
    return tuple(jax.tree_util.tree_map(_to_float64, tuple(args)))


def at_precision(flat: Flat, precision: Precision) -> Flat:
    """``flat`` with its checked leaves as JAX arrays, in float64 for ``"float64"``.

    For ``"native"``, each leaf in its effective dtype
    (:func:`jgradcheck._engine.precision.effective_dtype`; call it under the
    caller's x64 setting): with x64 off a float64 leaf is float32 to JAX, and
    a sweep that perturbed its float64 values would see its steps rounded to
    float32 (a relative error of ``eps32/h`` ≈ 2e-5 at ``h = cbrt(eps32)``)."""
    leaves = list(flat.leaves)
    for info in flat.checked:
        leaf = on_device(flat.leaves[info.position])
        dtype = jnp.float64 if precision == "float64" else effective_dtype(leaf.dtype)
        leaves[info.position] = leaf if leaf.dtype == dtype else cast(leaf, dtype)
    return Flat(flat.treedef, tuple(leaves), flat.infos)


class EvalContext:
    """J at reference precision for one check, and the sweeps that difference it.

    Must be created and used inside :func:`reference_precision` (or through
    :func:`evaluation_context`). A context manager: leaving the block closes
    every sweep (their progress bars), whether or not it raised.

    Args:
      loss: ``loss(params, *args)``, a real scalar.
      flat: the params, at their own precision.
      args: the extra arguments of ``loss``.
      opts: the check's options; reads ``precision``, ``memory_budget``,
        ``devices``, ``progress`` and ``engine``.
      native_dtypes: ``{leaf position: dtype}``, the dtype each checked leaf
        is computed in under the caller's x64 setting (float32 for float64
        arrays while x64 is off); default: the leaves' own dtypes.

    Raises:
      TypeError, ValueError: for bad ``devices`` or ``progress``, or a loss
        that is not finite at ``params``.
    """

    def __init__(
        self,
        loss: Callable[..., Any],
        flat: Flat,
        args: tuple,
        opts: Options,
        *,
        native_dtypes: dict[int, np.dtype] | None = None,
        with_gradient: bool = False,
        wrap: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    ):
        self.loss = loss
        self._native_dtypes = native_dtypes or {}
        self.opts = opts
        self.layout = Layout(resolve_devices(opts.devices))
        check_progress(opts.progress)
        self.native_flat = flat
        self.flat = at_precision(flat, opts.precision)
        if opts.precision == "float64":
            args = jax.tree_util.tree_map(_to_float64, args)
        self.args = split_static(args)
        self.args_tuple = args
        params = self.flat.rebuild(self.flat.leaves)
        self.params: PyTree = params
        jaxpr, out = loss_jaxpr(loss, self.flat, args)
        self.j_dtype = np.dtype(out.dtype)
        self.eps_j = eps_of(self.j_dtype)
        self.computed_dtype = narrowest_computed(jaxpr, self.j_dtype)
        """The least precise float dtype J computes in (its own, or narrower
        where the loss casts inside): it bounds how two evaluations may differ."""
        self.path_dtypes = path_dtypes(jaxpr, self.flat)
        """``{position: dtype}``: leaves the loss casts to a less precise
        dtype (``p.astype(jnp.float32)`` of a float64 leaf), whose finite
        differences round at that dtype whatever the reference precision."""
        self.memory_budget = opts.memory_budget
        # Compiled, not eager (one compile, not one per primitive). Whether J
        # is deterministic is tested by :meth:`prime`: twice in one compiled
        # batch (callbacks, runtime randomness), and against this value from
        # another trace (randomness drawn when the loss is traced).
        self.gradient: dict[int, Any] | None = None
        """``jax.grad(loss)`` at the reference precision, by leaf position,
        when asked for (``with_gradient``; of ``wrap(loss)`` when ``wrap`` is
        given, e.g. the primal with custom rules inlined): J and its gradient
        then come from one compiled program instead of two (the check needs
        both when the gradient under test, or its autodiff yardstick, is at a
        narrower precision). None when ``wrap(loss)`` cannot be differentiated
        (the caller then finds out why on its own)."""
        value = None
        if with_gradient:
            try:
                value, self.gradient = value_and_gradient(
                    loss, self.flat, args, wrap=wrap
                )
            except Exception:  # noqa: BLE001 - only the wrapped loss may fail
                if wrap is None:
                    raise
        self.value = float(evaluate(loss, self.flat, args) if value is None else value)
        if not np.isfinite(self.value):
            raise ValueError(
                f"`loss` is {self.value} at the given `params` (evaluated in "
                f"{self.j_dtype}); gradients cannot be checked at a non-finite loss."
            )
        self._sweeps: list[SweepCounters] = []
        self._open: list[SweepCounters] = []
        self._operands: tuple[Any, Any] | None = None
        self._groups: Groups | None = None
        self._group_sweeps: dict[tuple[int, ...], LeafSweep] = {}
        self._group_bytes: dict[tuple[int, ...], tuple[int, int]] = {}

    def __enter__(self) -> EvalContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------- checks of J itself

    def check_deterministic(
        self, other: float, how: str, rounding: float = 0.0
    ) -> None:
        """Raise when J(θ) evaluated again (``other``, ``how``) differs by more
        than rounding from :attr:`value`.

        ``rounding`` is J's measured rounding near θ, when known.

        Raises:
          NondeterministicLossError: naming the usual causes and the fix.
        """
        # Two compiled programs may round differently (fusion, FMA, the order
        # of a sum), by ulps of the terms J sums, which can exceed ulps of J
        # itself when the terms cancel (J = 0 exactly, say): hence the floor
        # of 1 and the measured rounding. A random loss differs by far more.
        tol = deterministic_rel(eps_of(self.computed_dtype))
        tol *= max(abs(self.value), abs(other), 1.0)
        tol = max(tol, 64.0 * rounding)
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

    def check_same_function(
        self,
        native: float,
        native_dtype: np.dtype,
        rounding: Callable[[], float] | None = None,
    ) -> None:
        """Raise when J at the params' own precision is not J at the reference's.

        A float32 loss differs from its float64 evaluation by rounding; a loss
        whose random draws depend on the default dtype (``jax.random`` under
        x64) is a different function, and finite differences of it say nothing
        about the gradient under test. The rounding allowed is ``eps·|J|`` or,
        when the values differ by more, ``rounding()``: the native J's measured
        rounding (a sum of large terms that cancel rounds far more than its
        value suggests), asked for only then. J below the native dtype's
        smallest normal number is not compared: it may have been flushed to
        zero, and says nothing about the function.

        Raises:
          NondeterministicLossError: J differs from itself at the reference
            precision too.
          ValueError: J at the two precisions is more than rounding apart.
        """
        eps = eps_of(native_dtype)
        scale = max(abs(native), abs(self.value))
        gap = abs(native - self.value)
        # A narrow J (bfloat16, float16) rounds each stored intermediate by
        # half an ulp and sums in float32: a few ulps of its own dtype, not 64
        # (50% of J in bfloat16, which no different dropout mask exceeds).
        if gap <= max(1e-3, 64 * min(eps, EPS_ACCUMULATE), RESTORE_ULPS * eps) * scale:
            return
        # Below the smallest normal number the native J is flushed to zero
        # (XLA on a CPU) or subnormal: it says nothing finer than that.
        if scale < tiny(native_dtype):
            return
        if rounding is not None and gap <= 8.0 * rounding():
            return
        # A random loss differs from itself too: say that, not "different".
        again = float(evaluate(self.loss, self.flat, self.args_tuple))
        self.check_deterministic(again, f"two evaluations in {self.j_dtype}")
        raise ValueError(
            different_function(native, self.value, native_dtype, self.j_dtype)
        )

    # ------------------------------------------------------------- steps

    def leaf_dtype(self, info: LeafInfo) -> np.dtype:
        """The dtype a leaf is perturbed in (the reference precision's)."""
        return np.dtype(self.flat.leaves[info.position].dtype)

    def native_dtype(self, info: LeafInfo) -> np.dtype:
        """The dtype the leaf is computed in under the caller's x64 setting
        (the one the gradient under test was computed in); the same as
        :meth:`leaf_dtype` with ``precision="native"``."""
        if info.position in self._native_dtypes:
            return self._native_dtypes[info.position]
        leaf = self.native_flat.leaves[info.position]
        return np.dtype(
            leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        )

    def bounding_dtype(self, info: LeafInfo) -> np.dtype:
        """The least precise of the leaf's and J's dtypes and the dtype the
        loss casts the leaf to (:attr:`path_dtypes`): it bounds roundoff (J's
        own precision does, even when the leaf is wider, and so does a cast
        inside the loss, even when J and the leaf are float64)."""
        cast = self.path_dtypes.get(info.position, self.j_dtype)
        return narrowest_dtype(self.leaf_dtype(info), self.j_dtype, cast)

    def rel_step(self, info: LeafInfo) -> float:
        """The default relative step ``cbrt(eps)`` of a leaf's central differences."""
        return default_step(self.bounding_dtype(info))

    # ------------------------------------------------------------ sweeps

    def operands(self) -> tuple[Any, Any]:
        """The dynamic leaves of params and args, placed on the devices once
        and shared by every sweep of this context."""
        if self._operands is None:
            params = split_static(self.params)
            self._operands = self.layout.replicate((params.dynamic, self.args.dynamic))
        return self._operands

    def sweep(
        self, info: LeafInfo, n_evals: int, *, coords: int | None = None
    ) -> LeafSweep:
        """The sweep of one leaf, expected to make ``n_evals`` evaluations for
        ``coords`` coordinates (the progress bar's total; default ``n_evals``).

        Closes the sweeps handed out before; ``opts.engine.on_sweep`` hears of
        the new one (a view of a group's sweep is new too).
        """
        self.close()
        progress = LeafProgress(
            self.opts.progress, info.path or "params", coords or n_evals, n_evals
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
                operands=self.operands(),
                progress=progress,
                group=group,
                measured=self._group_bytes.get(key),
                engine=self.opts.engine,
            )
            if group is not None:
                self._group_sweeps[key] = sw
        if self.opts.engine.on_sweep is not None:
            self.opts.engine.on_sweep(sw)
        self.register(sw)
        return sw

    def register(self, sweep: SweepCounters) -> None:
        """Count a sweep made elsewhere (a complex-step or directional sweep)
        in the timing, and close it with the others."""
        self._sweeps.append(sweep)
        self._open.append(sweep)

    def prime(self, sw: Sweep) -> Primed:
        """J(θ) twice from the compiled sweep, which must match :attr:`value`,
        and J's rounding near θ.

        The rounding is measured, not assumed to be ``eps·|J|``: for up to
        :data:`NOISE_PROBES` coordinates spread over the leaf, central
        differences at ``u`` and ``2u`` must agree up to ``u³·J‴``; what they
        do not share is rounding. ``u = √eps·max(1, |θᵢ|)`` is large enough
        to move intermediates much larger than θ by an ulp; where ``u³·J‴``
        is not negligible there (a high frequency), the smaller scales
        ``u/16`` and ``u/256`` (:func:`jgradcheck._numerics.stencil.probe_rounding`)
        shrink it 4096-fold each, and the smallest scale at which the four
        values of J still differ is used. The probes become one rounding by
        :func:`jgradcheck._numerics.rounding.rounding_from_probes` (their
        upper quartile). A loss that sums large terms which cancel rounds far
        more than ``eps·|J|``; the error bars of every stencil then include it.

        Raises:
          NondeterministicLossError: the compiled sweep's J(θ) is not J(θ).
        """
        k = np.unique(np.linspace(0, sw.base.size - 1, NOISE_PROBES).astype(np.int64))
        theta = sw.base[k]
        # A leaf the loss casts to a narrower dtype rounds at that one's ulps:
        # probes at float64's √eps would not move it at all.
        cast = self.path_dtypes.get(sw.info.position, sw.dtype)
        u = probe_step(narrowest_dtype(sw.dtype, cast)) * np.maximum(1.0, np.abs(theta))
        offsets = probe_offsets(u)  # [12, probes]
        idx = np.concatenate([[0, 0], np.tile(k, offsets.shape[0])]).astype(np.int32)
        vals = np.concatenate(
            [sw.base[:1], sw.base[:1], (theta + offsets).astype(sw.dtype).reshape(-1)]
        )
        j = sw(idx, vals)
        measured = probe_rounding(j[2:].reshape(offsets.shape))
        rounding = float(rounding_from_probes(measured, quantile=PROBE_QUANTILE))
        for v in j[:2]:
            self.check_deterministic(
                float(v), f"the compiled sweep of {sw.info.path or 'params'}", rounding
            )
        return Primed(j0=float(j[0]), rounding=rounding)

    def close(self) -> None:
        """Close the open sweeps (their progress bars; compiled code not shared)."""
        while self._open:
            self._open.pop(0).close()

    # ------------------------------------------------------------ timing

    @property
    def sweeps(self) -> tuple[SweepCounters, ...]:
        """Every sweep handed out or registered, in order."""
        return tuple(self._sweeps)

    @property
    def compile_seconds(self) -> float:
        return sum(s.compile_seconds for s in self._sweeps)

    @property
    def sweep_seconds(self) -> float:
        return sum(s.run_seconds for s in self._sweeps)

    @property
    def evaluations(self) -> int:
        return sum(s.n_evals for s in self._sweeps)

    @property
    def ran_on(self) -> tuple[str, ...]:
        """The devices the sweeps' results came from, by name."""
        seen: set[Any] = set().union(*(s.ran_on for s in self._sweeps))
        return tuple(str(d) for d in sorted(seen, key=lambda d: d.id))

    def timing(self) -> Timing:
        """The report's timing of every sweep so far."""
        return Timing(
            self.compile_seconds, self.sweep_seconds, self.evaluations, self.ran_on
        )


@contextlib.contextmanager
def evaluation_context(
    loss: Callable[..., Any],
    flat: Flat,
    args: tuple,
    opts: Options,
    *,
    with_gradient: bool = False,
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
) -> Iterator[EvalContext]:
    """:func:`reference_precision` and an :class:`EvalContext` in it, together.

    The sweeps are closed however the block ends. ``with_gradient``, ``wrap``:
    see :attr:`EvalContext.gradient`.
    """
    native = {
        i.position: effective_dtype(jnp.result_type(flat.leaves[i.position]))
        for i in flat.checked
    }  # under the caller's x64 setting, before the reference scope
    with (
        reference_precision(opts.precision),
        EvalContext(
            loss,
            flat,
            args,
            opts,
            native_dtypes=native,
            with_gradient=with_gradient,
            wrap=wrap,
        ) as ctx,
    ):
        yield ctx
