"""Full finite-difference sweeps of tanh MLPs, three ways, in one process.

    python bench/sweep.py [--quick] [--repeat N]

1. jgradcheck: ``check_grad`` (per-leaf compiled vmap sweeps, plus its verdict),
   with the leaf held sparse (the default: its change carried as a patch into the
   next product), sparse but dense after the leaf's own product, and with dense
   perturbed copies.
   Its sweep time (J evaluations only) is reported apart from compile time; the
   last column is the whole check_grad call (gradient, sweep, compile, verdict).
2. loop: a Python loop over coordinates calling one jitted function of ``i`` that
   builds θ±εeᵢ inside jit and returns the central difference (the seeds'
   algorithm, written the fast way). Dispatch is asynchronous; results are
   gathered at the end.
3. vmap-all: one jitted vmap over chunks of the whole raveled vector (every
   coordinate perturbs the full parameter vector, so no work is shared).

Everything is float64 on the default JAX device. Each method runs ``--repeat``
times and the fastest sweep is kept (the machines are noisy). Ratios are against
the loop, measured in the same run. Peak memory is the process's max RSS (CPU) or the
device's peak bytes in use (GPU) after each method.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from engine import EngineSettings, check_grad_with_engine  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from models import MLP  # noqa: E402


def make_mlp(widths, batch, seed=0):
    key = jax.random.PRNGKey(seed)
    params = []
    for a, b in zip(widths[:-1], widths[1:]):
        key, k1, k2 = jax.random.split(key, 3)
        params.append(
            {
                "w": jax.random.normal(k1, (a, b)) / np.sqrt(a),
                "b": 0.1 * jax.random.normal(k2, (b,)),
            }
        )
    key, kx, ky = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch, widths[0]))
    y = jax.random.normal(ky, (batch, widths[-1]))
    return params, x, y


# The same tanh MLP loss as bench/run.py's (bench/models.py).
mlp_loss = MLP.loss


def peak_memory_mib():
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loop_sweep(loss, params, args, eps=6e-6):
    theta, unravel = ravel_pytree(params)

    @jax.jit
    def fd_i(theta, i):
        tp = theta.at[i].add(eps)
        tm = theta.at[i].add(-eps)
        return (loss(unravel(tp), *args) - loss(unravel(tm), *args)) / (2 * eps)

    t0 = time.perf_counter()
    fd_i(theta, 0).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = [fd_i(theta, i) for i in range(theta.size)]
    res = np.asarray(jax.device_get(outs))
    return res, compile_s, time.perf_counter() - t0


def vmap_all_sweep(loss, params, args, chunk, eps=6e-6):
    theta, unravel = ravel_pytree(params)
    n = theta.size

    def fd_i(i):
        tp = theta.at[i].add(eps)
        tm = theta.at[i].add(-eps)
        return (loss(unravel(tp), *args) - loss(unravel(tm), *args)) / (2 * eps)

    f = jax.jit(jax.vmap(fd_i))
    t0 = time.perf_counter()
    f(jnp.arange(chunk)).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = []
    for s in range(0, n, chunk):
        idx = np.arange(s, s + chunk) % n
        outs.append(f(idx))
    res = np.concatenate([np.asarray(o) for o in outs])[:n]
    return res, compile_s, time.perf_counter() - t0


def best_of(repeat, fn):
    """Run ``fn`` ``repeat`` times; keep the run with the smallest sweep time."""
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r[1])


def jgc_run(params, x, y, sparse, patches=True):
    """check_grad with the leaves held sparse (the default) or as dense copies;
    ``patches=False``: a sparse leaf's change is dense after its own product."""
    engine = EngineSettings(sparse=sparse, patches=patches)
    t0 = time.perf_counter()
    report = check_grad_with_engine(mlp_loss, params, x, y, engine=engine)
    total = time.perf_counter() - t0
    assert report.ok, report
    return report.timing.compile_seconds, report.timing.sweep_seconds, total


def run_model(name, widths, batch, repeat):
    params, x, y = make_mlp(widths, batch)
    n = ravel_pytree(params)[0].size
    print(
        f"\n== {name}: widths {widths}, batch {batch}, {n} parameters, float64, "
        f"{jax.default_backend()}, best of {repeat} =="
    )
    rows = []
    c, t = best_of(repeat, lambda: loop_sweep(mlp_loss, params, (x, y))[1:])
    t_loop = t
    rows.append(("loop over jitted J(θ±εeᵢ)", c, t, None))
    c, t = best_of(repeat, lambda: vmap_all_sweep(mlp_loss, params, (x, y), 64)[1:])
    rows.append(("vmap over whole raveled vector (chunk 64)", c, t, None))
    c, t, tot = best_of(repeat, lambda: jgc_run(params, x, y, sparse=False))
    rows.append(("jgradcheck, per-leaf dense copies", c, t, tot))
    c, t, tot = best_of(
        repeat, lambda: jgc_run(params, x, y, sparse=True, patches=False)
    )
    rows.append(("jgradcheck, sparse, dense after its product", c, t, tot))
    c, t, tot = best_of(repeat, lambda: jgc_run(params, x, y, sparse=True))
    rows.append(("jgradcheck check_grad (per-leaf, sparse)", c, t, tot))
    print(
        f"{'method':44s} {'compile s':>9s} {'sweep s':>8s} {'coords/s':>10s} "
        f"{'vs loop':>8s} {'check_grad total s':>19s}"
    )
    for label, c, t, total in rows:
        tot = f"{total:19.2f}" if total is not None else ""
        print(f"{label:44s} {c:9.2f} {t:8.2f} {n / t:10.0f} {t_loop / t:7.2f}x {tot}")
    print(f"process peak memory after this model: {peak_memory_mib():.0f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 3-layer model")
    ap.add_argument("--repeat", type=int, default=3, help="runs per method (best kept)")
    a = ap.parse_args()
    print(f"jax {jax.__version__}, devices: {jax.devices()}, {os.cpu_count()} CPUs")
    run_model("3-layer tanh MLP", [64, 128, 128, 10], 32, a.repeat)
    if not a.quick:
        run_model("5-layer tanh MLP", [64, 128, 128, 128, 128, 10], 32, a.repeat)


if __name__ == "__main__":
    main()
