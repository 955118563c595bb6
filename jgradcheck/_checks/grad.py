"""check_grad, assert_grad and numerical_grad: the public entry points.

:func:`check_grad` reads as its steps: validate the options (one
:class:`~jgradcheck._options.Options`), prepare the params, take the gradient
under test, select the entries, sweep the leaves at reference precision, and
report. :func:`check_grad_with` is the same check for callers that already
hold an ``Options`` (named terms, the rule checks' sweeps, the benchmarks).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import as_float64
from .._dtypes import eps as eps_of
from .._engine.context import (
    EvalContext,
    at_precision,
    evaluation_context,
    reference_precision,
    to_float64_args,
)
from .._engine.gradient import autodiff_gradient, reference_gradient
from .._engine.precision import (
    effective_dtype,
    in_effective_dtypes,
    quiet_truncation,
    x64_enabled,
)
from .._engine.primal_ad import (
    Yardstick,
    autodiff_yardstick,
    exact_yardstick,
    fixed_note,
    flat64,
    inlined,
    loss_has_rules,
    primal_gradient,
    why_not,
)
from .._engine.tracing import jit_enabled, jit_notes
from .._errors import raise_unless_ok
from .._leaf.escalate import check_leaf
from .._leaf.estimates import primed_central, refined
from .._leaf.fast import check_fast
from .._numerics.reference import REFERENCE_FACTOR
from .._numerics.rounding import TRIALS_QUANTILE, probe_step, rounding_from_probes
from .._numerics.verdict import EPS_ACCUMULATE, UNSURE_REL, leaf_scale
from .._options import Options
from .._pytree.coords import Selection, nonfinite_entries, seed_of, without
from .._pytree.flat import Flat
from .._report.records import LeafResult, ReferenceCheck, Settings
from .._report.report import Report
from .._typing import Method, Mode, Precision, PyTree
from .precision_match import grad_matched
from .prepare import (
    GradientUnderTest,
    RealView,
    complex_as_real,
    gradient_under_test,
    prepare_params,
    selection_of,
)
from .recorded import records_call
from .reference import against_grad, validate_reference
from .terms import check_terms, returns_terms, validate_terms


def _native_noise(
    loss: Callable[..., Any], flat: Flat, args: tuple, j0: float, x64: bool
) -> float:
    """The rounding of ``loss`` at the params' own precision, measured.

    ``J(θ+u) + J(θ−u) − 2J(θ)`` for random ``u = ±√eps·max(1, |θ|)`` on every
    checked entry: the linear term cancels and the quadratic one is ~eps·J'',
    so what remains is rounding. Evaluated with the caller's own x64 setting;
    the trials become one rounding by
    :func:`jgradcheck._numerics.rounding.rounding_from_probes` (the largest).

    With a leaf narrower than float32 (bfloat16, float16), ``u`` is 9% (3%) of
    θ and the quadratic term ``u²·J''`` is itself about an ulp of J: eight
    times it would excuse a different dropout mask. There the probe is
    antisymmetric at two scales, ``J(θ+2u) − J(θ−2u) − 2·(J(θ+u) − J(θ−u))``
    (the linear and quadratic terms cancel, ``u³·J‴`` is ~eps^1.5), halved as
    :func:`jgradcheck._numerics.stencil.probe_rounding` does.
    """
    rng = np.random.default_rng(0)
    narrow = any(eps_of(i.dtype) > EPS_ACCUMULATE for i in flat.checked)
    trials = []
    with jax.enable_x64(x64):
        for _ in range(4):
            steps = {}
            for info in flat.checked:
                x = np.asarray(flat.leaves[info.position])
                x = x.astype(effective_dtype(x.dtype))  # what JAX computes with
                signs = rng.choice(np.array([-1.0, 1.0]), x.shape)
                u = probe_step(x.dtype) * np.maximum(1.0, np.abs(x))
                steps[info.position] = (x, u * signs)
            at = functools.partial(_shifted, loss, flat, args, steps, narrow)
            if narrow:
                trials.append(abs(at(2.0) - at(-2.0) - 2.0 * (at(1.0) - at(-1.0))) / 2)
            else:
                trials.append(abs(at(1.0) + at(-1.0) - 2.0 * j0))
    return float(rounding_from_probes(np.array(trials), quantile=TRIALS_QUANTILE))


def _shifted(
    loss: Callable[..., Any],
    flat: Flat,
    args: tuple,
    steps: dict[int, tuple[np.ndarray, np.ndarray]],
    narrow: bool,
    m: float,
) -> float:
    """``J(θ + m·u)`` at the params' own precision (:func:`_native_noise`)."""
    leaves = list(flat.leaves)
    for pos, (x, u) in steps.items():
        if narrow:  # θ + m·u rounded once, to the leaf's dtype
            leaves[pos] = jnp.asarray((as_float64(x) + m * u).astype(x.dtype))
        else:
            leaves[pos] = jnp.asarray(x + (m * u).astype(x.dtype))
    return float(loss(flat.rebuild(leaves), *args))


