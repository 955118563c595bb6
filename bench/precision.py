"""Precision per dtype: the smallest planted error each checker catches, and false alarms.

    python bench/precision.py [--quick] [--dtypes bfloat16,float16,float32,float64]
                              [--rules softplus,dense,attention]
                              [--tools jgradcheck,reference,check_grads,torch]
                              [--draws 5] [--torch-python PATH]

Rules (a hand-written VJP each, the same math in JAX and torch, computed in the
inputs' dtype; inputs drawn from ``numpy.random.default_rng(seed)`` in float64 and
rounded to the dtype, so both libraries see the same numbers):

- ``softplus``: ``log(1 + eˣ)`` on 256 entries, backward ``ḡ·sigmoid(x)``;
- ``dense``: ``tanh(x @ w)``, w 16×16, x 8×16 (384 entries), backward by hand;
- ``attention``: ``softmax(q kᵀ/√d) v``, q, k, v 12×8 (288 entries), backward by
  hand (the softmax Jacobian ``p·(dp − Σ p·dp)``).

A bug is planted in ONE entry of the backward output: entry ``PLANT`` (37) of the
first input's cotangent is multiplied by ``1 + r``, for r on ``GRID`` (1e-1 down
to 1e-7; ``--quick``: 1e-1, 1e-3). Tools, each with its defaults:

- ``jgradcheck``: ``jgc.check_vjp(rule, *inputs)`` (dot tests and full
  localisation); caught = ``ok`` False;
- ``reference``: the same with ``reference=`` the plain jnp implementation;
- ``check_grads``: ``jax.test_util.check_grads(rule, inputs, order=1,
  modes=["rev"])``; caught = it raises;
- ``torch``: ``torch.autograd.gradcheck`` on the equivalent
  ``torch.autograd.Function`` in the same dtype (torch wants float64; in the
  narrower dtypes it is run anyway and reported as it is); caught = it raises
  or returns False. Runs in a child process with ``--torch-python`` (default:
  ``$JGC_TORCH_PYTHON``, else this interpreter), skipped with a line when that
  interpreter has no torch (``pip install -e '.[bench]'``).

Per (dtype, rule, tool): the correct rule is checked on ``--draws`` input draws
(seeds 0, 1, …): "false alarms" counts the draws on which it fails. Then, on
seed 0, r is scanned from large to small, stopping after two misses in a row;
"smallest caught" is the smallest r with every larger r caught. A tool that
fails the correct rule at seed 0 gets no scan ("n/a"): it cannot tell a bug
from no bug there. With float32 in ``--dtypes`` a last table checks a float32
rule whose backward runs in float16 (three digits lost), and its correct twin.
x64 is on (float64 needs it); every check runs in this one process, eagerly as
each tool does by default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

DTYPES = ("bfloat16", "float16", "float32", "float64")
RULES = ("softplus", "dense", "attention")
TOOLS = ("jgradcheck", "reference", "check_grads", "torch")
LABELS = {
    "jgradcheck": "jgradcheck check_vjp",
    "reference": "jgradcheck reference=",
    "check_grads": "jax check_grads rev",
    "torch": "torch gradcheck",
}
GRID = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7)
QUICK_GRID = (1e-1, 1e-3)
EPS = {
    "bfloat16": 2.0**-7,
    "float16": 2.0**-10,
    "float32": 2.0**-23,
    "float64": 2.0**-52,
}
PLANT = 37
MISSES_TO_STOP = 2
RESULT = "@@RESULT "
SEQ, HEAD = 12, 8


def shapes(rule: str) -> list[tuple[int, ...]]:
    return {
        "softplus": [(256,)],
        "dense": [(16, 16), (8, 16)],
        "attention": [(SEQ, HEAD)] * 3,
    }[rule]


def draw(rule: str, seed: int) -> list[np.ndarray]:
    """The rule's inputs in float64 (rounded to the dtype by each library)."""
    rng = np.random.default_rng(seed)
    out = [rng.normal(size=s) for s in shapes(rule)]
    if rule == "softplus":
        out[0] = 2 * out[0]
    if rule == "dense":
        out[0] = out[0] / 4
    return out


def n_entries(rule: str) -> int:
    return sum(int(np.prod(s)) for s in shapes(rule))


