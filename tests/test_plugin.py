"""The pytest plugin (entry point ``jgradcheck`` → ``_jgradcheck_pytest``), via pytester.

Most runs are in-process (``runpytest``); only the check that loading the
plugin imports neither JAX nor jgradcheck needs a fresh interpreter.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck.pytest_plugin import Variant, summary_line

X64_AT_IMPORT = bool(jax.config.jax_enable_x64)

RULES = """
import jax
import jax.numpy as jnp
import pytest

import jgradcheck as jgc


@jax.custom_vjp
def cube(x):
    return x**3


cube.defvjp(lambda x: (cube(x), x), lambda x, g: (3 * g * x**2,))


@jax.custom_vjp
def cube_bad(x):
    return x**3


cube_bad.defvjp(lambda x: (cube_bad(x), x), lambda x, g: (2 * g * x**2,))  # 3, not 2

X = jnp.array([1.0, 2.0, -0.5])
X64_AT_START = jax.config.jax_enable_x64  # JAX_ENABLE_X64=1 keeps it on
"""

WRONG_GRAD = """
import jax.numpy as jnp

import jgradcheck as jgc


def loss(p):
    return jnp.sum(jnp.sin(p) ** 2)


def test_wrong_grad():
    p = jnp.linspace(0.0, 1.0, 5, dtype=jnp.float32)
    jgc.assert_grad(loss, p, grad=lambda p: jnp.sin(2 * p) / 2)
"""

ALL_VARIANTS = ["float32-eager", "float32-jit", "float64-eager", "float64-jit"]


def test_registered_by_entry_point_without_importing_jax(pytester):
    # A project that never uses jgradcheck: the plugin is loaded (entry point)
    # but neither JAX nor jgradcheck is imported, so JAX_* settings made by a
    # conftest before importing JAX still work and startup stays fast.
    pytester.makepyfile(
        """
        import os
        import sys

        def test_plain(request):
            assert request.config.pluginmanager.hasplugin("jgradcheck")
            assert "jax" not in sys.modules
            assert "jgradcheck" not in sys.modules
            assert "JAX_COMPILATION_CACHE_DIR" not in os.environ
        """
    )
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["plugins:*jgradcheck-*"])
    result.assert_outcomes(passed=1)


def test_compile_cache_option_fills_the_directory(pytester, tmp_path):
    # --jgc-compile-cache DIR turns JAX's persistent cache on for the run (in a
    # child process: the option must not touch this process's JAX config). Its
    # twin, the cache left off without the option, is the first test above's
    # child (no JAX_COMPILATION_CACHE_DIR there).
    pytester.makepyfile(
        """
        import os
        import jax, jax.numpy as jnp

        def test_compiles():
            assert jax.config.jax_compilation_cache_dir == os.environ["WANT"]
            assert float(jax.jit(lambda x: jnp.sin(x) * 2)(1.0)) > 0
        """
    )
    cache = tmp_path / "jaxcache"
    pytester._monkeypatch.setenv("WANT", str(cache / "main"))
    pytester._monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    result = pytester.runpytest_subprocess(f"--jgc-compile-cache={cache}")
    result.assert_outcomes(passed=1)
    assert any((cache / "main").iterdir())


@pytest.mark.parametrize(
    "autoload, options, loaded",
    [
        ("", "", True),
        ("", "-p no:jgradcheck", False),
        ("1", "", False),
        ("1", "-p jgradcheck", True),
    ],
)
def test_can_be_disabled_and_loaded_by_name(
    pytester, monkeypatch, autoload, options, loaded
):
    pytester.makepyfile(
        f"""
        def test_plain(request):
            assert request.config.pluginmanager.hasplugin("jgradcheck") == {loaded}
        """
    )
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", autoload)
    pytester.runpytest(*options.split()).assert_outcomes(passed=1)


def test_failure_shows_the_report_and_the_test_line_only(pytester):
    pytester.makepyfile(test_wrong_grad_file=WRONG_GRAD)
    result = pytester.runpytest("-vv")  # -vv: summary lines are not cut to 80 columns
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            ">*jgc.assert_grad(loss, p, grad=*",
            "E*GradCheckError:*",
            "E*gradient check FAILED: 4 of 5 checked entries disagree, in <root>",
            "E*per leaf*",
            "E*<root>*(5,)*float32*5/5*FAIL (4 wrong)",
            "E*<root>: scaled: a ≈ 0.5·n*",
            "E*worst entries:",
            "E*[[]3]*4.987e-01*9.975e-01*FAIL",
            "test_wrong_grad_file.py:*: GradCheckError",
            "FAILED test_wrong_grad_file.py::test_wrong_grad - GradCheckError: gradient "
            "check FAILED: 4 of 5 checked entries disagree, in <root>",
        ]
    )
    out = result.stdout.str()
    for internal in [
        "_checks/",
        "_errors.py",
        "raise_unless_ok",
        "jax/_src",
        "Array(",
    ]:
        assert internal not in out, internal


@pytest.mark.parametrize("option", ["-p no:jgradcheck", "--full-trace"])
def test_without_the_plugin_internals_are_shown(pytester, option):
    # The control for the test above: pytest alone shows jgradcheck's frames.
    pytester.makepyfile(test_wrong_grad_file=WRONG_GRAD)
    result = pytester.runpytest(*option.split())
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*jgradcheck/_errors.py:*: GradCheckError"])


def test_tb_line_gives_one_line_with_the_verdict(pytester):
    pytester.makepyfile(test_wrong_grad_file=WRONG_GRAD)
    result = pytester.runpytest("--tb=line")
    result.stdout.fnmatch_lines(
        [
            "*test_wrong_grad_file.py:*: GradCheckError: gradient check FAILED: 4 of 5 checked "
            "entries disagree, in <root>"
        ]
    )


def test_passing_check_is_quiet(pytester):
    pytester.makepyfile(
        """
        import jax.numpy as jnp
        import jgradcheck as jgc

        def test_right_grad():
            jgc.assert_grad(lambda p: jnp.sum(jnp.sin(p) ** 2), jnp.linspace(0.0, 1.0, 5))
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "gradient check" not in result.stdout.str()


