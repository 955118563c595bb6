"""Fast mode against the full sweep, on the bugs of the test suite.

    python bench/fast.py [--quick] [--keys N]

1. For each broken gradient of tests/test_bugs.py and tests/test_fast.py
   (models from tests/helpers.py): whether ``check_grad(mode="fast",
   directions=K)`` catches it and pins it to the right entries, the evaluations
   of J it spends to detect it (the directional sweep) and in all (with the
   entry-by-entry sweep of the failing leaves), and the time of the whole
   call, against ``mode="full"``.
2. A correct gradient on a 26k-parameter MLP: the cost of a passing check.
3. What fast mode can miss: one entry off by a relative error r in a large
   float64 leaf, over ``--keys`` seeds: how often K directions see it, next to
   the chance predicted from the directional tolerance (|r·gᵢ·uᵢ| must exceed
   it; |uᵢ| is uniform on 0.01 … 9.00).
4. Finding the wrong entry: one entry of a 512×512 float32 weight (262,144
   entries, ``--group-width``) twice too large. Group testing (the default)
   against the sweep of every entry it replaces (``coords=n``: no group
   testing; the default sweeps a sample of 65,536 entries, which may miss it),
   in one process: evaluations, time and their ratios.

Times are of whole ``check_grad`` calls, compile included (each call compiles
its own sweeps), one run each: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import jgradcheck as jgc  # noqa: E402
from helpers import (  # noqa: E402
    data,
    failing_places,
    linear_grad,
    linear_loss,
    linear_problem,
    mlp_loss,
    mlp_params,
)


class Case(NamedTuple):
    name: str
    loss: Callable[..., Any]
    params: Any
    args: tuple
    grad: Callable[..., Any] | None
    where: set | None
    """The failing (path, index) set expected, or None: the failing leaves only."""
    leaves: set[str]
    x64: bool = False


def _linear(name, leaves, where=None, loss=linear_loss, dtype=jnp.float32, **bug):
    params, x, y = linear_problem(dtype)
    grad = linear_grad if not bug else (lambda *a: linear_grad(*a, **bug))
    return Case(name, loss, params, (x, y), grad, where, leaves, dtype == jnp.float64)


def _one_entry(name, widths, where, factor, batch=8):
    params = mlp_params(widths)
    x, y = data((batch, widths[0]), (batch, widths[-1]))

    def grad(p, x, y):
        g = jax.grad(mlp_loss)(p, x, y)
        g[0]["w"] = g[0]["w"].at[where].multiply(factor)
        return g

    return Case(name, mlp_loss, params, (x, y), grad, {("[0]['w']", where)}, set())


def cases() -> list[Case]:
    def l2(p, x, y):
        return linear_loss(p, x, y) + 1e-2 * jnp.sum(p["w"] ** 2)

    def scaled_w(p, x, y):
        g = linear_grad(p, x, y)
        return {"w": g["w"] * (1 + 3e-3), "b": g["b"]}

    def one_b(p, x, y):
        g = linear_grad(p, x, y)
        return {"w": g["w"], "b": g["b"].at[3].multiply(1 + 1e-4)}

    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defvjp(
        lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(2 * x),)
    )
    p, x, y = linear_problem()
    with jax.enable_x64(True):
        p64, x64, y64 = linear_problem(jnp.float64)
    return [
        _linear("wrong sign", {"['w']", "['b']"}, sign=-1.0),
        _linear("transposed weight gradient", {"['w']"}, transpose=True),
        _linear("missing 1/N (x128)", {"['w']"}, scale=128.0),
        Case("missing L2 term", l2, p, (x, y), linear_grad, None, {"['w']"}),
        Case(
            "3e-3 relative (float32)", linear_loss, p, (x, y), scaled_w, None, {"['w']"}
        ),
        Case(
            "1e-4 in one float64 entry",
            linear_loss,
            p64,
            (x64, y64),
            one_b,
            {("['b']", (3,))},
            set(),
            True,
        ),
        Case(
            "custom_vjp sigmoid(2x)",
            lambda q: jnp.sum(softplus(q) ** 2),
            jnp.linspace(-2.0, 2.0, 9),
            (),
            None,
            {("", (i,)) for i in range(9) if i != 4},
            set(),
        ),
        _one_entry("x2 on one entry of 1,000", [40, 25, 3], (17, 4), 2.0, batch=6),
        _one_entry("1% on one entry of 3,136", [48, 64, 4], (17, 42), 1.01),
    ]


def run(case: Case, **options) -> dict[str, Any]:
    scope = jax.enable_x64(True) if case.x64 else contextlib.nullcontext()
    with scope:
        t0 = time.perf_counter()
        r = jgc.check_grad(
            case.loss, case.params, *case.args, grad=case.grad, **options
        )
        seconds = time.perf_counter() - t0
    if case.where is not None:
        pinned = failing_places(r) == case.where
    else:
        pinned = {e.path for e in r.failures()} == case.leaves
    detect = r.timing.evaluations
    if options.get("mode") == "fast":
        detect = 2 + sum(leaf.directions.evaluations for leaf in r.leaves)
    return dict(
        caught=not r.ok,
        pinned=pinned,
        detect=detect,
        total=r.timing.evaluations,
        seconds=seconds,
        n=sum(leaf.total for leaf in r.leaves),
    )


def bug_table(ks: list[int]) -> None:
    print("== 1. bugs of the test suite: fast mode (K directions per leaf) vs full ==")
    head = f"{'bug':30s} {'n':>5s}  {'mode':9s} {'caught':>6s} {'pinned':>6s}"
    print(head + f" {'evals to detect':>15s} {'evals in all':>12s} {'seconds':>8s}")
    for case in cases():
        rows = [("full", run(case))]
        rows += [(f"fast K={k}", run(case, mode="fast", directions=k)) for k in ks]
        for i, (mode, m) in enumerate(rows):
            name = case.name if i == 0 else ""
            n = str(m["n"]) if i == 0 else ""
            print(
                f"{name:30s} {n:>5s}  {mode:9s} {'yes' if m['caught'] else 'NO':>6s} "
                f"{'yes' if m['pinned'] else 'no':>6s} {m['detect']:>15d} "
                f"{m['total']:>12d} {m['seconds']:>8.2f}"
            )


def passing_table(ks: list[int]) -> None:
    print("\n== 2. a correct gradient: MLP 64-128-128-10, batch 32, float32 params ==")
    params = mlp_params([64, 128, 128, 10])
    x, y = data((32, 64), (32, 10))
    print(
        f"{'mode':9s} {'ok':>4s} {'evals':>7s} {'sweep s':>8s} {'compile s':>9s}",
        end="",
    )
    print(f" {'whole call s':>12s}")
    for mode, k in [("full", None)] + [("fast", k) for k in ks]:
        opts = {} if k is None else dict(mode="fast", directions=k)
        t0 = time.perf_counter()
        r = jgc.check_grad(mlp_loss, params, x, y, **opts)
        seconds = time.perf_counter() - t0
        label = mode if k is None else f"fast K={k}"
        print(
            f"{label:9s} {str(r.ok):>4s} {r.timing.evaluations:>7d} "
            f"{r.timing.sweep_seconds:>8.2f} {r.timing.compile_seconds:>9.2f} "
            f"{seconds:>12.2f}"
        )


def miss_table(n: int, keys: int, ks: list[int]) -> None:
    print(
        f"\n== 3. what it can miss: one entry of a {n}-entry float64 leaf off by r; "
        f"J = Σ sin(θ) + θ²/2 + 1, {keys} seeds =="
    )
    with jax.enable_x64(True):
        theta = jnp.linspace(0.1, 2.0, n)

        def loss(p):
            return jnp.sum(jnp.sin(p) + p**2 / 2) + 1.0

        j = n // 3
        exact = jax.grad(loss)(theta)
        print(
            f"{'r':>7s} {'K':>3s} {'caught':>9s} {'predicted':>9s} "
            f"{'median tol':>10s} {'|r·g_j|':>9s}"
        )
        for r in (0.0, 1e-1, 1e-2, 1e-3, 1e-4):
            bad = exact.at[j].multiply(1 + r)
            for k in ks:
                hits, tols = 0, []
                for key in range(keys):
                    rep = jgc.check_grad(
                        loss,
                        theta,
                        grad=lambda p, b=bad: b,
                        mode="fast",
                        directions=k,
                        key=key,
                        coords=1,  # sweep only one entry: detection is the point
                    )
                    hits += not rep.ok
                    tols.append(np.median(rep.leaves[0].directions.tolerance))
                err = abs(r * float(exact[j]))
                tol = float(np.median(tols))
                # |u_j| ∈ {0.01, …, 9.00}: one direction misses when |err·u_j| ≤ tol.
                miss = min(np.floor(100 * tol / err), 900) / 900 if err else 1.0
                print(
                    f"{r:>7.0e} {k:>3d} {hits:>4d}/{keys:<4d} {1 - miss**k:>9.2f} "
                    f"{tol:>10.2e} {err:>9.2e}"
                )


def group_table(width: int) -> None:
    n = width * width
    print(
        f"\n== 4. finding one wrong entry (x2) among the {n} entries of a "
        f"{width}x{width} float32 weight: MLP {width}-{width}-4, batch 8; group "
        "testing vs the sweep of every entry it replaces =="
    )
    params = mlp_params([width, width, 4])
    x, y = data((8, width), (8, 4))
    where = (17, 42)

    def grad(p, x, y):
        g = jax.grad(mlp_loss)(p, x, y)
        g[0]["w"] = g[0]["w"].at[where].multiply(2.0)
        return g

    print(
        f"{'how':22s} {'found':>6s} {'swept':>7s} {'evals':>8s} "
        f"{'sweep s':>8s} {'compile s':>9s} {'whole call s':>12s}"
    )
    rows = []
    # coords=n: every entry of a failing leaf swept one by one, no group testing.
    # Group testing runs again last: the first call in a process pays JAX's
    # warm-up, which is not group testing's.
    runs = [("group testing", {}), ("sweep of every entry", {"coords": n})]
    for how, opts in runs + [("group testing, again", {})]:
        t0 = time.perf_counter()
        rep = jgc.check_grad(mlp_loss, params, x, y, grad=grad, mode="fast", **opts)
        seconds = time.perf_counter() - t0
        leaf = rep.leaf("[0]['w']")
        found = failing_places(rep) == {("[0]['w']", where)}
        rows.append((rep.timing.evaluations, seconds))
        print(
            f"{how:22s} {'yes' if found else 'NO':>6s} {leaf.checked:>7d} "
            f"{rep.timing.evaluations:>8d} {rep.timing.sweep_seconds:>8.2f} "
            f"{rep.timing.compile_seconds:>9.2f} {seconds:>12.2f}"
        )
        if leaf.note:
            print(f"  note: {leaf.note}")
    (_, first), (e2, s2), (e1, s1) = rows
    print(
        f"ratio (sweep of every entry / group testing, again): evaluations "
        f"{e2 / e1:.0f}x, whole call {s2 / s1:.1f}x (against the first call: "
        f"{s2 / first:.1f}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer K, seeds and sizes")
    ap.add_argument("--keys", type=int, default=20)
    ap.add_argument("--group-width", type=int, default=512)
    ap.add_argument("--only-group", action="store_true", help="run section 4 only")
    opts = ap.parse_args()
    if opts.only_group:
        group_table(opts.group_width)
        return
    ks = [1, 4] if opts.quick else [1, 2, 4, 8, 16]
    print(f"jax {jax.__version__}, {jax.devices()}")
    bug_table(ks)
    passing_table([4] if opts.quick else [4, 16])
    miss_table(
        10_000 if opts.quick else 1_000_000, 5 if opts.quick else opts.keys, [1, 4]
    )
    group_table(128 if opts.quick else opts.group_width)


if __name__ == "__main__":
    main()