# ------------------------------------------------------------------ JAX side


def jax_rule(rule: str, r: float = 0.0, backward_dtype=None):
    """The rule as a ``jax.custom_vjp``; entry PLANT of the first cotangent × (1+r);
    ``backward_dtype``: the backward's products run in that dtype."""
    import jax
    import jax.numpy as jnp

    def lo(*xs):
        if backward_dtype is None:
            return xs
        return tuple(x.astype(backward_dtype) for x in xs)

    def plant(first, like):
        flat = first.astype(like.dtype).reshape(-1)
        if r:
            flat = flat.at[PLANT].multiply(1 + r)
        return flat.reshape(like.shape)

    if rule == "softplus":

        def f(x):
            return jnp.logaddexp(x, 0.0).astype(x.dtype)

        def fwd(x):
            return f(x), x

        def bwd(x, g):
            g_, x_ = lo(g, x)
            return (plant(g_ * jax.nn.sigmoid(x_), x),)

    elif rule == "dense":

        def f(w, x):
            return jnp.tanh(x @ w)

        def fwd(w, x):
            y = f(w, x)
            return y, (w, x, y)

        def bwd(res, g):
            w, x, y = res
            g_, w_, x_, y_ = lo(g, w, x, y)
            d = g_ * (1 - y_**2)
            return plant(x_.T @ d, w), (d @ w_.T).astype(x.dtype)

    else:

        def f(q, k, v):
            return jax.nn.softmax((q @ k.T) / np.sqrt(HEAD).astype(q.dtype), -1) @ v

        def fwd(q, k, v):
            p = jax.nn.softmax((q @ k.T) / np.sqrt(HEAD).astype(q.dtype), -1)
            return p @ v, (q, k, v, p)

        def bwd(res, g):
            q, k, v, p = res
            g_, q_, k_, v_, p_ = lo(g, q, k, v, p)
            scale = (1 / np.sqrt(HEAD)).astype(p_.dtype)
            dv = p_.T @ g_
            dp = g_ @ v_.T
            ds = p_ * (dp - jnp.sum(p_ * dp, axis=-1, keepdims=True)) * scale
            return plant(ds @ k_, q), (ds.T @ q_).astype(k.dtype), dv.astype(v.dtype)

    rule_fn = jax.custom_vjp(f)
    rule_fn.defvjp(fwd, bwd)
    return rule_fn, f


def jax_inputs(rule: str, seed: int, dtype: str):
    import jax.numpy as jnp

    return tuple(jnp.asarray(a).astype(dtype) for a in draw(rule, seed))


def jax_caught(tool: str, rule: str, dtype: str, seed: int, r: float, bwd=None):
    """True (the check fails), False (it passes), or ``"error: …"``."""

    import jgradcheck as jgc

    fn, plain = jax_rule(rule, r, bwd)
    inputs = jax_inputs(rule, seed, dtype)
    try:
        if tool == "check_grads":
            from jax.test_util import check_grads

            try:
                check_grads(fn, inputs, order=1, modes=["rev"])
            except AssertionError:
                return True
            return False
        ref = plain if tool == "reference" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return not jgc.check_vjp(fn, *inputs, reference=ref).ok
    except Exception as e:  # reported, not hidden
        return f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}"


# ---------------------------------------------------------------- torch side


