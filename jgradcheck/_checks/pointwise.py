"""The dot tests of check_vjp and check_jvp at many input points at once (``points=``).

At each point, the same comparisons as at the primals, judged by the same
rules: for a VJP, ⟨ȳ, FD(J·u)⟩ against ⟨Jᵀȳ, u⟩ per output leaf and pair; for
a JVP, FD(J·u) against the rule's J·u entry by entry along the random tangent.
The finite differences come from :class:`~.directional.PointDifferences`, the
rule and its yardstick (autodiff of the primal, custom rules inlined) from
programs vmapped over the points and compiled once, so that every batch of
points (the generated ones, then the shrinking's candidates) reuses them.
Localisation is not done here: the simplest failing point gets the full check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._dtypes import eps as eps_of
from .._engine import programs
from .._engine.context import reference_precision
from .._engine.jaxprs import thresholds
from .._engine.primal_ad import inlined, rules_in
from .._numerics.stencil import Estimate
from .._numerics.verdict import PASS, leaf_scale
from .._typing import Precision
from .directional import PointDifferences, pair_dot, widen, widen_np
from .point_verdicts import (
    KINDS,
    WIDE_STEP,
    PointVerdicts,
    allowance_of,
    confirmed,
    failure_kind,
    near,
    once,
    outcome,
    verdict,
)


def real_flat(x: Any) -> np.ndarray:
    """Flattened float64 values; complex ones as (real, imaginary) pairs."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        return np.stack([x.real, x.imag], -1).reshape(-1).astype(np.float64)
    return x.reshape(-1).astype(np.float64)


