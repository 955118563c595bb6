"""Precision mismatch, not a wrong rule: a failing rule compared again with
its yardstick at the rule's own, narrower precision.

A rule whose formula is right but which computes part of its work in a
narrower float than its yardstick (it stores its matrix products in
bfloat16 where the reference keeps float32, or casts to float16 in its
backward pass) disagrees with the float64 truth by that precision's
rounding: far more than the yardstick's own error at the native precision,
so the check fails, rightly (the rule loses digits its yardstick keeps).
What the failure needs is the right explanation.

When a check of a rule failed, :func:`precision_match` reads the jaxprs of
the rule's derivative program and of the yardstick's (the ``reference=``
implementation, or the primal with custom rules inlined) and finds the
narrowest float dtype ``D`` the rule computes intermediates in, if the
yardstick computes none that narrow
(:func:`jgradcheck._engine.matched.narrower_ops`).
It then evaluates the yardstick at ``D`` (inputs and every intermediate
rounded to ``D``: :func:`jgradcheck._engine.matched.rounded`) and applies
the reference-relative rule again (:mod:`jgradcheck._numerics.reference`)
with that matched error as the yardstick::

    |rule − ref64| ≤ k · maxᵢ |ref_matchedᵢ − ref64ᵢ| + ρ_D · maxᵢ |ref64ᵢ|

Why this separates the two causes. Rounding a value to ``D`` moves it by at
most ``eps_D/2`` of itself; a derivative computed from intermediates stored
in ``D`` is off by about ``Σ_k |c_k|·eps_D/2`` over its ``D``-roundings
(``c_k``: how much the result depends on the k-th stored value), the same
first-order sum for the rule and for the yardstick at ``D`` when both store
the same kind of intermediates (the yardstick at ``D`` stores *all* of them,
so it is the larger). ``k = 2`` covers the two maxima of that sum over a
leaf, as for ``reference=``, where a rounding is amplified (``1 − y²`` at a
saturated ``tanh`` cancels, and the rounding of ``y`` becomes a large
relative error); ``ρ_D``, the verdicts' rounding floor of ``D``
(:func:`jgradcheck._numerics.verdict.rounding_floor`: 2 ulps of bfloat16 or
float16, 16 of float32), covers the few roundings every value computed in
``D`` carries, which the yardstick's maximum over a small leaf can miss by
chance (it may round exactly where the rule does not). A wrong formula (a
missing factor or term) is off by O(1) of the scale, hundreds of times
``eps_D`` even in bfloat16, and stays outside. If they agree the report says
"precision mismatch" with the numbers; if not, that precision does not
explain the disagreement.

A reduced matmul precision changes no dtype (a float32 ``dot_general`` at
``precision=DEFAULT`` rounds its operands to bfloat16 on a TPU, to
TensorFloat-32 on an NVIDIA GPU, and to nothing on the CPU). Where the
rule's program has no narrower dtype, the same comparison is made with the
float32 products: if the rule has more products whose operands the platform
rounds to a format ``F`` than the yardstick
(:func:`jgradcheck._engine.matched.reduced_matmuls`), the yardstick is
evaluated with the operands of all its float32 products rounded to ``F``
(:func:`jgradcheck._engine.matched.matmuls_rounded`), and ``D`` above is
``F`` (its machine epsilon: 2⁻⁷ for bfloat16, 2⁻¹⁰ for TensorFloat-32). The
argument is the same: the rounding of an operand moves it by at most
``eps_F/2`` of itself, and the yardstick rounds every product's operands.

The verdict does not change: the rule still loses digits its yardstick
keeps at the native precision, which is what the check promises to catch
(a float32 rule with a float16 backward pass must fail). The report says
which digits, and that the formula is right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from .._dtypes import eps as eps_of
from .._engine import programs
from .._engine.context import at_precision, reference_precision, to_float64_args
from .._engine.matched import (
    jaxpr_of,
    matmuls_rounded,
    narrower_ops,
    reduced_matmuls,
    rounded,
)
from .._engine.matmul_precision import EPS, current_platform
from .._engine.primal_ad import inlined, loss_has_rules
from .._numerics.reference import Against, against_reference
from .._numerics.verdict import rounding_floor
from .._pytree.flat import Flat
from .._report.rule_records import PrecisionMatch
from .directional import widen
from .reference import name_of, real64

Program = Callable[[Callable[..., Any]], Callable[[Any, Any], list[Any]]]
"""``fn ↦ (xs, probe) ↦ derivative leaves``: ``jax.vjp`` applied to a
cotangent, or ``jax.jvp`` along a tangent."""


class Probe(NamedTuple):
    """One probe (cotangent or tangent) and the labels of its result leaves."""

    value: Any
    """The probe at the native precision (a pytree)."""
    labels: tuple[str, ...]
    """One label per leaf of the derivative program's result."""
    wide: Callable[[], Any] | None = None
    """The probe in float64, made in x64 scope (None: its float leaves cast)."""


