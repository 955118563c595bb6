"""``save_repro``: a check's inputs, options and versions, and a pytest file
that makes the same call again.

The directory gets three files:

* ``inputs.npz``: the arrays among the check's positional arguments (and among
  array-valued options such as a ``coords`` mask);
* ``repro.json``: the pytree structure around them
  (:mod:`jgradcheck._report.repro_tree`), the check, the seed and options, the
  x64 setting, the versions of jgradcheck, JAX, jaxlib, NumPy and Python, the
  backend, and the report's headline;
* ``test_repro_<name>.py``: imports the function under test by
  ``__module__``/``__qualname__``, rebuilds the inputs and calls
  ``jgc.assert_vjp`` (``assert_jvp``, ``assert_grad``, ``assert_compositions``,
  ``assert_hvp``: the check's own ``assert_`` twin) with the same options.
  It fails while the check fails and passes once it passes. A function that
  cannot be imported (a lambda, a local function, one defined in
  ``__main__``) gets a placeholder, its source as a comment, and a test that
  fails with instructions until the placeholder is filled in.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import inspect
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from .call import Call
from .repro_tree import REBUILD, encode, importable

FIRST = {"check_grad": "loss", "check_hvp": "loss"}
"""The name of a check's first parameter where it is not ``f`` (the name the
written file gives the function under test)."""

NOT_REPEATED = {
    "progress": "progress= is not repeated (it changes no verdict)",
}


class Slot(NamedTuple):
    """A function the written file needs, under a name of its own."""

    name: str
    obj: Callable[..., Any]


def versions() -> dict[str, str]:
    """The versions a repro records, and the JAX backend it ran on."""
    out = {}
    for package in ("jgradcheck", "jax", "jaxlib", "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "unknown (not installed as a package)"
    out["python"] = platform.python_version()
    out["backend"] = jax.default_backend()
    return out


def save_repro(
    call: Call | None, path: str | os.PathLike[str], summary: list[str], ok: bool
) -> Path:
    """Write the repro of ``call`` into the directory ``path``; the test file.

    ``summary``: the report's headline and failure lines, quoted in the file;
    ``ok``: whether the report passed.

    Raises:
      ValueError: no ``call`` recorded, or ``path`` is a file.
      TypeError: an input that cannot be saved, naming where it is.
    """
    if call is None:
        raise ValueError(
            "this report does not record how it was made: only the reports that "
            "check_grad, check_vjp, check_jvp, check_compositions and check_hvp "
            "return (and that their assert_ versions raise) can write a repro, "
            "not their localised or term reports."
        )
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"`path` must be a directory; {str(path)!r} is a file.")
    arrays: dict[str, np.ndarray] = {}
    described = {"args": encode(tuple(call.args), arrays, "args")}
    options, slots, notes = _options(call, arrays, described)
    first = FIRST.get(call.check, "f")
    slots.insert(0, Slot(first, call.f))
    record = {
        "check": call.check,
        "function": _name(call.f),
        "seed": call.options.get("key", 0),
        "options": {k: _shown(v) for k, v in call.options.items()},
        "x64": call.x64,
        "versions": versions(),
        "ok": ok,
        "summary": summary,
        "inputs": described,
    }
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "inputs.npz", **arrays)  # type: ignore[arg-type]
    (directory / "repro.json").write_text(json.dumps(record, indent=1) + "\n")
    test = directory / f"test_repro_{_identifier(_name(call.f))}.py"
    test.write_text(_source(call, first, slots, options, notes, record))
    return test


def _name(f: Any) -> str:
    return str(
        getattr(f, "__qualname__", None)
        or getattr(f, "__name__", None)
        or type(f).__name__
    )


def _identifier(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_")[:40] or "f"


def _shown(v: Any) -> Any:
    """An option's value for repro.json (its repr where JSON has no such value)."""
    return v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)


def _literal(v: Any) -> str | None:
    """Python source for ``v`` if it is a literal (None, numbers, str, tuples)."""
    if v is None or isinstance(v, (bool, int, str)):
        return repr(v)
    if isinstance(v, float):
        return repr(v) if np.isfinite(v) else f"float({str(v)!r})"
    if type(v) in (tuple, list):
        parts = [_literal(x) for x in v]
        if any(p is None for p in parts):
            return None
        if isinstance(v, list):
            return "[" + ", ".join(parts) + "]"  # type: ignore[arg-type]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"  # type: ignore[arg-type]
    return None


def _options(
    call: Call, arrays: dict[str, np.ndarray], described: dict[str, Any]
) -> tuple[list[str], list[Slot], list[str]]:
    """``name=source`` for each option, the functions needed, and notes."""
    code, slots, notes = [], [], []
    for name, value in call.options.items():
        literal = _literal(value)
        if name in NOT_REPEATED:
            notes.append(NOT_REPEATED[name])
        elif literal is not None:
            code.append(f"{name}={literal}")
        elif name == "devices":
            notes.append(
                f"devices= named {len(value)} device(s), which are not repeated: "
                "the check runs on the default devices"
            )
        elif callable(value):
            slots.append(Slot(name, value))
            code.append(f"{name}={name}")
        elif isinstance(value, dict) and value and all(map(callable, value.values())):
            entries = []
            for i, (key, fn) in enumerate(value.items()):
                slots.append(Slot(f"{name}_{i}", fn))
                entries.append(f"{key!r}: {name}_{i}")
            code.append(f"{name}={{{', '.join(entries)}}}")
        else:
            described[name] = encode(value, arrays, name)
            code.append(f"{name}=load({name!r})")
    return code, slots, notes


