"""check_vjp / assert_vjp: test a reverse-mode rule (typically a jax.custom_vjp)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import eps as eps_of
from .._dtypes import on_device
from .._engine.context import reference_precision
from .._engine.gradient import Pullback
from .._engine.primal_ad import inlined, rules_in
from .._errors import raise_unless_ok
from .._numerics.reference import REFERENCE_FACTOR
from .._numerics.verdict import judge, yardstick_rounding
from .._options import Options
from .._pytree.flat import Flat, LeafInfo
from .._report.precision_records import PrecisionMatch
from .._report.records import ReferenceCheck
from .._report.report import Report, RuleReport
from .._report.rule_records import Check, DotTest
from .._typing import Method, Precision, PyTree
from .directional import pair_dot as _dot
from .directional import widen, widen_np
from .points import validate_points, with_points
from .pointwise import VJPAtPoints, dot_fd
from .recorded import records_call
from .reference import (
    disagreement,
    leaf_against,
    reference_check,
    validate_reference,
)
from .rule_precision import vjp_matched
from .rules import (
    RuleInputs,
    RuleRun,
    check_per_coordinate,
    check_rule,
    floats,
    of_floats,
    outputs,
    readable,
    readable_directions,
    within,
)
from .structure import structure


def _cotangent(
    out_infos: list[LeafInfo], out_def: Any, seed: int, pair: int, only: int | None
) -> PyTree:
    """A readable cotangent on output leaf ``only`` (None: on every float leaf)."""
    leaves: list[Any] = []
    for o in out_infos:
        if not o.is_checked:
            leaves.append(np.zeros(o.shape, jax.dtypes.float0))
        elif only is None or o.position == only:
            leaves.append(
                on_device(readable(o.shape, o.dtype, [seed, 0, o.position, pair]))
            )
        else:
            leaves.append(jnp.zeros(o.shape, o.dtype))
    return jax.tree_util.tree_unflatten(out_def, leaves)


def _pullbacks(
    run: RuleRun,
) -> tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
    """The yardstick of the dot tests: ``(native, reference)`` pullbacks.

    Where ``f`` uses no custom rule of the user's, the rule *is* JAX's
    autodiff: ``(None, its pullback at reference precision)``, its rounding
    measured entry by entry. Else autodiff of the primal (rules inlined) at
    the native and at reference precision; ``(None, None)`` where AD cannot
    differentiate the primal (the fixed allowance then).
    """
    inputs = run.inputs
    with reference_precision(inputs.opts.precision):
        if not rules_in(inputs.of_floats, run.at_reference):
            return None, Pullback(inputs.of_floats, run.at_reference)
    primal = inlined(inputs.of_floats)
    # Where AD cannot differentiate the primal, applying these raises, and
    # the dot tests fall back to the fixed allowance (_dot_rounding).
    return Pullback(primal, inputs.floats), Pullback(primal, run.at_reference)


def _dot_tests(run: RuleRun, pairs: int) -> list[DotTest]:
    """One DotTest per floating-point output leaf: ⟨ȳ, FD(J·u)⟩ vs ⟨Jᵀȳ, u⟩."""
    inputs, us = run.inputs, run.directions
    flat, seed, precision = inputs.flat, inputs.seed, inputs.opts.precision
    out_infos, out_def = run.out_infos, run.out_def
    u_stack = [np.stack([u[k] for u in us]) for k in range(len(flat.checked))]
    in_float64 = precision == "float64"
    native_ad, vjp_ref = _pullbacks(run) if in_float64 else (None, None)
    tests = []
    eps_in = max(eps_of(i.dtype) for i in flat.checked)
    for o in out_infos:
        if not o.is_checked:
            continue
        cts = [
            _cotangent(out_infos, out_def, seed, p, o.position) for p in range(pairs)
        ]
        stacked = _stacked(cts)
        rule = _dot(jax.vmap(run.apply)(stacked)[0], u_stack)
        rounding = _dot_rounding(rule, stacked, u_stack, native_ad, vjp_ref, precision)
        numeric, error, round0, terms = _dot_fd(run, o.position, cts)
        v = judge(
            rule,
            numeric,
            error,
            round0,
            eps_grad=eps_in,
            scale=float(terms.max()),
            rounding=rounding,
        )
        tests.append(DotTest(o.path, rule, numeric, error, v.tolerance, v.status))
    return tests


def _dot_fd(
    run: RuleRun, position: int, cts: list[PyTree]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """⟨ȳ, FD(J·u)⟩ per pair, its error bar, its roundoff at the default step
    and ``Σ|ȳ·FD(J·u)|`` (the scale), for cotangents ``cts`` on one output."""
    est, r0 = run.differences[position]
    ybar = np.stack([widen_np(jax.tree_util.tree_leaves(c)[position]) for c in cts])
    return dot_fd(est, r0, ybar)


def _against(
    run: RuleRun, f_ref: Callable[..., Any], factor: float, pairs: int
) -> ReferenceCheck:
    """The rule's Jᵀȳ against ``jax.vjp`` of the reference, per output leaf's
    cotangent and input leaf; the dot tests' finite differences arbitrate."""
    inputs = run.inputs
    flat, seed = inputs.flat, inputs.seed
    ref = of_floats(f_ref, flat)
    u_stack = [
        np.stack([u[k] for u in run.directions]) for k in range(len(flat.checked))
    ]
    native_vjp = Pullback(ref, inputs.floats)
    with reference_precision("float64"):
        vjp64 = Pullback(ref, run.at_reference)
    leaves, bad, total, natives = [], 0, 0, set()
    for o in run.out_infos:
        if not o.is_checked:
            continue
        cts = [
            _cotangent(run.out_infos, run.out_def, seed, p, o.position)
            for p in range(pairs)
        ]
        rule = run.apply(cts[0])[0]
        ref_native = native_vjp(cts[0])[0]
        with reference_precision("float64"):
            stacked = _stacked(cts)
            batch64 = jax.vmap(vjp64)(_widened(stacked))[0]
            # The first cotangent's row: one float64 program, not two.
            ref64 = [np.asarray(b)[0] for b in batch64]
            dots64 = _dot(batch64, u_stack)
        where = o.path or "<root>"
        for info, a, r64, rn in zip(flat.checked, rule, ref64, ref_native):
            label = f"{info.path} (cotangent on output {where})"
            leaves.append(leaf_against(label, info, a, r64, rn, factor))
            natives.add(str(np.asarray(rn).dtype))
        numeric, error, _, terms = _dot_fd(run, o.position, cts)
        bad += disagreement(dots64, numeric, error, float(terms.max()))
        total += pairs
    return reference_check(
        f_ref, factor, natives, leaves, bad, total, "dot-product pairs"
    )


