"""What the pytest plugin gives a test: :class:`Variant`, the ``jgc_variant`` value.

The plugin itself (hooks, the ``jgc_variant`` fixture, the ``jgradcheck``
marker) is the top-level module ``_jgradcheck_pytest``, registered through the
``pytest11`` entry point under the name ``jgradcheck``: it lives outside this
package so that loading it in every pytest session does not import JAX. This
module is imported by the plugin only when a test uses the fixture or has
raised :class:`jgradcheck.GradCheckError`. See docs/pytest.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._checks.grad import check_grad
from .._checks.jvp import check_jvp
from .._checks.vjp import check_vjp
from .._errors import raise_unless_ok
from .._report.report import Report, RuleReport
from .._typing import PyTree


def _is_static(x: Any) -> bool:
    """No array or float inside, and hashable: a ``static_argnums`` argument."""
    leaves = jax.tree_util.tree_leaves(x)
    if any(
        isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, complex))
        for leaf in leaves
    ):
        return False
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _name(f: Callable[..., Any]) -> str:
    return getattr(f, "__name__", type(f).__name__)


class Variant:
    """One dtype and jit setting of a test that takes the ``jgc_variant`` fixture.

    The plugin runs such a test once per variant (ids ``float32-eager``,
    ``float32-jit``, ``float64-eager``, ``float64-jit`` by default), float64
    variants with 64-bit types enabled for the duration of the test. The
    ``check_*`` methods cast the floating-point leaves of every argument to
    :attr:`dtype`, wrap the functions with :func:`jax.jit` in jit variants and
    return the report; the ``assert_*`` methods do the same and raise
    :class:`jgradcheck.GradCheckError` unless the check passes. Keyword options
    are those of :func:`jgradcheck.check_grad`, :func:`jgradcheck.check_vjp`
    and :func:`jgradcheck.check_jvp`.

    In jit variants, arguments that hold no array and no float (Python ints,
    strings, ``None``, hashable config) are passed to :func:`jax.jit` as
    ``static_argnums``, as one would write by hand.

    Example:
      >>> import numpy as np
      >>> from jgradcheck.pytest_plugin import Variant
      >>> v = Variant("float32", jit=True)
      >>> v.id
      'float32-jit'
      >>> v.cast({"w": np.ones(2), "n": 3})
      {'n': 3, 'w': Array([1., 1.], dtype=float32)}
    """

    def __init__(self, dtype: str, jit: bool):
        self.dtype: np.dtype = jnp.dtype(dtype)
        """The floating-point dtype of this variant, e.g. ``dtype('float32')``."""
        self.jit: bool = bool(jit)
        """Whether functions are wrapped with :func:`jax.jit`."""
        self.reports: list[tuple[str, Report | RuleReport]] = []
        """``(label, report)`` of every check made through this variant."""

    @property
    def id(self) -> str:
        """The test id of this variant, e.g. ``"float64-jit"``."""
        return f"{self.dtype.name}-{'jit' if self.jit else 'eager'}"

    def __repr__(self) -> str:
        return f"Variant(dtype={self.dtype.name!r}, jit={self.jit})"

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """64-bit types enabled inside the block for a float64 variant."""
        if self.dtype.itemsize == 8 and not jax.config.read("jax_enable_x64"):
            with jax.enable_x64(True):
                yield
        else:
            yield

    def _cast_leaf(self, x: Any) -> Any:
        if isinstance(x, float):
            return jnp.asarray(x, self.dtype)
        if isinstance(x, (jax.Array, np.ndarray, np.generic)):
            if jnp.issubdtype(x.dtype, jnp.floating):
                return jnp.asarray(x, self.dtype)
            if jnp.issubdtype(x.dtype, jnp.complexfloating):
                complex_dtype = (
                    np.complex128 if self.dtype.itemsize == 8 else np.complex64
                )
                return jnp.asarray(x, complex_dtype)
        return x

    def cast(self, tree: PyTree) -> PyTree:
        """``tree`` with floating leaves (and Python floats) cast to :attr:`dtype`.

        Complex leaves become complex64 (complex128 for float64); integer, boolean
        and non-array leaves are returned unchanged.
        """
        with self.scope():
            return jax.tree_util.tree_map(self._cast_leaf, tree)

    def wrap(self, f: Callable[..., Any], **jit_options: Any) -> Callable[..., Any]:
        """``jax.jit(f, **jit_options)`` in a jit variant, else ``f`` itself."""
        return jax.jit(f, **jit_options) if self.jit else f

    def _wrap_for(self, f: Callable[..., Any], args: tuple) -> Callable[..., Any]:
        static = tuple(i for i, a in enumerate(args) if _is_static(a))
        return self.wrap(f, static_argnums=static) if self.jit else f

    def _record(self, label: str, report: Report | RuleReport) -> Any:
        self.reports.append((label, report))
        return report

    def check_grad(
        self,
        loss: Callable[..., Any],
        params: PyTree,
        *args: Any,
        grad: Callable[..., PyTree] | None = None,
        **options: Any,
    ) -> Report:
        """:func:`jgradcheck.check_grad` on this variant's dtype and jit setting.

        ``params`` and ``args`` are cast; ``loss`` (and ``grad``, if given) are
        wrapped. Returns the :class:`jgradcheck.Report`.
        """
        params, args = self.cast(params), self.cast(args)
        loss_w = self._wrap_for(loss, (params, *args))
        grad_w = None if grad is None else self._wrap_for(grad, (params, *args))
        with self.scope():
            report = check_grad(loss_w, params, *args, grad=grad_w, **options)
        return self._record(f"check_grad({_name(loss)})", report)

    def check_vjp(
        self, f: Callable[..., Any], *primals: Any, **options: Any
    ) -> RuleReport:
        """:func:`jgradcheck.check_vjp` on this variant; returns the report."""
        primals = self.cast(primals)
        with self.scope():
            report = check_vjp(self._wrap_for(f, primals), *primals, **options)
        return self._record(f"check_vjp({_name(f)})", report)

    def check_jvp(
        self, f: Callable[..., Any], *primals: Any, **options: Any
    ) -> RuleReport:
        """:func:`jgradcheck.check_jvp` on this variant; returns the report."""
        primals = self.cast(primals)
        with self.scope():
            report = check_jvp(self._wrap_for(f, primals), *primals, **options)
        return self._record(f"check_jvp({_name(f)})", report)

    def assert_grad(
        self, loss: Callable[..., Any], params: PyTree, *args: Any, **options: Any
    ) -> Report:
        """:meth:`check_grad`, raising :class:`jgradcheck.GradCheckError` unless ok.

        Raises:
          GradCheckError: the check failed; ``err.report`` is the report.
        """
        return raise_unless_ok(self.check_grad(loss, params, *args, **options))

    def assert_vjp(
        self, f: Callable[..., Any], *primals: Any, **options: Any
    ) -> RuleReport:
        """:meth:`check_vjp`, raising :class:`jgradcheck.GradCheckError` unless ok.

        Raises:
          GradCheckError: the check failed; ``err.report`` is the report.
        """
        return raise_unless_ok(self.check_vjp(f, *primals, **options))

    def assert_jvp(
        self, f: Callable[..., Any], *primals: Any, **options: Any
    ) -> RuleReport:
        """:meth:`check_jvp`, raising :class:`jgradcheck.GradCheckError` unless ok.

        Raises:
          GradCheckError: the check failed; ``err.report`` is the report.
        """
        return raise_unless_ok(self.check_jvp(f, *primals, **options))

    def sections(self) -> list[tuple[str, str]]:
        """Report sections for pytest: ``(title, report text)`` per check made."""
        return [
            (f"jgradcheck {self.id}: {label}", str(report))
            for label, report in self.reports
        ]


def summary_line(error: BaseException) -> str:
    """One line for pytest's short summary: the error type and what failed."""
    name = type(error).__name__
    report = getattr(error, "report", None)
    if report is None:
        lines = str(error).strip().splitlines()
        return f"{name}: {lines[0] if lines else ''}"
    kind = getattr(report, "kind", None)
    if kind is None or not hasattr(report, "failures"):
        # check_grad, check_hvp, check_compositions: the report's headline
        return f"{name}: {str(report).splitlines()[0]}"
    problems = report.failures()
    line = f"{name}: check_{kind} FAILED"
    if problems:
        plural = "s" if len(problems) > 1 else ""
        line += f" ({len(problems)} problem{plural}); first: {problems[0]}"
    return line