@records_call
def check_grad(
    loss: Callable[..., Any],
    params: PyTree,
    *args: Any,
    grad: Callable[..., PyTree] | None = None,
    coords: int | PyTree | None = None,
    key: Any = 0,
    precision: Precision = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    memory_budget: int | str | None = None,
    method: Method = "auto",
    mode: Mode = "full",
    directions: int | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool | TextIO | None = None,
    terms: dict[str, Callable[..., Any]] | None = None,
    reference: Callable[..., Any] | None = None,
    reference_factor: float = REFERENCE_FACTOR,
) -> Report:
    """Compare a gradient with central finite differences, entry by entry.

    The gradient under test is ``jax.grad(loss)`` (or ``grad(params, *args)``)
    at the params' own dtype. The reference is the central difference
    ``(J(θ+hᵢeᵢ) − J(θ−hᵢeᵢ)) / 2hᵢ`` with ``hᵢ = cbrt(eps)·max(1, |θᵢ|)``,
    computed in float64 by default, swept one leaf at a time by a compiled
    ``vmap`` over chunks of coordinates. Entries that do not agree within
    roundoff are re-estimated with smaller steps and Richardson extrapolation,
    with an error bar. An entry fails when the two differ by more than ten error
    bars plus the rounding the gradient's own dtype allows; tolerances never
    grow with the number of entries.

    Args:
      loss: ``loss(params, *args)`` returning a real scalar, or a dict of named
        scalar terms: then the sum and every term are checked separately
        (``report.terms``), so a large simple term (L2) cannot hide an error
        in a small one (the data term).
      params: a pytree of arrays. Floating-point leaves are checked; integer,
        boolean and key leaves and non-array leaves are held fixed and listed.
        Entries that are NaN or inf (padding, masked values the loss never
        reads) are held fixed too, listed by path and index in the report
        (``leaf.held``); a loss that does read them is not finite, and raises
        a ``ValueError`` naming them.
      *args: extra arguments to ``loss``, held fixed (data, labels, config).
      grad: optional ``grad(params, *args)`` returning a pytree shaped like
        ``params`` (a hand-written backprop), or, for a loss of named terms, a
        dict of such pytrees with the same keys. Default: ``jax.grad(loss)``.
        Its leaves may be JAX or NumPy arrays or Python numbers (taken at
        their leaf's dtype), and ``None`` where ``params`` has a leaf that is
        not checked (what ``eqx.filter_grad`` returns for non-array fields).
        Its rounding allowance is what JAX's autodiff of ``loss`` reaches at
        the params' precision, every custom rule (``jax.custom_vjp`` /
        ``jax.custom_jvp`` not defined in JAX) replaced by its primal body
        (``report.settings.rounding`` says ``autodiff of the primal at
        float32``; ``measured against float64`` where the gradient under test
        is ``jax.grad`` of a loss without such rules; ``fixed (...)`` with the
        reason where autodiff cannot differentiate the primal). A rule that
        loses digits (a float32 rule computing in float16) fails, diagnosed
        "imprecise" with its error in ulps next to autodiff's; where it
        computes with narrower float intermediates than its yardstick (or
        float32 matrix products whose operands the platform rounds, where
        the yardstick's are full float32), ``report.precision_match`` says
        whether the yardstick at that precision agrees with it (the formula
        is right) or not.
      coords: ``None`` checks every coordinate; an int ``k`` checks ``k``
        coordinates drawn with ``key`` (every leaf gets at least one); a pytree
        of boolean masks shaped like ``params`` checks exactly those entries.
      key: int seed or ``jax.random`` key for ``coords=k``.
      precision: ``"float64"`` (default) evaluates the finite differences in
        float64 whatever the params' dtype, in a scoped ``jax.enable_x64``;
        ``"native"`` uses the params' own dtype.
      rtol: explicit relative tolerance: with ``atol``, the tolerance is
        ``atol + rtol·max(|a|, |n|)``, replacing the error-bar rule.
      atol: explicit absolute tolerance (see ``rtol``).
      memory_budget: bytes one batch of evaluations may use, as an int or a
        size such as ``"2GB"`` or ``"512MiB"`` (default 2 GiB; on CPU batches
        are further kept cache-sized).
      method: how every entry is first estimated: ``"auto"`` (default:
        central differences at cbrt(eps), 2 evaluations); ``"central"``,
        ``"central4"`` or ``"central6"`` (2-, 4- or 6-point stencils at
        eps^(1/(p+1)), at steps 2h and h for an error bar, the step shrunk per
        entry where the measured truncation calls for it); ``"richardson"``
        (steps from eps^(1/5) halving 3 times, extrapolated); ``"complex"``
        (complex step Im J(θ+ih)/h, accurate to ulps, probed against central
        differences on 8 entries per leaf first; a leaf where they disagree,
        or whose loss rejects complex input, falls back to ``"auto"`` with a
        note in the report). Whatever the method, entries that do not pass
        are re-estimated (Richardson over h/2 … h/8 with kink detection,
        confirmation at h/64, descent to h/4096 where the ladder aliases, a
        4-point stencil where roundoff dominates) and two estimates must
        agree before a failure is reported.
      mode: ``"full"`` (default) checks every selected entry; ``"fast"``
        compares the gradient along ``directions`` random directions per leaf
        with finite differences of J along them (about ``2·directions``
        evaluations per leaf whatever its size) and sweeps entry by entry only
        the leaves that disagree. A passing leaf is reported with
        ``checked == 0`` and its evidence in ``leaf.directions``; an error too
        small to move a projection beyond its error bar can be missed
        (docs/fast_mode.md). In fast mode ``coords`` limits that sweep:
        ``None`` sweeps a failing leaf in full up to 65,536 entries (a sample
        beyond), an int ``k`` up to ``k`` entries per failing leaf, a mask
        restricts the directions and the sweep to its entries.
      directions: random directions per leaf in fast mode (default 4).
      devices: where the sweeps run: ``None`` (default) splits each batch of
        coordinates over every local device of the default backend
        (``jax.local_devices()``); an int ``n`` uses the first ``n``; or a
        sequence of local ``jax.Device``. Results do not depend on it
        (docs/multi_device.md).
      progress: a progress bar per leaf (tqdm; a widget in notebooks).
        ``None`` (default): only for leaves whose sweep takes more than about
        2 s, and only when stderr is a terminal or in a notebook; ``True``:
        always; ``False``: never; a text stream: always, written there.
      terms: for a ``loss`` that returns a scalar, its named terms:
        ``{name: term(params, *args)}``, scalar functions that add up to
        ``loss`` (checked at ``params``). ``loss`` and every term are then
        checked separately (``report.terms``), as for a loss that returns a
        dict. ``grad``, if given, returns a dict with these keys, one
        gradient pytree per term.

    Returns:
      A ``Report``; read ``report.ok``, ``print(report)``, ``report.worst(k)``.
      A report that verified nothing (every checked entry at a kink of the
      loss, or floating-point leaves of zero size only) is not a pass:
      ``ok`` is False, ``report.verified`` is False and the headline says
      "nothing was verified" and why (docs/guide/close-enough.md, section 9).

    Raises:
      TypeError, ValueError: for bad input (non-scalar loss, NaN/inf in the
        loss or the gradient (outside NaN/inf entries of ``params``), a ``grad=`` output not shaped like ``params``,
        empty params, ``coords`` out of range), naming the offending path.

    Example:
      >>> import jax, jax.numpy as jnp, jgradcheck as jgc
      >>> loss = lambda p, x: jnp.sum(jnp.tanh(x @ p["w"] + p["b"]) ** 2)
      >>> params = {"w": jnp.ones((3, 2)) / 3, "b": jnp.zeros(2)}
      >>> jgc.check_grad(loss, params, jnp.arange(6.0).reshape(2, 3)).ok
      True
      >>> def bad(p, x):  # wrong sign on the weights only
      ...     g = jax.grad(loss)(p, x)
      ...     return {"w": -g["w"], "b": g["b"]}
      >>> report = jgc.check_grad(loss, params, jnp.arange(6.0).reshape(2, 3), grad=bad)
      >>> report.ok, report.worst(1)[0].path
      (False, "['w']")
      >>> fast = jgc.check_grad(loss, params, jnp.arange(6.0).reshape(2, 3), mode="fast")
      >>> fast.ok, [leaf.checked for leaf in fast.leaves]  # passed along 4 directions
      (True, [0, 0])
      >>> l2 = lambda p, x: 0.1 * jnp.sum(p["w"] ** 2)
      >>> total = lambda p, x: loss(p, x) + l2(p, x)
      >>> r = jgc.check_grad(total, params, jnp.arange(6.0).reshape(2, 3),
      ...                    terms={"fit": loss, "l2": l2})
      >>> r.ok, [name for name, _ in r.terms]
      (True, ['fit', 'l2'])
      >>> bf = {k: v.astype(jnp.bfloat16) for k, v in params.items()}
      >>> xb = jnp.arange(6.0).reshape(2, 3).astype(jnp.bfloat16)
      >>> ref = lambda p, x: loss(p, x)  # e.g. the unfused implementation
      >>> r = jgc.check_grad(loss, bf, xb, reference=ref)
      >>> r.reference.ok, r.reference.native
      (True, 'bfloat16')
    """
    opts = Options.build(
        coords=coords,
        key=key,
        precision=precision,
        rtol=rtol,
        atol=atol,
        memory_budget=memory_budget,
        method=method,
        mode=mode,
        directions=directions,
        devices=devices,
        progress=progress,
    )
    factor = validate_reference(reference, reference_factor)
    return check_grad_with(
        loss,
        params,
        args,
        grad=grad,
        terms=terms,
        opts=opts,
        reference=reference,
        reference_factor=factor,
        explain_precision=True,
    )


