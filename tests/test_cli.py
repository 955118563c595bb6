"""The command line: exit codes, reports, JSON, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import jgradcheck as jgc
from jgradcheck._interfaces.cli import main

MODEL = """
import jax
import jax.numpy as jnp


def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["w"] + p["b"]) ** 2)


def make_params():
    # dtypes pinned: the tests read them back (int32, float32) under either x64
    return {
        "w": jnp.ones((3, 2), jnp.float32) / 3,
        "b": jnp.zeros(2, jnp.float32),
        "n": jnp.array(3, jnp.int32),
    }


def make_batch():
    return jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)


def make_batch_tuple():
    return (jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3),)


def right_grad(p, x):
    floats = {"w": p["w"], "b": p["b"]}
    g = jax.grad(lambda f: loss({**f, "n": p["n"]}, x))(floats)
    return {**g, "n": None}


class Grads:
    right = staticmethod(right_grad)


def wrong_grad(p, x):
    g = right_grad(p, x)
    g["w"] = g["w"].at[1, 0].multiply(2.0)
    return g


def short_grad(p, x):
    return {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros(2, jnp.float32), "n": None}


def vector_loss(p, x):
    return x @ p["w"][:, 0]


def shape_bug(p, x):
    return jnp.sum(x.T @ p["w"])


def fails_inside(p, x):
    raise ZeroDivisionError("the user's loss divides by zero")


def random_loss(p, x):
    import numpy as np

    return loss(p, x) * (1.0 + np.random.rand())


def params_raise():
    raise RuntimeError("no checkpoint found")


def batch_raise():
    return [1, 2][5]


def terms(p, x):
    return {"data": loss(p, x), "l2": 0.5 * jnp.sum(p["w"] ** 2)}


def nan_grad(p, x):
    g = right_grad(p, x)
    g["b"] = g["b"].at[1].set(jnp.nan)
    return g


def abs_loss(p, x):
    return jnp.sum(jnp.abs(p["w"] - 1 / 3)) + jnp.sum(jnp.abs(p["b"]))


CONFIG = {"w": 1.0}
"""

RULES = """
import jax
import jax.numpy as jnp


def _make(slope):
    f = jax.custom_vjp(lambda x: jnp.logaddexp(x, 0.0))
    f.defvjp(
        lambda x: (jnp.logaddexp(x, 0.0), x),
        lambda x, g: (g * jax.nn.sigmoid(slope * x),),
    )
    return f


softplus_ok = _make(1.0)
softplus_bad = _make(2.0)


def _make_jvp(scale):
    f = jax.custom_jvp(jnp.sin)
    f.defjvp(lambda p, t: (jnp.sin(p[0]), scale * jnp.cos(p[0]) * t[0]))
    return f


sin_ok = _make_jvp(1.0)
sin_bad = _make_jvp(1.5)


def make_inputs():
    return (jnp.array([-1.5, -0.2, 0.3, 2.0]),)


def make_one_input():
    return jnp.array([-1.5, -0.2, 0.3, 2.0])


def softplus_reference(x):
    return jnp.logaddexp(x, 0.0)


def wrong_reference(x):
    return jnp.logaddexp(2.0 * x, 0.0)


def _make_blind():
    # right at first order; the bwd's own derivative is cut (stop_gradient),
    # so the Hessian-vector product reverse over reverse is wrong
    f = jax.custom_vjp(lambda x: jnp.logaddexp(x, 0.0))
    f.defvjp(
        lambda x: (jnp.logaddexp(x, 0.0), x),
        lambda x, g: (g * jax.nn.sigmoid(jax.lax.stop_gradient(x)),),
    )
    return f


softplus_blind = _make_blind()


def hvp_loss(w, x):
    return jnp.sum(softplus_ok(w * x) ** 2)


def hvp_blind_loss(w, x):
    return jnp.sum(softplus_blind(w * x) ** 2)


def _numpy_bwd(x, g):  # NumPy on the residual: right eagerly, fails when traced
    import numpy as np

    return (g * np.asarray(jax.nn.sigmoid(x)),)


