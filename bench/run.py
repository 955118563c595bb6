"""One table: jgradcheck against the other ways to check a gradient, one run.

    python bench/run.py [--quick] [--models mlp,cnn,transformer]
                        [--methods jgradcheck,loop,lower_bound,check_grads,
                                   torch_slow,torch_fast]
                        [--repeat N] [--repeat-slow N] [--max-slow SECONDS]
                        [--torch-threads N]

Models (``bench/models.py``, JAX and torch side by side, same weights and data):
the 26,122-parameter tanh MLP of ``bench/sweep.py``, a small CNN and a transformer
block; float64 on the CPU. Methods:

- ``jgradcheck``: ``jgc.check_grad(loss, params, x, y)``, every coordinate, the
  whole call timed (gradient under test, compile, sweep, verdict); its compile
  and sweep times (``report.timing``) are shown apart.
- ``loop``: a Python loop over a jitted J(θ±εeᵢ), the seeds' algorithm
  (``bench/sweep.py``'s ``loop_sweep``); compile included.
- ``lower_bound``: 2n evaluations of J by ``jit(vmap)`` over chunks of perturbed
  raveled parameter vectors (the fastest of a few chunk sizes), compile
  excluded: what evaluating J from scratch at every θ±εeᵢ costs, batched.
  jgradcheck's sparse sweep does less work than that (it does not recompute the
  unperturbed part of J), so it can beat this bound.
- ``check_grads``: ``jax.test_util.check_grads(f, (params,), order=1,
  modes=("rev",))``: one random direction, eager.
- ``torch_slow`` / ``torch_fast``: ``torch.autograd.gradcheck`` (default, and
  ``fast_mode=True``: one random projection) on the equivalent torch module,
  parameters as inputs through ``torch.func.functional_call``; needs the
  ``bench`` extra (``pip install -e '.[bench]'``; ``make bench`` does it). A
  probe times slow mode per coordinate first; where all n would take longer
  than ``--max-slow``, slow mode runs on a sample of whole leaves and its time
  is scaled to n (said so in the table).

Every (model, method) runs in its own child process, so "peak RSS" is that
method's process (imports, model and method; "setup RSS" is the same process
before the method started). Before anything is timed, one child checks that the
JAX and torch models give the same loss and gradient. Each child reports the loss
it saw, and a row fails if it differs. Times are the best of ``--repeat`` runs
(``--repeat-slow`` for torch's slow mode) inside the child; "1st run s" is the
first of them, the cold call a user pays in a fresh process.

On a machine shared with other busy processes, torch's default of one OpenMP
thread per core makes every small op wait for a descheduled thread (measured
here: slow mode 20-60x slower with 2 threads than with 1 under load); use
``--torch-threads 1`` there.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time

import models

METHODS = (
    "jgradcheck",
    "loop",
    "lower_bound",
    "check_grads",
    "torch_slow",
    "torch_fast",
)
SLOW = {"torch_slow"}
TORCH = {"torch_slow", "torch_fast"}
ONE_DIRECTION = {"check_grads", "torch_fast"}
LABELS = {
    "jgradcheck": "jgradcheck check_grad, all coords",
    "loop": "loop over jitted J(θ±εeᵢ)",
    "lower_bound": "2n evals of J, jit(vmap)",
    "check_grads": "jax check_grads rev, 1 direction",
    "torch_slow": "torch gradcheck slow, all coords",
    "torch_fast": "torch gradcheck fast, 1 direction",
}
RESULT = "@@RESULT "
NO_TORCH = "torch is not installed: pip install -e '.[bench]' (make bench does it)"
LOSS_RTOL = 1e-10
GRAD_RTOL = 1e-9


# ------------------------------------------------------------------ child side


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _jax_setup(model, quick: bool):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    params_np, data_np = model.init(quick)
    params = jax.tree.map(jnp.asarray, params_np)
    data = tuple(jnp.asarray(d) for d in data_np)
    value = float(jax.jit(model.loss)(params, *data))
    return params, data, value


def _import_torch():
    if importlib.util.find_spec("torch") is None:
        raise SystemExit(NO_TORCH)
    import torch

    return torch


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _grad_vector(model, params, data):
    import jax
    from jax.flatten_util import ravel_pytree

    # Jitted: eager grad compiles every primitive on its own (6 s of the
    # 12 s a --quick run spends verifying three models).
    return ravel_pytree(jax.jit(jax.grad(model.loss))(params, *data))[0]


def _best(runs: list[dict]) -> dict:
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["first"] = runs[0]["seconds"]
    best["runs"] = len(runs)
    return best


def work_verify(job: dict) -> dict:
    """JAX and torch models: same loss and same gradient, per model."""
    import jax
    import numpy as np

    out = {"jax_devices": str(jax.devices()), "models": {}}
    have_torch = importlib.util.find_spec("torch") is not None
    if have_torch:
        torch = _import_torch()
        if job.get("torch_threads"):
            torch.set_num_threads(job["torch_threads"])
        out["torch_threads"] = torch.get_num_threads()
    for name in job["models"]:
        model = models.get(name)
        params, data, value = _jax_setup(model, job["quick"])
        g = np.asarray(_grad_vector(model, params, data))
        row = {"n": int(g.size), "loss": value, "torch_loss": None}
        if have_torch:
            fn, inputs, names = models.torch_problem(
                model, job["quick"], *model.init(job["quick"])
            )
            loss_t = fn(*inputs)
            grads = torch.autograd.grad(loss_t, inputs)
            row["torch_loss"] = float(loss_t)
            row["loss_rel"] = abs(float(loss_t) - value) / abs(value)
            # Compare gradients leaf by leaf in the torch layout.
            gj = jax.tree.map(np.asarray, jax.grad(model.loss)(params, *data))
            gj_state = model.torch_state(gj)
            row["grad_rel"] = max(
                _rel(t.detach().numpy(), gj_state[n]) for n, t in zip(names, grads)
            )
            if row["loss_rel"] > LOSS_RTOL:
                raise AssertionError(
                    f"{name}: torch loss {row['torch_loss']!r} != JAX loss {value!r}"
                )
            if row["grad_rel"] > GRAD_RTOL:
                raise AssertionError(
                    f"{name}: torch and JAX gradients differ (rel {row['grad_rel']:.1e})"
                )
        out["models"][name] = row
    return out


def work_jgradcheck(job: dict) -> dict:
    import jgradcheck as jgc

    model = models.get(job["model"])
    params, data, value = _jax_setup(model, job["quick"])
    setup = _rss_mib()
    runs = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        report = jgc.check_grad(model.loss, params, *data)
        seconds = time.perf_counter() - t0
        if not report.ok:
            raise AssertionError(f"check_grad failed on a correct gradient:\n{report}")
        runs.append(
            {
                "seconds": seconds,
                "compile": report.timing.compile_seconds,
                "sweep": report.timing.sweep_seconds,
                "checked": report.n_checked,
                "evals": report.timing.evaluations,
            }
        )
    return {**_best(runs), "loss": value, "rss_setup": setup, "rss_peak": _rss_mib()}


def work_loop(job: dict) -> dict:
    from sweep import loop_sweep

    model = models.get(job["model"])
    params, data, value = _jax_setup(model, job["quick"])
    g = _grad_vector(model, params, data)
    setup = _rss_mib()
    runs = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        fd, compile_s, loop_s = loop_sweep(model.loss, params, data)
        seconds = time.perf_counter() - t0
        if _rel(fd, g) > 1e-6:
            raise AssertionError(f"loop's differences disagree: rel {_rel(fd, g):.1e}")
        runs.append({"seconds": seconds, "compile": compile_s, "sweep": loop_s})
    return {**_best(runs), "loss": value, "rss_setup": setup, "rss_peak": _rss_mib()}


def work_lower_bound(job: dict) -> dict:
    import jax
    import numpy as np
    from jax.flatten_util import ravel_pytree

    model = models.get(job["model"])
    params, data, value = _jax_setup(model, job["quick"])
    g = np.asarray(_grad_vector(model, params, data))
    theta, unravel = ravel_pytree(params)
    n, eps = theta.size, 6e-6

    def both(theta, i, *args):
        up = model.loss(unravel(theta.at[i].add(eps)), *args)
        down = model.loss(unravel(theta.at[i].add(-eps)), *args)
        return up, down

    f = jax.jit(jax.vmap(both, in_axes=(None, 0) + (None,) * len(data)))
    setup = _rss_mib()

    # The chunk with the best time per coordinate (compile excluded).
    compiled, per_coord = {}, {}
    candidates = (32,) if job["quick"] else (8, 32, 128)
    for chunk in sorted({min(c, n) for c in candidates}):
        idx = np.arange(chunk)
        t0 = time.perf_counter()
        jax.block_until_ready(f(theta, idx, *data))
        compiled[chunk] = time.perf_counter() - t0
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            jax.block_until_ready(f(theta, idx, *data))
            times.append(time.perf_counter() - t0)
        per_coord[chunk] = min(times) / chunk
    chunk = min(per_coord, key=per_coord.get)

    runs = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        outs = [
            f(theta, np.arange(s, s + chunk) % n, *data) for s in range(0, n, chunk)
        ]
        outs = jax.device_get(outs)
        seconds = time.perf_counter() - t0
        up = np.concatenate([o[0] for o in outs])[:n]
        down = np.concatenate([o[1] for o in outs])[:n]
        fd = (up - down) / (2 * eps)
        if _rel(fd, g) > 1e-6:
            raise AssertionError(f"batched differences disagree: rel {_rel(fd, g):.1e}")
        runs.append({"seconds": seconds, "compile": compiled[chunk], "sweep": seconds})
    one = jax.jit(model.loss)
    jax.block_until_ready(one(params, *data))
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        jax.block_until_ready(one(params, *data))
        times.append(time.perf_counter() - t0)
    note = (
        f"chunk {chunk} (fastest of {sorted(per_coord)}); for scale, 2n × one "
        f"jitted J call ({np.median(times) * 1e6:.0f} µs, median) = "
        f"{2 * n * np.median(times):.2f} s"
    )
    return {
        **_best(runs),
        "loss": value,
        "note": note,
        "rss_setup": setup,
        "rss_peak": _rss_mib(),
    }


def work_check_grads(job: dict) -> dict:
    from jax.test_util import check_grads

    model = models.get(job["model"])
    params, data, value = _jax_setup(model, job["quick"])
    setup = _rss_mib()

    def f(p):
        return model.loss(p, *data)

    runs = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        check_grads(f, (params,), order=1, modes=("rev",))
        runs.append({"seconds": time.perf_counter() - t0})
    return {**_best(runs), "loss": value, "rss_setup": setup, "rss_peak": _rss_mib()}


def _torch_setup(job: dict):
    torch = _import_torch()
    if job.get("torch_threads"):
        torch.set_num_threads(job["torch_threads"])
    model = models.get(job["model"])
    params, data = model.init(job["quick"])
    fn, inputs, names = models.torch_problem(model, job["quick"], params, data)
    value = float(fn(*inputs))
    return torch, fn, inputs, names, value


def _on_leaves(fn, inputs, chosen):
    """``fn`` of the tensors ``chosen`` (indices into ``inputs``), others fixed."""

    def f(*tensors):
        args = list(inputs)
        for i, t in zip(chosen, tensors):
            args[i] = t
        return fn(*args)

    return f, tuple(inputs[i] for i in chosen)


def _gradcheck(torch, fn, inputs, fast: bool) -> float:
    t0 = time.perf_counter()
    ok = torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
    seconds = time.perf_counter() - t0
    if not ok:
        raise AssertionError("torch.autograd.gradcheck returned False")
    return seconds


def work_torch_fast(job: dict) -> dict:
    torch, fn, inputs, _, value = _torch_setup(job)
    setup = _rss_mib()
    runs = [
        {"seconds": _gradcheck(torch, fn, inputs, fast=True)}
        for _ in range(job["repeat"])
    ]
    return {**_best(runs), "loss": value, "rss_setup": setup, "rss_peak": _rss_mib()}


def work_torch_slow(job: dict) -> dict:
    """Slow mode on every parameter, or on a sample of whole leaves if too slow.

    A probe on the smallest leaves (at least 256 coordinates) measures seconds
    per coordinate. If all n would take longer than ``max_slow``, gradcheck runs
    on as many whole leaves (smallest first) as fit in ``max_slow``, the other
    leaves held fixed, and the time is scaled by n / (coordinates checked): every
    coordinate costs the same two forwards of the whole model.
    """
    torch, fn, inputs, names, value = _torch_setup(job)
    n = sum(t.numel() for t in inputs)
    setup = _rss_mib()
    order = sorted(range(len(inputs)), key=lambda i: inputs[i].numel())
    _gradcheck(torch, *_on_leaves(fn, inputs, order[:1]), fast=False)  # warm-up
    probe, k = [], 0
    for i in order:
        if k >= min(256, n):
            break
        probe.append(i)
        k += inputs[i].numel()
    per_coord = _gradcheck(torch, *_on_leaves(fn, inputs, probe), fast=False) / k
    estimate = per_coord * n
    note = f"probe: {per_coord * 1e3:.2f} ms per coordinate, {estimate:.1f} s for all n"
    chosen = list(range(len(inputs)))
    if estimate > job["max_slow"]:
        chosen, k = [], 0
        for i in order:
            if chosen and (k + inputs[i].numel()) * per_coord > job["max_slow"]:
                break
            chosen.append(i)
            k += inputs[i].numel()
    runs = []
    for _ in range(job["repeat"]):
        if len(chosen) == len(inputs):
            runs.append({"seconds": _gradcheck(torch, fn, inputs, fast=False)})
        else:
            t = _gradcheck(torch, *_on_leaves(fn, inputs, chosen), fast=False)
            runs.append({"seconds": t * n / k, "measured": t})
    best = _best(runs)
    if "measured" in best:
        note = (
            f"SAMPLED (> --max-slow {job['max_slow']:g} s): {k:,} of {n:,} coords "
            f"({', '.join(names[i] for i in chosen)}) took {best['measured']:.1f} s; "
            f"seconds scaled ×{n / k:.2f}. {note}"
        )
    return {
        **best,
        "loss": value,
        "note": note,
        "rss_setup": setup,
        "rss_peak": _rss_mib(),
    }


WORKERS = {
    "verify": work_verify,
    "jgradcheck": work_jgradcheck,
    "loop": work_loop,
    "lower_bound": work_lower_bound,
    "check_grads": work_check_grads,
    "torch_slow": work_torch_slow,
    "torch_fast": work_torch_fast,
}


def child_main(job: dict) -> None:
    result = WORKERS[job["method"]](job)
    print(RESULT + json.dumps(result), flush=True)


# ----------------------------------------------------------------- parent side


def run_child(job: dict, timeout: float) -> dict:
    """Run ``job`` in a fresh Python process; its result, or ``{"failed": ...}``."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
    sys.stderr.write(proc.stderr)
    return {"failed": f"exit {proc.returncode}: {lines[-1]}"}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_lines() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [
                ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        mem = f", {kib / 2**20:.1f} GiB RAM"
    except (OSError, StopIteration):
        pass
    load = ", load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"machine: {cpu}, {os.cpu_count()} logical CPUs ({usable} usable){mem}{load}",
        f"python {platform.python_version()}, jax {_version('jax')}, "
        f"jaxlib {_version('jaxlib')}, numpy {_version('numpy')}, "
        f"torch {_version('torch')}; {time.strftime('%Y-%m-%d %H:%M %Z')}",
    ]


