"""Loading the user's functions for the command line: ``FILE.py:NAME`` specs.

Problems become :class:`UsageError` messages that say what went wrong and where
(``file:line``), for the command line to print without a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


class UsageError(Exception):
    """Nothing could be checked; the message says why (exit code 2)."""


PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
_LIBRARY_DIRS = tuple(
    {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def in_package(filename: str) -> bool:
    """Whether a traceback frame is in jgradcheck itself."""
    return str(Path(filename).resolve()).startswith(PACKAGE_DIR)


def is_user_file(filename: str) -> bool:
    """Whether a traceback frame is in the user's code (not jgradcheck, JAX, stdlib)."""
    if filename.startswith("<"):
        return False
    path = str(Path(filename).resolve())
    return not path.startswith((PACKAGE_DIR, *_LIBRARY_DIRS))


def traceback_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(exc.__traceback__))


def _where(exc: BaseException) -> str:
    """`` (at file:line)``: the innermost frame in user code, else the innermost."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    frames = traceback_frames(exc)
    user = [f for f in frames if is_user_file(f.filename)]
    frame = user[-1] if user else frames[-1] if frames else None
    return f" (at {frame.filename}:{frame.lineno})" if frame else ""


def describe(exc: BaseException) -> str:
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    return f"{type(exc).__name__}: {text.rstrip('.')}{_where(exc)}"


class Loader:
    """Loads ``FILE.py:NAME`` and ``package.module:NAME``; each file once per run."""

    def __init__(self) -> None:
        self._files: dict[Path, ModuleType] = {}

    def function(self, spec: str, option: str) -> Callable[..., Any]:
        """The object named by ``spec``, which must be callable."""
        obj = self.attribute(spec, option)
        if not callable(obj):
            raise UsageError(
                f"{option} {spec}: {spec.rpartition(':')[2]} is a "
                f"{type(obj).__name__}, not a function; name a function "
                "(for --params, --args and --primals: one that takes no arguments "
                "and returns the values)."
            )
        return obj

    def attribute(self, spec: str, option: str) -> Any:
        target, sep, name = spec.rpartition(":")
        if not sep or not target or not name:
            raise UsageError(
                f"{option}: expected FILE.py:NAME or package.module:NAME, got {spec!r}."
            )
        obj: Any = self.module(target, option)
        for part in name.split("."):
            if not hasattr(obj, part):
                raise UsageError(
                    f"{option} {spec}: {target} has no attribute {part!r}."
                    + _suggest(obj, part)
                )
            obj = getattr(obj, part)
        return obj

    def module(self, target: str, option: str) -> ModuleType:
        is_file = (
            target.endswith(".py")
            or "/" in target
            or os.sep in target
            or os.path.isfile(target)
        )
        return self._file(Path(target), option) if is_file else _module(target, option)

    def _file(self, path: Path, option: str) -> ModuleType:
        if not path.exists():
            raise UsageError(f"{option}: no such file: {path}.")
        if not path.is_file():
            raise UsageError(f"{option}: {path} is not a file.")
        path = path.resolve()
        if path in self._files:
            return self._files[path]
        # Inside a package (folders with __init__.py), load the file under its
        # dotted name with the package's parent folder on sys.path, so that
        # both `from . import x` and `import sibling` work as they do in the
        # user's own code.
        parts, root = [path.stem], path.parent
        while (root / "__init__.py").is_file():
            parts.insert(0, root.name)
            root = root.parent
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        name = ".".join(parts)
        if len(parts) > 1:
            _module(".".join(parts[:-1]), option)
        existing = sys.modules.get(name)
        if existing is not None:
            file = getattr(existing, "__file__", None)
            if file and Path(file).resolve() == path:
                self._files[path] = existing  # already imported: the same module
                return existing
            if len(parts) == 1:
                # A standalone file named like a module already imported (jax.py,
                # test.py): keep that one, load the file under a private name.
                name = f"_jgradcheck_user_{len(self._files)}_{name}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"{option}: {path} cannot be imported as Python.")
        module = importlib.util.module_from_spec(spec)
        previous = sys.modules.get(name)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:
            if previous is None:
                del sys.modules[name]
            else:
                sys.modules[name] = previous
            raise UsageError(f"{option}: importing {path} raised {describe(e)}.") from e
        self._files[path] = module
        return module


def _module(name: str, option: str) -> ModuleType:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise UsageError(
                f"{option}: no module named {e.name!r} (give a file path ending in "
                ".py, or a module importable from the current folder)."
            ) from e
        raise UsageError(f"{option}: importing {name} raised {describe(e)}.") from e
    except (Exception, SystemExit) as e:
        raise UsageError(f"{option}: importing {name} raised {describe(e)}.") from e


def _suggest(obj: Any, missing: str) -> str:
    names = [
        n
        for n, v in vars(obj).items()
        if not n.startswith("_") and callable(v) and not isinstance(v, type)
    ]
    close = difflib.get_close_matches(missing, names, n=3)
    if close:
        return f" Did you mean {', '.join(close)}?"
    if names:
        shown = ", ".join(sorted(names)[:10])
        return f" Functions defined there: {shown}."
    return ""


def call(fn: Callable[..., Any], spec: str, option: str) -> Any:
    try:
        return fn()
    except (Exception, SystemExit) as e:
        raise UsageError(f"{option} {spec}: calling it raised {describe(e)}.") from e