@quiet_truncation()
@jit_enabled()
def check_grad_with(
    loss: Callable[..., Any],
    params: PyTree,
    args: tuple,
    *,
    grad: Callable[..., PyTree] | None = None,
    terms: dict[str, Callable[..., Any]] | None = None,
    opts: Options,
    source: str | None = None,
    autodiff: bool = False,
    reference: Callable[..., Any] | None = None,
    reference_factor: float = REFERENCE_FACTOR,
    explain_precision: bool = False,
) -> Report:
    """:func:`check_grad` with its options already validated in ``opts``.

    The entry point of callers that hold an :class:`Options`: the named terms
    (:func:`jgradcheck._checks.terms.check_terms`), the rule checks' sweeps
    and the benchmarks. ``args`` is the tuple of ``loss``'s extra arguments;
    ``source`` says what ``grad`` is in the report (default ``grad=NAME``).
    ``autodiff``: ``grad`` is JAX's autodiff of ``loss`` (a rule check's
    ``jax.vjp``), so where ``loss`` uses no custom rule of the user's it is
    its own yardstick, re-run at float64, as ``jax.grad`` is.
    ``explain_precision``: after a failure, look for a precision mismatch
    (:func:`jgradcheck._checks.precision_match.grad_matched`; check_grad
    itself, not the rule checks' localisation, which their own report does).
    """
    started = time.perf_counter()
    if terms is not None:
        terms = validate_terms(terms, loss, params, args)
    if terms is not None or returns_terms(loss, params, args):
        if reference is not None:
            raise ValueError(
                "`reference=` compares one loss; check each term with its own "
                "reference instead of passing `terms`."
            )
        return check_terms(
            check_grad_with, loss, params, args, grad=grad, terms=terms, opts=opts
        )
    flat = prepare_params(loss, params, args)
    tested = gradient_under_test(
        loss, grad, params, flat, args, held=nonfinite_entries(flat), label=source
    )
    selection, explain = selection_of(flat, opts)
    view = complex_as_real(flat, loss, grad, tested.grads, selection)
    held = nonfinite_entries(view.flat)
    view = view._replace(selection=without(view.selection, held))
    report = _sweep_leaves(view, args, tested, explain, opts, held, autodiff)
    if reference is not None:
        report = dataclasses.replace(
            report,
            reference=_against(
                reference, reference_factor, report, view, flat, args, opts
            ),
        )
    if explain_precision and _explainable(report, view, flat, opts):
        match = grad_matched(
            loss, grad, flat, args, view.under_test, reference, reference_factor
        )
        report = dataclasses.replace(report, precision_match=match)
    wall = time.perf_counter() - started
    return dataclasses.replace(report, timing=report.timing._replace(wall_seconds=wall))