def _fmt(x, spec: str, width: int) -> str:
    return f"{x:{width}{spec}}" if x is not None else " " * width


def table(rows: list[tuple[str, int, str, dict]]) -> list[str]:
    head = (
        f"{'model':20s} {'method':34s} {'seconds':>8s} {'compile s':>9s} "
        f"{'sweep s':>8s} {'1st run s':>9s} {'coords/s':>9s} {'vs jgc':>7s} "
        f"{'peak RSS MiB':>12s} {'setup RSS MiB':>13s} {'runs':>4s}"
    )
    out = [head, "-" * len(head)]
    last_model = None
    for model, n, method, r in rows:
        if last_model is not None and model != last_model:
            out.append("")
        label = f"{model} ({n:,})" if model != last_model else ""
        last_model = model
        prefix = f"{label:20s} {LABELS[method]:34s} "
        if "failed" in r or "skipped" in r:
            word = "FAILED" if "failed" in r else "skipped"
            out.append(prefix + f"{word}: {r.get('failed') or r.get('skipped')}")
            continue
        jgc = next(
            (
                x
                for m, _, k, x in rows
                if m == model and k == "jgradcheck" and "seconds" in x
            ),
            None,
        )
        ratio = f"{r['seconds'] / jgc['seconds']:6.2f}x" if jgc else " " * 7
        rate = "1 dir" if method in ONE_DIRECTION else f"{n / r['seconds']:,.0f}"
        out.append(
            prefix
            + f"{r['seconds']:8.2f} {_fmt(r.get('compile'), '.2f', 9)} "
            + f"{_fmt(r.get('sweep'), '.2f', 8)} {r['first']:9.2f} {rate:>9s} "
            + f"{ratio} {r['rss_peak']:12.0f} {r['rss_setup']:13.0f} {r['runs']:4d}"
        )
        if r.get("note"):
            out.append(f"{'':20s}   {r['note']}")
    return out


