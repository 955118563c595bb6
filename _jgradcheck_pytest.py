"""The pytest plugin of jgradcheck, registered as ``jgradcheck`` (entry point ``pytest11``).

pytest loads this module in every session of every environment where jgradcheck
is installed, so it lives outside the ``jgradcheck`` package (importing
``jgradcheck.anything`` would import the package, and with it JAX) and imports
only the standard library and pytest. JAX and jgradcheck are imported only by a
test that asks for the ``jgc_variant`` fixture, or when a test has already
raised a :class:`jgradcheck.GradCheckError` (so both are loaded). A session that
never touches jgradcheck never imports JAX through this plugin, so settings such
as ``JAX_ENABLE_X64`` or ``JAX_PLATFORMS`` that a ``conftest.py`` puts in the
environment before importing JAX still take effect.

What it adds (documented in docs/pytest.md):

* a test failing on ``jgc.assert_grad`` / ``assert_vjp`` / ``assert_jvp`` (or
  ``assert_hvp`` / ``assert_compositions``: any ``GradCheckError``) shows
  the report table with a traceback that stops at the test's own line (no
  frames inside jgradcheck), and a one-line summary in ``-ra`` / ``--tb=line``;
* the ``jgc_variant`` fixture: the test runs once per dtype and jit/no-jit,
  narrowed with ``@pytest.mark.jgradcheck(dtypes=..., jit=...)``;
* ``--jgc-compile-cache DIR`` (or ini ``jgc_compile_cache = DIR``): JAX's
  persistent compilation cache for the run;
* on such a failure, a repro (``report.save_repro``: the inputs, options,
  versions and a pytest file that repeats the check) in the test's tmp dir,
  its path in the failure report (section ``jgradcheck repro``).

Disable it with ``-p no:jgradcheck``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURE = "jgc_variant"
MARKER = "jgradcheck"
DTYPES = ("float16", "float32", "float64", "bfloat16")
DEFAULT_DTYPES = ("float32", "float64")
DEFAULT_JIT = (False, True)


CACHE_OPTION = "--jgc-compile-cache"
CACHE_INI = "jgc_compile_cache"
CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": None,  # the directory
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
"""JAX's persistent compilation cache settings: keep every compile (JAX's
default skips those under 1 s, which are nearly all of a check's)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    help_text = (
        "JAX's persistent compilation cache in DIR for this run: every check "
        "builds fresh jitted programs, and the cache serves the same programs "
        "from disk on later runs (bench/cache.py measures the gain). Off by "
        "default; jgradcheck itself never changes JAX's configuration."
    )
    parser.getgroup("jgradcheck").addoption(
        CACHE_OPTION, metavar="DIR", default=None, help=help_text
    )
    parser.addini(CACHE_INI, help=f"as {CACHE_OPTION} (DIR)", default="")


def _compile_cache(config: pytest.Config) -> None:
    """Turn JAX's persistent compilation cache on when asked (option or ini).

    Before JAX is imported, through its environment variables (so a
    ``conftest.py`` that imports JAX later still sees them); after, through
    ``jax.config``. Each pytest-xdist worker gets its own subdirectory
    (``DIR/gw0``, ...): JAX writes entries without a lock unless ``filelock``
    is installed, and a worker must not read another's half-written entry."""
    path = config.getoption(CACHE_OPTION) or config.getini(CACHE_INI)
    if not path:
        return
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", 0):
        return  # the xdist controller runs no test: its workers set their own
    # xdist's own record of the worker (an environment variable would be
    # inherited by a pytest run in a child process of a worker).
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    path = os.path.join(os.path.abspath(os.path.expanduser(str(path))), worker)
    os.makedirs(path, exist_ok=True)
    values = {k: (v if v is not None else path) for k, v in CACHE_ENV.items()}
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    else:
        os.environ.update(values)