def _stacked(cts: list[PyTree]) -> PyTree:
    """The cotangents stacked leaf by leaf (on the host: no compile)."""
    return jax.tree_util.tree_map(
        lambda *a: on_device(np.stack([np.asarray(x) for x in a])), *cts
    )


def _widened(tree: PyTree) -> PyTree:
    """Cotangents in float64 (float0 leaves as they are); call in x64 scope."""
    return jax.tree_util.tree_map(
        lambda c: c if c.dtype == jax.dtypes.float0 else widen(c), tree
    )


def _dot_rounding(
    rule: np.ndarray,
    stacked: PyTree,
    u_stack: list[np.ndarray],
    native_ad: Callable[[Any], Any] | None,
    vjp_ref: Callable[[Any], Any] | None,
    precision: Precision,
) -> np.ndarray | None:
    """The rounding allowance of the dot tests' ``rule`` values (None: fixed)."""
    if vjp_ref is None:
        return None
    try:  # a pullback raises when applied (reverse mode through a while_loop)
        with reference_precision(precision):
            st_ref = jax.tree_util.tree_map(
                lambda c: c if c.dtype == jax.dtypes.float0 else widen(c), stacked
            )
            b64 = _dot(jax.vmap(vjp_ref)(st_ref)[0], u_stack)
        if native_ad is None:  # the rule is autodiff itself
            return np.abs(rule - b64)
        b = _dot(jax.vmap(native_ad)(stacked)[0], u_stack)
    except Exception:  # noqa: BLE001 - AD of the primal is optional
        return None
    return yardstick_rounding(rule, b, b64)


def _pulled_back(
    f: Callable[..., Any], flat: Flat, ct: PyTree
) -> Callable[..., list[Any]]:
    """``args ↦ Jᵀ(args)·ct`` through the rule: cotangents of the float leaves."""

    def pull(*args: Any) -> list[Any]:
        fl = Flat(flat.treedef, tuple(jax.tree_util.tree_leaves(args)), flat.infos)
        y, vjp_fn = jax.vjp(of_floats(f, fl), floats(fl))
        cast = jax.tree_util.tree_map(
            lambda c, a: c if c.dtype == jax.dtypes.float0 else c.astype(a.dtype), ct, y
        )
        return vjp_fn(cast)[0]

    return pull