NOTES = """\
seconds: best run's wall time, compile included (jgradcheck: the whole check_grad
  call; loop: first call + loop), except "2n evals" (compile excluded).
compile s, sweep s: the parts of that run spent compiling and evaluating J.
1st run s: the first run in the fresh child process (the cold call; torch slow:
  the first run after its probe).
coords/s: parameters ÷ seconds; "1 dir" methods check one random direction only.
vs jgc: seconds ÷ jgradcheck's seconds on the same model (>1: slower).
peak RSS: max resident set of that method's own child process (ru_maxrss);
  setup RSS: the same process after imports and model setup, before the method."""


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models (smoke test)")
    ap.add_argument("--models", default=",".join(models.MODELS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--repeat", type=int, default=None, help="runs per fast method (3; --quick: 1)"
    )
    ap.add_argument(
        "--repeat-slow", type=int, default=1, help="runs of torch's slow mode (1)"
    )
    ap.add_argument(
        "--max-slow",
        type=float,
        default=60.0,
        help="past this estimate (s), torch's slow mode runs on a sample of leaves",
    )
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch.set_num_threads in the torch processes (0: torch's default)",
    )
    ap.add_argument("--child-timeout", type=float, default=1800.0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return a
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for m in a.models:
        if m not in models.MODELS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(models.MODELS)}")
    for m in a.methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    a.methods = [m for m in METHODS if m in a.methods]  # table order
    if a.repeat is None:
        a.repeat = 1 if a.quick else 3
    if a.repeat < 1 or a.repeat_slow < 1:
        ap.error("--repeat and --repeat-slow must be at least 1")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.worker:
        child_main(json.loads(a.worker))
        return 0
    t_start = time.perf_counter()
    have_torch = importlib.util.find_spec("torch") is not None
    for line in machine_lines():
        print(line)
    fast = [m for m in a.methods if m not in SLOW]
    slow = [m for m in a.methods if m in SLOW]
    print(
        f"float64, JAX on {os.environ.get('JAX_PLATFORMS', 'cpu')}, torch on CPU; "
        "each (model, method) in its own child process; "
        + "; ".join(
            f"best of {k}: {', '.join(ms)}"
            for k, ms in ((a.repeat, fast), (a.repeat_slow, slow))
            if ms
        )
    )
    print(f"command: python bench/run.py {' '.join(sys.argv[1:])}".rstrip())
    print()
    for name in a.models:
        print(f"{name}: {models.get(name).describe(a.quick)}")

    # Same model in JAX and torch, before anything is timed.
    verify = run_child(
        {
            "method": "verify",
            "models": a.models,
            "quick": a.quick,
            "torch_threads": a.torch_threads,
        },
        a.child_timeout,
    )
    if "failed" in verify:
        print(f"\nmodel check FAILED: {verify['failed']}")
        return 1
    print()
    if verify.get("torch_threads"):
        how = "set by --torch-threads" if a.torch_threads else "torch's default"
        print(f"torch intra-op threads: {verify['torch_threads']} ({how})")
    for name in a.models:
        v = verify["models"][name]
        if v["torch_loss"] is None:
            print(
                f"loss check {name}: JAX loss {v['loss']:.12g}; torch not installed, "
                "torch/JAX equivalence not checked"
            )
        else:
            print(
                f"loss check {name}: JAX {v['loss']:.12g}, torch {v['torch_loss']:.12g} "
                f"(rel diff {v['loss_rel']:.1e}); gradients rel diff "
                f"{v['grad_rel']:.1e}: same model"
            )

    rows, failed = [], False
    for name in a.models:
        n = verify["models"][name]["n"]
        for method in a.methods:
            if method in TORCH and not have_torch:
                rows.append((name, n, method, {"skipped": NO_TORCH}))
                continue
            repeat = a.repeat_slow if method in SLOW else a.repeat
            job = {
                "method": method,
                "model": name,
                "quick": a.quick,
                "repeat": repeat,
                "max_slow": a.max_slow,
                "torch_threads": a.torch_threads,
            }
            sys.stdout.flush()
            print(f"  running {name} / {method} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            r = run_child(job, a.child_timeout)
            print(
                f"  ... {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True
            )
            if "loss" in r:
                ref = verify["models"][name]["loss"]
                if abs(r["loss"] - ref) > LOSS_RTOL * abs(ref):
                    r = {"failed": f"loss {r['loss']!r} != {ref!r}: not the same model"}
            failed |= "failed" in r
            rows.append((name, n, method, r))

    print()
    for line in table(rows):
        print(line)
    print()
    print(NOTES)
    print(
        f"\nwall time of the whole run: {time.perf_counter() - t_start:.0f} s; "
        f"load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
