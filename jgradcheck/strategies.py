"""Hypothesis strategies for the inputs of gradient and rule checks.

A rule checked at one example input passes wherever its bug lives elsewhere:
the saturation branch of a softplus, a series expansion near zero, the
negative branch of a piecewise function, a broadcast that only matters when a
batch axis is longer than one. These strategies draw the inputs that visit
those regions, for `hypothesis <https://hypothesis.readthedocs.io>`_ tests::

    from hypothesis import given, settings
    import jgradcheck as jgc
    import jgradcheck.strategies as jgs

    @settings(max_examples=20, deadline=None)   # each example compiles a check
    @given(x=jgs.arrays(shape=jgs.shapes(max_side=4)))
    def test_softplus_rule(x):
        jgc.assert_vjp(softplus, x)

* :func:`shapes`: array shapes with sides of 0, 1 and odd lengths;
  :func:`broadcastable_shapes`: tuples of shapes that broadcast together;
* :func:`float_dtypes`: float32, and float64 where JAX computes in it (x64 on);
  bfloat16 and float16 on request;
* :func:`arrays`: arrays whose elements mix ordinary values with the edge
  values 0, ±tiny (the smallest normal number), ±1 and ±``max_magnitude``;
  no NaN or inf unless asked;
* :func:`pytrees`: dicts, lists and tuples nesting such arrays.

Drawn arrays are JAX arrays (NumPy arrays with ``as_jax=False``, and float64
ones while x64 is off). Hypothesis
is an optional dependency: ``pip install jgradcheck[hypothesis]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

try:
    import hypothesis.extra.numpy as hnp
    import hypothesis.strategies as st
except ImportError as e:
    raise ImportError(
        "jgradcheck.strategies needs hypothesis, which is not installed. The fix "
        "is `pip install jgradcheck[hypothesis]` (or `pip install hypothesis`)."
    ) from e

import jax
import jax.numpy as jnp
import numpy as np

from ._dtypes import on_device

__all__ = [
    "arrays",
    "broadcastable_shapes",
    "edge_values",
    "float_dtypes",
    "pytrees",
    "shapes",
]

LOW_PRECISION = ("bfloat16", "float16")
"""The dtypes :func:`float_dtypes` adds with ``low_precision=True``."""


def _check_sides(
    min_dims: int, max_dims: int, min_side: int, max_side: int, max_size: int | None
) -> None:
    for name, value in [
        ("min_dims", min_dims),
        ("max_dims", max_dims),
        ("min_side", min_side),
        ("max_side", max_side),
    ]:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be an int ≥ 0; got {value!r}.")
    if min_dims > max_dims or min_side > max_side:
        raise ValueError(
            f"need `min_dims` ≤ `max_dims` and `min_side` ≤ `max_side`; got "
            f"dims {min_dims}..{max_dims}, sides {min_side}..{max_side}."
        )
    if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
        raise ValueError(f"`max_size` must be an int ≥ 0 or None; got {max_size!r}.")


def shapes(
    *,
    min_dims: int = 0,
    max_dims: int = 3,
    min_side: int = 0,
    max_side: int = 5,
    max_size: int | None = 16,
) -> st.SearchStrategy[tuple[int, ...]]:
    """Array shapes, sides of length 0, 1 and odd lengths included.

    Hypothesis favours the ends of ranges, so empty arrays (a side of 0),
    singleton axes (1) and scalars (``()``) come early; ``max_size`` caps the
    number of entries, since a check's cost grows with it.

    Args:
      min_dims: fewest axes (0 allows scalars).
      max_dims: most axes.
      min_side: shortest side (1 excludes empty arrays).
      max_side: longest side.
      max_size: most entries in all (None: no cap).

    Returns:
      A strategy of shape tuples.

    Raises:
      ValueError: negative or inverted bounds, naming the argument.

    Example:
      >>> import math
      >>> from hypothesis import find
      >>> import jgradcheck.strategies as jgs
      >>> empty = find(jgs.shapes(), lambda s: 0 in s)  # drawn: an empty array
      >>> odd = find(jgs.shapes(min_side=1), lambda s: any(n in (3, 5) for n in s))
      >>> math.prod(empty), math.prod(odd) % 2
      (0, 1)
    """
    _check_sides(min_dims, max_dims, min_side, max_side, max_size)
    drawn = st.lists(
        st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims
    ).map(tuple)
    if max_size is None:
        return drawn
    return drawn.filter(lambda s: math.prod(s) <= max_size)


def broadcastable_shapes(
    count: int = 2,
    *,
    min_dims: int = 0,
    max_dims: int = 3,
    min_side: int = 1,
    max_side: int = 4,
) -> st.SearchStrategy[tuple[tuple[int, ...], ...]]:
    """``count`` shapes that broadcast together (``np.broadcast_shapes`` works).

    Some axes are 1 or missing in one shape and longer in another: a rule that
    forgets to sum its cotangent over a broadcast axis fails only there.

    Args:
      count: how many shapes in each tuple.
      min_dims: fewest axes of the broadcast result.
      max_dims: most axes of any shape.
      min_side: shortest side.
      max_side: longest side.

    Returns:
      A strategy of tuples of ``count`` shapes.

    Raises:
      ValueError: ``count`` < 1, or bad bounds.

    Example:
      >>> import numpy as np
      >>> from hypothesis import find
      >>> import jgradcheck.strategies as jgs
      >>> a, b = find(jgs.broadcastable_shapes(), lambda p: p[0] != p[1])
      >>> np.broadcast_shapes(a, b) in (a, b)
      True
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"`count` must be an int ≥ 1; got {count!r}.")
    _check_sides(min_dims, max_dims, min_side, max_side, None)
    return hnp.mutually_broadcastable_shapes(
        num_shapes=count,
        min_dims=min_dims,
        max_dims=max_dims,
        min_side=min_side,
        max_side=max_side,
    ).map(lambda b: tuple(tuple(s) for s in b.input_shapes))


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


