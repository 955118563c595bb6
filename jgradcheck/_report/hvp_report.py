"""The public :class:`HvpReport`: the record of check_hvp with its renderings
(text, HTML, JSON) and ``save_repro``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .html import render_html
from .hvp_records import HvpRecord
from .hvp_sections import hvp_sections
from .repro import save_repro
from .serialize import hvp_dict
from .text import render_text


@dataclasses.dataclass(frozen=True, repr=False)
class HvpReport(HvpRecord):
    """The result of :func:`jgradcheck.check_hvp`.

    ``directions`` holds one :class:`HvpDirection` per direction v (its worst
    entry and the counts of failing and unsure entries), ``symmetry`` the
    :class:`Symmetry` check (None with one direction); ``ok`` is True when
    every entry agrees and the Hessian is symmetric. ``print(report)`` shows
    both.
    """

    def to_dict(self) -> dict[str, Any]:
        """The report as a plain dict that :func:`json.dumps` accepts.

        The conventions of :meth:`jgradcheck.Report.to_dict` (non-finite
        floats as ``"nan"``/``"inf"``/``"-inf"``, ``None`` for "not
        applicable").

        Keys: ``kind`` (``"hvp"``), ``ok``, ``summary`` (the headline),
        ``inputs`` (paths of the differentiated params leaves), ``rounding``
        (how the HVP's rounding was allowed for), ``directions`` (one dict
        per direction v: ``direction``, ``where`` (its entry of H·v closest
        to failing), ``hvp`` and ``fd`` there, ``err`` the estimate's error
        bar, ``abs_diff``, ``tolerance``, ``fail`` and ``unsure`` (counts of
        entries), ``size`` (entries compared), ``status`` (``"pass"``,
        ``"FAIL"`` or ``"unsure"``) and ``ok``) and ``symmetry`` (``ok``,
        ``pairs``, ``worst`` (the pair i, j), ``left`` = vᵢᵀ(H vⱼ), ``right``
        = vⱼᵀ(H vᵢ), ``abs_diff``, ``allowance``; ``None`` with one
        direction). The function and the options are not in it (they are in
        the ``repro.json`` of :meth:`save_repro`).

        Returns:
          A dict; ``json.dumps(report.to_dict(), allow_nan=False)`` works.

        Example:
          >>> import json, jax.numpy as jnp, jgradcheck as jgc
          >>> report = jgc.check_hvp(jnp.linalg.norm, jnp.array([3.0, 4.0]))
          >>> d = json.loads(json.dumps(report.to_dict()))
          >>> d["kind"], d["ok"], d["inputs"], [v["status"] for v in d["directions"]]
          ('hvp', True, ['<root>'], ['pass', 'pass'])
          >>> d["symmetry"]["ok"], d["symmetry"]["pairs"]
          (True, 1)
        """
        return hvp_dict(self)

    def save_repro(self, path: str | os.PathLike[str]) -> Path:
        """Write this check's inputs, options and versions, and a pytest file
        that repeats it, into the directory ``path``.

        As :meth:`jgradcheck.Report.save_repro`: ``inputs.npz``,
        ``repro.json`` and ``test_repro_<name>.py``, which imports the loss by
        its module and name and calls :func:`jgradcheck.assert_hvp` with the
        same params, args, ``key`` and options: it fails while the check
        fails and passes once it passes. The pytest plugin writes one when
        ``assert_hvp`` fails in a test (docs/pytest.md).

        Args:
          path: the directory (made if missing; files in it are replaced).

        Returns:
          The path of the pytest file.

        Raises:
          ValueError: this report was not returned by
            :func:`jgradcheck.check_hvp`, or ``path`` is a file.
          TypeError: an input that cannot be saved, naming where it is.

        Example:
          >>> import tempfile, jax.numpy as jnp, jgradcheck as jgc
          >>> report = jgc.check_hvp(jnp.linalg.norm, jnp.array([3.0, 4.0]), key=1)
          >>> test = report.save_repro(tempfile.mkdtemp())
          >>> test.name
          'test_repro_norm.py'
          >>> [line.strip() for line in test.read_text().splitlines()
          ...  if "import norm" in line or "jgc.assert_" in line]
          ['from jax.numpy.linalg import norm as loss', 'jgc.assert_hvp(loss, *args, key=1)']
        """
        return save_repro(self._call, path, str(self).splitlines(), self.ok)

    def __str__(self) -> str:
        return render_text(hvp_sections(self))

    def __repr__(self) -> str:
        return f"HvpReport(ok={self.ok}, directions={len(self.directions)})"

    def _repr_html_(self) -> str:
        return render_html(hvp_sections(self))
