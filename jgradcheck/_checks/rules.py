"""The one pipeline of check_vjp and check_jvp, and the steps they share.

:func:`check_rule` runs the steps of both checks in order: options (one
:class:`~jgradcheck._options.Options`), primals, the rule's primal output,
output leaves, probe directions, directional finite differences at reference
precision, comparisons, structure, order 2 and the report. What differs
between reverse and forward mode (the probe directions, the dot test, the
localisation, the structural probes, the rule's own derivative) is a
:class:`Direction`: :class:`jgradcheck._checks.vjp.VJP` or
:class:`jgradcheck._checks.jvp.JVP`.

Both treat the positional arguments of ``f`` as a pytree of primals (floating
point leaves are differentiated; integer, boolean, key and non-array leaves are
held fixed) and compare the rule with finite differences computed in float64:

* the primal output of the rule against ``f`` itself;
* random, readable cotangents/tangents (``±0.01 … ±9.00``, one seeded stream per
  leaf, never all ones);
* a dot-product test per output leaf: ⟨ȳ, FD(J·u)⟩ against ⟨Jᵀȳ, u⟩ (VJP), or
  FD(J·u) against the rule's J·u entry by entry (JVP), each finite difference
  Richardson-refined with an error bar (:mod:`jgradcheck._checks.directional`)
  and judged by :mod:`jgradcheck._numerics.verdict`;
* localisation: for a VJP, the numeric Jᵀȳ for every input coordinate through
  the sweep engine (:func:`jgradcheck.check_grad` on ⟨ȳ, f⟩), one output leaf at
  a time so a bug in one output's cotangent is attributed to that output; for a
  JVP, the failing output entries, and the input leaf whose tangent breaks them;
* structure: zero in gives zero out, the rule is deterministic, ``jit`` and
  eager agree, ``vmap`` over ``pairs`` cotangents (two tangents) equals a loop
  (:mod:`jgradcheck._checks.structure`), and integer inputs receive no cotangent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

from .._engine.context import reference_precision
from .._engine.precision import quiet_truncation, to_effective, truncation_phrase
from .._engine.tracing import jit_enabled, refuse_traced, trace_shape
from .._numerics.stencil import Estimate
from .._options import Options
from .._pytree.coords import readable as readable
from .._pytree.coords import seed_of
from .._pytree.flat import Flat, LeafInfo, flatten_params, with_offsets
from .._report.precision_records import PrecisionMatch
from .._report.records import ReferenceCheck
from .._report.report import Report, RuleReport
from .._report.rule_records import Check, DotTest
from .._typing import PyTree
from .directional import fd_directional, widen
from .grad import check_grad_with
from .point_verdicts import PointVerdicts
from .structure import check_primal

# ------------------------------------------------------------- the pipeline


class RuleInputs(NamedTuple):
    """The primals of a rule check, flattened, and what every step reads."""

    f: Callable[..., Any]
    """The function whose rule is tested, ``f(*primals)``."""
    primals: tuple
    flat: Flat
    """The primals as one pytree; held leaves have kind ``"held"``."""
    of_floats: Callable[[list[Any]], Any]
    """``f`` as a function of the differentiated leaves (:func:`of_floats`)."""
    floats: list[Any]
    """The differentiated leaves, at the primals' own dtypes."""
    want: PyTree
    """``f(*primals)`` itself, to compare the rule's primal output with."""
    seed: int
    """The int seed of every draw (``key=``)."""
    opts: Options
    """Precision, method and the sweeps' options."""
    held_outputs: tuple[str, ...]
    """Paths of ``f``'s integer and boolean outputs, held out of the checks
    (:func:`inexact_outputs`)."""
    narrowed: str
    """What the caller's x64 setting narrowed (``"float64 arrays, computed in
    float32: x64 is off"``), or ``""``
    (:func:`jgradcheck._engine.precision.truncation_phrase`)."""


class RuleRun(NamedTuple):
    """Everything a :class:`Direction` compares, once the pipeline computed it."""

    inputs: RuleInputs
    out_infos: list[LeafInfo]
    """The leaves of ``f``'s output."""
    out_def: Any
    """The treedef of ``f``'s output."""
    directions: list[list[np.ndarray]]
    """The probe directions (one array per differentiated leaf each)."""
    apply: Callable[[Any], Any]
    """The rule at the primals: cotangent ↦ Jᵀȳ (VJP) or tangent ↦ J·u (JVP)."""
    at_reference: list[Any]
    """The differentiated leaves at reference precision."""
    differences: list[tuple[Estimate, np.ndarray]]
    """:func:`fd_directional` along ``directions``, per output leaf."""


