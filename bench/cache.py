"""What JAX's persistent compilation cache saves a check, in fresh processes.

    python bench/cache.py [--quick] [--models transformer,mlp,cnn] [--hits 2]

jgradcheck never changes JAX's configuration; a test suite can turn the cache on
itself (docs/guide/sweeps.md). For each model of ``bench/models.py`` this runs,
each in a fresh child process, ``check_grad`` twice (float64, every coordinate):

- ``no cache``: the cache off (JAX's default);
- ``fill``: the cache on, in a new empty directory (the first run of a suite);
- ``hit 1``, ``hit 2``, ...: the cache on, that directory again (later runs).

It prints the first call's wall time (what a test run pays: the process's first
check, JAX's first-use costs included), its compile time as jgradcheck reports it
(``report.timing.compile_seconds``, the sweeps only), and the second call's time
in the same process. The cache keeps every compile (minimum compile time and
entry size set to 0; JAX's defaults skip compiles under 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(model_name: str, quick: bool, cache_dir: str) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import jgradcheck as jgc

    sys.path.insert(0, str(HERE))
    import models

    model = models.get(model_name)
    params, data = model.init(quick)
    out = {}
    for name in ("first", "second"):
        t0 = time.perf_counter()
        report = jgc.check_grad(model.loss, params, *data)
        out[name] = time.perf_counter() - t0
        out[f"{name}_compile"] = report.timing.compile_seconds
        if not report.ok:
            raise AssertionError(f"check_grad failed on a correct gradient:\n{report}")
    return out


def run_child(model_name: str, quick: bool, cache_dir: str) -> dict:
    cmd = [sys.executable, __file__, "--child", model_name, cache_dir or "-"]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"child {model_name} failed:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny MLP only")
    parser.add_argument("--models", default="transformer,mlp,cnn")
    parser.add_argument("--hits", type=int, default=2, help="runs on a filled cache")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CACHE_DIR"))
    args = parser.parse_args()
    if args.child:
        name, cache_dir = args.child
        print(
            json.dumps(child(name, args.quick, "" if cache_dir == "-" else cache_dir))
        )
        return

    import jax

    names = ["mlp"] if args.quick else args.models.split(",")
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; float64, every coordinate")
    print("each row: a fresh process, check_grad twice; seconds")
    header = f"{'model':<12} {'run':<9} {'1st call':>9} {'compile':>8} {'2nd call':>9}"
    print(header)
    print("-" * len(header))
    for name in names:
        with tempfile.TemporaryDirectory(prefix="jgc_cache_") as cache_dir:
            runs = [("no cache", "")] + [("fill", cache_dir)]
            runs += [(f"hit {k + 1}", cache_dir) for k in range(args.hits)]
            for label, where in runs:
                r = run_child(name, args.quick, where)
                print(
                    f"{name:<12} {label:<9} {r['first']:>9.2f} "
                    f"{r['first_compile']:>8.2f} {r['second']:>9.2f}"
                )


if __name__ == "__main__":
    main()