softplus_numpy = jax.custom_vjp(lambda x: jnp.logaddexp(x, 0.0))
softplus_numpy.defvjp(lambda x: (jnp.logaddexp(x, 0.0), x), _numpy_bwd)
"""


@pytest.fixture
def files(tmp_path, monkeypatch):
    """model.py and rules.py in tmp_path (the current folder); sys.path restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "rules.py").write_text(RULES)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "")):
            del sys.modules[name]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


CHECK = ["check", "model.py:loss", "--params", "model.py:make_params"]
BATCH = ["--args", "model.py:make_batch"]
PRIMALS = ["--primals", "rules.py:make_inputs"]


# ---------------------------------------------------------------- check


@pytest.mark.parametrize("batch", ["model.py:make_batch", "model.py:make_batch_tuple"])
def test_correct_loss_exits_0(files, capsys, batch):
    code, out, err = run(capsys, *CHECK, "--args", batch)
    assert code == 0, err
    assert out.startswith("gradient check passed: 8 entries agree")
    assert "['n'] (int32)" in out  # the integer leaf is held fixed and listed
    assert err == ""


def test_hand_written_grad(files, capsys):
    code, out, _ = run(capsys, *CHECK, *BATCH, "--grad", "model.py:Grads.right")
    assert code == 0 and "grad=right_grad" in out
    code, out, err = run(capsys, *CHECK, *BATCH, "--grad", "model.py:wrong_grad")
    assert code == 1, err
    assert out.startswith("gradient check FAILED: 1 of 8 checked entries disagree")
    assert "in ['w']" in out and "['w'][1, 0]" in out
    assert "grad=wrong_grad" in out


def test_options_reach_check_grad(files, capsys):
    code, out, _ = run(
        capsys,
        *CHECK,
        *BATCH,
        "--coords",
        "3",
        "--key",
        "1",
        "--method",
        "central4",
        "--precision",
        "native",
        "--json",
    )
    d = json.loads(out)
    assert code == 0 and d["ok"] and d["counts"]["checked"] == 3
    assert d["settings"]["reference_dtype"] == "float32"
    code, out, _ = run(capsys, *CHECK, *BATCH, "--rtol", "1e-3", "--atol", "0")
    assert code == 0 and "rtol=0.001, atol=0.0" in out


def test_nan_in_the_gradient_is_a_failed_check(files, capsys):
    code, out, err = run(capsys, *CHECK, *BATCH, "--grad", "model.py:nan_grad")
    assert code == 1, err
    assert out.startswith("gradient check FAILED: the gradient under test")
    assert "['b'][1] = nan" in out and err == ""
    code, out, _ = run(capsys, *CHECK, *BATCH, "--grad", "model.py:nan_grad", "--json")
    d = json.loads(out)
    assert code == 1 and d["ok"] is False and "not finite" in d["summary"]


def test_nothing_verified_exits_1(files, capsys):
    code, out, err = run(
        capsys, "check", "model.py:abs_loss", "--params", "model.py:make_params", *BATCH
    )
    assert code == 1, err
    assert out.startswith("gradient check UNSURE: nothing was verified")


def test_mode_fast_and_engine_options(files, capsys):
    code, out, err = run(
        capsys,
        *CHECK,
        *BATCH,
        "--mode",
        "fast",
        "--directions",
        "2",
        "--memory-budget",
        "512MiB",
        "--devices",
        "1",
        "--json",
    )
    d = json.loads(out)
    assert code == 0, err
    assert d["settings"]["mode"] == "fast" and d["settings"]["directions"] == 2
    code, out, err = run(
        capsys, *CHECK, *BATCH, "--mode", "fast", "--grad", "model.py:wrong_grad"
    )
    assert code == 1 and out.startswith("gradient check FAILED"), err
    code, _, err = run(capsys, *CHECK, *BATCH, "--directions", "2")
    assert code == 2 and "`directions` is an option of mode='fast'" in err
    code, _, err = run(capsys, *CHECK, *BATCH, "--memory-budget", "lots")
    assert code == 2 and "`memory_budget`" in err


