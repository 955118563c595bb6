"""A CI suite of 12 custom rules through check_vjp, against jax.test_util.check_grads.

    python bench/suite.py [--repeat 2] [--rules softplus,attention]

The question of issue 14: what does a test suite of custom rules cost per
commit? Twelve hand-written ``jax.custom_vjp`` rules of the kinds users write
(softplus, logsumexp, layernorm, a tanh dense layer, attention, cumsum, a norm,
a linear solve, a scan RNN, gelu, softmax, slogdet), float32, a few hundred
input entries each, all correct. Each is checked by ``jgc.check_vjp`` (every
input coordinate localised, dot-product tests, structure) and by
``jax.test_util.check_grads(f, args, order=1, modes=["rev"])`` (one random
direction; forward mode raises on a custom_vjp). Each tool runs the whole
suite in its own fresh child process: first calls of the 12 rules, then their
repeat calls (``--repeat`` rounds, best). (Until 2026-11-30 both ran in one
process, check_grads second, so its "first" calls reused the operations
jgradcheck had compiled eagerly: they were not cold.) Printed: seconds per rule
and in all, and the ratios jgradcheck ÷ check_grads (first and repeat) and
repeat ÷ first. Issue 14's targets: repeat ≤ 1x, first ≤ 3x check_grads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

import jgradcheck as jgc


def _rule(fwd_math: Callable[..., Any], bwd_math: Callable[..., Any]) -> Any:
    """A custom_vjp whose forward is ``fwd_math`` and backward
    ``bwd_math(primals, out, g)``."""

    @jax.custom_vjp
    def f(*xs: Any) -> Any:
        return fwd_math(*xs)

    def fwd(*xs: Any) -> Any:
        out = fwd_math(*xs)
        return out, (xs, out)

    def bwd(res: Any, g: Any) -> Any:
        xs, out = res
        return bwd_math(xs, out, g)

    f.defvjp(fwd, bwd)
    return f


def _softmax(x: Any) -> Any:
    e = jnp.exp(x - jnp.max(x, -1, keepdims=True))
    return e / jnp.sum(e, -1, keepdims=True)


def _layernorm(x: Any) -> Any:
    mu = jnp.mean(x, -1, keepdims=True)
    return (x - mu) / jnp.sqrt(jnp.var(x, -1, keepdims=True) + 1e-5)


def _layernorm_bwd(xs: Any, y: Any, g: Any) -> Any:
    (x,) = xs
    sd = jnp.sqrt(jnp.var(x, -1, keepdims=True) + 1e-5)
    gm = g - jnp.mean(g, -1, keepdims=True)
    return ((gm - y * jnp.mean(g * y, -1, keepdims=True)) / sd,)


def _attention(q: Any, k: Any, v: Any) -> Any:
    return _softmax(q @ k.T / np.sqrt(q.shape[-1])) @ v


def _attention_bwd(xs: Any, out: Any, g: Any) -> Any:
    q, k, v = xs
    s = 1.0 / np.sqrt(q.shape[-1])
    p = _softmax(q @ k.T * s)
    dp = g @ v.T
    ds = p * (dp - jnp.sum(dp * p, -1, keepdims=True))
    return ds @ k * s, ds.T @ q * s, p.T @ g


def _rnn(h0: Any, w: Any, xs: Any) -> Any:
    def step(h: Any, x: Any) -> Any:
        h = jnp.tanh(h @ w + x)
        return h, h

    return jax.lax.scan(step, h0, xs)[1]


def _rnn_bwd(prim: Any, hs: Any, g: Any) -> Any:
    h0, w, xs = prim
    prev = jnp.concatenate([h0[None], hs[:-1]])

    def back(carry: Any, t: Any) -> Any:
        dh, dw = carry
        h, hp, gt = t
        d = (dh + gt) * (1 - h**2)
        return (d @ w.T, dw + jnp.outer(hp, d)), d

    (dh0, dw), dxs = jax.lax.scan(
        back, (jnp.zeros_like(h0), jnp.zeros_like(w)), (hs, prev, g), reverse=True
    )
    return dh0, dw, dxs


def _gelu(x: Any) -> Any:
    return x * jax.scipy.stats.norm.cdf(x)


def rules() -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """name → (custom_vjp rule, float32 primals)."""
    r = np.random.default_rng(0)

    def a(*shape: int, scale: float = 1.0) -> Any:
        return jnp.asarray(r.standard_normal(shape) * scale, jnp.float32)

    spd = a(12, 12, scale=0.3)
    spd = spd @ spd.T + 3.0 * jnp.eye(12, dtype=jnp.float32)
    return {
        "softplus": (
            _rule(
                lambda x: jnp.logaddexp(x, 0.0),
                lambda xs, y, g: (g * jax.nn.sigmoid(xs[0]),),
            ),
            (a(300, scale=3.0),),
        ),
        "logsumexp": (
            _rule(
                lambda x: jax.scipy.special.logsumexp(x, -1),
                lambda xs, y, g: (g[:, None] * jnp.exp(xs[0] - y[:, None]),),
            ),
            (a(16, 20),),
        ),
        "layernorm": (_rule(_layernorm, _layernorm_bwd), (a(16, 20),)),
        "dense_tanh": (
            _rule(
                lambda x, w: jnp.tanh(x @ w),
                lambda xs, y, g: (
                    (g * (1 - y**2)) @ xs[1].T,
                    xs[0].T @ (g * (1 - y**2)),
                ),
            ),
            (a(8, 16), a(16, 16, scale=0.3)),
        ),
        "attention": (_rule(_attention, _attention_bwd), (a(8, 8), a(8, 8), a(8, 8))),
        "cumsum": (
            _rule(
                lambda x: jnp.cumsum(x),
                lambda xs, y, g: (jnp.cumsum(g[::-1])[::-1],),
            ),
            (a(300),),
        ),
        "norm": (
            _rule(lambda x: jnp.linalg.norm(x), lambda xs, y, g: (g * xs[0] / y,)),
            (a(300),),
        ),
        "solve": (
            _rule(
                lambda m, b: jnp.linalg.solve(m, b),
                lambda xs, y, g: (
                    -jnp.outer(jnp.linalg.solve(xs[0].T, g), y),
                    jnp.linalg.solve(xs[0].T, g),
                ),
            ),
            (spd, a(12)),
        ),
        "scan_rnn": (_rule(_rnn, _rnn_bwd), (a(8), a(8, 8, scale=0.3), a(10, 8))),
        "gelu": (
            _rule(
                _gelu,
                lambda xs, y, g: (
                    g
                    * (
                        jax.scipy.stats.norm.cdf(xs[0])
                        + xs[0] * jax.scipy.stats.norm.pdf(xs[0])
                    ),
                ),
            ),
            (a(300, scale=2.0),),
        ),
        "softmax": (
            _rule(
                _softmax,
                lambda xs, y, g: (y * (g - jnp.sum(g * y, -1, keepdims=True)),),
            ),
            (a(16, 20),),
        ),
        "slogdet": (
            _rule(
                lambda m: jnp.linalg.slogdet(m)[1],
                lambda xs, y, g: (g * jnp.linalg.inv(xs[0]).T,),
            ),
            (spd,),
        ),
    }


def _timed(run: Callable[..., Any], f: Any, xs: tuple[Any, ...]) -> float:
    t = time.perf_counter()
    jax.block_until_ready(run(f, xs))
    return time.perf_counter() - t


def _jgc(f: Any, xs: tuple[Any, ...]) -> Any:
    report = jgc.check_vjp(f, *xs)
    if not report.ok:
        raise AssertionError(f"check_vjp failed on a correct rule:\n{report}")
    return report.ok


FALSE_ALARMS: set[str] = set()


def _cg(f: Any, xs: tuple[Any, ...]) -> None:
    """check_grads; its failures on these correct rules are false alarms
    (float32 with a fixed step 1e-4 and tolerance 2e-3), counted, not raised."""
    try:
        check_grads(f, xs, order=1, modes=["rev"])
    except AssertionError:
        FALSE_ALARMS.add(getattr(f, "__name__", "?"))


TOOLS = {"jgc": _jgc, "check_grads": _cg}


def measure(tool: str, chosen: dict[str, Any], repeat: int) -> dict[str, Any]:
    """``tool``'s first and best-of-``repeat`` repeat seconds per rule (this
    process: call it in a fresh one for cold first calls), and the rules
    check_grads failed."""
    run = TOOLS[tool]
    times: dict[str, dict[str, float]] = {k: {} for k in chosen}
    for name, (f, xs) in chosen.items():
        f.__name__ = name
        times[name][f"{tool} first"] = _timed(run, f, xs)
    for name, (f, xs) in chosen.items():
        times[name][f"{tool} repeat"] = min(_timed(run, f, xs) for _ in range(repeat))
    return {"times": times, "false_alarms": sorted(FALSE_ALARMS)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rules", default="", help="comma-separated subset")
    ap.add_argument("--child", choices=sorted(TOOLS), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    chosen = rules()
    if a.rules:
        chosen = {k: chosen[k] for k in a.rules.split(",")}
    if a.child:
        print(json.dumps(measure(a.child, chosen, a.repeat)))
        return {}
    times: dict[str, dict[str, float]] = {k: {} for k in chosen}
    for tool in TOOLS:
        cmd = [sys.executable, __file__, "--child", tool, "--repeat", str(a.repeat)]
        proc = subprocess.run(
            [*cmd, "--rules", ",".join(chosen)], capture_output=True, text=True
        )
        if proc.returncode:
            raise SystemExit(f"{tool} child failed:\n{proc.stdout}{proc.stderr}")
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        for name, t in got["times"].items():
            times[name].update(t)
        FALSE_ALARMS.update(got["false_alarms"])
    _print(times)
    return times


def _print(times: dict[str, dict[str, float]]) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {load:.2f}; jax {jax.__version__}, "
        f"{jax.devices()[0].platform}"
    )
    cols = ["jgc first", "jgc repeat", "check_grads first", "check_grads repeat"]
    print(f"{'rule':12s}" + "".join(f"{c:>20s}" for c in cols))
    total = dict.fromkeys(cols, 0.0)
    for name, t in times.items():
        print(f"{name:12s}" + "".join(f"{t[c]:19.3f}s" for c in cols))
        for c in cols:
            total[c] += t[c]
    print(f"{'all':12s}" + "".join(f"{total[c]:19.3f}s" for c in cols))
    print(
        f"jgradcheck ÷ check_grads: first {total['jgc first'] / total['check_grads first']:.1f}x, "
        f"repeat {total['jgc repeat'] / total['check_grads repeat']:.1f}x; "
        f"jgradcheck repeat ÷ first: {total['jgc repeat'] / total['jgc first']:.2f}"
    )
    alarms = ", ".join(sorted(FALSE_ALARMS)) or "none"
    print(f"check_grads false alarms on these correct rules: {alarms}")


if __name__ == "__main__":
    main()