def _explainable(report: Report, view: RealView, flat: Flat, opts: Options) -> bool:
    """Whether a precision mismatch could explain ``report``'s failure: it
    failed, at float64, on real params, and the reference is not in doubt."""
    doubt = report.reference is not None and not report.reference.reference_agrees
    real = view.flat is flat
    return not report.ok and opts.precision == "float64" and real and not doubt


def _against(
    loss_ref: Callable[..., Any],
    factor: float,
    report: Report,
    view: RealView,
    flat: Flat,
    args: tuple,
    opts: Options,
) -> ReferenceCheck:
    """``reference=`` of check_grad: the gradient under test against
    ``jax.grad(loss_ref)`` in float64 and at the params' own precision."""
    if view.flat is not flat:
        raise ValueError("`reference=` supports real floating-point params only.")
    if opts.precision != "float64":
        raise ValueError(
            "`reference=` compares with the reference's float64 gradient; use "
            "precision='float64' (the default)."
        )
    prepare_params(loss_ref, flat.rebuild(flat.leaves), args)
    native = autodiff_gradient(loss_ref, in_effective_dtypes(flat), args)
    with reference_precision("float64"):
        wide = at_precision(flat, "float64")
        ref64 = autodiff_gradient(loss_ref, wide, to_float64_args(args))
        ref64 = {p: np.asarray(v, np.float64) for p, v in ref64.items()}
    under_test = {p: np.asarray(g) for p, g in view.under_test.items()}
    return against_grad(
        loss_ref,
        factor,
        report.leaves,
        under_test,
        ref64,
        {p: np.asarray(v) for p, v in native.items()},
    )


