"""Precision mismatch for check_vjp and check_jvp: the rule's probes and
its yardstick (:mod:`.precision_match` has the comparison and why)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from .._engine.primal_ad import inlined, rules_in
from .._report.precision_records import PrecisionMatch
from .precision_match import Probe, precision_match
from .reference import name_of
from .rules import RuleInputs, RuleRun, of_floats


def yardstick_of(
    inputs: RuleInputs, reference: Callable[..., Any] | None
) -> tuple[Callable[..., Any], str] | None:
    """What the rule of ``inputs.f`` is compared with at matched precision,
    as a function of the float leaves, and its name: ``reference``, else the
    primal with custom rules inlined; None where ``f`` has no custom rule of
    the user's (its derivative *is* autodiff)."""
    if reference is not None:
        ref = of_floats(reference, inputs.flat)
        return ref, f"the reference {name_of(reference)}"
    if not rules_in(inputs.of_floats, inputs.floats):
        return None
    return inlined(inputs.of_floats), "autodiff of the primal"


def vjp_matched(
    run: RuleRun,
    reference: Callable[..., Any] | None,
    factor: float,
    cotangent: Callable[[int], Any],
) -> PrecisionMatch | None:
    """:func:`precision_match` of a VJP rule: its Jᵀȳ for ``cotangent(k)``
    (a readable ȳ on output leaf ``k``) per input leaf."""
    inputs = run.inputs
    yard = yardstick_of(inputs, reference)
    if yard is None:
        return None
    probes = [
        Probe(
            cotangent(o.position),
            tuple(
                f"{i.path} (cotangent on output {o.path or '<root>'})"
                for i in inputs.flat.checked
            ),
        )
        for o in run.out_infos
        if o.is_checked
    ]

    def program(fn: Callable[..., Any]) -> Callable[[Any, Any], list[Any]]:
        return lambda xs, ct: jax.vjp(fn, xs)[1](ct)[0]

    return precision_match(
        program(inputs.of_floats),
        program(yard[0]),
        lambda ct: run.apply(ct)[0],
        inputs.floats,
        run.at_reference,
        probes,
        yardstick=yard[1],
        kind="VJP",
        factor=factor,
    )


def jvp_matched(
    run: RuleRun, reference: Callable[..., Any] | None, factor: float
) -> PrecisionMatch | None:
    """:func:`precision_match` of a JVP rule: its J·u along the random
    tangent on every input, per floating-point output leaf."""
    inputs = run.inputs
    yard = yardstick_of(inputs, reference)
    if yard is None:
        return None
    outs = [o for o in run.out_infos if o.is_checked]
    keep = [o.position for o in outs]

    def program(fn: Callable[..., Any]) -> Callable[[Any, Any], list[Any]]:
        def tangents(xs: Any, u: Any) -> list[Any]:
            t = jax.tree_util.tree_leaves(jax.jvp(fn, (xs,), (u,))[1])
            return [t[k] for k in keep]

        return tangents

    def rule(u: Any) -> list[Any]:
        t = jax.tree_util.tree_leaves(run.apply(u))
        return [t[k] for k in keep]

    u = [jax.numpy.asarray(v) for v in run.directions[0]]
    labels = tuple(f"output {o.path or '<root>'}" for o in outs)
    return precision_match(
        program(inputs.of_floats),
        program(yard[0]),
        rule,
        inputs.floats,
        run.at_reference,
        [Probe(u, labels)],
        yardstick=yard[1],
        kind="JVP",
        factor=factor,
    )