def test_json_report(files, capsys):
    code, out, err = run(
        capsys, *CHECK, *BATCH, "--grad", "model.py:wrong_grad", "--json"
    )
    assert code == 1, err
    d = json.loads(out)  # stdout is only the JSON document
    assert d["ok"] is False and d["kind"] == "grad"
    assert d["counts"] == {"checked": 8, "fail": 1, "unsure": 0, "kink": 0}
    (bad,) = d["failures"]
    assert bad["path"] == "['w']" and bad["index"] == [1, 0]
    assert bad["status"] == "FAIL" and bad["a"] == pytest.approx(2 * bad["n"], rel=1e-5)
    leaves = {leaf["path"]: leaf for leaf in d["leaves"]}
    assert leaves["['w']"]["fail"] == 1 and leaves["['b']"]["ok"]
    assert leaves["['w']"]["shape"] == [3, 2]
    assert d["skipped"] == [
        {"path": "['n']", "shape": [], "dtype": "int32", "kind": "fixed"}
    ]
    assert d["settings"]["gradient"].startswith("grad=wrong_grad")


def test_json_terms_and_max_entries(files, capsys):
    code, out, _ = run(
        capsys,
        "check",
        "model.py:terms",
        "--params",
        "model.py:make_params",
        *BATCH,
        "--json",
    )
    d = json.loads(out)
    assert code == 0 and sorted(d["terms"]) == ["data", "l2"]
    assert d["terms"]["l2"]["ok"] and d["terms"]["l2"]["counts"]["checked"] == 8
    (files / "flip.py").write_text(
        "from model import right_grad\n"
        "def flip(p, x):\n    g = right_grad(p, x)\n"
        "    return {**g, 'w': -g['w']}\n"
    )
    code, out, _ = run(
        capsys,
        *CHECK,
        *BATCH,
        "--grad",
        f"{files / 'flip.py'}:flip",
        "--json",
        "--max-entries",
        "2",
    )
    d = json.loads(out)
    assert code == 1 and d["counts"]["fail"] == 6 and len(d["failures"]) == 2
    code, out, _ = run(
        capsys, *CHECK, *BATCH, "--grad", "flip.py:flip", "--json", "--max-entries", "0"
    )
    assert len(json.loads(out)["failures"]) == 6


def test_module_spec_and_relative_imports(files, capsys):
    pkg = files / "cli_pkg_models"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "shared.py").write_text(
        "import jax.numpy as jnp\ndef init():\n    return jnp.linspace(-1.0, 1.0, 4)\n"
    )
    (pkg / "net.py").write_text(
        "import jax.numpy as jnp\nfrom .shared import init\n"
        "def loss(p):\n    return jnp.sum(jnp.sin(p) ** 2)\n"
        "def make_params():\n    return init()\n"
    )
    code, out, err = run(
        capsys,
        "check",
        "cli_pkg_models/net.py:loss",
        "--params",
        "cli_pkg_models.net:make_params",
    )
    assert code == 0, err
    assert "4 entries agree" in out


def test_a_file_named_like_an_imported_module(files, capsys):
    (files / "json.py").write_text(MODEL)
    code, out, err = run(
        capsys, "check", "json.py:loss", "--params", "json.py:make_params", *BATCH
    )
    assert code == 0, err
    assert json.dumps([1]) == "[1]"  # the standard library's json is untouched


# ---------------------------------------------------------- usage errors