class Direction(Protocol):
    """The direction-specific parts of a rule check (reverse or forward mode)."""

    @property
    def kind(self) -> Literal["vjp", "jvp"]:
        """``RuleReport.kind``."""
        ...

    def probe_directions(self, inputs: RuleInputs) -> list[list[np.ndarray]]:
        """Input directions ``u`` along which finite differences of ``f`` run."""
        ...

    def rule_at(
        self, inputs: RuleInputs, directions: list[list[np.ndarray]]
    ) -> tuple[PyTree, Callable[[Any], Any]]:
        """The rule's primal output, and the rule at the primals (``apply``)."""
        ...

    def compare(
        self, run: RuleRun
    ) -> tuple[tuple[DotTest, ...], tuple[tuple[str, Report], ...]]:
        """Dot-product tests, and localised reports (path and index)."""
        ...

    def structure(self, run: RuleRun) -> list[Check]:
        """Zero in gives zero out, determinism, jit, vmap (and direction-specific)."""
        ...

    def derivative(self, run: RuleRun) -> Callable[..., Any]:
        """The rule as a function of the primals, for ``order=2``."""
        ...

    def against(
        self,
        run: RuleRun,
        reference: Callable[..., Any],
        factor: float,
    ) -> ReferenceCheck:
        """The rule against JAX's derivative of ``reference`` (``reference=``)."""
        ...

    def matched(
        self, run: RuleRun, reference: Callable[..., Any] | None, factor: float
    ) -> PrecisionMatch | None:
        """After a failure: the rule against ``reference`` (None: autodiff of
        the primal) at the rule's narrower precision, if it has one
        (:mod:`jgradcheck._checks.precision_match`)."""
        ...

    def at_points(self, inputs: RuleInputs) -> AtPoints:
        """The comparisons at many input points, compiled once (``points=``)."""
        ...


class AtPoints(Protocol):
    """A direction's comparisons at many input points (``points=``)."""

    @property
    def note(self) -> str:
        """Why the points were evaluated one by one (``""``: in one program)."""
        ...

    def verdicts(self, xs: list[Any], kinks: list[float]) -> PointVerdicts:
        """Per point (``xs``: one array per leaf, stacked): failing, in the
        domain, near one of the thresholds ``kinks`` (not judged)."""
        ...

    def thresholds(self) -> list[float]:
        """The scalar constants the rule compares with (its branches)."""
        ...

    def primal_finite(self, xs: list[Any]) -> np.ndarray:
        """Per point (``xs`` as in :meth:`verdicts`): the primal is finite."""
        ...


def check_order(order: Any) -> int:
    """``order=`` of a rule check: 1 or 2."""
    if order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2; got {order!r}.")
    return int(order)


@quiet_truncation()
@jit_enabled()
def check_rule(
    f: Callable[..., Any],
    primals: tuple,
    direction: Direction,
    *,
    nondiff_argnums: tuple[int, ...],
    order: int,
    opts: Options,
    reference: Callable[..., Any] | None = None,
    reference_factor: float = 2.0,
) -> RuleReport:
    """Test the rule of ``f`` at ``primals`` in ``direction``'s mode.

    The steps of :func:`jgradcheck.check_vjp` and :func:`jgradcheck.check_jvp`
    (whose docstrings say what is checked); ``opts`` holds ``key`` and the
    options of the finite differences and of the localisation's sweeps.
    """
    check_order(order)
    inputs = rule_inputs(f, primals, nondiff_argnums, opts)
    directions = direction.probe_directions(inputs)
    y, apply = direction.rule_at(inputs, directions)
    primal = check_primal("primal", y, inputs.want)
    out_infos, out_def = outputs(y)
    if not any(o.is_checked for o in out_infos):
        raise ValueError(
            "`f` has no floating-point outputs: there is no "
            f"{direction.kind.upper()} to test."
        )
    with reference_precision(opts.precision):
        at_reference = [
            widen(v) if opts.precision == "float64" else v for v in inputs.floats
        ]
        differences = fd_directional(inputs.of_floats, at_reference, directions)
    run = RuleRun(
        inputs, out_infos, out_def, directions, apply, at_reference, differences
    )
    dot_tests, localized = direction.compare(run)
    against = None
    if reference is not None:
        if opts.precision != "float64":
            raise ValueError(
                "`reference=` compares with the reference's float64 derivative; "
                "use precision='float64' (the default)."
            )
        check_reference_output(reference, inputs, y)
        against = direction.against(run, reference, reference_factor)
    checks = direction.structure(run)
    failed = not all(d.ok for d in dot_tests) or not all(r.ok for _, r in localized)
    match = None
    if (
        (failed or (against is not None and not against.ok))
        and opts.precision == "float64"
        and (against is None or against.reference_agrees)
    ):
        match = direction.matched(run, reference, reference_factor)
    second = None
    if order == 2:
        second = check_rule(
            direction.derivative(run),
            primals,
            direction,
            nondiff_argnums=nondiff_argnums,
            order=1,
            opts=opts,
        )
    return RuleReport(
        kind=direction.kind,
        primal=primal,
        dot_tests=dot_tests,
        localized=localized,
        structure=tuple(checks),
        held=held_paths(inputs.flat),
        inputs=tuple(i.path for i in inputs.flat.checked),
        held_outputs=inputs.held_outputs,
        second_order=second,
        precision=inputs.narrowed,
        rounding=next((rep.settings.rounding for _, rep in localized), ""),
        reference=against,
        precision_match=match,
    )