def pytest_configure(config: pytest.Config) -> None:
    _compile_cache(config)
    config.addinivalue_line(
        "markers",
        f"{MARKER}(dtypes=('float32', 'float64'), jit=(False, True)): the "
        f"dtypes and jit settings the `{FIXTURE}` fixture runs the test with "
        "(jgradcheck plugin).",
    )


# ------------------------------------------------------------ the variant fixture


def _bad_marker(where: str, problem: str) -> None:
    pytest.fail(
        f"@pytest.mark.{MARKER} on {where}: {problem}. Usage: "
        f"@pytest.mark.{MARKER}(dtypes=('float32', 'float64'), jit=(False, True)), "
        f"with a test that takes the `{FIXTURE}` fixture.",
        pytrace=False,
    )


def _dtype_name(d: Any) -> str | None:
    if isinstance(d, str):
        return d
    name = getattr(getattr(d, "dtype", None), "name", None)  # jnp.float32, arrays
    if isinstance(name, str):
        return name
    name = getattr(d, "name", None)  # np.dtype("float32")
    if isinstance(name, str):
        return name
    name = getattr(d, "__name__", None)  # np.float32
    return name if isinstance(name, str) else None


def _as_tuple(value: Any) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def variants(mark: Any, where: str) -> list[tuple[str, bool]]:
    """The (dtype name, jit) pairs a ``jgradcheck`` mark (or None) asks for."""
    dtypes, jits = DEFAULT_DTYPES, DEFAULT_JIT
    if mark is not None:
        if mark.args:
            _bad_marker(
                where,
                f"takes keyword arguments only (dtypes=, jit=); got positional "
                f"{mark.args!r}",
            )
        unknown = sorted(set(mark.kwargs) - {"dtypes", "jit"})
        if unknown:
            _bad_marker(
                where,
                f"unknown argument(s) {', '.join(unknown)}; "
                "the arguments are `dtypes` and `jit`",
            )
        dtypes = _as_tuple(mark.kwargs.get("dtypes", DEFAULT_DTYPES))
        jits = _as_tuple(mark.kwargs.get("jit", DEFAULT_JIT))
    names = [_dtype_name(d) for d in dtypes]
    bad = [d for d, n in zip(dtypes, names) if n not in DTYPES]
    if not dtypes or bad:
        _bad_marker(
            where,
            f"`dtypes` must be a non-empty tuple of {', '.join(map(repr, DTYPES))}; "
            f"got {dtypes!r}",
        )
    if not jits or not all(isinstance(j, bool) for j in jits):
        _bad_marker(
            where,
            f"`jit` must be True, False or a non-empty tuple of them; got {jits!r}",
        )
    if len(set(names)) < len(names) or len(set(jits)) < len(jits):
        _bad_marker(where, f"repeated value in dtypes={dtypes!r} or jit={jits!r}")
    return [(n, j) for n in names for j in jits]


def variant_id(param: tuple[str, bool]) -> str:
    return f"{param[0]}-{'jit' if param[1] else 'eager'}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    where = metafunc.definition.nodeid
    if FIXTURE not in metafunc.fixturenames:
        if any(m.name == MARKER for m in metafunc.definition.own_markers):
            _bad_marker(where, f"the test does not use the `{FIXTURE}` fixture")
        return
    params = variants(metafunc.definition.get_closest_marker(MARKER), where)
    metafunc.parametrize(
        FIXTURE, params, ids=[variant_id(p) for p in params], indirect=True
    )