def float_dtypes(
    *, x64: bool | None = None, low_precision: bool = False
) -> st.SearchStrategy[np.dtype]:
    """Real floating-point dtypes: float32, float64, and on request bfloat16, float16.

    Args:
      x64: include float64. None (default): where JAX computes in float64,
        i.e. when ``jax_enable_x64`` is on *at draw time* (so a test that turns
        x64 on in a fixture gets float64 too). True with x64 off draws NumPy
        float64 arrays, which JAX computes in float32 (the report says so).
      low_precision: include bfloat16 and float16.

    Returns:
      A strategy of ``np.dtype`` objects.

    Example:
      >>> from hypothesis import find
      >>> import jgradcheck.strategies as jgs
      >>> half = find(jgs.float_dtypes(low_precision=True), lambda d: d.itemsize == 2)
      >>> half.name in ("bfloat16", "float16")
      True
      >>> find(jgs.float_dtypes(x64=False), lambda d: True).name
      'float32'
    """

    @st.composite
    def draw(draw: Any) -> np.dtype:
        names = ["float32"]
        if x64 or (x64 is None and _x64()):
            names.append("float64")
        if low_precision:
            names.extend(LOW_PRECISION)
        return np.dtype(jnp.dtype(draw(st.sampled_from(names))))

    return draw()


def edge_values(
    dtype: Any,
    *,
    max_magnitude: float = 1e3,
    allow_nan: bool = False,
    allow_infinity: bool = False,
) -> list[float]:
    """The edge values :func:`arrays` mixes in, as Python floats exact in ``dtype``.

    ``0``, ``±tiny`` (the smallest normal number of ``dtype``), ``±1`` and
    ``±max_magnitude`` (rounded to ``dtype``); ``nan`` and ``±inf`` when
    allowed.

    Args:
      dtype: a real floating-point dtype.
      max_magnitude: the largest magnitude.
      allow_nan: add NaN.
      allow_infinity: add ±inf.

    Returns:
      A list of floats.

    Example:
      >>> import numpy as np, jgradcheck.strategies as jgs
      >>> jgs.edge_values(np.float32, max_magnitude=100.0)
      [0.0, 1.1754943508222875e-38, -1.1754943508222875e-38, 1.0, -1.0, 100.0, -100.0]
    """
    tiny = float(jnp.finfo(dtype).tiny)
    big = _exact(min(max_magnitude, float(jnp.finfo(dtype).max)), dtype)
    values = [0.0, tiny, -tiny, 1.0, -1.0, big, -big]
    if allow_nan:
        values.append(math.nan)
    if allow_infinity:
        values.extend([math.inf, -math.inf])
    return values


def _exact(v: float, dtype: Any) -> float:
    """``v`` rounded to ``dtype`` (bfloat16 and float16 too), as a float."""
    return float(np.asarray(v, np.float64).astype(jnp.dtype(dtype)))


def _elements(
    dtype: np.dtype, max_magnitude: float, allow_nan: bool, allow_infinity: bool
) -> st.SearchStrategy[float]:
    """Ordinary values up to ``max_magnitude`` and the edge values, in ``dtype``."""
    narrow = jnp.dtype(dtype).itemsize < 4  # bfloat16, float16: round float32s
    width: Literal[32, 64] = 64 if jnp.dtype(dtype).itemsize == 8 else 32
    big = _exact(max_magnitude, dtype)
    ordinary = st.floats(-big, big, width=width, allow_nan=False, allow_subnormal=False)
    if narrow:  # rounded to the dtype; what rounds to a subnormal, to zero
        tiny = float(jnp.finfo(dtype).tiny)
        ordinary = ordinary.map(lambda v: _exact(v, dtype)).map(
            lambda v: v if abs(v) >= tiny else 0.0
        )
    edges = edge_values(
        dtype,
        max_magnitude=max_magnitude,
        allow_nan=allow_nan,
        allow_infinity=allow_infinity,
    )
    return st.one_of(st.sampled_from(edges), ordinary)