ERRORS = [
    (
        ["check", "model.py", "--params", "model.py:make_params"],
        "expected FILE.py:NAME",
    ),
    (["check", "nothere.py:loss", "--params", "model.py:make_params"], "no such file"),
    (
        ["check", "model.py:los", "--params", "model.py:make_params"],
        "Did you mean loss",
    ),
    (
        ["check", "model.py:loss", "--params", "model.py:CONFIG"],
        "CONFIG is a dict, not a function",
    ),
    (
        ["check", "model.py:loss", "--params", "model.py:params_raise"],
        "RuntimeError: no checkpoint found (at ",
    ),
    (
        [*CHECK, "--args", "model.py:batch_raise"],
        "--args model.py:batch_raise: calling it raised IndexError",
    ),
    (["check", "no_such_pkg.mod:loss", "--params", "x.py:y"], "no module named"),
    (["check", "model.py:loss", "--params", "model.py:make_params"], "--args"),
    (
        ["check", "model.py:vector_loss", "--params", "model.py:make_params", *BATCH],
        "must return a scalar",
    ),
    ([*CHECK, *BATCH, "--grad", "model.py:short_grad"], "['w']: shape (3,)"),
    (
        ["check", "model.py:random_loss", "--params", "model.py:make_params", *BATCH],
        "not deterministic",
    ),
    (
        ["check", "model.py:fails_inside", "--params", "model.py:make_params", *BATCH],
        "ZeroDivisionError: the user's loss divides by zero",
    ),
    (
        ["check", "model.py:shape_bug", "--params", "model.py:make_params", *BATCH],
        "your function raised TypeError",
    ),
    (["check", "broken.py:loss", "--params", "broken.py:p"], "SyntaxError"),
    (["check-vjp", "rules.py:nope", "--primals", "rules.py:make_inputs"], "nope"),
    (
        ["check-vjp", "rules.py:softplus_ok", "--primals", "model.py:CONFIG"],
        "not a function",
    ),
    (
        ["check-jvp", "rules.py:sin_ok", "--primals", "model.py:params_raise"],
        "no checkpoint found",
    ),
    (
        ["check-hvp", "rules.py:hvp_loss", "--params", "rules.py:make_one_input"],
        "check_hvp could not call your function: hvp_loss() "
        "missing 1 required positional argument: 'x' (the loss's other "
        "arguments are given with --args",
    ),
    (
        [*["check-compositions", "rules.py:softplus_ok"], *PRIMALS, "--kind", "jvp"],
        "the rule's derivative (jvp) of `f` fails when run eagerly",
    ),
]


@pytest.mark.parametrize("argv, message", ERRORS)
def test_usage_errors_exit_2_with_a_message(files, capsys, argv, message):
    (files / "broken.py").write_text("def loss(p):\n    return p +\n")
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith(f"jgradcheck {argv[0]}: error: "), err
    assert message in err, err
    assert err.count("\n") <= 2  # one paragraph (a grad mismatch lists its leaves)
    assert "Traceback" not in err + out
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "model.py:loss"],  # --params is required
        [*CHECK, "--method", "forward"],
        [*CHECK, "--coords", "0"],
        [*CHECK, "--precision", "float16"],
        ["check-vjp", "rules.py:softplus_ok", "--primals", "x:y", "--order", "3"],
        ["check-hvp", "rules.py:hvp_loss", "--params", "x:y", "--max-entries", "3"],
        ["frobnicate"],
        [],
    ],
)
def test_argparse_errors_exit_2(files, capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "usage: jgradcheck" in out + err
    assert "Traceback" not in out + err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "check", "--help")
    assert code == 0 and "--params" in out and "Exit codes: 0 passed, 1" in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "Exit codes: 0 passed, 1" in out


# ------------------------------------------------------- check-vjp / jvp


def test_check_vjp(files, capsys):
    # --primals takes a tuple of primals or one array: the passing run uses one
    # array (misread as four scalar primals it could not pass), the failing run
    # a tuple. Each form once, not the pass and fail runs twice.
    code, out, err = run(
        capsys,
        "check-vjp",
        "rules.py:softplus_ok",
        "--primals",
        "rules.py:make_one_input",
    )
    assert code == 0, err
    assert out.startswith("check_vjp: passed")
    code, out, err = run(
        capsys,
        "check-vjp",
        "rules.py:softplus_bad",
        "--primals",
        "rules.py:make_inputs",
        "--json",
        "--method",
        "central4",
    )
    assert code == 1, err
    d = json.loads(out)
    assert d["kind"] == "vjp" and d["ok"] is False
    assert any(not t["ok"] for t in d["dot_tests"])
    assert d["localized"][0]["report"]["counts"]["fail"] > 0
    assert d["localized"][0]["report"]["settings"]["method"] == "central4"


def test_check_jvp(files, capsys):
    argv = ["--primals", "rules.py:make_inputs"]
    code, out, err = run(capsys, "check-jvp", "rules.py:sin_ok", *argv, "--order", "2")
    assert code == 0, err
    assert out.startswith("check_jvp: passed") and "second order" in out
    code, out, _ = run(capsys, "check-jvp", "rules.py:sin_bad", *argv)
    assert code == 1 and out.startswith("check_jvp: FAILED")