def torch_rule(torch, rule: str, r: float = 0.0, backward_dtype=None):
    """The same rule as a ``torch.autograd.Function`` (its ``apply``)."""

    def lo(*xs):
        if backward_dtype is None:
            return xs
        return tuple(x.to(getattr(torch, backward_dtype)) for x in xs)

    def plant(first, like):
        flat = first.to(like.dtype).reshape(-1).clone()
        if r:
            flat[PLANT] = flat[PLANT] * (1 + r)
        return flat.reshape(like.shape)

    class Softplus(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.logaddexp(x, torch.zeros_like(x))

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            g_, x_ = lo(g, x)
            return plant(g_ * torch.sigmoid(x_), x)

    class Dense(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w, x):
            y = torch.tanh(x @ w)
            ctx.save_for_backward(w, x, y)
            return y

        @staticmethod
        def backward(ctx, g):
            w, x, y = ctx.saved_tensors
            g_, w_, x_, y_ = lo(g, w, x, y)
            d = g_ * (1 - y_**2)
            return plant(x_.T @ d, w), (d @ w_.T).to(x.dtype)

    class Attention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            root_d = torch.tensor(np.sqrt(HEAD), dtype=torch.float64).to(q.dtype)
            p = torch.softmax((q @ k.T) / root_d, dim=-1)
            ctx.save_for_backward(q, k, v, p)
            return p @ v

        @staticmethod
        def backward(ctx, g):
            q, k, v, p = ctx.saved_tensors
            g_, q_, k_, v_, p_ = lo(g, q, k, v, p)
            scale = torch.tensor(1 / np.sqrt(HEAD), dtype=torch.float64).to(p_.dtype)
            dv = p_.T @ g_
            dp = g_ @ v_.T
            ds = p_ * (dp - (p_ * dp).sum(-1, keepdim=True)) * scale
            return plant(ds @ k_, q), (ds.T @ q_).to(k.dtype), dv.to(v.dtype)

    return {"softplus": Softplus, "dense": Dense, "attention": Attention}[rule].apply


def torch_inputs(torch, rule: str, seed: int, dtype: str):
    return tuple(
        torch.tensor(a, dtype=torch.float64).to(getattr(torch, dtype)).requires_grad_()
        for a in draw(rule, seed)
    )


def torch_caught(torch, rule, dtype, seed, r, bwd, notes: set):
    fn = torch_rule(torch, rule, r, bwd)
    inputs = torch_inputs(torch, rule, seed, dtype)
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        try:
            result = not torch.autograd.gradcheck(fn, inputs)
        except Exception as e:  # GradcheckError: the module's name is shadowed
            if type(e).__name__ == "GradcheckError":
                result = True
            else:
                result = f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
    for w in caught_warnings:
        notes.add(str(w.message).splitlines()[0][:110])
    return result


def torch_worker(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)  # the bench machine is shared; see bench/run.py
    out: dict = {"torch": torch.__version__, "runs": {}, "notes": {}, "verify": {}}
    for rule in job["rules"]:  # the same rule as JAX's, float64
        fn = torch_rule(torch, rule)
        inputs = torch_inputs(torch, rule, 0, "float64")
        y = fn(*inputs)
        g = torch.tensor(np.random.default_rng(99).normal(size=tuple(y.shape)))
        grads = torch.autograd.grad(y, inputs, g)
        out["verify"][rule] = {
            "y": y.detach().numpy().ravel().tolist(),
            "vjp": [t.numpy().ravel().tolist() for t in grads],
        }
    for dtype in job["dtypes"]:
        notes: set = set()
        for rule in job["rules"]:
            out["runs"][f"{dtype}/{rule}"] = scan(
                lambda s, r, b, rule=rule, dtype=dtype, notes=notes: torch_caught(
                    torch, rule, dtype, s, r, b, notes
                ),
                job["grid"],
                job["draws"],
                job["half"] and dtype == "float32",
            )
        out["notes"][dtype] = sorted(notes)
    return out


# ------------------------------------------------------------ shared protocol


def scan(check, grid, draws: int, half: bool) -> dict:
    """False alarms on ``draws`` seeds, then the grid on seed 0 (see the module
    docstring); ``half``: also the float16-backward rule and its twin."""
    t0 = time.perf_counter()
    alarms = [check(seed, 0.0, None) for seed in range(draws)]
    out: dict = {
        "alarms": sum(a is True for a in alarms),
        "errors": sorted({a for a in alarms if isinstance(a, str)}),
        "draws": draws,
        "grid": [],
    }
    if alarms[0] is False:
        misses = 0
        for r in grid:
            caught = check(0, r, None)
            out["grid"].append([r, caught])
            if isinstance(caught, str):
                out["errors"] = sorted({*out["errors"], caught})
            misses = 0 if caught is True else misses + 1
            if misses >= MISSES_TO_STOP:
                break
    if half:
        out["half"] = check(0, 0.0, "float16")
        out["half_twin"] = alarms[0]
    out["seconds"] = time.perf_counter() - t0
    return out


def smallest_caught(grid: list) -> float | None:
    best = None
    for r, caught in grid:
        if caught is not True:
            break
        best = r
    return best


# ----------------------------------------------------------------- parent side


def torch_python(arg: str | None) -> str:
    return arg or os.environ.get("JGC_TORCH_PYTHON") or sys.executable


def run_torch(python: str, job: dict, timeout: float) -> dict:
    """The torch rows in a child process; ``{"skipped": why}`` without torch."""
    try:
        probe = subprocess.run(
            [python, "-c", "import torch"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"skipped": f"torch rows skipped: {python} did not run ({e})"}
    if probe.returncode != 0:
        return {
            "skipped": f"torch rows skipped: no torch in {python} (pip install -e "
            "'.[bench]', or --torch-python / $JGC_TORCH_PYTHON naming a Python "
            "that has it)"
        }
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    cmd = [python, os.path.abspath(__file__), "--torch-worker", json.dumps(job)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"torch rows FAILED: timed out after {timeout:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    sys.stderr.write(proc.stderr)
    tail = (proc.stderr.strip() or "no output").splitlines()[-1]
    return {"skipped": f"torch rows FAILED: exit {proc.returncode}: {tail}"}


def verify_torch(rules, torch_out: dict) -> list[str]:
    """The JAX and torch rules agree in float64 (value and VJP)."""
    import jax

    lines = []
    for rule in rules:
        fn, _ = jax_rule(rule)
        inputs = jax_inputs(rule, 0, "float64")
        y, pull = jax.vjp(fn, *inputs)
        g = np.random.default_rng(99).normal(size=y.shape)
        vjp = [np.asarray(t).ravel() for t in pull(jax.numpy.asarray(g))]
        t = torch_out["verify"][rule]
        diff = max(
            float(np.max(np.abs(np.asarray(t["y"]) - np.asarray(y).ravel()))),
            *(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(t["vjp"], vjp)),
        )
        lines.append(f"torch {rule}: value and VJP max |diff| vs JAX {diff:.1e}")
        if diff > 1e-10:
            raise AssertionError(f"{rule}: the torch rule is not the JAX rule ({diff})")
    return lines


def fmt_r(r: float | None) -> str:
    return "none" if r is None else f"{r:.0e}"


def outcome(c) -> str:
    return (
        {True: "caught", False: "missed"}.get(c, "ERR")
        if not isinstance(c, str)
        else "ERR"
    )


def dtype_table(dtype: str, rules, tools, results: dict) -> list[str]:
    head = (
        f"{'rule (entries)':18s} {'tool':22s} {'smallest caught r':>17s} "
        f"{'false alarms':>12s} {'seconds':>7s}  scan (r: c caught, . missed, E error)"
    )
    eps = EPS[dtype]
    lines = [
        f"{dtype}: eps {eps:.1e} (jnp.finfo); in the {dtype} output a planted r "
        f"below eps/4 .. eps/2 ({eps / 4:.0e} .. {eps / 2:.0e}) rounds away",
        head,
        "-" * len(head),
    ]
    for rule in rules:
        label = f"{rule} ({n_entries(rule)})"
        for tool in tools:
            res = results.get((dtype, rule, tool))
            if res is None:
                continue
            prefix = f"{label:18s} {LABELS[tool]:22s} "
            label = ""
            if "skipped" in res:
                lines.append(prefix + res["skipped"])
                continue
            grid = res["grid"]
            small = fmt_r(smallest_caught(grid)) if grid else "n/a (false alarm)"
            marks = " ".join(
                f"{r:.0e}:{'c' if c is True else '.' if c is False else 'E'}"
                for r, c in grid
            )
            lines.append(
                prefix
                + f"{small:>17s} {res['alarms']:>8d} / {res['draws']:<2d} "
                + f"{res['seconds']:7.1f}  {marks}"
            )
            for err in res["errors"]:
                lines.append(f"{'':18s}   {err}")
    return lines


def half_table(rules, tools, results: dict) -> list[str]:
    head = f"{'rule':12s} {'tool':22s} {'float16 backward':>16s} {'correct twin':>13s}"
    lines = [
        "float32 rule computing its backward in float16 (seed 0; caught = the check "
        "fails)",
        head,
        "-" * len(head),
    ]
    for rule in rules:
        for tool in tools:
            res = results.get(("float32", rule, tool))
            if res is None or "half" not in res:
                continue
            twin = "passes" if res["half_twin"] is False else "FAILS"
            if isinstance(res["half_twin"], str):
                twin = "ERR"
            lines.append(
                f"{rule:12s} {LABELS[tool]:22s} {outcome(res['half']):>16s} {twin:>13s}"
            )
    return lines


NOTES = """\
smallest caught r: the smallest planted relative error r (one entry of the
  first input's cotangent × (1+r)) such that r and every larger r of the scan were
  caught on seed 0; "none": the largest r (1e-1) was missed; "n/a (false alarm)":
  the tool fails the correct rule on seed 0, so no scan.
false alarms: draws (seeds) on which the CORRECT rule fails the check.
seconds: this (dtype, rule, tool) cell, false-alarm draws and scan together."""


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="grid 1e-1, 1e-3; 1 draw")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--draws", type=int, default=None, help="input draws (5; quick 1)")
    ap.add_argument("--torch-python", default=None)
    ap.add_argument("--child-timeout", type=float, default=3600.0)
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.torch_worker:
        return a
    for name, allowed in (("dtypes", DTYPES), ("rules", RULES), ("tools", TOOLS)):
        chosen = [x.strip() for x in getattr(a, name).split(",") if x.strip()]
        for x in chosen:
            if x not in allowed:
                ap.error(f"unknown {name[:-1]} {x!r}; choose from {', '.join(allowed)}")
        setattr(a, name, [x for x in allowed if x in chosen])
    if a.draws is None:
        a.draws = 1 if a.quick else 5
    if a.draws < 1:
        ap.error("--draws must be at least 1")
    a.grid = QUICK_GRID if a.quick else GRID
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.torch_worker:
        print(RESULT + json.dumps(torch_worker(json.loads(a.torch_worker))), flush=True)
        return 0
    t_start = time.perf_counter()
    import jax

    jax.config.update("jax_enable_x64", True)
    from run import machine_lines

    for line in machine_lines():
        print(line)
    print(f"command: python bench/precision.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"JAX on {jax.devices()[0].platform}, x64 on; grid {fmt_r(a.grid[0])} .. "
        f"{fmt_r(a.grid[-1])} ({len(a.grid)} r), {a.draws} draw(s); planted in entry "
        f"{PLANT} of the first cotangent"
    )
    half = "float32" in a.dtypes
    results: dict = {}
    if "torch" in a.tools:
        job = {
            "dtypes": a.dtypes,
            "rules": a.rules,
            "grid": list(a.grid),
            "draws": a.draws,
            "half": half,
        }
        python = torch_python(a.torch_python)
        print(f"  torch child ({python}) ...", file=sys.stderr, flush=True)
        out = run_torch(python, job, a.child_timeout)
        if "skipped" in out:
            print(out["skipped"])
            for dtype in a.dtypes:
                for rule in a.rules:
                    results[(dtype, rule, "torch")] = out
        else:
            print(f"torch {out['torch']} ({python}), 1 thread, in a child process")
            for line in verify_torch(a.rules, out):
                print(line)
            for key, res in out["runs"].items():
                dtype, rule = key.split("/")
                results[(dtype, rule, "torch")] = res
    for dtype in a.dtypes:
        for rule in a.rules:
            for tool in (t for t in a.tools if t != "torch"):
                print(f"  {dtype} / {rule} / {tool} ...", file=sys.stderr, flush=True)
                results[(dtype, rule, tool)] = scan(
                    lambda s, r, b, tool=tool, rule=rule, dtype=dtype: jax_caught(
                        tool, rule, dtype, s, r, b
                    ),
                    a.grid,
                    a.draws,
                    half and dtype == "float32",
                )
    for dtype in a.dtypes:
        print()
        for line in dtype_table(dtype, a.rules, a.tools, results):
            print(line)
        if "torch" in a.tools and "skipped" not in out and out["notes"].get(dtype):
            print(f"torch warnings in {dtype}:")
            for note in out["notes"][dtype]:
                print(f"  {note}")
    if half:
        print()
        for line in half_table(a.rules, a.tools, results):
            print(line)
    print()
    print(NOTES)
    print(
        f"\nwall time of the whole run: {time.perf_counter() - t_start:.0f} s; "
        f"load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
