"""check_jvp / assert_jvp: test a forward-mode rule (typically a jax.custom_jvp)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import eps as eps_of
from .._engine.context import reference_precision
from .._engine.gradient import Pushforward
from .._engine.primal_ad import fixed_note, inlined, rules_in, why_not
from .._errors import raise_unless_ok
from .._numerics.reference import REFERENCE_FACTOR
from .._numerics.stencil import Estimate, default_step
from .._numerics.verdict import judge, leaf_scale, yardstick_rounding
from .._options import Options
from .._pytree.flat import Flat, LeafInfo
from .._report.precision_records import PrecisionMatch
from .._report.records import LeafResult, ReferenceCheck, Settings, Timing
from .._report.report import Report, RuleReport
from .._report.rule_records import Check, DotTest
from .._typing import Method, Precision, PyTree
from .directional import widen_np
from .points import validate_points, with_points
from .pointwise import JVPAtPoints
from .pointwise import real_flat as _real
from .recorded import records_call
from .reference import (
    disagreement,
    leaf_against,
    reference_check,
    validate_reference,
)
from .rule_precision import jvp_matched
from .rules import (
    RuleInputs,
    RuleRun,
    check_per_coordinate,
    check_rule,
    floats,
    of_floats,
    readable_directions,
    within,
)
from .structure import structure


def _tangent_leaves(
    push: Pushforward, xs: list[Any], tangent: list[Any]
) -> tuple[PyTree, list[Any]]:
    """The rule's ``(y, leaves of J·tangent)`` at ``xs`` (``jax.jvp``, compiled)."""
    y, t = push(xs, [jnp.asarray(v) for v in tangent])
    return y, jax.tree_util.tree_leaves(t)


def _jacobian_row(
    f: Callable[..., Any],
    primals: tuple,
    flat: Flat,
    pos: int,
    k: int,
    opts: Options,
) -> Report:
    """Output entry ``k`` of output leaf ``pos``: the rule's ∂y_k/∂x (jacfwd) vs FD."""

    def loss(args: tuple) -> jax.Array:
        return jax.tree_util.tree_leaves(f(*args))[pos].reshape(-1)[k]

    def row(fl: Flat) -> list[Any]:
        g = of_floats(f, fl)
        return jax.jacfwd(
            lambda xs: jax.tree_util.tree_leaves(g(xs))[pos].reshape(-1)[k]
        )(floats(fl))

    label = "the rule's row of J (J·u for unit tangents u, by jax.jacfwd)"
    return check_per_coordinate(loss, primals, flat, row, opts, label=label)


def _compare(
    out_infos: list[LeafInfo],
    rule: list[np.ndarray],
    rounding: dict[int, np.ndarray] | None,
    differences: list[tuple[Estimate, np.ndarray]],
    p: int,
    settings: Settings,
    evaluations: int,
) -> Report:
    """Rule's J·u against FD(J·u) for direction ``p``, entry by entry, per output leaf."""
    results = []
    for o in out_infos:
        if not o.is_checked:
            continue
        est, r0 = differences[o.position]
        # Complex outputs are compared as (real, imaginary) pairs.
        a = _real(rule[o.position])
        n = _real(est.value[p])
        parts = 2 if np.iscomplexobj(rule[o.position]) else 1
        err = np.repeat(_real(est.error[p]), parts)
        r0p = np.repeat(_real(r0[p]), parts)
        if parts == 2:
            o = o._replace(
                shape=o.shape + (2,), dtype=np.dtype(jnp.finfo(o.dtype).dtype)
            )
        v = judge(
            a,
            n,
            err,
            r0p,
            eps_grad=eps_of(o.dtype),
            scale=leaf_scale(n, err),
            rounding=None if rounding is None else rounding[o.position],
        )
        results.append(
            LeafResult(
                info=o,
                idx=np.arange(o.size),
                grad=a,
                numeric=n,
                error_bar=err,
                tolerance=v.tolerance,
                status=v.status,
                step=est.step[p].reshape(-1),
                refined=np.ones(o.size, bool),
                grad_dtype=np.dtype(o.dtype),
            )
        )
    skipped = tuple(o for o in out_infos if not o.is_checked)
    return Report(tuple(results), skipped, settings, Timing(0.0, 0.0, evaluations))