# ------------------------------------------------------------ subprocess


def test_console_script_exit_codes_cross_the_process_boundary(files):
    script = Path(sys.executable).parent / "jgradcheck"
    cmd = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-m", "jgradcheck._interfaces.cli"]
    )
    wrong = subprocess.run(
        [*cmd, *CHECK, *BATCH, "--grad", "model.py:wrong_grad"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 1, wrong.stderr
    assert "['w'][1, 0]" in wrong.stdout
    missing = subprocess.run(
        [*cmd, "check", "gone.py:loss", "--params", "gone.py:p"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2
    assert "no such file" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    "reference, code", [("softplus_reference", 0), ("wrong_reference", 1)]
)
def test_check_vjp_reference(files, capsys, reference, code):
    # --reference reaches check_vjp: the right reference agrees with the
    # correct rule (exit 0); a wrong one is named as disagreeing with the
    # finite differences (exit 1), with --reference-factor passed through.
    got, out, err = run(
        capsys,
        "check-vjp",
        "rules.py:softplus_ok",
        "--primals",
        "rules.py:make_inputs",
        "--reference",
        f"rules.py:{reference}",
        "--reference-factor",
        "3",
        "--json",
    )
    assert got == code, (out, err)
    d = json.loads(out)
    assert d["reference"]["factor"] == 3.0
    assert d["reference"]["reference_agrees"] is (code == 0)


# ------------------------------------------- check-hvp / check-compositions


def _rules():
    """rules.py as the command line loaded it (its folder is on sys.path)."""
    import rules

    return rules


HVP = ["--params", "rules.py:make_one_input", "--args", "rules.py:make_inputs"]


def test_check_hvp(files, capsys):
    # The failing rule is right at first order: only the HVP catches it.
    code, out, err = run(capsys, "check-hvp", "rules.py:hvp_blind_loss", *HVP)
    assert code == 1, err
    assert out.startswith("check_hvp: FAILED: H·v disagrees")
    assert "  0  [" in out and "FAIL (" in out  # the failing direction's row
    code, out, err = run(
        capsys,
        "check-hvp",
        "rules.py:hvp_loss",
        *HVP,
        *["--directions", "3", "--key", "1", "--json"],
    )
    assert code == 0, err
    d = json.loads(out)
    rules = _rules()
    report = jgc.check_hvp(
        rules.hvp_loss,
        rules.make_one_input(),
        *rules.make_inputs(),
        directions=3,
        key=1,
    )
    assert d == report.to_dict() and d["ok"] is True
    assert len(d["directions"]) == 3 and d["symmetry"]["pairs"] == 3


def test_check_compositions(files, capsys):
    code, out, err = run(
        capsys, "check-compositions", "rules.py:softplus_numpy", *PRIMALS
    )
    assert code == 1, err
    assert out.startswith("check_compositions: FAILED under jit, vmap")
    assert "TracerArrayConversionError" in out
    code, out, err = run(
        capsys,
        "check-compositions",
        "rules.py:softplus_ok",
        *PRIMALS,
        *["--batch", "2", "--key", "3", "--json"],
    )
    assert code == 0, err
    d = json.loads(out)
    rules = _rules()
    report = jgc.check_compositions(
        rules.softplus_ok, *rules.make_inputs(), batch=2, key=3
    )
    assert d == report.to_dict() and d["ok"] is True
    assert d["points"] == 2 and d["rows"][1]["name"] == "vmap over 2 points"


def test_new_commands_are_listed_and_check_their_options(files, capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "check-hvp" in out and "check-compositions" in out
    code, out, err = run(
        capsys, "check-compositions", "rules.py:softplus_ok", *PRIMALS, "--batch", "1"
    )
    assert code == 2 and out == ""
    assert "argument --batch: must be >= 2, got 1" in err
    code, _, err = run(
        capsys, "check-hvp", "rules.py:hvp_loss", *HVP, "--directions", "0"
    )
    assert code == 2 and "argument --directions: must be >= 1, got 0" in err
