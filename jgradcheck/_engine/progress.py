"""Progress bars for long sweeps: one tqdm bar per leaf, coordinates done.

``progress=None`` (automatic) shows a leaf's bar only when its sweep has run,
or is estimated to run, for more than :data:`AUTO_SECONDS`, and only when
stderr is a terminal or the code runs in a Jupyter kernel (where
``tqdm.auto`` draws a widget). ``True`` always shows bars (on stderr or as a
widget); a text stream shows them on that stream; ``False`` never does.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any

AUTO_SECONDS = 2.0
"""An automatic bar appears once a leaf's sweep has taken, or is estimated to
take, this many seconds (compile included)."""


def check_progress(progress: Any) -> None:
    """Raise unless ``progress`` is None, a bool or a writable text stream."""
    if progress is None or isinstance(progress, bool):
        return
    if not callable(getattr(progress, "write", None)):
        raise TypeError(
            "`progress` must be None (automatic), True, False or a text stream "
            f"with a write() method; got {type(progress).__name__} {progress!r}."
        )


def in_notebook() -> bool:
    """True inside a Jupyter (IPython kernel) session."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # noqa: BLE001 - any failure means "not a notebook"
        return False


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001 - closed or odd streams are not terminals
        return False


def _tqdm(stream: Any, **kwargs: Any) -> Any:
    # tqdm.auto warns (TqdmExperimentalWarning, or TqdmWarning without
    # ipywidgets) in some notebook setups; a progress bar is not worth a
    # warning, and the test suite turns warnings into errors.
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        if stream is not None:
            from tqdm.std import tqdm

            return tqdm(file=stream, **kwargs)
        from tqdm.auto import tqdm

        return tqdm(**kwargs)


class LeafProgress:
    """The progress of one leaf's sweep, drawn as a bar when it is worth it.

    Args:
      setting: ``progress`` as given to ``check_grad``.
      desc: the bar's label (the leaf's path).
      coords: coordinates to sweep (the bar's total).
      evals: the evaluations of J expected for them (refinement may add more;
        the bar then stays at its total until the leaf is done).
    """

    def __init__(self, setting: Any, desc: str, coords: int, evals: int):
        self.setting = setting
        self.desc = desc
        self.total = max(int(coords), 1)
        self.expected = max(int(evals), 1)
        self.evals = 0
        self.created = time.perf_counter()
        self.running: float | None = None
        self.bar: Any = None
        stream = (
            setting if setting is not None and not isinstance(setting, bool) else None
        )
        self.stream = stream
        if setting is True or stream is not None:
            self._open()

    def _open(self) -> None:
        self.bar = _tqdm(
            self.stream,
            total=self.total,
            initial=self._done(),
            desc=self.desc,
            unit="coord",
            leave=True,
        )

    def _done(self) -> int:
        return min(self.total, int(self.evals * self.total / self.expected))

    def _worth_showing(self) -> bool:
        if self.setting is not None:
            return False
        if not (in_notebook() or _is_terminal(sys.stderr)):
            return False
        now = time.perf_counter()
        if now - self.created >= AUTO_SECONDS:
            return True
        if self.running is None or self.evals == 0:
            return False
        rate = (now - self.running) / self.evals
        estimate = now - self.created + rate * max(self.expected - self.evals, 0)
        return estimate >= AUTO_SECONDS

    def start(self) -> None:
        """Evaluations begin (compilation is done)."""
        if self.running is None:
            self.running = time.perf_counter()

    def update(self, evals: int) -> None:
        """``evals`` more evaluations of J are done."""
        self.evals += int(evals)
        if self.bar is None and self._worth_showing():
            self._open()
        elif self.bar is not None:
            self.bar.update(self._done() - self.bar.n)

    def close(self) -> None:
        """The leaf is done: fill the bar and release it."""
        if self.bar is not None:
            self.bar.update(self.total - self.bar.n)
            self.bar.close()
            self.bar = None