def _widened(tree: Any) -> Any:
    """Float leaves in float64 (float0 as they are); call in x64 scope."""
    return jax.tree_util.tree_map(
        lambda c: c if c.dtype == jax.dtypes.float0 else widen(c), tree
    )


class _Leaf(NamedTuple):
    label: str
    before: Against
    after: Against
    scale: float
    floor: float
    native: str


def _compare(
    label: str,
    rule: Any,
    r64: Any,
    native: Any,
    matched: Any,
    factor: float,
    eps_narrow: float,
) -> _Leaf:
    """One leaf before matching precision (the yardstick at the native
    precision, its rounding floor) and after (the yardstick at the narrow
    dtype, the narrow dtype's rounding floor)."""
    a, b64, b, m = real64(rule), real64(r64), real64(native), real64(matched)
    eps = eps_of(np.asarray(native).dtype)
    scale = float(np.max(np.abs(b64))) if b64.size else 0.0
    return _Leaf(
        label,
        against_reference(a, b64, b, factor=factor, eps=eps),
        against_reference(a, b64, m, factor=factor, eps=eps_narrow),
        scale,
        rounding_floor(eps_narrow) * scale,
        str(np.asarray(native).dtype),
    )


def _leaves(
    ref_program: Callable[[Any, Any], list[Any]],
    rule: Callable[[Any], list[Any]],
    xs: Any,
    xs64: Any,
    probes: Sequence[Probe],
    matching: _Matching,
    factor: float,
) -> list[_Leaf]:
    """Every result leaf of every probe, before and after matching."""
    native = programs.jit(ref_program)
    at_d = programs.jit(matching.program)
    leaves = []
    for probe in probes:
        with reference_precision("float64"):
            wide = probe.wide() if probe.wide is not None else _widened(probe.value)
            ref64 = [np.asarray(v) for v in native(xs64, wide)]
        for label, a, r64, b, m in zip(
            probe.labels,
            rule(probe.value),
            ref64,
            native(xs, probe.value),
            at_d(xs, probe.value),
        ):
            leaves.append(_compare(label, a, r64, b, m, factor, matching.eps))
    return leaves


class _Matching(NamedTuple):
    """How the yardstick is brought to the rule's precision."""

    program: Callable[[Any, Any], list[Any]]
    """The yardstick's program at that precision."""
    format: str
    """The narrow dtype, or the matmul operand format."""
    eps: float
    where: tuple[tuple[str, int, int], ...]
    other: str
    platform: str | None
    """None: a narrower dtype; else the platform whose matmuls round."""


def _matching(
    rule_program: Callable[[Any, Any], list[Any]],
    ref_program: Callable[[Any, Any], list[Any]],
    xs: Any,
    probe: Any,
    platform: str | None,
) -> _Matching | None:
    """Narrower intermediates in the rule's program (the yardstick rounded
    to their dtype), else float32 matrix products with narrower operands on
    ``platform`` (the yardstick's products rounded alike), else None."""
    rule_jaxpr = jaxpr_of(rule_program, xs, probe)
    ref_jaxpr = jaxpr_of(ref_program, xs, probe)
    narrow = narrower_ops(rule_jaxpr, ref_jaxpr)
    if narrow is not None:
        return _Matching(
            rounded(ref_program, narrow.dtype),
            str(narrow.dtype),
            eps_of(narrow.dtype),
            narrow.where,
            narrow.other,
            None,
        )
    on = platform or current_platform()
    red = reduced_matmuls(rule_jaxpr, ref_jaxpr, platform=on)
    if red is None:
        return None
    return _Matching(
        matmuls_rounded(ref_program, red.format),
        red.format,
        EPS[red.format],
        red.where,
        red.other,
        on,
    )