def _localize(run: RuleRun, only: int) -> Report:
    """check_grad of L(x) = ⟨ȳ, f(x)⟩ against the rule's Jᵀȳ, every input coordinate."""
    inputs = run.inputs
    f, flat = inputs.f, inputs.flat
    ct = _cotangent(run.out_infos, run.out_def, inputs.seed, 0, only)
    ct_leaf = jax.tree_util.tree_leaves(ct)[only]
    pull = _pulled_back(f, flat, ct)

    def loss(args: tuple) -> jax.Array:
        out = jax.tree_util.tree_leaves(f(*args))[only]
        return jnp.real(jnp.sum(ct_leaf * out))

    return check_per_coordinate(
        loss,
        inputs.primals,
        flat,
        lambda fl: pull(*fl.rebuild(fl.leaves)),
        inputs.opts,
        label="the rule's Jᵀȳ for a random ȳ, by jax.vjp,",
    )


def _no_cotangent_for_integers(
    f: Callable[..., Any], flat: Flat, y_ct: PyTree
) -> Check | None:
    """Integer inputs must get float0 (or zero) cotangents from the rule."""
    ints = [i for i in flat.infos if i.kind == "fixed" and i.dtype is not None]
    if not ints:
        return None
    positions = [i.position for i in flat.checked] + [i.position for i in ints]

    def g(arrs: list[Any]) -> Any:
        return f(*flat.rebuild_with(dict(zip(positions, arrs))))

    try:
        _, vjp_all = jax.vjp(g, [flat.leaves[p] for p in positions])
        cts = vjp_all(y_ct)[0][len(flat.checked) :]
    except Exception as e:  # noqa: BLE001 - the rule's error is the finding
        return Check("integer inputs get no cotangent", False, f"vjp raised: {e}")
    bad = [
        i.path
        for i, c in zip(ints, cts)
        if np.asarray(c).dtype != jax.dtypes.float0 and np.any(np.asarray(c) != 0)
    ]
    detail = "nonzero cotangent for " + ", ".join(bad) if bad else "float0 or zeros"
    return Check("integer inputs get no cotangent", not bad, detail)


@dataclasses.dataclass(frozen=True)
class VJP:
    """Reverse mode for :func:`jgradcheck._checks.rules.check_rule`.

    Probes: ``pairs`` readable input directions ``u``, and readable cotangents
    ȳ on one output leaf at a time. Dot test: ⟨ȳ, FD(J·u)⟩ against ⟨Jᵀȳ, u⟩ per
    output leaf. Localisation: the numeric Jᵀȳ for every input coordinate (a
    check_grad sweep of ⟨ȳ, f⟩) for each output leaf, when the inputs have at
    most ``localize`` coordinates or the output's dot test failed.
    """

    pairs: int = 4
    localize: int | None = 100_000
    kind: ClassVar[Literal["vjp"]] = "vjp"

    def probe_directions(self, inputs: RuleInputs) -> list[list[np.ndarray]]:
        return readable_directions(inputs.flat, inputs.seed, self.pairs)

    def rule_at(
        self, inputs: RuleInputs, directions: list[list[np.ndarray]]
    ) -> tuple[PyTree, Callable[[Any], Any]]:
        # The primal output eagerly, as ``want`` (f itself) is computed: a
        # compiled program may round a large intermediate differently.
        y, _ = jax.vjp(inputs.of_floats, inputs.floats)
        return y, Pullback(inputs.of_floats, inputs.floats)

    def compare(
        self, run: RuleRun
    ) -> tuple[tuple[DotTest, ...], tuple[tuple[str, Report], ...]]:
        dots = _dot_tests(run, self.pairs)
        n_in = run.inputs.flat.n_params
        localized = []
        for o, d in zip([o for o in run.out_infos if o.is_checked], dots):
            if within(self.localize, n_in) or not d.ok:
                rep = _localize(run, o.position)
                localized.append(
                    (f"cotangent on output {o.path or '<root>'} only", rep)
                )
        return tuple(dots), tuple(localized)

    def _probe(self, run: RuleRun) -> PyTree:
        return _cotangent(run.out_infos, run.out_def, run.inputs.seed, 0, None)

    def structure(self, run: RuleRun) -> list[Check]:
        g, x = run.inputs.of_floats, run.inputs.floats
        probe = self._probe(run)
        zero = jax.tree_util.tree_map(
            lambda c: c if c.dtype == jax.dtypes.float0 else jnp.zeros_like(c), probe
        )
        checks = structure(
            "cotangent",
            run.apply,
            lambda ct: jax.vjp(g, x)[1](ct),
            probe,
            zero,
            batch=self.pairs,  # the dot tests' batch: one compiled program
        )
        ints = _no_cotangent_for_integers(run.inputs.f, run.inputs.flat, probe)
        if ints is not None:
            checks.append(ints)
        return checks

    def derivative(self, run: RuleRun) -> Callable[..., Any]:
        return _pulled_back(run.inputs.f, run.inputs.flat, self._probe(run))

    def against(
        self,
        run: RuleRun,
        reference: Callable[..., Any],
        factor: float,
    ) -> ReferenceCheck:
        return _against(run, reference, factor, self.pairs)

    def matched(
        self, run: RuleRun, reference: Callable[..., Any] | None, factor: float
    ) -> PrecisionMatch | None:
        def cotangent(position: int) -> PyTree:
            return _cotangent(run.out_infos, run.out_def, run.inputs.seed, 0, position)

        return vjp_matched(run, reference, factor, cotangent)

    def at_points(self, inputs: RuleInputs) -> VJPAtPoints:
        out_infos, out_def = outputs(inputs.want)
        cts = [
            (
                o.position,
                _stacked(
                    [
                        _cotangent(out_infos, out_def, inputs.seed, p, o.position)
                        for p in range(self.pairs)
                    ]
                ),
            )
            for o in out_infos
            if o.is_checked
        ]
        return VJPAtPoints(
            inputs.of_floats,
            inputs.floats,
            self.probe_directions(inputs),
            cts,
            inputs.opts.precision,
        )


