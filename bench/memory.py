"""Peak memory of check_grad on ~10M-parameter models, per memory budget.

    python bench/memory.py [--coords 2000] [--budgets 256M,1G,2G] [--full-seconds 30]

Every measurement runs in a fresh child process, which prints its peak resident
set size (``ru_maxrss``) before and after ``check_grad``, and the batch size the
engine chose for every leaf with its estimate of the memory per evaluation
(``per eval``, traced by ``jgradcheck._engine.sweep.eval_bytes``) and XLA's own
temporary buffer size for the compiled batch (``xla temp``, from
``memory_analysis()``, kept by the sweep's batch runner). The sweeps are
recorded through the engine's ``on_sweep`` callback (bench/engine.py).

Models (float32 params; the reference runs in float64):

* ``mlp``: a tanh MLP with widths [1600, 3200, 1500, 10] (9.9M parameters),
  batch of 8 inputs. The sparse evaluation never copies a weight matrix.
* ``embed``: an embedding table 40000 x 256 (10.2M parameters) gathered by 8x16
  tokens, mean-pooled, and a 256 x 10 linear head. The gather is not one of the
  sparse rules, so every evaluation materialises its own copy of the table
  (80 MB in float64): the case that needs the batch sized from the leaf.

Modes: ``sample`` is ``check_grad(coords=N)``; ``full`` starts a full sweep of
the largest leaf (``coords`` = a mask of that leaf) and stops the child after
``--full-seconds`` seconds (a full sweep would take hours on a CPU), printing
the peak memory so far and the coordinates done.

First, for four single-leaf programs, the estimate for batches of 1, 4 and 8
against XLA's temporary buffer size for the compiled batch (abstract shapes,
nothing allocated), and the batch a GPU would get with the default 2 GiB budget
from this estimate and from the old rule (computed, not run: there is no GPU).

The ``old batch`` column is computed, not measured: the batch the engine chose
before this estimate (from every intermediate of one unperturbed evaluation,
which misses the leaf copies), and ``its MiB`` what that batch would take by
the new estimate (``old batch x per eval + fixed``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time

BUDGETS = {"256M": 256 * 2**20, "1G": 2**30, "2G": 2 * 2**30}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(model: str, mode: str, budget: int, coords: int, seconds: float) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from engine import EngineSettings, check_grad_with_engine

    from jgradcheck._engine.batch import jaxpr_bytes

    key = jax.random.PRNGKey(0)
    if model == "mlp":
        widths = [1600, 3200, 1500, 10]
        params = []
        for a, b in zip(widths[:-1], widths[1:]):
            key, k1 = jax.random.split(key)
            w = jax.random.normal(k1, (a, b), jnp.float32) / np.sqrt(a)
            params.append({"w": w, "b": jnp.zeros((b,), jnp.float32)})
        kx, ky = jax.random.split(key)
        args = (
            jax.random.normal(kx, (8, widths[0]), jnp.float32),
            jax.random.normal(ky, (8, widths[-1]), jnp.float32),
        )

        from models import MLP

        loss = MLP.loss

    else:
        k1, k2, k3, k4 = jax.random.split(key, 4)
        params = {
            "table": 0.1 * jax.random.normal(k1, (40000, 256), jnp.float32),
            "head": jax.random.normal(k2, (256, 10), jnp.float32) / 16,
        }
        args = (
            jax.random.randint(k3, (8, 16), 0, 40000),
            jax.random.normal(k4, (8, 10), jnp.float32),
        )

        def loss(params, tokens, y):
            h = params["table"][tokens].mean(axis=1)
            return jnp.mean((jnp.tanh(h) @ params["head"] - y) ** 2)

    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    before = rss_mib()

    # The rule replaced by eval_bytes: every intermediate of one unperturbed
    # evaluation, no copy of the leaf, on CPU kept within 16 MiB.
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        a64 = tuple(
            a.astype(jnp.float64) if a.dtype == jnp.float32 else a for a in args
        )
        jaxpr = jax.make_jaxpr(lambda: loss(p64, *a64))().jaxpr
    old_per = max(jaxpr_bytes(jaxpr), 1)
    old_budget = min(budget, EngineSettings().cpu_working_set)
    old_batch = 2 ** int(math.log2(max(2, min(512, old_budget // old_per))))

    # Every sweep the check creates, read when the report is printed (its
    # evaluations are counted batch by batch, so a stopped sweep shows them).
    sweeps = []
    engine = EngineSettings(on_sweep=sweeps.append)

    def leaf_row(sw) -> dict:
        temp = sw.runner.temp_bytes
        return {
            "path": sw.info.path,
            "size": sw.info.size,
            "batch": sw.batch,
            "per_eval_mib": sw.per_eval / 2**20,
            "fixed_mib": sw.fixed_bytes / 2**20,
            "xla_temp_mib": None if temp is None else temp / 2**20,
            "old_batch": old_batch,
            "leaf_f64_mib": sw.info.size * 8 / 2**20,
        }

    def report(stopped: bool, seconds_run: float) -> None:
        print(
            json.dumps(
                {
                    "model": model,
                    "mode": mode,
                    "budget_mib": budget / 2**20,
                    "params": int(n_params),
                    "rss_before_mib": before,
                    "rss_peak_mib": rss_mib(),
                    "seconds": seconds_run,
                    "stopped": stopped,
                    "evals": sum(sw.n_evals for sw in sweeps),
                    "leaves": [
                        leaf_row(sw) for sw in sweeps if getattr(sw, "per_eval", None)
                    ],
                }
            ),
            flush=True,
        )

    t0 = time.perf_counter()
    if mode == "full":
        sizes = [x.size for x in jax.tree_util.tree_leaves(params)]
        big = int(np.argmax(sizes))
        mask = jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(params),
            [
                np.ones(x.shape, bool) if i == big else None
                for i, x in enumerate(jax.tree_util.tree_leaves(params))
            ],
        )

        def stop() -> None:
            report(True, time.perf_counter() - t0)
            os._exit(0)

        threading.Timer(seconds, stop).start()
        check_grad_with_engine(
            loss, params, *args, engine=engine, coords=mask, memory_budget=budget
        )
        report(False, time.perf_counter() - t0)
        os._exit(0)
    r = check_grad_with_engine(
        loss, params, *args, engine=engine, coords=coords, memory_budget=budget
    )
    assert r.ok, r
    report(False, time.perf_counter() - t0)


def estimates() -> None:
    """The traced estimate against XLA's own temporary buffers, per batch size.

    Abstract shapes only: nothing is allocated, each program is compiled.
    """
    import jax
    import jax.numpy as jnp

    from jgradcheck._engine.batch import choose_batch, jaxpr_bytes
    from jgradcheck._engine.devices import Layout
    from jgradcheck._engine.sweep import eval_bytes, leaf_evaluation
    from jgradcheck._pytree.flat import Split

    def split(*leaves):
        n = len(leaves)
        return Split(
            leaves, (None,) * n, (True,) * n, jax.tree_util.tree_structure((0,) * n)
        )

    f64 = jnp.float64
    w = jax.ShapeDtypeStruct((1600, 3200), f64)
    x = jax.ShapeDtypeStruct((8, 1600), f64)
    table = jax.ShapeDtypeStruct((40000, 256), f64)
    tok = jax.ShapeDtypeStruct((8, 16), jnp.int32)
    cases = [
        (
            "mlp layer W 1600x3200, sparse",
            lambda p, x: jnp.mean(jnp.tanh(x @ p[0])),
            w,
            x,
            True,
        ),
        (
            "mlp layer, dense copies",
            lambda p, x: jnp.mean(jnp.tanh(x @ p[0])),
            w,
            x,
            False,
        ),
        (
            "mlp layer + L2 on W, sparse",
            lambda p, x: jnp.mean(jnp.tanh(x @ p[0])) + jnp.sum(p[0] ** 2),
            w,
            x,
            True,
        ),
        (
            "embedding 40000x256, sparse",
            lambda p, t: jnp.mean(jnp.tanh(p[0][t].mean(axis=1))),
            table,
            tok,
            True,
        ),
    ]
    layout = Layout(jax.local_devices()[:1])
    batches = (1, 4, 8)
    print(
        "\nestimate (per eval x batch + fixed) vs XLA temp buffers, MiB, float64, "
        f"batches {batches}:"
    )
    with jax.enable_x64(True):
        for name, loss, leaf, arg, sparse in cases:
            one = leaf_evaluation(loss, split(leaf), split(arg), 0, sparse=sparse)
            per, fixed = eval_bytes(one, f64, (leaf,), (arg,))
            fn = layout.jit(one)
            cells = []
            for b in batches:
                i = jax.ShapeDtypeStruct((b,), jnp.int32)
                v = jax.ShapeDtypeStruct((b,), f64)
                c = fn.lower(i, v, (leaf,), (arg,)).compile()
                temp = c.memory_analysis().temp_size_in_bytes
                cells.append(f"{(b * per + fixed) / 2**20:7.1f} vs {temp / 2**20:6.1f}")
            # Batches on a GPU with the default 2 GiB budget, by this estimate
            # and by the old rule (intermediates of one unperturbed evaluation).
            gpu = choose_batch(
                per, 10**7, memory_budget=2**31, backend="gpu", fixed=fixed
            )
            unperturbed = jax.make_jaxpr(lambda p, a, f=loss: f((p,), a))(leaf, arg)
            old_per = max(jaxpr_bytes(unperturbed.jaxpr), 1)
            old = 2 ** int(math.log2(max(2, min(8192, 2**31 // old_per))))
            print(
                f"  {name:32s} " + " | ".join(cells) + f"   gpu 2 GiB batch: {gpu} "
                f"(old rule {old}: {(old * per + fixed) / 2**30:.1f} GiB by the estimate)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--coords", type=int, default=2000)
    ap.add_argument("--budgets", default="256M,1G,2G")
    ap.add_argument("--models", default="mlp,embed")
    ap.add_argument("--full-seconds", type=float, default=30.0)
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "MODE", "BUDGET"))
    a = ap.parse_args()
    if a.child:
        model, mode, budget = a.child
        child(model, mode, int(budget), a.coords, a.full_seconds)
        return

    import jax

    print(f"jax {jax.__version__}, {jax.devices()}, {os.cpu_count()} CPUs")
    estimates()
    runs = [
        (m, mode, BUDGETS[b])
        for m in a.models.split(",")
        for mode in ("sample", "full")
        for b in a.budgets.split(",")
    ]
    for model, mode, budget in runs:
        cmd = [sys.executable, __file__, "--child", model, mode, str(budget)]
        cmd += ["--coords", str(a.coords), "--full-seconds", str(a.full_seconds)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"\n{model} {mode} budget {budget / 2**20:.0f} MiB: FAILED")
            print(done.stderr[-3000:])
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        what = (
            f"check_grad(coords={a.coords})"
            if mode == "sample"
            else f"full sweep of the largest leaf, stopped after {r['seconds']:.0f} s"
            if r["stopped"]
            else "full sweep of the largest leaf"
        )
        print(
            f"\n== {model} ({r['params']:,} params), {what}, memory_budget "
            f"{r['budget_mib']:.0f} MiB ==\n"
            f"peak RSS {r['rss_peak_mib']:.0f} MiB (before check_grad "
            f"{r['rss_before_mib']:.0f} MiB), {r['seconds']:.1f} s, "
            f"{r['evals']:,} evaluations of J"
        )
        print(
            f"  {'leaf':14s} {'size':>10s} {'batch':>6s} {'per eval MiB':>13s} "
            f"{'fixed MiB':>10s} {'xla temp MiB':>13s} {'old batch':>9s} {'its MiB':>10s}"
        )
        for leaf in r["leaves"]:
            temp = leaf.get("xla_temp_mib")
            old = leaf["old_batch"] * leaf["per_eval_mib"] + leaf["fixed_mib"]
            print(
                f"  {leaf['path']:14s} {leaf['size']:>10,} {leaf['batch']:>6} "
                f"{leaf['per_eval_mib']:>13.2f} {leaf['fixed_mib']:>10.1f} "
                f"{'-' if temp is None else f'{temp:.1f}':>13s} "
                f"{leaf['old_batch']:>6} {old:>10.0f}"
            )


if __name__ == "__main__":
    main()