def dot_fd(
    est: Estimate, r0: np.ndarray, ybar: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """⟨ȳ, FD(J·u)⟩ per pair, its error bar, its roundoff at the default step
    and ``Σ|ȳ·FD(J·u)|`` (the scale); ``ybar`` stacked per pair."""
    pairs = ybar.shape[0]
    flatten = lambda a: a.reshape(pairs, -1)  # noqa: E731
    numeric = np.real(np.sum(flatten(ybar) * flatten(est.value), axis=1))
    error = np.sum(np.abs(flatten(ybar)) * flatten(est.error), axis=1)
    round0 = np.sum(np.abs(flatten(ybar)) * flatten(r0), axis=1)
    terms = np.sum(np.abs(flatten(ybar) * flatten(est.value)), axis=1)
    return numeric, error, round0, terms


class Batched:
    """``fn`` vmapped over its first argument's leading axis and compiled once;
    point by point (``note`` says why) where ``fn`` cannot be vmapped, and
    eagerly where it cannot even be compiled (Python control flow on values
    in a rule, which the checks at the primals run eagerly too)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._vmapped = programs.jit(jax.vmap(fn, in_axes=(0, None)))
        self._single = programs.jit(fn)
        self.note = ""
        self._eager = False

    def __call__(self, xs: list[Any], rest: Any) -> Any:
        if not self.note:
            try:
                return self._vmapped(xs, rest)
            except Exception as e:  # noqa: BLE001 - a loop instead, with a note
                self.note = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        outs = [self._one([v[k] for v in xs], rest) for k in range(int(xs[0].shape[0]))]
        return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *outs)

    def _one(self, x: list[Any], rest: Any) -> Any:
        if not self._eager:
            try:
                return self._single(x, rest)
            except Exception:  # noqa: BLE001 - retried eagerly, which raises real errors
                self._eager = True
        return self._fn(x, rest)


def _finite(tree: Any) -> np.ndarray:
    """bool [K]: every leaf of ``tree`` (leading axis: points) finite."""
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(tree)]
    return np.all(
        [np.all(np.isfinite(v.reshape(v.shape[0], -1)), axis=1) for v in leaves],
        axis=0,
    )


class _Yardstick(NamedTuple):
    native: Batched | None
    """Autodiff of the primal at the points' own precision (None: the rule is
    autodiff itself, measured against ``reference`` alone)."""
    reference: Batched | None
    """The same at reference precision (None: the fixed allowance)."""


def _yardstick(
    g: Callable[[list[Any]], Any],
    x: list[Any],
    precision: Precision,
    derivative: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> _Yardstick:
    """As the checks at the primals do: where ``g`` uses no custom rule of the
    user's, the rule itself at reference precision; else autodiff of the
    primal with the rules inlined, native and reference."""
    if precision != "float64":
        return _Yardstick(None, None)
    with reference_precision(precision):
        if not rules_in(g, [widen(v) for v in x]):
            return _Yardstick(None, Batched(derivative(g)))
    primal = inlined(g)
    return _Yardstick(Batched(derivative(primal)), Batched(derivative(primal)))


def _rounding(
    yard: _Yardstick, xs: list[Any], probe: Any, widen_probe: Any
) -> tuple[Any, Any] | None:
    """``(b, b64)``: the yardstick at the points (``b`` None: the rule is
    autodiff), or None where AD of the primal fails (the fixed allowance)."""
    if yard.reference is None:
        return None
    try:  # AD of the primal raises through a while_loop: the fixed allowance
        with reference_precision("float64"):
            b64 = yard.reference([widen(v) for v in xs], widen_probe(probe))
            b64 = jax.tree_util.tree_map(np.asarray, b64)
        b = None if yard.native is None else yard.native(xs, probe)
    except Exception:  # noqa: BLE001 - AD of the primal is optional
        return None
    return b, b64


def _pullback(g: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    """``(xs, stacked ȳ) ↦ (g(xs), Jᵀȳ per pair)``."""

    def rule(xs: list[Any], cts: Any) -> Any:
        y, back = jax.vjp(g, xs)
        return y, jax.vmap(back)(cts)[0]

    return rule


def _pushforward(g: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    """``(xs, u) ↦ (g(xs), J·u)``."""
    return lambda xs, u: jax.jvp(g, (xs,), (u,))


def _thresholds(rule: Callable[..., Any], x: list[Any], probe: Any) -> list[float]:
    """:func:`~jgradcheck._engine.jaxprs.thresholds` of ``rule(x, probe)``
    (none where it cannot be traced)."""
    try:
        return thresholds(jax.make_jaxpr(rule)(x, probe))
    except Exception:  # noqa: BLE001 - thresholds are a hint, points still run
        return []


def _widened_cts(cts: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda c: c if c.dtype == jax.dtypes.float0 else widen(c), cts
    )


class VJPAtPoints:
    """The VJP's dot tests at a batch of points: ``verdicts(xs)``.

    Args:
      g: ``f`` as a function of its differentiated leaves.
      x: those leaves at the primals (shapes, dtypes, custom rules).
      directions: the probe directions ``u`` (as at the primals).
      cotangents: per checked output leaf, its position and the readable
        cotangents ȳ on it stacked per pair (as at the primals).
      precision: of the finite differences.
    """

    def __init__(
        self,
        g: Callable[[list[Any]], Any],
        x: list[Any],
        directions: list[list[np.ndarray]],
        cotangents: list[tuple[int, Any]],
        precision: Precision,
    ) -> None:
        self._g, self._x, self._directions, self._cts = g, x, directions, cotangents
        self._precision = precision
        self._fd = PointDifferences(g)
        self._rule = Batched(_pullback(g))
        self._yard = _yardstick(
            g, x, precision, lambda h: lambda xs, ct: _pullback(h)(xs, ct)[1]
        )
        self._u = [np.stack([u[k] for u in directions]) for k in range(len(x))]
        self._eps = max(eps_of(v.dtype) for v in x)
        self._stacked = jax.tree_util.tree_map(
            lambda *a: jnp.concatenate(a), *[cts for _, cts in cotangents]
        )
        # Each entry of Jᵀȳ may lose the smallest normal of its dtype.
        self._tiny_dot = sum(
            float(jnp.finfo(v.dtype).tiny)
            * np.abs(u).reshape(len(directions), -1).sum(1)
            for v, u in zip(x, self._u)
        )

    @property
    def note(self) -> str:
        """Why the points were evaluated one by one (``""``: in one program)."""
        return self._fd.note or self._rule.note

    def thresholds(self) -> list[float]:
        """The scalar constants the primal and the rule compare with."""
        return _thresholds(_pullback(self._g), self._x, self._cts[0][1])

    def primal_finite(self, xs: list[Any]) -> np.ndarray:
        """bool [K]: the primal is finite at each point (the rule's program)."""
        return _finite(self._rule(xs, self._stacked)[0])

    def verdicts(self, xs: list[Any], kinks: list[float]) -> PointVerdicts:
        """Args: ``xs``, the points (one array per leaf, stacked [K, *shape]);
        ``kinks``, thresholds near which a failing point is not counted."""
        with reference_precision(self._precision):
            ref = [widen(v) if self._precision == "float64" else v for v in xs]
            diffs, fd_finite, reach = self._fd(ref, self._directions)
        K = len(diffs)
        flags = {kind: np.zeros(K, bool) for kind in KINDS}
        # Every output's cotangents in one call: [K, outputs · pairs, *shape].
        y, pulled = self._rule(xs, self._stacked)
        in_domain = fd_finite & _finite(y)
        kink, on = near(xs, kinks, reach)
        wide = reach > WIDE_STEP
        rule = [np.asarray(v) for v in pulled]
        bb = once(lambda: _rounding(self._yard, xs, self._stacked, _widened_cts))

        def allowance(a: np.ndarray, k: int, part: slice) -> np.ndarray | None:
            return allowance_of(
                a, bb(), lambda t: pair_dot([w[k][part] for w in t], self._u)
            )

        def autodiff(k: int, part: slice) -> np.ndarray | None:
            got = bb()
            return (
                None if got is None else pair_dot([w[k][part] for w in got[1]], self._u)
            )

        pairs = len(self._directions)
        for o, (position, cts) in enumerate(self._cts):
            part = slice(o * pairs, (o + 1) * pairs)
            ybar = widen_np(jax.tree_util.tree_leaves(cts)[position])
            for k in map(int, np.flatnonzero(in_domain)):
                a = pair_dot([v[k][part] for v in rule], self._u)
                numeric, error, round0, terms = dot_fd(*diffs[k][position], ybar)
                v = verdict(
                    a,
                    numeric,
                    error,
                    round0,
                    eps_grad=self._eps,
                    scale=float(terms.max()),
                    allowance=functools.partial(allowance, a, k, part),
                )
                if np.all(v.status == PASS) and not wide[k]:
                    continue
                a64 = autodiff(k, part)
                if np.all(v.status == PASS):
                    if not confirmed(
                        a,
                        a64,
                        self._eps,
                        float(terms.max()),
                        functools.partial(allowance, a, k, part),
                    ):
                        flags["unresolved"][k] = True
                    continue
                kind = failure_kind(
                    v.status,
                    a,
                    (numeric, error, round0),
                    a64,
                    kink=bool(kink[k]),
                    on=bool(on[k]),
                    bound=self._tiny_dot,
                    eps_grad=self._eps,
                    scale=float(terms.max()),
                    rounding=allowance(a, k, part) if a64 is not None else None,
                )
                flags[kind][k] = True
        return outcome(flags, in_domain)


class JVPAtPoints:
    """The JVP's tangent comparison at a batch of points: ``verdicts(xs)``.

    Args:
      g: ``f`` as a function of its differentiated leaves.
      x: those leaves at the primals (shapes, dtypes, custom rules).
      tangent: the readable tangent on every input (as at the primals).
      precision: of the finite differences.
    """

    def __init__(
        self,
        g: Callable[[list[Any]], Any],
        x: list[Any],
        tangent: list[np.ndarray],
        precision: Precision,
    ) -> None:
        self._g, self._x = g, x
        self._tangent, self._precision = tangent, precision
        self._fd = PointDifferences(g)
        self._rule = Batched(_pushforward(g))
        self._yard = _yardstick(
            g, x, precision, lambda h: lambda xs, u: _pushforward(h)(xs, u)[1]
        )
        self._u = [jnp.asarray(t, v.dtype) for t, v in zip(tangent, x)]

    @property
    def note(self) -> str:
        """Why the points were evaluated one by one (``""``: in one program)."""
        return self._fd.note or self._rule.note

    def thresholds(self) -> list[float]:
        """The scalar constants the primal and the rule compare with."""
        return _thresholds(_pushforward(self._g), self._x, self._u)

    def primal_finite(self, xs: list[Any]) -> np.ndarray:
        """bool [K]: the primal is finite at each point (the rule's program)."""
        return _finite(self._rule(xs, self._u)[0])

    def verdicts(self, xs: list[Any], kinks: list[float]) -> PointVerdicts:
        """Args: ``xs``, the points (one array per leaf, stacked [K, *shape]);
        ``kinks``, thresholds near which a failing point is not counted."""
        with reference_precision(self._precision):
            ref = [widen(v) if self._precision == "float64" else v for v in xs]
            diffs, fd_finite, reach = self._fd(ref, [self._tangent])
        y, pushed = self._rule(xs, self._u)
        in_domain = fd_finite & _finite(y)
        kink, on = near(xs, kinks, reach)
        wide = reach > WIDE_STEP
        pushed = [np.asarray(v) for v in jax.tree_util.tree_leaves(pushed)]
        bb = once(
            lambda: _rounding(self._yard, xs, self._u, lambda u: [widen(v) for v in u])
        )
        flags = {kind: np.zeros(len(diffs), bool) for kind in KINDS}

        def allowance(a: np.ndarray, j: int, k: int) -> np.ndarray | None:
            return allowance_of(
                a, bb(), lambda t: real_flat(jax.tree_util.tree_leaves(t)[j][k])
            )

        def autodiff(j: int, k: int) -> np.ndarray | None:
            got = bb()
            if got is None:
                return None
            return real_flat(jax.tree_util.tree_leaves(got[1])[j][k])

        for k in map(int, np.flatnonzero(in_domain)):
            for j, (est, r0) in enumerate(diffs[k]):
                a, n = real_flat(pushed[j][k]), real_flat(est.value[0])
                parts = 2 if np.iscomplexobj(pushed[j]) else 1
                err = np.repeat(real_flat(est.error[0]), parts)
                r0k = np.repeat(real_flat(r0[0]), parts)
                v = verdict(
                    a,
                    n,
                    err,
                    r0k,
                    eps_grad=eps_of(pushed[j].dtype),
                    scale=leaf_scale(n, err),
                    allowance=functools.partial(allowance, a, j, k),
                )
                if np.all(v.status == PASS) and not wide[k]:
                    continue
                a64 = autodiff(j, k)
                if np.all(v.status == PASS):
                    eps_j = eps_of(pushed[j].dtype)
                    if not confirmed(
                        a,
                        a64,
                        eps_j,
                        leaf_scale(n, err),
                        functools.partial(allowance, a, j, k),
                    ):
                        flags["unresolved"][k] = True
                    continue
                kind = failure_kind(
                    v.status,
                    a,
                    (n, err, r0k),
                    a64,
                    kink=bool(kink[k]),
                    on=bool(on[k]),
                    bound=float(jnp.finfo(pushed[j].dtype).tiny),
                    eps_grad=eps_of(pushed[j].dtype),
                    scale=leaf_scale(n, err),
                    rounding=allowance(a, j, k) if a64 is not None else None,
                )
                flags[kind][k] = True
        return outcome(flags, in_domain)
