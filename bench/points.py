"""The cost of ``check_vjp(..., points=64)`` against 64 separate checks at the same points.

    python bench/points.py [--points 64] [--size 8]

A softplus with a hand-written custom_vjp, ``x`` of ``--size`` float32 entries.
``points=K`` evaluates the K points' dot tests in one compiled batch (plus the
check at ``x`` itself); the baseline calls ``check_vjp`` once per point, at the
values ``report.points.values`` holds, in the same process after a warm-up
check. Two rules: a correct one (every point passes: no shrinking) and one
whose saturated branch is wrong (the failing points are shrunk and the
simplest gets a full check). ``localize=0`` in both columns: failing outputs
are still localised, as in the baseline. One run each; CPU time depends on the
machine's load, so run it on a quiet machine and record the load.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jgradcheck as jgc


def softplus_rule(saturated_slope: float | None) -> jax.custom_vjp:
    """softplus; ``saturated_slope`` (a bug) replaces σ(x) where x > 15."""

    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    def bwd(x, g):
        slope = jax.nn.sigmoid(x)
        if saturated_slope is not None:
            slope = jnp.where(x > 15.0, saturated_slope, slope)
        return (g * slope,)

    softplus.defvjp(lambda x: (softplus(x), x), bwd)
    return softplus


def measure(f: jax.custom_vjp, x: jax.Array, k: int) -> tuple[float, float, int, int]:
    """Seconds for ``points=k``, seconds for k separate checks, and how many
    points failed in each."""
    jgc.check_vjp(f, x, localize=0)  # warm-up: JAX, the rule's tracing
    t0 = time.perf_counter()
    report = jgc.check_vjp(f, x, points=k, localize=0)
    batched = time.perf_counter() - t0
    (values,) = report.points.values
    t0 = time.perf_counter()
    failed = sum(not jgc.check_vjp(f, jnp.asarray(v), localize=0).ok for v in values)
    separate = time.perf_counter() - t0
    return batched, separate, len(report.points.failing), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--size", type=int, default=8)
    args = parser.parse_args()
    x = jnp.asarray(np.linspace(-2.0, 2.0, args.size), jnp.float32)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"check_vjp(softplus, x[{args.size}] float32, points={args.points}) "
        f"vs {args.points} separate checks; load average {load:.1f} on "
        f"{os.cpu_count()} CPUs, {jax.default_backend()}"
    )
    print(f"{'rule':<28}{'points=K':>10}{'separate':>10}{'ratio':>8}  failing")
    for name, slope in [("correct", None), ("saturated branch wrong", 0.0)]:
        batched, separate, fail_b, fail_s = measure(
            softplus_rule(slope), x, args.points
        )
        print(
            f"{name:<28}{batched:>9.2f}s{separate:>9.2f}s{separate / batched:>7.1f}x"
            f"  {fail_b} (batch) / {fail_s} (separate)"
        )


if __name__ == "__main__":
    main()