class _Yardstick(NamedTuple):
    """The tangent comparisons' yardstick: autodiff at native and reference
    precision (``native`` None: the rule is autodiff itself)."""

    native: Callable[[list[Any]], list[Any]] | None
    reference: Callable[[list[Any]], list[Any]] | None
    how: str


def _yardstick(run: RuleRun) -> _Yardstick:
    """JAX's forward-mode autodiff of the primal, custom rules inlined, at the
    native and reference precision; where ``f`` uses no custom rule of the
    user's, the rule itself at reference precision (its rounding is then
    measured entry by entry); nothing where the precision is native or the
    primal cannot be differentiated (the fixed allowance then)."""
    inputs = run.inputs
    if inputs.opts.precision != "float64":
        return _Yardstick(None, None, "fixed")

    def at(g: Pushforward, xs: list[Any]) -> Callable[..., Any]:
        return lambda d: [
            np.asarray(t)
            for t in _tangent_leaves(g, xs, [jnp.asarray(v) for v in d])[1]
        ]

    with reference_precision(inputs.opts.precision):
        if not rules_in(inputs.of_floats, run.at_reference):
            return _Yardstick(
                None,
                at(Pushforward(inputs.of_floats), run.at_reference),
                "measured against float64",
            )
    primal = Pushforward(inlined(inputs.of_floats))
    try:
        native = at(primal, inputs.floats)
        out = native(run.directions[0])
        with reference_precision(inputs.opts.precision):
            at(primal, run.at_reference)([widen_np(v) for v in run.directions[0]])
    except Exception as e:  # noqa: BLE001 - AD of the primal is optional
        return _Yardstick(None, None, fixed_note(why_not(e)))
    dtypes = ", ".join(sorted({str(np.asarray(t).dtype) for t in out}))
    return _Yardstick(
        native, at(primal, run.at_reference), f"autodiff of the primal at {dtypes}"
    )


def _tangent_rounding(
    run: RuleRun, yard: _Yardstick, d: list[np.ndarray], tangent: list[np.ndarray]
) -> dict[int, np.ndarray] | None:
    """The rounding allowance of the rule's J·u along ``d``, per output leaf."""
    if yard.reference is None:
        return None
    with reference_precision(run.inputs.opts.precision):
        b64 = yard.reference([widen_np(v) for v in d])
    b = None if yard.native is None else yard.native(d)
    out = {}
    for o in run.out_infos:
        if not o.is_checked:
            continue
        a, r64 = _real(tangent[o.position]), _real(b64[o.position])
        if b is None:  # the rule is autodiff itself
            out[o.position] = np.abs(a - r64)
        else:
            out[o.position] = yardstick_rounding(a, _real(b[o.position]), r64)
    return out


def _tangent_settings(run: RuleRun, how: str) -> Settings:
    """The settings the tangent comparisons report."""
    in_float64 = run.inputs.opts.precision == "float64"
    leaf = jax.tree_util.tree_leaves(run.differences[0][0].value)[0]
    native = np.dtype(run.inputs.floats[0].dtype)
    return Settings(
        gradient="the rule's tangent J·u (jax.jvp)"
        + (f" ({run.inputs.narrowed})" if run.inputs.narrowed else ""),
        reference_dtype="float64" if in_float64 else str(np.dtype(leaf.dtype)),
        rel_step=default_step(np.dtype(np.float64) if in_float64 else native),
        rounding=how,
        rtol=None,
        atol=None,
    )