@records_call
def check_vjp(
    f: Callable[..., Any],
    *primals: Any,
    nondiff_argnums: tuple[int, ...] = (),
    pairs: int = 4,
    key: Any = 0,
    localize: int | None = 100_000,
    precision: Precision = "float64",
    order: int = 1,
    method: Method = "auto",
    memory_budget: int | str | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool | TextIO | None = None,
    reference: Callable[..., Any] | None = None,
    reference_factor: float = REFERENCE_FACTOR,
    points: int | None = None,
) -> RuleReport:
    """Test the reverse-mode derivative (VJP) of ``f`` at ``primals``.

    Typically ``f`` is a :func:`jax.custom_vjp`; any JAX function works. Checks
    the primal output of ``jax.vjp(f)``; for each floating-point output leaf, a
    dot-product test ⟨ȳ, FD(J·u)⟩ vs ⟨Jᵀȳ, u⟩ on ``pairs`` random readable
    (u, ȳ); the full numeric Jᵀȳ for every input coordinate (finite differences
    of ⟨ȳ, f⟩ through :func:`check_grad`), one output leaf at a time, so a bug
    in one output's cotangent is attributed to that output and pinned to input
    paths and indices; and structure (zero cotangent → zero, deterministic,
    jit = eager, vmap = loop, integer inputs get no cotangent).

    Args:
      f: the function whose VJP rule is tested, ``f(*primals)``.
      *primals: its positional arguments (pytrees). Floating-point leaves are
        differentiated; integer, boolean and non-array leaves are held fixed.
      nondiff_argnums: positions of further arguments to hold fixed.
      pairs: random (u, ȳ) pairs per output leaf for the dot-product test.
      key: int seed or jax.random key; each leaf has its own stream.
      localize: localise every output whose inputs have at most this many
        coordinates in all (None: always); outputs whose dot-product test
        fails are always localised.
      precision: ``"float64"`` or ``"native"`` for the finite differences.
      order: 2 also tests the derivative of the rule itself (for rules that
        will be differentiated again): ``x ↦ Jᵀ(x)·ȳ`` is checked with
        check_vjp against finite differences of the rule's own output; the
        result is in ``report.second_order``.
      method: how the localisation's finite differences start, as in
        :func:`check_grad` (default ``"auto"``); the dot-product tests always
        use Richardson extrapolation over four steps.
      memory_budget: as in :func:`check_grad`, for the localisation sweeps.
      devices: as in :func:`check_grad`, for the localisation sweeps.
      progress: as in :func:`check_grad`, for the localisation sweeps.
      reference: a plain JAX implementation of ``f`` (same arguments, same
        outputs), e.g. the unfused version of a kernel. The rule's Jᵀȳ (for a
        readable cotangent on each output leaf) is compared entry by entry
        with ``jax.vjp`` of the reference in float64 (``ref64``), allowing
        ``reference_factor`` times the reference's own error at the primals'
        precision (``max|ref_native − ref64|`` over the input leaf) plus one
        ulp of the leaf's scale; ``report.reference`` gives the ratio
        ``max|rule − ref64| / max|ref_native − ref64|`` per leaf. The dot
        tests' float64 finite differences arbitrate: where ``ref64``
        disagrees with them, the report says the reference is wrong, not the
        rule. Works in bfloat16 and float16 (the reference then runs in
        that dtype for the yardstick).
      reference_factor: ``k`` of ``reference=`` (default 2, as
        flash-attention's tests: a correct kernel reorders sums, so its error
        is of the reference's order, not below it; a wrong formula is off
        by O(1) of the scale).
      points: also check the rule at this many input points with the primals'
        shapes and dtypes (None: the primals only, as without it): the given
        values, 0, ±1, ±the smallest normal, the largest magnitudes where
        the primal is finite and one beyond, values straddling the
        thresholds the rule compares with (from its jaxpr), spreads around
        the given values and mixtures, deterministic given ``key``. Each
        point gets the dot tests above (one compiled program for all, where
        ``f`` can be vmapped over them; a loop, with a note, where not);
        points where the primal or its finite differences are not finite
        are out of the domain, listed, not failed. The failing points are
        summarised (what they share that no passing point has) and the
        first is shrunk to the simplest input that still fails, which gets
        the full check and is printed as code to paste into a test:
        ``report.points`` (``ok`` is False when any point fails). See
        docs/guide/points.md.

    The rule's rounding is judged against JAX's autodiff of the primal at the
    primals' precision (``f`` with its custom rules replaced by their primal
    bodies): a rule that loses digits fails however consistent it is with
    itself; where autodiff cannot differentiate the primal (a ``while_loop``)
    a fixed allowance is used and ``report.rounding`` says so.
    When the check fails and the rule computes with narrower float
    intermediates than its yardstick (a bfloat16 product, a float16 cast),
    ``report.precision_match`` compares them again with the yardstick rounded
    to that dtype and says whether precision explains the failure or the
    formula is wrong (the verdict stays FAIL); likewise float32 matrix
    products whose operands the platform rounds (``precision=DEFAULT`` on a
    TPU or an NVIDIA GPU) where the yardstick's are full float32.

    Raises:
      ValueError: ``points`` is not a positive int (or None).

    Returns:
      A ``RuleReport``.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_vjp
      ... def softplus(x):
      ...     return jnp.logaddexp(x, 0.0)
      >>> softplus.defvjp(lambda x: (softplus(x), x),
      ...                 lambda x, g: (g * jax.nn.sigmoid(x),))
      >>> jgc.check_vjp(softplus, jnp.linspace(-3.0, 3.0, 7)).ok
      True
      >>> x16 = jnp.linspace(-3.0, 3.0, 7).astype(jnp.bfloat16)
      >>> r = jgc.check_vjp(softplus, x16, reference=lambda x: jnp.logaddexp(x, 0.0))
      >>> r.ok, r.reference.native
      (True, 'bfloat16')
    """
    opts = Options.build(
        key=key,
        precision=precision,
        method=method,
        memory_budget=memory_budget,
        devices=devices,
        progress=progress,
    )
    if not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"`pairs` must be a positive int; got {pairs!r}.")
    factor = validate_reference(reference, reference_factor)
    count = validate_points(points)
    direction = VJP(pairs=pairs, localize=localize)
    report = check_rule(
        f,
        primals,
        direction,
        nondiff_argnums=tuple(nondiff_argnums),
        order=order,
        opts=opts,
        reference=reference,
        reference_factor=factor,
    )
    return with_points(
        report,
        f,
        primals,
        direction,
        nondiff_argnums=tuple(nondiff_argnums),
        opts=opts,
        count=count,
    )


def assert_vjp(f: Callable[..., Any], *primals: Any, **options: Any) -> RuleReport:
    """Like :func:`check_vjp`, but raise :class:`GradCheckError` unless it passes.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_vjp
      ... def cube(x):
      ...     return x ** 3
      >>> cube.defvjp(lambda x: (cube(x), x), lambda x, g: (2 * g * x ** 2,))  # 3, not 2
      >>> try:
      ...     jgc.assert_vjp(cube, jnp.array([1.0, 2.0]))
      ... except jgc.GradCheckError as e:
      ...     print(e.report.ok)
      False
    """
    return raise_unless_ok(check_vjp(f, *primals, **options))