def _with_held(
    leaves: tuple[LeafResult, ...], view: RealView, held: Selection
) -> tuple[LeafResult, ...]:
    """The leaf results with their NaN/inf entries listed as held fixed (a
    leaf with nothing else selected gets a result of its own)."""
    if not held:
        return leaves
    by_position = {leaf.info.position: leaf for leaf in leaves}
    out = []
    for info in view.flat.checked:
        leaf = by_position.get(info.position)
        if leaf is None and info.position in held:
            leaf = LeafResult.unchecked(
                info, np.dtype(view.under_test[info.position].dtype)
            )
        if leaf is not None:
            out.append(leaf._replace(held=held.get(info.position)))
    return tuple(out)


def _sweep_leaves(
    view: RealView,
    args: tuple,
    tested: GradientUnderTest,
    explain: int | None,
    opts: Options,
    held: Selection,
    autodiff: bool = False,
) -> Report:
    """Every selected entry swept and judged at reference precision (full or
    fast); the NaN/inf entries ``held`` are listed, not swept."""
    flat, loss_of_view, grad_of_view, under_test, selection = view
    native_value, native_dtype, _, source, dtypes = tested
    results = []
    user_x64 = x64_enabled()
    narrow = opts.precision == "float64" and any(eps_of(d) > 1e-15 for d in dtypes)
    native = _native_yardstick(view, args, autodiff) if narrow else None
    # The float64 J and the gradient the yardstick needs in one program: JAX's
    # autodiff of the loss, or of its primal when the yardstick is that.
    primal = native is not None and native.b is not None
    with evaluation_context(
        loss_of_view,
        flat,
        args,
        opts,
        with_gradient=primal
        or (native is not None and native.exact and grad_of_view is None),
        wrap=inlined if primal else None,
    ) as ctx:
        if opts.precision == "float64":
            ctx.check_same_function(
                native_value,
                native_dtype,
                rounding=lambda: _native_noise(
                    loss_of_view, flat, args, native_value, user_x64
                ),
            )
        measured, how = _yardstick(view, ctx, native) if narrow else (None, "fixed")
        judge_leaf = functools.partial(
            check_leaf,
            rtol=opts.rtol,
            atol=opts.atol,
            method=opts.method,
            label="" if measured is None else measured.label,
        )
        if opts.mode == "fast":
            assert opts.directions is not None  # Options fills it in fast mode
            results = check_fast(
                ctx,
                flat,
                selection,
                under_test,
                measured,
                directions=opts.directions,
                seed=seed_of(opts.key),
                explain=explain,
                check_leaf=judge_leaf,
                rtol=opts.rtol,
                atol=opts.atol,
            )
        else:
            for info in flat.checked:
                idx = selection[info.position]
                if idx.size:
                    g = under_test[info.position]
                    yard = (
                        None if measured is None else measured.leaves.get(info.position)
                    )
                    results.append(judge_leaf(ctx, info, idx, g, yard))
        settings = _settings(
            source, ctx.j_dtype, ctx.rel_step(flat.checked[0]), how, opts
        )
    timing = ctx.timing()
    return Report(
        leaves=_with_held(tuple(results), view, held),
        skipped=flat.skipped,
        settings=settings,
        timing=timing,
    )