def _tangent_comparisons(run: RuleRun) -> list[tuple[str, Report]]:
    """J·u against FD(J·u) along the random tangent, then (while it fails) along
    it on one input leaf at a time."""
    yard = _yardstick(run)
    settings = _tangent_settings(run, yard.how)
    evals = 8 * len(run.directions)
    flat = run.inputs.flat
    localized: list[tuple[str, Report]] = []
    for p, d in enumerate(run.directions):
        if p > 0 and all(rep.ok for _, rep in localized):
            break
        tangent = [
            np.asarray(t)
            for t in jax.tree_util.tree_leaves(run.apply([jnp.asarray(v) for v in d]))
        ]
        rounding = _tangent_rounding(run, yard, d, tangent)
        rep = _compare(
            run.out_infos, tangent, rounding, run.differences, p, settings, evals
        )
        label = (
            "random tangent on every input"
            if p == 0
            else f"tangent on input {flat.checked[p - 1].path} only"
        )
        localized.append((label, rep))
    return localized


def _against(run: RuleRun, f_ref: Callable[..., Any], factor: float) -> ReferenceCheck:
    """The rule's J·u (the random tangent on every input) against
    ``jax.jvp`` of the reference, per output leaf; the tangent comparison's
    finite differences arbitrate."""
    inputs, d = run.inputs, run.directions[0]
    ref = of_floats(f_ref, inputs.flat)
    rule = jax.tree_util.tree_leaves(run.apply([jnp.asarray(v) for v in d]))
    push = Pushforward(ref)
    _, ref_native = _tangent_leaves(push, inputs.floats, d)
    with reference_precision("float64"):
        _, ref64 = _tangent_leaves(push, run.at_reference, [widen_np(v) for v in d])
        ref64 = [np.asarray(t) for t in ref64]
    leaves, bad, total = [], 0, 0
    for o in run.out_infos:
        if not o.is_checked:
            continue
        k = o.position
        label = f"output {o.path or '<root>'}"
        leaves.append(leaf_against(label, o, rule[k], ref64[k], ref_native[k], factor))
        est, _ = run.differences[k]
        n = _real(est.value[0])
        err = np.repeat(_real(est.error[0]), n.size // max(o.size, 1))
        bad += disagreement(_real(ref64[k]), n, err, leaf_scale(n, err))
        total += n.size
    natives = [str(np.asarray(t).dtype) for t in ref_native]
    return reference_check(f_ref, factor, natives, leaves, bad, total, "output entries")


@dataclasses.dataclass(frozen=True)
class JVP:
    """Forward mode for :func:`jgradcheck._checks.rules.check_rule`.

    Probes: a readable tangent ``u`` on every input, then (several inputs) the
    same on one input leaf at a time. No dot test: J·u is compared with
    FD(J·u) entry by entry. Localisation: the tangent on one input leaf at a
    time, and the Jacobian rows of up to ``rows`` failing output entries when
    the inputs have at most ``localize`` coordinates.
    """

    localize: int | None = 100_000
    rows: int = 3
    kind: ClassVar[Literal["jvp"]] = "jvp"

    def probe_directions(self, inputs: RuleInputs) -> list[list[np.ndarray]]:
        (u,) = readable_directions(inputs.flat, inputs.seed, 1)
        if len(u) == 1:
            return [u]
        return [u] + [
            [v if k == j else np.zeros_like(v) for k, v in enumerate(u)]
            for j in range(len(u))
        ]

    def rule_at(
        self, inputs: RuleInputs, directions: list[list[np.ndarray]]
    ) -> tuple[PyTree, Callable[[Any], Any]]:
        push, x = Pushforward(inputs.of_floats), inputs.floats
        # The primal output eagerly, as ``want`` (f itself) is computed: a
        # compiled program may round a large intermediate differently.
        tangent = [jnp.asarray(v) for v in directions[0]]
        y, _ = jax.jvp(inputs.of_floats, (x,), (tangent,))

        def apply(tangent: list[Any]) -> PyTree:
            return push(x, tangent)[1]

        return y, apply

    def compare(
        self, run: RuleRun
    ) -> tuple[tuple[DotTest, ...], tuple[tuple[str, Report], ...]]:
        localized = _tangent_comparisons(run)
        first = localized[0][1]
        inputs = run.inputs
        if not first.ok and within(self.localize, inputs.flat.n_params):
            by_path = {o.path: o for o in run.out_infos if o.kind == "float"}
            for e in first.failures()[: self.rows]:
                if e.path in by_path:
                    o = by_path[e.path]
                    k = int(np.ravel_multi_index(e.index, o.shape)) if o.shape else 0
                    rep = _jacobian_row(
                        inputs.f,
                        inputs.primals,
                        inputs.flat,
                        o.position,
                        k,
                        inputs.opts,
                    )
                    localized.append((f"row {e.where} of the Jacobian (jacfwd)", rep))
        return (), tuple(localized)

    def structure(self, run: RuleRun) -> list[Check]:
        g, x = run.inputs.of_floats, run.inputs.floats
        probe = [jnp.asarray(v) for v in run.directions[0]]
        zero = [jnp.zeros_like(v) for v in probe]
        return structure(
            "tangent", run.apply, lambda tan: jax.jvp(g, (x,), (tan,))[1], probe, zero
        )

    def derivative(self, run: RuleRun) -> Callable[..., Any]:
        f, flat, u = run.inputs.f, run.inputs.flat, run.directions[0]

        def pushed(*args: Any) -> list[Any]:
            fl = Flat(flat.treedef, tuple(jax.tree_util.tree_leaves(args)), flat.infos)
            xs = floats(fl)
            tangent = [jnp.asarray(v, xi.dtype) for v, xi in zip(u, xs)]
            return jax.tree_util.tree_leaves(
                jax.jvp(of_floats(f, fl), (xs,), (tangent,))[1]
            )

        return pushed

    def against(
        self,
        run: RuleRun,
        reference: Callable[..., Any],
        factor: float,
    ) -> ReferenceCheck:
        return _against(run, reference, factor)

    def matched(
        self, run: RuleRun, reference: Callable[..., Any] | None, factor: float
    ) -> PrecisionMatch | None:
        return jvp_matched(run, reference, factor)

    def at_points(self, inputs: RuleInputs) -> JVPAtPoints:
        (u,) = readable_directions(inputs.flat, inputs.seed, 1)
        return JVPAtPoints(inputs.of_floats, inputs.floats, u, inputs.opts.precision)


@records_call
def check_jvp(
    f: Callable[..., Any],
    *primals: Any,
    nondiff_argnums: tuple[int, ...] = (),
    key: Any = 0,
    precision: Precision = "float64",
    order: int = 1,
    localize: int | None = 100_000,
    rows: int = 3,
    method: Method = "auto",
    memory_budget: int | str | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool | TextIO | None = None,
    reference: Callable[..., Any] | None = None,
    reference_factor: float = REFERENCE_FACTOR,
    points: int | None = None,
) -> RuleReport:
    """Test the forward-mode derivative (JVP) of ``f`` at ``primals``.

    Typically ``f`` is a :func:`jax.custom_jvp`. Checks the primal output of
    ``jax.jvp(f)``; the rule's tangent output J·u for a random readable tangent
    ``u`` against Richardson-refined central differences of ``f`` along ``u``,
    entry by entry for every output leaf (so one wrong output coordinate among
    thousands is named); when that fails, the same with the tangent on one input
    leaf at a time, to say which input's tangent is mishandled, and for up to
    ``rows`` failing output entries their row of the Jacobian (``jax.jacfwd``,
    i.e. the rule applied to every basis tangent) against finite differences
    per input coordinate, to name the input index; and structure
    (zero tangent → zero, deterministic, jit = eager, vmap = loop). Tolerances
    come from the finite differences' error bars, never from array sizes.

    Args:
      f: the function whose JVP rule is tested, ``f(*primals)``.
      *primals: its positional arguments (pytrees); floating-point leaves are
        differentiated, the rest held fixed.
      nondiff_argnums: positions of further arguments to hold fixed.
      key: int seed or jax.random key; each input leaf has its own stream.
      precision: ``"float64"`` (default) or ``"native"`` for the differences.
      order: 2 also tests the derivative of the rule itself: ``x ↦ J(x)·u`` is
        checked with check_jvp (result in ``report.second_order``).
      localize: Jacobian rows are checked only when the inputs have at most
        this many coordinates in all (None: always).
      rows: how many failing output entries get their Jacobian row checked.
      method: how the Jacobian rows' finite differences start, as in
        :func:`check_grad` (default ``"auto"``); the tangent comparisons
        always use Richardson extrapolation over four steps.
      memory_budget: as in :func:`check_grad`, for the Jacobian rows' sweeps.
      devices: as in :func:`check_grad`, for the Jacobian rows' sweeps.
      progress: as in :func:`check_grad`, for the Jacobian rows' sweeps.
      reference: a plain JAX implementation of ``f`` (same arguments, same
        outputs). The rule's J·u for the random tangent is compared entry by
        entry with ``jax.jvp`` of the reference in float64 (``ref64``),
        allowing ``reference_factor`` times the reference's own error at the
        primals' precision (``max|ref_native − ref64|`` over the output leaf)
        plus one ulp of the leaf's scale (``report.reference``, with the
        ratio per leaf). The float64 finite differences of J·u arbitrate:
        where ``ref64`` disagrees with them, the report says the reference
        is wrong, not the rule. Works in bfloat16 and float16.
      reference_factor: ``k`` of ``reference=`` (default 2, see
        :func:`check_vjp`).
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

    The rule's rounding is judged against JAX's forward-mode autodiff of the
    primal (custom rules replaced by their primal bodies) at the primals'
    precision; ``report.rounding`` says what was used.
    After a failure, ``report.precision_match`` says whether the rule's
    narrower float intermediates or matrix-product precision explain it
    (see :func:`check_vjp`).

    Raises:
      ValueError: ``points`` is not a positive int (or None).

    Returns:
      A ``RuleReport`` whose ``localized`` reports are per output leaf.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_jvp
      ... def f(x):
      ...     return jnp.sin(x)
      >>> f.defjvp(lambda p, t: (f(p[0]), jnp.cos(p[0]) * t[0]))
      <...>
      >>> jgc.check_jvp(f, jnp.linspace(0.0, 1.0, 5)).ok
      True
      >>> r = jgc.check_jvp(f, jnp.linspace(0.0, 1.0, 5), reference=jnp.sin)
      >>> r.reference.ok, r.reference.name
      (True, 'sin')
    """
    opts = Options.build(
        key=key,
        precision=precision,
        method=method,
        memory_budget=memory_budget,
        devices=devices,
        progress=progress,
    )
    factor = validate_reference(reference, reference_factor)
    count = validate_points(points)
    direction = JVP(localize=localize, rows=rows)
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


def assert_jvp(f: Callable[..., Any], *primals: Any, **options: Any) -> RuleReport:
    """Like :func:`check_jvp`, but raise :class:`GradCheckError` unless it passes.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> @jax.custom_jvp
      ... def f(x):
      ...     return jnp.exp(x)
      >>> f.defjvp(lambda p, t: (f(p[0]), t[0]))  # forgets the factor exp(x)
      <...>
      >>> try:
      ...     jgc.assert_jvp(f, jnp.array([0.5, 1.0]))
      ... except jgc.GradCheckError as e:
      ...     print(e.report.ok)
      False
    """
    return raise_unless_ok(check_jvp(f, *primals, **options))