def _module_root(module: str) -> str | None:
    """The sys.path entry ``module`` was imported from, if not an installed one."""
    file = getattr(sys.modules.get(module), "__file__", None)
    if not file:
        return None
    p = Path(file).resolve()
    parts = module.split(".")
    if p.name == "__init__.py":
        p = p.parent
    elif p.stem != parts[-1]:
        return None
    root = p.parents[len(parts) - 2] if len(parts) > 1 else p.parent
    if any(d in root.parts for d in ("site-packages", "dist-packages")):
        return None
    if str(p).startswith(sys.base_prefix):
        return None
    return str(root)


def _why_not(obj: Any) -> str:
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if not isinstance(qualname, str) or not isinstance(module, str):
        return f"a {type(obj).__name__} has no module and name to import it by"
    if "<lambda>" in qualname:
        return f"it is a lambda ({module}.{qualname})"
    if "<locals>" in qualname:
        return f"it is a local function ({qualname})"
    if module == "__main__":
        return f"it was defined in __main__ (a script or notebook): {qualname}"
    return f"{module}.{qualname} does not name it (a wrapper or a rebinding)"


def _placeholder(slot: Slot) -> list[str]:
    lines = [f"# `{slot.name}` could not be imported: {_why_not(slot.obj)}."]
    try:
        file = inspect.getsourcefile(slot.obj)
        source, line = inspect.getsourcelines(slot.obj)
    except (TypeError, OSError):
        file, source, line = None, [], 0
    if file:
        lines.append(f"# It was defined in {file}, line {line}:")
        lines += ["#     " + s.rstrip() for s in source[:30]]
        if len(source) > 30:
            lines.append(f"#     ... ({len(source) - 30} more lines)")
    lines += [
        "# Replace None with it (import it, or paste its definition above).",
        f"{slot.name} = None",
    ]
    return lines


def _imports(slots: list[Slot]) -> list[str]:
    roots = sorted(
        {
            r
            for s in slots
            if importable(s.obj)
            for r in [_module_root(s.obj.__module__)]
            if r
        }
    )
    lines = [f"sys.path.append({r!r})" for r in roots]  # where they were imported from
    for slot in slots:
        if not importable(slot.obj):
            lines += ["", *_placeholder(slot), ""]
            continue
        module, qualname = slot.obj.__module__, slot.obj.__qualname__
        top, _, rest = qualname.partition(".")
        if rest:
            lines.append(f"from {module} import {top}")
            lines.append(f"{slot.name} = {top}.{rest}")
        elif top == slot.name:
            lines.append(f"from {module} import {top}")
        else:
            lines.append(f"from {module} import {top} as {slot.name}")
    return lines


TEMPLATE = '''"""Repeats {check} of `{function}`: {verdict} when this file was written.

Written by save_repro on {when}.
`pytest {filename}` fails while the check fails and passes once it
passes (keep it as a regression test). The inputs are in inputs.npz next to
this file; their structure and the options are in repro.json.

Recorded with {versions};
jax_enable_x64 was {x64}.
"""

import importlib
import json
import pathlib
{sys}
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc

HERE = pathlib.Path(__file__).resolve().parent
X64 = {x64_bool}

{imports}

# The report said:
{summary}
{notes}
{rebuild}

def load(name):
    """The input ``name`` ("args", or an option) as it was passed."""
    described = json.loads((HERE / "repro.json").read_text())["inputs"]
    with np.load(HERE / "inputs.npz") as arrays:
        return rebuild(described[name], arrays)


def test_repro():
    missing = [name for name, value in {needed} if value is None]
    if missing:
        pytest.fail(
            "this repro needs " + ", ".join(missing) + ", which could not be "
            "imported when it was written: see the comments at the top of "
            + __file__,
            pytrace=False,
        )
    with jax.enable_x64(X64):
        args = load("args")
        jgc.{assert_name}({first}, *args, {options})
'''


def _source(
    call: Call,
    first: str,
    slots: list[Slot],
    options: list[str],
    notes: list[str],
    record: dict[str, Any],
) -> str:
    v = record["versions"]
    shown = ", ".join(f"{k} {v[k]}" for k in ("jgradcheck", "jax", "jaxlib", "numpy"))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "it passed" if record["ok"] else "it FAILED"
    name = _identifier(_name(call.f))
    imports = _imports(slots)
    return TEMPLATE.format(
        check=call.check,
        function=_name(call.f),
        verdict=verdict,
        when=when,
        filename=f"test_repro_{name}.py",
        versions=f"{shown}, Python {v['python']} on {v['backend']}",
        x64="on" if call.x64 else "off",
        x64_bool=bool(call.x64),
        imports="\n".join(imports),
        sys="import sys\n" if any(i.startswith("sys.") for i in imports) else "",
        summary="\n".join(("#     " + s).rstrip() for s in record["summary"]),
        notes="".join(f"# Note: {n}.\n" for n in notes),
        rebuild=REBUILD,
        needed="[" + ", ".join(f"({s.name!r}, {s.name})" for s in slots) + "]",
        assert_name=call.check.replace("check_", "assert_"),
        first=first,
        options=", ".join(options),
    )
