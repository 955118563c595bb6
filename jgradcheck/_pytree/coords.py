"""Which coordinates to check (all, a random sample, or a mask), and seeded draws.

Every random draw of jgradcheck comes from a stream seeded by (seed, purpose,
leaf position, ...), so adding a leaf does not change the other leaves' draws."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .._dtypes import is_complex
from .flat import Flat

Selection = dict[int, np.ndarray]
"""Leaf position -> sorted flat indices within that leaf."""


def nonfinite_entries(flat: Flat) -> Selection:
    """Per checked leaf with NaN or inf values, the flat indices of those entries
    (for a complex leaf, where either part is not finite)."""
    held = {}
    for info in flat.checked:
        values = np.asarray(flat.leaves[info.position]).reshape(-1)
        bad = np.flatnonzero(~np.isfinite(values.astype(np.complex128)))
        if bad.size:
            held[info.position] = bad
    return held


def without(selection: Selection, held: Selection) -> Selection:
    """``selection`` less the entries in ``held``, leaf by leaf."""
    return {
        pos: idx if pos not in held else np.setdiff1d(idx, held[pos])
        for pos, idx in selection.items()
    }


def seed_of(key: Any) -> int:
    """An int seed from ``key=``: an int, or a ``jax.random`` key (new or raw).

    Raises:
      TypeError: for anything else, naming ``key``.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    try:
        data = np.asarray(jax.random.key_data(key)).reshape(-1)
    except Exception:  # noqa: BLE001 - any non-key input gets the same message
        raise TypeError(
            f"`key` must be an int or a jax.random key; got {type(key).__name__}."
        ) from None
    return int(np.uint64(data[0]) * np.uint64(2**32) + np.uint64(data[-1]))


def _allocate(k: int, sizes: list[int]) -> list[int]:
    """k coordinates over leaves: at least one each, the rest by size."""
    counts = [1] * len(sizes)
    rest = k - len(sizes)
    room = np.array([s - 1 for s in sizes], np.float64)
    while rest > 0 and room.sum() > 0:
        share = room / room.sum() * rest
        add = np.minimum(np.floor(share).astype(np.int64), room.astype(np.int64))
        if add.sum() == 0:  # hand out the remainder one by one, largest first
            add = np.zeros_like(add)
            add[int(np.argmax(room))] = 1
        for i, a in enumerate(add):
            counts[i] += int(a)
        room -= add
        rest -= int(add.sum())
    return counts


def select(flat: Flat, coords: Any, key: Any) -> Selection:
    """Resolve ``coords=`` into flat indices per checked leaf.

    Args:
      flat: the flattened parameters.
      coords: None (every coordinate), an int k (k coordinates drawn at random,
        at least one in every leaf), or a pytree of boolean masks shaped like
        ``params``.
      key: int seed or jax.random key for the draw; each leaf gets its own
        stream (seed, leaf position), so adding a leaf does not change the
        others' draws.
    """
    checked = flat.checked
    if coords is None:
        return {i.position: np.arange(i.size) for i in checked}
    if isinstance(coords, (int, np.integer)) and not isinstance(coords, bool):
        k = int(coords)
        n = flat.n_params
        if k < 1:
            raise ValueError(f"`coords` must be at least 1; got {k}.")
        if k > n:
            raise ValueError(
                f"`coords`={k} is larger than the number of parameters ({n}); "
                "use coords=None to check every coordinate."
            )
        if k < len(checked):
            raise ValueError(
                f"`coords`={k} is fewer than the {len(checked)} floating-point leaves "
                "of `params`; every leaf gets at least one coordinate, so ask for "
                f"coords>={len(checked)} (or pass a boolean mask pytree)."
            )
        seed = seed_of(key)
        counts = _allocate(k, [i.size for i in checked])
        out = {}
        for info, c in zip(checked, counts):
            rng = np.random.default_rng([seed, info.position])
            out[info.position] = np.sort(rng.choice(info.size, size=c, replace=False))
        return out
    return _from_mask(flat, coords)


def _from_mask(flat: Flat, mask: Any) -> Selection:
    try:
        leaves = flat.treedef.flatten_up_to(mask)
    except (ValueError, TypeError) as e:
        raise TypeError(
            "`coords` must be None, an int, or a pytree of boolean arrays with the "
            f"structure of `params`; the mask's structure does not match: {e}"
        ) from None
    out = {}
    problems = []
    for info, m in zip(flat.infos, leaves):
        if not info.is_checked:
            continue
        if m is None or m is False:
            out[info.position] = np.arange(0)
            continue
        if m is True:
            out[info.position] = np.arange(info.size)
            continue
        arr = np.asarray(m)
        if arr.dtype != np.bool_:
            problems.append(f"{info.path}: dtype {arr.dtype}, expected bool")
        elif arr.shape != info.shape:
            problems.append(f"{info.path}: shape {arr.shape}, expected {info.shape}")
        else:
            out[info.position] = np.flatnonzero(arr.reshape(-1))
    if problems:
        raise ValueError(
            "`coords` mask does not fit `params`:\n  " + "\n  ".join(problems)
        )
    if sum(v.size for v in out.values()) == 0:
        raise ValueError("`coords` mask selects no entries; nothing would be checked.")
    return out


def readable(shape: tuple[int, ...], dtype: Any, stream: list[int]) -> np.ndarray:
    """Values ±0.01 … ±9.00 with two decimals: easy to read, never all ones.

    Complex dtypes get such values in both the real and imaginary parts.
    """
    rng = np.random.default_rng(stream)

    def part() -> np.ndarray:
        mag = rng.integers(1, 901, size=shape) / 100.0
        return mag * rng.choice(np.array([-1.0, 1.0]), size=shape)

    if is_complex(dtype):
        return (part() + 1j * part()).astype(dtype)
    return part().astype(dtype)
