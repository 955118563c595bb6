"""check_vjp on a custom_vjp layer with ~10k inputs vs a Python loop, in one process.

    python bench/rules.py [--width 100] [--batch 8] [--repeat 3]

The layer is ``tanh(x @ W)`` with a hand-written custom_vjp, ``W`` of
width×width and ``x`` of batch×width (10,800 inputs by default). jgradcheck runs
``check_vjp`` with full localisation: the numeric Jᵀȳ for every input coordinate,
plus the primal, dot-product and structure checks. The baseline is a Python loop
over input coordinates calling one jitted function of ``i`` that returns the
central difference of ⟨ȳ, f⟩ along eᵢ (the same numbers the localisation needs,
computed the usual way). float64 on the default device; best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import jgradcheck as jgc  # noqa: E402


@jax.custom_vjp
def layer(x, w):
    return jnp.tanh(x @ w)


def _fwd(x, w):
    y = jnp.tanh(x @ w)
    return y, (x, w, y)


def _bwd(res, g):
    x, w, y = res
    d = g * (1 - y**2)
    return d @ w.T, x.T @ d


layer.defvjp(_fwd, _bwd)


def loop_localisation(x, w, ybar, eps=6e-6):
    theta, unravel = ravel_pytree((x, w))

    @jax.jit
    def fd_i(theta, i):
        def s(t):
            xx, ww = unravel(t)
            return jnp.sum(ybar * layer(xx, ww))

        return (s(theta.at[i].add(eps)) - s(theta.at[i].add(-eps))) / (2 * eps)

    fd_i(theta, 0).block_until_ready()
    t0 = time.perf_counter()
    out = jax.device_get([fd_i(theta, i) for i in range(theta.size)])
    return np.asarray(out), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(k1, (a.batch, a.width))
    w = jax.random.normal(k2, (a.width, a.width)) / np.sqrt(a.width)
    n = x.size + w.size
    print(
        f"jax {jax.__version__}, {jax.devices()}; layer tanh(x @ W), {n} inputs, float64"
    )

    ybar = jnp.asarray(
        np.random.default_rng(0).integers(1, 900, (a.batch, a.width)) / 100
    )
    loop_t = min(loop_localisation(x, w, ybar)[1] for _ in range(a.repeat))

    best = None
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        report = jgc.check_vjp(layer, x, w)
        total = time.perf_counter() - t0
        assert report.ok, report
        ((label, loc),) = report.localized
        run = (
            loc.timing.sweep_seconds,
            loc.timing.compile_seconds,
            total,
            loc.n_checked,
        )
        best = run if best is None or run[0] < best[0] else best
    sweep, compile_s, total, checked = best
    print(f"{'method':52s} {'seconds':>8s} {'vs loop':>8s}")
    print(
        f"{'loop over jitted FD of <ybar, f> per coordinate':52s} {loop_t:8.2f} {1.0:7.2f}x"
    )
    print(
        f"{'check_vjp localisation sweep (all ' + str(checked) + ' coords)':52s} "
        f"{sweep:8.2f} {loop_t / sweep:7.2f}x"
    )
    print(f"{'check_vjp localisation compile':52s} {compile_s:8.2f}")
    print(
        f"{'check_vjp total (every check, compile included)':52s} "
        f"{total:8.2f} {loop_t / total:7.2f}x"
    )


if __name__ == "__main__":
    main()