def test_failure_writes_a_repro_into_the_tmp_dir_that_fails_again(pytester):
    pytester.makepyfile(
        test_rule_file=RULES
        + """

def test_bad_rule():
    jgc.assert_vjp(cube_bad, X, localize=0)
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- jgradcheck repro -*",
            "inputs, options and versions of the failed check: *",
            "repeat it: pytest *test_repro_cube_bad.py",
        ]
    )
    (line,) = [x for x in result.outlines if x.startswith("repeat it: pytest ")]
    repro = Path(line.removeprefix("repeat it: pytest "))
    assert repro.is_file()
    assert repro.parent.parent.name.startswith("test_bad_rule")  # the test's tmp dir
    # Its own basetemp: pytest empties the default one, the repro's home.
    again = pytester.runpytest(str(repro), f"--basetemp={pytester.path / 'again'}")
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["*test_repro_cube_bad.py:*: GradCheckError"])


def test_a_failing_assert_hvp_writes_a_repro_too(pytester):
    pytester.makepyfile(
        test_hvp_file="""
import jax
import jax.numpy as jnp

import jgradcheck as jgc


@jax.custom_vjp
def softplus(x):
    return jnp.logaddexp(x, 0.0)


softplus.defvjp(  # the bwd is blind to its own x: wrong at second order
    lambda x: (softplus(x), x),
    lambda x, g: (g * jax.nn.sigmoid(jax.lax.stop_gradient(x)),),
)


def loss(w):
    return jnp.sum(softplus(w) ** 2)


def test_bad_hvp():
    jgc.assert_hvp(loss, jnp.array([0.5, -1.0]))
"""
    )
    result = pytester.runpytest("-rf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- jgradcheck repro -*",
            "inputs, options and versions of the failed check: *",
            "repeat it: pytest *test_repro_loss.py",
            "FAILED *::test_bad_hvp - GradCheckError: check_hvp: FAILED*",
        ]
    )
    (line,) = [x for x in result.outlines if x.startswith("repeat it: pytest ")]
    source = Path(line.removeprefix("repeat it: pytest ")).read_text()
    assert "from test_hvp_file import loss\n" in source
    assert "jgc.assert_hvp(loss, *args, key=0)" in source


def test_variants_catch_a_broken_rule_in_each_and_pass_a_correct_one(pytester):
    pytester.makepyfile(
        test_variant_rules=RULES
        + """

def test_bad(jgc_variant):
    jgc_variant.assert_vjp(cube_bad, X)


def test_good(jgc_variant):
    x = jgc_variant.cast(X)
    assert x.dtype == jgc_variant.dtype
    is64 = jgc_variant.dtype == jnp.float64
    assert jax.config.jax_enable_x64 == (is64 or X64_AT_START)
    assert (jgc_variant.wrap(cube) is not cube) == jgc_variant.jit
    report = jgc_variant.assert_vjp(cube, X, localize=0)  # dot tests + structure
    assert report.ok


def test_x64_is_back_as_before():
    assert jax.config.jax_enable_x64 == X64_AT_START
"""
    )
    result = pytester.runpytest("-vv", "-rfP", "--strict-markers")
    result.assert_outcomes(passed=5, failed=4)
    result.stdout.fnmatch_lines_random(
        [f"*::test_bad[[]{v}] FAILED*" for v in ALL_VARIANTS]
        + [f"*::test_good[[]{v}] PASSED*" for v in ALL_VARIANTS]
        + [
            f"FAILED *::test_bad[[]{v}] - GradCheckError: check_vjp FAILED (*); "
            "first: cotangent on output <root> only: [[]0][[]*] rule=*"
            for v in ALL_VARIANTS
        ]
        + ["*::test_x64_is_back_as_before PASSED*"]
    )
    # -rP: each passing variant shows its report as a section.
    result.stdout.fnmatch_lines(
        [
            "*- jgradcheck float32-eager: check_vjp(cube) -*",
            "check_vjp: passed",
            "*dot-product tests, one output at a time*",
        ]
    )


def test_marker_chooses_variants_and_jit_gets_static_args(pytester):
    pytester.makepyfile(
        """
        import jax.numpy as jnp
        import pytest

        def tile(x, n):
            return jnp.tile(x, n)  # n must be static under jax.jit

        @pytest.mark.jgradcheck(dtypes=("float64",), jit=True)
        def test_one(jgc_variant):
            assert jgc_variant.id == "float64-jit"
            jgc_variant.assert_jvp(tile, jnp.array([0.5, 2.0]), 3)

        @pytest.mark.jgradcheck(dtypes=[jnp.float32], jit=(True, False))
        def test_grad(jgc_variant):
            def loss(p, x, n):
                return jnp.sum(jnp.tanh(p * x) ** n)

            jgc_variant.assert_grad(loss, jnp.array([0.3, -1.2]), jnp.array([2.0, 1.0]), 2)
        """
    )
    result = pytester.runpytest("-v", "--strict-markers")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*::test_one[[]float64-jit] PASSED*",
            "*::test_grad[[]float32-jit] PASSED*",
            "*::test_grad[[]float32-eager] PASSED*",
        ]
    )


def test_marker_on_a_class_or_module_sets_defaults(pytester):
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.jgradcheck(dtypes=("float32",))

        def test_a(jgc_variant):
            pass

        def test_without_the_fixture():
            pass
        """
    )
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "*::test_a[[]float32-eager]",
            "*::test_a[[]float32-jit]",
            "*::test_without_the_fixture",
            "3 tests collected*",
        ]
    )


