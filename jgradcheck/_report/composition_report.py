"""The public :class:`CompositionReport`: the record of check_compositions
with its renderings (text, HTML, JSON) and ``save_repro``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .composition_records import CompositionRecord
from .composition_sections import composition_sections
from .html import render_html
from .repro import save_repro
from .serialize import composition_dict
from .text import render_text


@dataclasses.dataclass(frozen=True, repr=False)
class CompositionReport(CompositionRecord):
    """The result of :func:`jgradcheck.check_compositions`.

    ``rows`` holds one :class:`Composition` per transformation (name, status
    ``ok``/``FAIL``/``not defined``/``skipped``, detail); ``ok`` is True when
    none FAILed; ``row("vmap")`` finds a row by the start of its name.
    ``print(report)`` shows the grid.
    """

    def to_dict(self) -> dict[str, Any]:
        """The report as a plain dict that :func:`json.dumps` accepts.

        The conventions of :meth:`jgradcheck.Report.to_dict`: only ``bool``,
        ``int``, ``float``, ``str``, ``None``, lists and dicts.

        Keys: ``kind`` (``"compositions"``), ``ok``, ``summary`` (the
        headline), ``rule`` (``"vjp"`` or ``"jvp"``: which derivative the rows
        ran), ``points`` (input points of the batched rows), ``rounding`` (how
        the allowance was measured) and ``rows`` (one dict per composition:
        ``name``, ``status`` (``"ok"``, ``"FAIL"``, ``"not defined"`` or
        ``"skipped"``), ``ok`` and ``detail``, the numbers compared or the
        error raised). The function and the options are not in it (they are
        in the ``repro.json`` of :meth:`save_repro`).

        Returns:
          A dict; ``json.dumps(report.to_dict(), allow_nan=False)`` works.

        Example:
          >>> import json, jax.numpy as jnp, jgradcheck as jgc
          >>> d = jgc.check_compositions(jnp.sin, jnp.array([0.5, 1.0])).to_dict()
          >>> d["kind"], d["ok"], d["rule"], d["points"]
          ('compositions', True, 'vjp', 3)
          >>> [(row["name"], row["status"]) for row in json.loads(json.dumps(d))["rows"]][:2]
          [('jit', 'ok'), ('vmap over 3 points', 'ok')]
        """
        return composition_dict(self)

    def save_repro(self, path: str | os.PathLike[str]) -> Path:
        """Write this check's inputs, options and versions, and a pytest file
        that repeats it, into the directory ``path``.

        As :meth:`jgradcheck.Report.save_repro`: ``inputs.npz``,
        ``repro.json`` and ``test_repro_<name>.py``, which imports ``f`` by its
        module and name and calls :func:`jgradcheck.assert_compositions` with
        the same primals, ``key`` and options: it fails while a row fails and
        passes once none does. The pytest plugin writes one into a failing
        test's tmp dir (docs/pytest.md).

        Args:
          path: the directory (made if missing; files in it are replaced).

        Returns:
          The path of the pytest file.

        Raises:
          ValueError: this report was not returned by
            :func:`jgradcheck.check_compositions`, or ``path`` is a file.
          TypeError: an input that cannot be saved, naming where it is.

        Example:
          >>> import tempfile, jax.numpy as jnp, jgradcheck as jgc
          >>> report = jgc.check_compositions(jnp.sin, jnp.array([0.5, 1.0]), key=3)
          >>> test = report.save_repro(tempfile.mkdtemp())
          >>> test.name
          'test_repro_sin.py'
          >>> [line.strip() for line in test.read_text().splitlines()
          ...  if "import sin" in line or "jgc.assert_" in line]
          ['from jax.numpy import sin as f', 'jgc.assert_compositions(f, *args, key=3)']
        """
        return save_repro(self._call, path, str(self).splitlines(), self.ok)

    def __str__(self) -> str:
        return render_text(composition_sections(self))

    def __repr__(self) -> str:
        bad = sum(not c.ok for c in self.rows)
        return f"CompositionReport(kind={self.kind!r}, ok={self.ok}, failed_rows={bad})"

    def _repr_html_(self) -> str:
        return render_html(composition_sections(self))