class _Native(NamedTuple):
    """The yardstick's native half, computed under the caller's x64 setting."""

    exact: bool
    """The gradient under test is JAX's autodiff of the loss, which uses no
    custom rule of the user's: it is its own yardstick."""
    b: dict[int, np.ndarray] | None
    """Autodiff of the primal at the native precision (custom rules inlined)."""
    dtypes: str
    failed: str
    """Why the primal could not be differentiated ("" when it could)."""


def _native_yardstick(view: RealView, args: tuple, autodiff: bool) -> _Native:
    """Whether the gradient under test is its own yardstick, and else
    autodiff of the primal at the params' own precision."""
    loss, flat = view.loss, view.flat
    if (view.grad is None or autodiff) and not loss_has_rules(loss, flat, args):
        return _Native(True, None, "", "")
    try:
        b, dtypes = primal_gradient(loss, in_effective_dtypes(flat), args)
    except Exception as e:  # noqa: BLE001 - AD of the primal is optional
        return _Native(False, None, "", why_not(e))
    return _Native(False, b, dtypes, "")


def _yardstick(
    view: RealView, ctx: EvalContext, native: _Native | None
) -> tuple[Yardstick | None, str]:
    """The gradient's rounding allowance (inside the float64 scope), and how
    the report names it."""
    assert native is not None
    a = {p: np.asarray(g, np.float64).reshape(-1) for p, g in view.under_test.items()}
    if native.exact:
        a64 = reference_gradient(
            view.loss, view.grad, ctx.params, ctx.flat, ctx.args_tuple, ctx.gradient
        )
        if a64 is None:
            return None, "fixed"
        return exact_yardstick(a, a64, "measured against float64"), (
            "measured against float64"
        )
    if native.b is None:
        return None, fixed_note(native.failed)
    if ctx.gradient is not None:  # computed with J (evaluation_context's wrap)
        b64 = flat64(ctx.gradient)
    else:
        try:
            b64, _ = primal_gradient(view.loss, ctx.flat, ctx.args_tuple)
        except Exception as e:  # noqa: BLE001 - AD of the primal is optional
            return None, fixed_note(why_not(e))
    yard = autodiff_yardstick(a, native.b, b64, native.dtypes)
    return yard, yard.how


def _settings(
    source: str,
    reference_dtype: np.dtype,
    rel_step: float,
    how: str,
    opts: Options,
) -> Settings:
    """What the report says about how it was checked."""
    return Settings(
        gradient=source,
        reference_dtype=str(reference_dtype),
        rel_step=rel_step,
        rounding=how,
        rtol=opts.rtol,
        atol=opts.atol,
        mode=opts.mode,
        directions=opts.directions,
        method=opts.method,
        notes=jit_notes(),
    )


def assert_grad(
    loss: Callable[..., Any], params: PyTree, *args: Any, **options: Any
) -> Report:
    """Like :func:`check_grad`, but raise :class:`GradCheckError` unless it passes.

    Takes the same arguments and keyword options as :func:`check_grad`.

    Returns:
      The passing ``Report``.

    Raises:
      GradCheckError: an ``AssertionError`` carrying the report (``err.report``)
        whose message is the report's table.

    Example:
      >>> import jax.numpy as jnp, jgradcheck as jgc
      >>> loss = lambda p: jnp.sum(jnp.sin(p) ** 2)
      >>> _ = jgc.assert_grad(loss, jnp.linspace(0.0, 1.0, 5))
      >>> try:
      ...     jgc.assert_grad(loss, jnp.linspace(0.0, 1.0, 5), grad=lambda p: jnp.sin(2 * p) / 2)
      ... except jgc.GradCheckError as e:
      ...     print(e.report.ok, e.report.n_fail)
      False 4
    """
    return raise_unless_ok(check_grad(loss, params, *args, **options))