@pytest.fixture
def jgc_variant(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One (dtype, jit) variant: the test runs once per variant.

    By default four: float32 and float64, each eager and under ``jax.jit``;
    ``@pytest.mark.jgradcheck(dtypes=..., jit=...)`` chooses. Float64 variants
    run the whole test with 64-bit types enabled (``jax.enable_x64``, scoped to
    the test). The value is a :class:`jgradcheck.pytest_plugin.Variant`:
    ``.dtype``, ``.jit``, ``.cast(tree)``, ``.wrap(f)`` and ``.assert_grad`` /
    ``.assert_vjp`` / ``.assert_jvp`` (cast, wrap, check, raise on failure).
    """
    param = getattr(request, "param", None)
    if param is None:
        pytest.fail(
            f"`{FIXTURE}` must be an argument of the test (or of a fixture it "
            "uses), so that the jgradcheck plugin can parametrize the test; it "
            "cannot be requested with request.getfixturevalue.",
            pytrace=False,
        )
    from jgradcheck.pytest_plugin import Variant

    variant = Variant(*param)
    with variant.scope():
        yield variant


# ------------------------------------------------------------ failure reports

REPRO_SECTION = "jgradcheck repro"
"""The heading of the failure-report section that says where the repro is."""


def _repro_dir(item: pytest.Item) -> Path:
    """The failing test's tmp dir (``tmp_path``'s, made if the test took none)."""
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(tmp_path, Path):
        return tmp_path / "jgc-repro"
    factory = getattr(item.config, "_tmp_path_factory", None)
    name = re.sub(r"\W", "_", item.name)[:30]  # as pytest names tmp_path
    if factory is not None:
        return factory.mktemp(name, numbered=True) / "jgc-repro"
    return Path(tempfile.mkdtemp(prefix=f"{name}-")) / "jgc-repro"


def _repro(item: pytest.Item, error: BaseException) -> str:
    """Write the failed check's repro (``report.save_repro``); where it is, or
    why there is none (never an error: the test has failed already)."""
    try:
        test = error.report.save_repro(_repro_dir(item))
    except Exception as e:
        return f"no repro written: {type(e).__name__}: {e}"
    return (
        f"inputs, options and versions of the failed check: {test.parent}\n"
        f"repeat it: pytest {test}"
    )


def _grad_check_error(call: pytest.CallInfo) -> BaseException | None:
    """The GradCheckError a test phase raised, if it did (without importing it)."""
    errors = sys.modules.get("jgradcheck._errors")
    excinfo = call.excinfo
    if errors is None or excinfo is None:
        return None
    value = excinfo.value
    return value if isinstance(value, errors.GradCheckError) else None


def _without_internals(excinfo: pytest.ExceptionInfo) -> pytest.ExceptionInfo | None:
    """The same exception, its traceback cut before the first frame in jgradcheck.

    The frames left are pytest's, the test's and its helpers'; the last is the
    line that called ``assert_*``, which pytest then names as the failure's
    location. The exception's own ``__traceback__`` is left as it is: the cut
    traceback is a copy (``types.TracebackType``), so pytest's own traceback
    cutting, which follows the raw ``tb_next`` links, sees only the copy.
    """
    package = os.path.dirname(sys.modules["jgradcheck"].__file__) + os.sep
    kept = []
    tb = excinfo.tb
    while tb is not None:
        if kept and tb.tb_frame.f_code.co_filename.startswith(package):
            break
        kept.append(tb)
        tb = tb.tb_next
    if tb is None:
        return None
    cut = None
    for t in reversed(kept):
        cut = types.TracebackType(cut, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return pytest.ExceptionInfo.from_exc_info((excinfo.type, excinfo.value, cut))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    error = _grad_check_error(call)
    if error is not None and not item.config.getoption("fulltrace", False):
        try:
            call.excinfo = _without_internals(call.excinfo) or call.excinfo
        except Exception:  # never let the plugin break a report: keep pytest's
            pass
    outcome = yield
    if error is not None:
        try:
            from jgradcheck.pytest_plugin import summary_line

            # The one line of `-ra`, `--tb=line` and junitxml's message=.
            outcome.get_result().longrepr.reprcrash.message = summary_line(error)
        except Exception:
            pass
        if call.when == "call":
            outcome.get_result().sections.append((REPRO_SECTION, _repro(item, error)))
    elif call.when == "call":
        variant = getattr(item, "funcargs", {}).get(FIXTURE)
        report = outcome.get_result()
        if report.passed and hasattr(variant, "sections"):
            report.sections.extend(variant.sections())