def check_reference_output(
    reference: Callable[..., Any], inputs: RuleInputs, y: PyTree
) -> None:
    """``reference(*primals)`` must be shaped like ``f(*primals)``."""
    got = jax.eval_shape(lambda: reference(*inputs.primals))
    want_def = jax.tree_util.tree_structure(y)
    got_def = jax.tree_util.tree_structure(got)
    shapes = [np.shape(v) for v in jax.tree_util.tree_leaves(y)]
    got_shapes = [tuple(v.shape) for v in jax.tree_util.tree_leaves(got)]
    if str(got_def) != str(want_def) or got_shapes != shapes:
        raise ValueError(
            "`reference` must return what `f` returns (the same pytree of the same "
            f"shapes); f gives {want_def} with shapes {shapes}, reference gives "
            f"{got_def} with shapes {got_shapes}."
        )


def within(localize: int | None, n: int) -> bool:
    """Whether ``n`` input coordinates are few enough to localise (``localize=``)."""
    return localize is None or n <= localize


# --------------------------------------------------------------- primals


def rule_inputs(
    f: Callable[..., Any],
    primals: tuple,
    nondiff_argnums: tuple[int, ...],
    opts: Options,
) -> RuleInputs:
    """The primals flattened and checked, ``f(*primals)`` and the seed.

    Inexact primals are taken in their effective dtype
    (:func:`jgradcheck._engine.precision.to_effective`): with x64 off, float64
    arrays are float32 to JAX (which cannot even make a float64 cotangent
    then), so the rule is a float32 computation, and is judged as one: its
    rounding allowance is float32's and its rounding is measured against the
    float64 re-run, as for float32 primals.
    """
    dtypes = [
        x.dtype
        for x in jax.tree_util.tree_leaves(primals)
        if isinstance(x, (jax.Array, np.ndarray))
    ]
    narrowed = truncation_phrase(dtypes)
    if narrowed:  # otherwise the primals are passed on untouched
        primals = tuple(jax.tree_util.tree_map(to_effective, tuple(primals)))
    flat = inputs(f, primals, tuple(nondiff_argnums))
    f, want, held_out = inexact_outputs(f, f(*flat.rebuild(flat.leaves)))
    trace_shape(lambda: of_floats(f, flat)(floats(flat)), "f")
    return RuleInputs(
        f=f,
        primals=primals,
        flat=flat,
        of_floats=of_floats(f, flat),
        floats=floats(flat),
        want=want,
        held_outputs=held_out,
        seed=seed_of(opts.key),
        opts=opts,
        narrowed=narrowed,
    )


def _is_inexact(x: Any) -> bool:
    if isinstance(x, float):
        return True
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)


def _checked_output(x: Any) -> bool:
    """An inexact output with entries (an empty one has no derivative to test)."""
    return _is_inexact(x) and np.size(x) > 0


def inexact_outputs(
    f: Callable[..., Any], out: PyTree
) -> tuple[Callable[..., Any], PyTree, tuple[str, ...]]:
    """``f`` with its integer, boolean and key outputs replaced by None (an
    empty pytree, so the other outputs keep their paths), and ``out`` so.

    They have no derivative (JAX's float0 cotangents) and are held out of the
    checks; their paths are returned too. ``f`` itself when there is none.

    Raises:
      TypeError: an output leaf that is not an array or a number, by path.
    """
    leaves = jax.tree_util.tree_flatten_with_path(out)[0]
    for path, leaf in leaves:
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float)):
            raise TypeError(
                f"`f` returned a {type(leaf).__name__} at output "
                f"{keystr(path) or '<root>'}; rule checks compare array outputs. "
                "The fix is to check a wrapper that leaves it out, e.g. "
                "`lambda *x: f(*x)[0]`."
            )
    held = tuple(
        keystr(path) or "<root>" for path, leaf in leaves if not _checked_output(leaf)
    )
    if not held:
        return f, out, ()

    def only_inexact(tree: PyTree) -> PyTree:
        return jax.tree_util.tree_map(lambda x: x if _checked_output(x) else None, tree)

    def f_inexact(*args: Any) -> PyTree:
        return only_inexact(f(*args))

    return f_inexact, only_inexact(out), held