def _warn_if_unresolved(
    flat: Flat, values: dict[int, np.ndarray], errors: dict[int, np.ndarray]
) -> None:
    """Warn where numerical_grad's own error bar is too wide to trust an entry:
    above ``UNSURE_REL`` (0.1%) of the entry's scale, the bar check_grad
    would call ``unsure`` (a kink within the step, a noisy or float32-cast
    loss)."""
    wide = []
    for info in flat.checked:
        value, error = values[info.position], errors[info.position]
        scale = leaf_scale(value.reshape(-1))
        bad = ~(error <= UNSURE_REL * np.maximum(np.abs(value), scale))
        if bad.any():
            k = int(np.argmax(np.where(bad, error, -np.inf)))
            where = info.where(k)
            wide.append(
                f"{int(bad.sum())} of {info.size} entries of {info.path or '<root>'} "
                f"(widest at {where}: ±{float(error.reshape(-1)[k]):.2g})"
            )
    if wide:
        warnings.warn(
            "numerical_grad: error bars above 0.1% of the entry's scale for "
            + "; ".join(wide)
            + ". Those estimates are not reliable (a kink within the step, a "
            "noisy loss, or a loss that computes in low precision): inspect them "
            "with with_error=True or jgradcheck.eps_sweep, or use check_grad, "
            "which says 'unsure' there.",
            stacklevel=3,
        )


@quiet_truncation()
@jit_enabled()
def numerical_grad(
    loss: Callable[..., Any],
    params: PyTree,
    *args: Any,
    precision: Precision = "float64",
    with_error: bool = False,
    memory_budget: int | str | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool | TextIO | None = None,
) -> PyTree | tuple[PyTree, PyTree]:
    """The finite-difference gradient of ``loss`` as a pytree shaped like ``params``.

    Every coordinate is estimated from central differences at steps h, h/2,
    h/4, h/8 with Richardson extrapolation, keeping the estimate with the
    smallest error bar.

    Args:
      loss: ``loss(params, *args)`` returning a real scalar.
      params: a pytree of arrays; non-floating-point leaves get ``None``.
      *args: extra arguments held fixed.
      precision: ``"float64"`` (default) or ``"native"``, as in :func:`check_grad`.
      with_error: also return a pytree of error bars.
      memory_budget: as in :func:`check_grad`.
      devices: as in :func:`check_grad`.
      progress: as in :func:`check_grad`.

    Returns:
      A pytree of NumPy arrays (float64 by default, so the precision survives
      even when JAX's x64 mode is off), or ``(grad, error_bars)``.

    Warns:
      UserWarning: where an entry's error bar exceeds 0.1% of its scale (a
        kink within the step, a noisy loss, a loss computing in low
        precision), naming the leaf, the count and the widest entry:
        check_grad would call those entries ``unsure``.

    Example:
      >>> import jax.numpy as jnp, jgradcheck as jgc
      >>> g = jgc.numerical_grad(lambda p: jnp.sum(p ** 3), jnp.array([1.0, 2.0]))
      >>> [round(float(v), 6) for v in g]
      [3.0, 12.0]
    """
    opts = Options.build(
        precision=precision,
        memory_budget=memory_budget,
        devices=devices,
        progress=progress,
    )
    flat = prepare_params(loss, params, args)
    values, errors = {}, {}
    with evaluation_context(loss, flat, args, opts) as ctx:
        for info in flat.checked:
            idx = np.arange(info.size)
            sw = ctx.sweep(info, 8 * idx.size, coords=idx.size)
            primed, first = primed_central(ctx, sw, idx)
            est = refined(ctx, sw, idx, first, primed)
            values[info.position] = est.value.reshape(info.shape)
            errors[info.position] = est.error.reshape(info.shape)

    _warn_if_unresolved(flat, values, errors)

    def tree(d: dict[int, np.ndarray]) -> PyTree:
        return flat.rebuild([d.get(i.position) for i in flat.infos])

    grad_tree = tree(values)
    return (grad_tree, tree(errors)) if with_error else grad_tree
