"""Pytree bookkeeping: which leaves are checked, their paths, and global offsets.

Parameters are flattened once with :func:`jax.tree_util.tree_flatten_with_path`.
Floating-point array leaves are *checked*; other array leaves (ints, bools, PRNG
keys) are *fixed* (passed through unchanged); anything else (functions, strings,
static config) is *static* (closed over). Offsets into the raveled vector of
checked leaves follow :func:`jax.flatten_util.ravel_pytree`'s order, so a global
index ``k`` means the same thing as ``ravel_pytree(float_params)[0][k]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

from .._dtypes import refuse_if_cannot_compute
from .._typing import PyTree


class LeafInfo(NamedTuple):
    """What jgradcheck knows about one leaf of ``params``."""

    path: str
    """The leaf's path as :func:`jax.tree_util.keystr` prints it, e.g. ``['w'][0]``."""
    position: int
    """Position among all leaves of ``params`` (``tree_flatten`` order)."""
    shape: tuple[int, ...]
    dtype: np.dtype | None
    kind: str
    """``"float"`` or ``"complex"`` (checked), ``"fixed"`` (other arrays), ``"static"``."""
    offset: int
    """Offset of the leaf in the raveled vector of checked leaves (-1 if unchecked)."""

    @property
    def is_checked(self) -> bool:
        """A floating-point or complex leaf, whose derivative is checked."""
        return self.kind in ("float", "complex")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def index(self, flat: int) -> tuple[int, ...]:  # type: ignore[override]
        """The full index (one int per axis) of flat position ``flat``."""
        if not self.shape:
            return ()
        return tuple(int(i) for i in np.unravel_index(int(flat), self.shape))

    def where(self, flat: int) -> str:
        """``path`` followed by the index, e.g. ``['decoder'][3, 17]``."""
        idx = self.index(flat)
        if not idx:
            return self.path or "<root>"
        return f"{self.path}[{', '.join(str(i) for i in idx)}]"


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _kind(x: Any) -> str:
    if _is_array(x):
        dt = x.dtype
        if jnp.issubdtype(dt, jax.dtypes.prng_key):
            return "fixed"
        if jnp.issubdtype(dt, jnp.floating):
            return "float"
        if jnp.issubdtype(dt, jnp.complexfloating):
            return "complex"
        return "fixed"
    if isinstance(x, float):
        # A bare Python float is a parameter users expect to be checked.
        return "float"
    return "static"


@dataclasses.dataclass(frozen=True)
class Flat:
    """``params`` split into leaves, with the bookkeeping to put them back."""

    treedef: Any
    leaves: tuple[Any, ...]
    infos: tuple[LeafInfo, ...]

    @property
    def checked(self) -> tuple[LeafInfo, ...]:
        return tuple(i for i in self.infos if i.is_checked)

    @property
    def skipped(self) -> tuple[LeafInfo, ...]:
        return tuple(i for i in self.infos if not i.is_checked)

    @property
    def n_params(self) -> int:
        return sum(i.size for i in self.checked)

    def rebuild(self, leaves: list[Any] | tuple[Any, ...]) -> PyTree:
        """The ``params`` pytree with every leaf given (``tree_unflatten``)."""
        return jax.tree_util.tree_unflatten(self.treedef, list(leaves))

    def rebuild_with(self, new: dict[int, Any]) -> PyTree:
        """The ``params`` pytree with the leaves at the given positions replaced."""
        leaves = list(self.leaves)
        for pos, val in new.items():
            leaves[pos] = val
        return self.rebuild(leaves)


def with_offsets(infos: Any) -> tuple[LeafInfo, ...]:
    """``infos`` with offsets into the raveled vector of the checked leaves."""
    out, offset = [], 0
    for info in infos:
        out.append(info._replace(offset=offset if info.is_checked else -1))
        if info.is_checked:
            offset += info.size
    return tuple(out)


def flatten_params(params: PyTree) -> Flat:
    """Flatten ``params`` and classify its leaves.

    Bare Python floats become arrays, so every checked leaf has a dtype.
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    infos = []
    leaves = []
    for pos, (kp, leaf) in enumerate(with_path):
        kind = _kind(leaf)
        shape, dtype = (), None
        if kind == "float" and isinstance(leaf, float):
            leaf = jnp.asarray(leaf)
            dtype = np.dtype(leaf.dtype)
        elif _is_array(leaf):
            shape = tuple(leaf.shape)
            if not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                dtype = np.dtype(leaf.dtype)
        info = LeafInfo(
            path=keystr(kp),
            position=pos,
            shape=shape,
            dtype=dtype,
            kind=kind,
            offset=-1,
        )
        if kind == "float" and dtype is not None:
            refuse_if_cannot_compute(dtype, f"`params` leaf {info.path or '<root>'}")
        infos.append(info)
        leaves.append(leaf)
    return Flat(treedef=treedef, leaves=tuple(leaves), infos=with_offsets(infos))


class Split(NamedTuple):
    """A pytree split into traced array leaves and closed-over static leaves.

    Array leaves are traced by ``jit``; everything else (Python numbers,
    strings, callables) is closed over, so that static configuration in
    ``args`` keeps working as it does in the user's own code.
    """

    dynamic: tuple[Any, ...]
    static: tuple[Any, ...]
    is_dynamic: tuple[bool, ...]
    treedef: Any

    def merge(self, dynamic: tuple[Any, ...] | list[Any]) -> PyTree:
        leaves = [
            d if m else s for d, s, m in zip(dynamic, self.static, self.is_dynamic)
        ]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def split_static(tree: PyTree) -> Split:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    mask = tuple(_is_array(x) for x in leaves)
    return Split(
        dynamic=tuple(x if m else None for x, m in zip(leaves, mask)),
        static=tuple(None if m else x for x, m in zip(leaves, mask)),
        is_dynamic=mask,
        treedef=treedef,
    )


def describe_paths(tree: PyTree) -> list[str]:
    """Every leaf path of ``tree``, as ``keystr`` prints it."""
    return [keystr(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def real_view(x: Any) -> Any:
    """A complex array as a real one with a trailing (real, imaginary) axis."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def as_real(flat: Flat) -> tuple[Flat, Callable[[PyTree], PyTree]]:
    """Complex leaves as real (..., 2) views, and the map back to ``params``.

    Finite differences then perturb real and imaginary parts separately, as
    two real coordinates; entry ``[..., 0]`` is the real part, ``[..., 1]`` the
    imaginary part. Returns ``flat`` itself when no leaf is complex.
    """
    if not any(i.kind == "complex" for i in flat.infos):
        return flat, lambda p: p
    infos, leaves = [], []
    complex_at = []
    for info, leaf in zip(flat.infos, flat.leaves):
        if info.kind == "complex":
            complex_at.append(info.position)
            leaf = real_view(leaf)
            info = info._replace(
                shape=info.shape + (2,), dtype=np.dtype(leaf.dtype), kind="float"
            )
        infos.append(info)
        leaves.append(leaf)
    view = Flat(flat.treedef, tuple(leaves), with_offsets(infos))

    def unview(params: PyTree) -> PyTree:
        ls = jax.tree_util.tree_leaves(params)
        for pos in complex_at:
            v = ls[pos]
            ls[pos] = jax.lax.complex(v[..., 0], v[..., 1])
        return jax.tree_util.tree_unflatten(flat.treedef, ls)

    return view, unview