@pytest.mark.parametrize(
    "marker, message",
    [
        ('dtypes=("int32",)', "`dtypes` must be a non-empty tuple of 'float16', "),
        ("dtypes=()", "`dtypes` must be a non-empty tuple of *; got ()."),
        ('jit="yes"', "`jit` must be True, False or a non-empty tuple of them; got"),
        ('"float32"', "takes keyword arguments only (dtypes=, jit=)*"),
        ('dtype="float32"', "unknown argument(s) dtype; the arguments are*"),
        ('dtypes=("float32", "float32")', "repeated value in dtypes=*"),
    ],
)
def test_bad_marker_arguments_are_a_clear_collection_error(pytester, marker, message):
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.jgradcheck({marker})
        def test_x(jgc_variant):
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [f"@pytest.mark.jgradcheck on *::test_x: {message}*", "*1 error*"]
    )


def test_marker_without_the_fixture_is_an_error(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.jgradcheck(dtypes=("float32",))
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*the test does not use the `jgc_variant` fixture. Usage:*"]
    )


def test_fixture_requested_dynamically_is_an_error(pytester):
    pytester.makepyfile(
        """
        def test_x(request):
            request.getfixturevalue("jgc_variant")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*`jgc_variant` must be an argument of the test*"])


# ------------------------------------------------ the fixture in this very suite


def test_cast_and_wrap(jgc_variant):
    tree = {
        "w": np.ones((2, 2), np.float64),
        "s": 0.5,
        "z": np.ones(2, np.complex128),
        "n": np.arange(3),
        "k": 7,
        "name": "relu",
    }
    out = jgc_variant.cast(tree)
    assert out["w"].dtype == jgc_variant.dtype and out["s"].dtype == jgc_variant.dtype
    is64 = jgc_variant.dtype == jnp.float64
    assert out["z"].dtype == (jnp.complex128 if is64 else jnp.complex64)
    assert jnp.issubdtype(out["n"].dtype, jnp.integer)
    assert out["k"] == 7 and out["name"] == "relu"
    # float64 variants turn x64 on; float32 ones leave the caller's setting
    assert jax.config.jax_enable_x64 == (is64 or X64_AT_IMPORT)
    f = jgc_variant.wrap(jnp.sin)
    assert (f is jnp.sin) == (not jgc_variant.jit)
    assert repr(jgc_variant) == (
        f"Variant(dtype={jgc_variant.dtype.name!r}, jit={jgc_variant.jit})"
    )


def test_summary_line():
    loss = lambda p: jnp.sum(p**2)  # noqa: E731
    with pytest.raises(jgc.GradCheckError) as err:
        jgc.assert_grad(loss, jnp.ones(3), grad=lambda p: p)
    assert summary_line(err.value) == (
        "GradCheckError: gradient check FAILED: 3 of 3 checked entries disagree, "
        "in <root>"
    )
    assert summary_line(AssertionError("\nfirst\nsecond")) == "AssertionError: first"
    row = jgc.Composition("vmap over 3 points", "FAIL", "max |Δ| 1.00e+00")
    grid = jgc.CompositionReport("vjp", (row,), 3, "16 ulps")  # made by hand
    assert summary_line(jgc.GradCheckError(grid)) == (
        "GradCheckError: check_compositions: FAILED under vmap over 3 points (vjp rule)"
    )
    assert Variant("float64", jit=False).id == "float64-eager"