def precision_match(
    rule_program: Callable[[Any, Any], list[Any]],
    ref_program: Callable[[Any, Any], list[Any]],
    rule: Callable[[Any], list[Any]],
    xs: Any,
    xs64: Any,
    probes: Sequence[Probe],
    *,
    yardstick: str,
    kind: str,
    factor: float,
    platform: str | None = None,
) -> PrecisionMatch | None:
    """The rule against its yardstick at the rule's narrower precision.

    Args:
      rule_program: ``(xs, probe) ↦`` the rule's derivative leaves, traced
        for its jaxpr (:data:`Program` of the function whose rule is tested).
      ref_program: the same for the yardstick.
      rule: ``probe ↦`` the rule's derivative leaves (already compiled).
      xs: the float leaves at the native precision.
      xs64: the same in float64 (made in x64 scope).
      probes: cotangents or tangents, with their result labels.
      yardstick: who ``ref_fn`` is, for the report.
      kind: ``"VJP"`` or ``"JVP"``.
      factor: ``k``.
      platform: whose matrix-product precision to assume
        (:func:`jgradcheck._engine.matmul_precision.current_platform` if None).

    Returns:
      None where the rule computes with no float intermediate narrower than
      the yardstick's and no float32 matrix product with narrower operands
      on the platform, where JAX cannot differentiate the yardstick (reverse
      mode through a ``while_loop``), or where the rule already agrees with
      the yardstick at the native precision (nothing for precision to
      explain); else the comparison.
    """
    try:
        matching = _matching(rule_program, ref_program, xs, probes[0].value, platform)
    except Exception:  # noqa: BLE001 - AD cannot go through the yardstick
        return None  # (a while_loop, a pallas_call): no diagnosis to offer
    if matching is None:
        return None
    try:
        leaves = _leaves(ref_program, rule, xs, xs64, probes, matching, factor)
    except Exception:  # noqa: BLE001 - the diagnosis is optional; the
        return None  # verdicts stand without it
    if all(leaf.before.status.max(initial=0) == 0 for leaf in leaves):
        return None
    agrees = all(leaf.after.status.max(initial=0) == 0 for leaf in leaves)
    shown = max(
        leaves, key=lambda leaf: leaf.after.rule_err / max(leaf.after.allowed, 1e-300)
    )
    return PrecisionMatch(
        dtype=matching.format,
        where=matching.where,
        other=matching.other,
        yardstick=yardstick,
        program=kind,
        leaf=shown.label,
        rule_err=shown.after.rule_err,
        ref_err=shown.before.ref_err,
        matched_err=shown.after.ref_err,
        factor=factor,
        floor=shown.floor,
        scale=shown.scale,
        eps=matching.eps,
        native=shown.native,
        native_eps=eps_of(shown.native),
        agrees=agrees,
        platform=matching.platform,
    )


def grad_matched(
    loss: Callable[..., Any],
    grad: Callable[..., Any] | None,
    flat: Flat,
    args: tuple,
    under_test: dict[int, Any],
    reference: Callable[..., Any] | None,
    factor: float,
) -> PrecisionMatch | None:
    """:func:`precision_match` of check_grad's gradient under test
    (``under_test``: ``jax.grad(loss)`` or the user's ``grad``) against
    ``jax.grad`` of ``reference``, else of ``loss`` with custom rules inlined;
    None where ``loss`` is its own yardstick (no ``grad``, no custom rule).
    The probe is ``args`` (float64 for the truth)."""
    positions = [i.position for i in flat.checked]

    def of_leaves(fn: Callable[..., Any]) -> Callable[..., Any]:
        def scalar(xs: list[Any], a: tuple) -> Any:
            return fn(flat.rebuild_with(dict(zip(positions, xs))), *a)

        return scalar

    def gradient(fn: Callable[..., Any]) -> Callable[[Any, Any], list[Any]]:
        return lambda xs, a: list(jax.grad(of_leaves(fn))(xs, a))

    if reference is not None:
        ref, who = gradient(reference), f"the reference {name_of(reference)}"
    elif grad is not None or loss_has_rules(loss, flat, args):
        ref, who = gradient(inlined(loss)), "autodiff of the loss"
    else:
        return None
    if grad is None:
        rule_program = gradient(loss)
    else:

        def rule_program(xs: list[Any], a: tuple) -> list[Any]:
            out = grad(flat.rebuild_with(dict(zip(positions, xs))), *a)
            leaves = flat.treedef.flatten_up_to(out)
            return [leaves[p] for p in positions]

    with reference_precision("float64"):
        xs64 = [at_precision(flat, "float64").leaves[p] for p in positions]
    probe = Probe(
        tuple(args),
        tuple(i.path or "<root>" for i in flat.checked),
        wide=lambda: to_float64_args(args),
    )
    xs = [flat.leaves[p] for p in positions]
    return precision_match(
        rule_program,
        ref,
        lambda _: [under_test[p] for p in positions],
        xs,
        xs64,
        [probe],
        yardstick=who,
        kind="gradient",
        factor=factor,
    )
