"""Pytrees of inputs as a JSON description plus arrays for an ``.npz`` file.

``save_repro`` writes a check's inputs so that a file with no jgradcheck
internals can rebuild them: arrays go into ``inputs.npz`` under short keys, and
the structure around them into JSON nodes, without pickling. :data:`REBUILD`
is the function the written test file uses to rebuild them; the tests rebuild
with it too, so the two directions cannot drift apart.

A node is a dict with a ``kind``:

* ``"array"``: ``key`` (in the ``.npz``), ``dtype``, ``type`` (``"jax"``,
  ``"numpy"`` or ``"numpy scalar"``), and ``view`` when the dtype is not one
  NumPy can save (bfloat16, float8: saved as unsigned integers of its width);
* ``"key"``: a ``jax.random`` key array: ``key`` (its key data), ``impl``;
* ``"value"`` (``value``: a bool, int, float or str), ``"complex"``
  (``value``: ``[re, im]``), ``"none"``;
* ``"tuple"``, ``"list"`` (``items``), ``"dict"`` (``keys``, ``items``) and
  ``"namedtuple"`` (``module``, ``qualname``, ``items``).
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class Unsavable(TypeError):
    """An input that :func:`encode` cannot describe (the message says where)."""


def importable(obj: Any) -> bool:
    """Whether ``obj`` is what its ``__module__`` and ``__qualname__`` name."""
    module, qualname = (
        getattr(obj, "__module__", None),
        getattr(obj, "__qualname__", None),
    )
    if not isinstance(module, str) or not isinstance(qualname, str):
        return False
    if module == "__main__" or "<" in qualname:
        return False
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    return found is obj


def encode(tree: Any, arrays: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    """The JSON node of ``tree``; its arrays are added to ``arrays``.

    ``where`` names ``tree`` in error messages (``"args[0]['w']"``).

    Raises:
      Unsavable: a leaf or container it cannot describe, naming ``where``.
    """
    if tree is None:
        return {"kind": "none"}
    if isinstance(tree, (bool, int, float, str)):
        return {"kind": "value", "value": tree}
    if isinstance(tree, complex):
        return {"kind": "complex", "value": [tree.real, tree.imag]}
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        return _array(tree, arrays, where)
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        cls = type(tree)
        if not importable(cls):
            raise Unsavable(
                f"the NamedTuple {cls.__qualname__} at {where} cannot be imported "
                "by name (define it at module level)"
            )
        return {
            "kind": "namedtuple",
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "items": _items(tree, arrays, where, range(len(tree))),
        }
    if type(tree) in (tuple, list):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return {"kind": kind, "items": _items(tree, arrays, where, range(len(tree)))}
    if type(tree) is dict:
        keys = list(tree)
        bad = [k for k in keys if not isinstance(k, (str, int)) or isinstance(k, bool)]
        if bad:
            raise Unsavable(f"the dict at {where} has keys {bad!r}; str or int only")
        return {
            "kind": "dict",
            "keys": keys,
            "items": _items([tree[k] for k in keys], arrays, where, keys),
        }
    raise Unsavable(
        f"the input at {where} is a {type(tree).__module__}.{type(tree).__qualname__}; "
        "a repro saves arrays, numbers, strings, None, and tuples, lists, dicts "
        "and NamedTuples of them"
    )


def _items(
    values: Any, arrays: dict[str, np.ndarray], where: str, names: Any
) -> list[dict[str, Any]]:
    return [encode(v, arrays, f"{where}[{n!r}]") for v, n in zip(values, names)]


def _array(x: Any, arrays: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    key = f"a{len(arrays)}"
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        arrays[key] = np.asarray(jax.random.key_data(x))
        return {"kind": "key", "key": key, "impl": str(jax.random.key_impl(x))}
    kind = (
        "jax"
        if isinstance(x, jax.Array)
        else "numpy scalar"
        if isinstance(x, np.generic)
        else "numpy"
    )
    a = np.asarray(x)
    node: dict[str, Any] = {"kind": "array", "key": key, "dtype": str(a.dtype)}
    if a.dtype.type.__module__ != "numpy":  # bfloat16, float8: NumPy cannot save them
        a = a.view(f"u{a.dtype.itemsize}")
        node["view"] = True
    if a.dtype.hasobject:
        raise Unsavable(f"the array at {where} holds Python objects")
    arrays[key] = a
    node["type"] = kind
    return node


REBUILD = '''
def rebuild(node, arrays):
    """The input described by a JSON node of repro.json (arrays: inputs.npz)."""
    kind = node["kind"]
    if kind == "array":
        a = arrays[node["key"]]
        if node.get("view"):
            a = a.view(jnp.dtype(node["dtype"]))
        if node["type"] == "jax":
            return jnp.asarray(a)
        return a[()] if node["type"] == "numpy scalar" else a
    if kind == "key":
        return jax.random.wrap_key_data(arrays[node["key"]], impl=node["impl"])
    if kind == "value":
        return node["value"]
    if kind == "complex":
        return complex(*node["value"])
    if kind == "none":
        return None
    items = [rebuild(n, arrays) for n in node["items"]]
    if kind == "tuple":
        return tuple(items)
    if kind == "list":
        return items
    if kind == "dict":
        return dict(zip(node["keys"], items))
    if kind == "namedtuple":
        cls = importlib.import_module(node["module"])
        for name in node["qualname"].split("."):
            cls = getattr(cls, name)
        return cls(*items)
    raise ValueError(f"unknown node kind {kind!r} in repro.json")
'''
"""The source of ``rebuild(node, arrays)``: the inverse of :func:`encode`
(needs ``importlib``, ``jax`` and ``jax.numpy as jnp`` in scope)."""


def rebuild(node: dict[str, Any], arrays: Any) -> Any:
    """:data:`REBUILD`, run here (the written file runs the same source)."""
    scope: dict[str, Any] = {"importlib": importlib, "jax": jax, "jnp": jnp}
    exec(REBUILD, scope)  # noqa: S102 - our own constant source
    return scope["rebuild"](node, arrays)