def arrays(
    dtype: Any = None,
    shape: Any = None,
    *,
    max_magnitude: float = 1e3,
    allow_nan: bool = False,
    allow_infinity: bool = False,
    as_jax: bool = True,
) -> st.SearchStrategy[Any]:
    """Float arrays whose entries include the edge values where bugs hide.

    Each entry is an ordinary value in ``[-max_magnitude, max_magnitude]`` or
    an edge value (:func:`edge_values`: 0, ±tiny, ±1, ±``max_magnitude``).
    Subnormal numbers are left out (XLA on CPU flushes them to zero); NaN and
    inf only when asked.

    Args:
      dtype: a dtype, or a strategy of dtypes (default: :func:`float_dtypes`).
      shape: a shape, or a strategy of shapes (default: :func:`shapes`).
      max_magnitude: the largest magnitude drawn (rounded to the dtype; at
        most its largest finite value).
      allow_nan: NaN entries too.
      allow_infinity: ±inf entries too.
      as_jax: JAX arrays (default) or NumPy arrays. Float64 arrays stay
        NumPy while x64 is off (JAX would make them float32; the checks take
        them and say that they computed in float32).

    Returns:
      A strategy of arrays.

    Raises:
      ValueError: a ``max_magnitude`` that is not positive and finite.
      TypeError: a ``dtype`` that is not a real floating-point type.

    Example:
      >>> import numpy as np
      >>> from hypothesis import find
      >>> import jgradcheck.strategies as jgs
      >>> from hypothesis import settings
      >>> x = find(jgs.arrays(np.float32, (3,), max_magnitude=50.0),
      ...          lambda x: bool((abs(x) == 50.0).any()),
      ...          settings=settings(deadline=None))  # JAX compiles on first use
      >>> x.dtype, x.shape, float(abs(x).max())
      (dtype('float32'), (3,), 50.0)
    """
    if not (isinstance(max_magnitude, (int, float)) and 0 < max_magnitude < math.inf):
        raise ValueError(
            f"`max_magnitude` must be a positive finite number; got {max_magnitude!r}."
        )
    dtypes = _strategy(dtype, float_dtypes())
    shapes_ = _strategy(shape, shapes())

    @st.composite
    def draw(draw: Any) -> Any:
        dt = np.dtype(jnp.dtype(draw(dtypes)))
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(
                f"`dtype` must be a real floating-point type; got {dt}. The fix is "
                "to pass float32, float64, bfloat16 or float16."
            )
        sh = tuple(draw(shapes_))
        elements = _elements(dt, float(max_magnitude), allow_nan, allow_infinity)
        store = np.float32 if dt.itemsize < 4 else dt  # NumPy draws; JAX dtypes cast
        x = draw(hnp.arrays(store, sh, elements=elements)).astype(dt)
        # JAX would narrow a float64 array while x64 is off: it stays NumPy.
        # device_put, not jnp.asarray: that compiles a program per new shape.
        return on_device(x) if as_jax and (dt.itemsize < 8 or _x64()) else x

    return draw()


def _strategy(value: Any, default: st.SearchStrategy) -> st.SearchStrategy:
    if value is None:
        return default
    if isinstance(value, st.SearchStrategy):
        return value
    return st.just(value)


def pytrees(
    leaves: st.SearchStrategy[Any] | None = None,
    *,
    max_leaves: int = 4,
    keys: Sequence[str] = ("a", "b", "w", "bias"),
) -> st.SearchStrategy[Any]:
    """Pytrees of arrays: dicts, lists and tuples nested around the leaves.

    Args:
      leaves: the strategy of each leaf (default: :func:`arrays`).
      max_leaves: the most leaves in one pytree (hypothesis' ``st.recursive``).
      keys: the dict keys to draw from.

    Returns:
      A strategy of pytrees (a bare leaf is a pytree too).

    Raises:
      ValueError: ``max_leaves`` < 1 or no ``keys``.

    Example:
      >>> import jax
      >>> from hypothesis import find, settings
      >>> import jgradcheck.strategies as jgs
      >>> tree = find(jgs.pytrees(), lambda t: isinstance(t, dict) and
      ...             any(isinstance(v, (list, tuple)) for v in t.values()),
      ...             settings=settings(deadline=None))
      >>> len(jax.tree_util.tree_leaves(tree)) >= 1
      True
    """
    if not isinstance(max_leaves, int) or max_leaves < 1:
        raise ValueError(f"`max_leaves` must be an int ≥ 1; got {max_leaves!r}.")
    if not keys:
        raise ValueError("`keys` must name at least one dict key.")
    base = arrays() if leaves is None else leaves
    key_names = st.sampled_from(list(keys))

    def nest(children: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.dictionaries(key_names, children, min_size=1, max_size=3),
        )

    return st.recursive(base, nest, max_leaves=max_leaves)