def inputs(
    f: Callable[..., Any], args: tuple, nondiff_argnums: tuple[int, ...]
) -> Flat:
    """``args`` as one flattened pytree; ``nondiff_argnums`` leaves are held."""
    if not callable(f):
        raise TypeError(f"`f` must be callable; got {type(f).__name__}.")
    if not args:
        raise ValueError("no primal arguments were given: call check_vjp(f, *primals).")
    refuse_traced(args, "primals")
    for n in nondiff_argnums:
        if not 0 <= n < len(args):
            raise ValueError(
                f"`nondiff_argnums` names argument {n}, but f gets {len(args)} argument(s)."
            )
    flat = flatten_params(tuple(args))
    infos = []
    for info in flat.infos:
        nondiff = int(info.path[1:].split("]")[0]) in nondiff_argnums
        # An input with no entries has nothing to differentiate: held fixed.
        held = info.is_checked and (nondiff or math.prod(info.shape) == 0)
        infos.append(info._replace(kind="held") if held else info)
    flat = Flat(flat.treedef, flat.leaves, with_offsets(infos))
    if not flat.checked:
        raise ValueError(
            "`f` has no floating-point primal inputs with entries to "
            "differentiate; got "
            + ", ".join(
                f"{i.path} ({i.dtype or i.kind}{_empty(i)})" for i in flat.infos
            )
        )
    return flat


def _empty(info: LeafInfo) -> str:
    return f", shape {info.shape}: no entries" if math.prod(info.shape) == 0 else ""


def of_floats(f: Callable[..., Any], flat: Flat) -> Callable[[list[Any]], Any]:
    """``f`` as a function of the list of differentiated leaves (others fixed)."""
    positions = [i.position for i in flat.checked]

    def on_floats(values: list[Any]) -> Any:
        return f(*flat.rebuild_with(dict(zip(positions, values))))

    return on_floats


def held_paths(flat: Flat) -> tuple[str, ...]:
    """Paths of the inputs that are not differentiated."""
    return tuple(i.path for i in flat.infos if not i.is_checked)


def floats(flat: Flat) -> list[Any]:
    """The differentiated leaves of ``flat``."""
    return [flat.leaves[i.position] for i in flat.checked]


def readable_directions(flat: Flat, seed: int, count: int) -> list[list[np.ndarray]]:
    """``count`` readable input directions (one array per differentiated leaf),
    drawn from the streams ``(seed, 1, leaf position, k)``."""
    return [
        [readable(i.shape, i.dtype, [seed, 1, i.position, k]) for i in flat.checked]
        for k in range(count)
    ]


def outputs(out: PyTree) -> tuple[list[LeafInfo], Any]:
    """The leaves of ``f``'s output, and its treedef."""
    flat_out = flatten_params(out)
    return list(flat_out.infos), flat_out.treedef


def check_per_coordinate(
    f_scalar: Callable[..., Any],
    primals: tuple,
    flat: Flat,
    derivative: Callable[[Flat], list[Any]],
    opts: Options,
    label: str = "the rule's derivative",
) -> Report:
    """:func:`check_grad` of ``f_scalar(args)`` over the differentiated leaves.

    ``derivative(fl)`` gives the rule's derivative of ``f_scalar`` for each
    differentiated leaf of ``fl`` (the primals, possibly cast); held leaves get
    zeros and are not swept, fixed and static leaves are left alone. ``opts``:
    the rule check's options (precision, method, memory, devices, progress).
    ``label`` says in the report what the gradient under test is.
    """

    def grad(args: tuple) -> PyTree:
        fl = Flat(flat.treedef, tuple(jax.tree_util.tree_leaves(args)), flat.infos)
        new = dict(zip([i.position for i in fl.checked], derivative(fl)))
        for i in fl.infos:
            if i.kind == "held":
                new[i.position] = jnp.zeros_like(fl.leaves[i.position])
        return fl.rebuild_with(new)

    mask = flat.rebuild(
        [i.is_checked if i.is_checked or i.kind == "held" else None for i in flat.infos]
    )
    return check_grad_with(
        f_scalar,
        tuple(primals),
        (),
        grad=grad,
        opts=opts.replace(coords=mask),
        source=label,
        autodiff=True,
    )
