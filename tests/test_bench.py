"""Smoke tests of bench/run.py on its tiny (--quick) models; no timing is asserted."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _models():
    spec = importlib.util.spec_from_file_location("bench_models", BENCH / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_models_sizes_and_layouts():
    models = _models()
    sizes = {}
    for name in models.MODELS:
        model = models.get(name)
        params, _ = model.init(quick=False)
        sizes[name] = models.n_params(params)
        state = model.torch_state(params)  # every weight mapped, none twice
        assert sum(np.size(v) for v in state.values()) == sizes[name]
    assert sizes == {"mlp": 26_122, "cnn": 3_962, "transformer": 12_704}
    with jax.enable_x64(True):
        for name in models.MODELS:
            model = models.get(name)
            params, data = model.init(quick=True)
            value = model.loss(params, *data)
            assert value.dtype == np.float64 and np.isfinite(value)
    with pytest.raises(ValueError, match="unknown model"):
        models.get("resnet")


def test_quick_run_prints_one_table():
    # One model, every JAX method: each (model, method) is its own child
    # process, and a second model would run the same three code paths again
    # (the quick cnn and transformer are verified by the verify child of
    # test_torch_rows_or_clear_skip and evaluated in test_models_sizes_and_layouts).
    out = _run("--methods", "jgradcheck,loop,lower_bound", "--models", "mlp")
    assert "machine:" in out and "jax 0." in out
    assert "loss check mlp: JAX" in out
    header = next(line for line in out.splitlines() if line.startswith("model "))
    for column in ("seconds", "compile s", "coords/s", "vs jgc", "peak RSS MiB"):
        assert column in header
    rows = [line for line in out.splitlines() if "jgradcheck check_grad" in line]
    assert [r.split()[0] for r in rows] == ["mlp"]
    assert rows[0].split()[1] == "(212)"  # quick MLP 8-16-4
    assert "1.00x" in rows[0]
    for label in ("loop over jitted", "2n evals of J"):
        (row,) = [line for line in out.splitlines() if label in line]
        assert row.split()[-4].endswith("x"), row  # its "vs jgc" ratio
    assert "FAILED" not in out and "skipped" not in out


def test_torch_rows_or_clear_skip():
    out = _run("--methods", "torch_fast")
    if HAVE_TORCH:
        for name in ("mlp", "cnn", "transformer"):
            line = next(ln for ln in out.splitlines() if f"loss check {name}" in ln)
            assert "torch" in line and line.endswith("same model")
        assert out.count("torch gradcheck fast") == 3
        assert "skipped" not in out and "FAILED" not in out
    else:
        assert "torch not installed, torch/JAX equivalence not checked" in out
        assert out.count("skipped: torch is not installed") == 3


def test_bad_arguments():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--methods", "finite_guess"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown method 'finite_guess'" in proc.stderr


def test_cache_bench_runs_on_the_tiny_model():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "cache.py"), "--quick", "--hits", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("mlp")]
    assert [r[1] for r in rows] == ["no", "fill", "hit"]  # "no cache" is two words
    assert all(float(x) >= 0 for r in rows for x in r[-3:])


def _precision():
    spec = importlib.util.spec_from_file_location(
        "bench_precision", BENCH / "precision.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precision_quick_prints_one_table_per_dtype():
    # jax check_grads only: a jgradcheck cell compiles for seconds; its column is
    # the same code path (scan → dtype_table), tested in-process below.
    env = dict(os.environ, JAX_PLATFORMS="cpu", JGC_TORCH_PYTHON="")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "precision.py"), "--quick", "--dtypes"]
        + ["float64,bfloat16", "--rules", "softplus", "--tools", "check_grads,torch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "machine:" in out and "jax 0." in out and "wall time" in out
    tables = [ln.split(":")[0] for ln in out.splitlines() if ": eps " in ln]
    assert tables == ["bfloat16", "float64"]
    rows = [ln for ln in out.splitlines() if "jax check_grads rev" in ln]
    assert len(rows) == 2 and all(ln.split()[0] == "softplus" for ln in rows)
    # float64: the 10% planted error is caught, the correct rule passes
    fields = rows[1].split()
    assert fields[5] in ("1e-01", "1e-03") and fields[6:9] == ["0", "/", "1"], rows[1]
    torch_rows = [ln for ln in out.splitlines() if "torch gradcheck" in ln]
    assert len(torch_rows) == 2
    if not HAVE_TORCH:
        assert "torch rows skipped: no torch in" in out


def test_precision_scan_and_tables_in_process():
    p = _precision()
    # caught down to 1e-3, then two misses stop the scan
    calls = []

    def check(seed, r, bwd):
        calls.append((seed, r, bwd))
        if bwd is not None:
            return True
        return r >= 1e-3 or (r == 0 and seed == 2)

    res = p.scan(check, p.GRID, draws=3, half=True)
    assert res["alarms"] == 1 and res["draws"] == 3 and res["errors"] == []
    assert [r for r, _ in res["grid"]] == [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4]
    assert p.smallest_caught(res["grid"]) == 1e-3
    assert res["half"] is True and res["half_twin"] is False
    # a tool that fails the correct rule at seed 0 gets no scan
    alarm = p.scan(lambda seed, r, bwd: True, p.GRID, draws=2, half=False)
    assert alarm["grid"] == [] and alarm["alarms"] == 2
    errors = p.scan(lambda seed, r, bwd: "error: X", p.QUICK_GRID, 1, False)
    assert errors["errors"] == ["error: X"] and errors["alarms"] == 0
    results = {
        ("float32", "dense", "jgradcheck"): res,
        ("float32", "dense", "check_grads"): alarm,
        ("float32", "dense", "torch"): {"skipped": "torch rows skipped: no torch"},
    }
    lines = p.dtype_table("float32", ["dense"], list(p.TOOLS), results)
    assert lines[0].startswith("float32: eps 1.2e-07 (jnp.finfo)")
    body = lines[3:]
    assert body[0].split()[:6] == ["dense", "(384)", "jgradcheck", "check_vjp"] + [
        "1e-03",
        "1",
    ]
    assert "n/a (false alarm)" in body[1] and body[2].endswith("no torch")
    half = p.half_table(["dense"], list(p.TOOLS), results)
    assert half[-1].split()[-2:] == ["caught", "passes"]
    assert p.n_entries("softplus") == 256 and p.n_entries("attention") == 288


def _suite():
    spec = importlib.util.spec_from_file_location("bench_suite", BENCH / "suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_suite_measures_each_tool_and_prints_the_ratios(capsys):
    # In process, one rule: the parent runs each tool this way in its own
    # fresh child. A tool that fails a correct rule must not be timed quietly.
    s = _suite()
    chosen = {"softplus": s.rules()["softplus"]}
    got = {t: s.measure(t, chosen, repeat=1) for t in s.TOOLS}
    times = {"softplus": {**got["jgc"]["times"]["softplus"]}}
    times["softplus"].update(got["check_grads"]["times"]["softplus"])
    assert sorted(times["softplus"]) == [
        "check_grads first",
        "check_grads repeat",
        "jgc first",
        "jgc repeat",
    ]
    assert all(t > 0 for t in times["softplus"].values())
    assert got["check_grads"]["false_alarms"] == []
    s._print(times)
    out = capsys.readouterr().out
    assert "jgradcheck ÷ check_grads: first" in out and "repeat ÷ first" in out
    wrong = s._rule(lambda x: jnp.logaddexp(x, 0.0), lambda xs, y, g: (g,))
    with pytest.raises(AssertionError, match="check_vjp failed on a correct rule"):
        s.measure("jgc", {"wrong": (wrong, chosen["softplus"][1])}, repeat=1)
