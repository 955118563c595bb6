"""jgradcheck.strategies: the hypothesis strategies draw what they promise.

The property tests draw many examples without compiling anything (NumPy and
``jnp.asarray`` only); ``find`` shows that each promised case (an empty shape,
an edge value, a nested pytree) is drawn at all. Two tests run checks: a
correct rule passes on drawn inputs, and hypothesis finds the input where a
rule that is wrong only in its saturation branch fails (each example compiles
a check, so both draw few examples and skip shrinking).
"""

from __future__ import annotations

import importlib
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

import jgradcheck as jgc
import jgradcheck.strategies as jgs

MANY = settings(max_examples=50, deadline=None, derandomize=True, database=None)
"""Property tests: many cheap draws, the same ones every run."""

FIND = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],  # the first example found; shrinking costs time
)
"""``find``: is a case drawn at all (within 200 draws)?"""

CHECKS = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each call compiles
)
"""Tests that run a check per example: few examples, no shrinking."""

SEARCH = settings(CHECKS, max_examples=10)
"""``find`` over checks: stops at the first failing example (the second, with
this hypothesis version), but which examples come first also depends on the
constants hypothesis collects from the loaded modules: room for that."""


def _is_subnormal(x: np.ndarray) -> np.ndarray:
    tiny = float(jnp.finfo(x.dtype).tiny)
    a = np.abs(x.astype(np.float64))
    return (a > 0) & (a < tiny)


# ------------------------------------------------------------------- shapes


@MANY
@given(s=jgs.shapes(min_dims=1, max_dims=3, max_side=5, max_size=16))
def test_shapes_stay_in_their_bounds(s):
    assert isinstance(s, tuple) and 1 <= len(s) <= 3
    assert all(isinstance(n, int) and 0 <= n <= 5 for n in s)
    assert math.prod(s) <= 16


@pytest.mark.parametrize(
    "wanted",
    [
        lambda s: s == (),
        lambda s: 0 in s,
        lambda s: 1 in s and math.prod(s) > 1,
        lambda s: any(n % 2 == 1 and n > 1 for n in s),
    ],
    ids=["scalar", "empty", "singleton-axis", "odd"],
)
def test_shapes_include_scalars_empty_singleton_and_odd_sides(wanted):
    assert wanted(find(jgs.shapes(), wanted, settings=FIND))


def test_shapes_min_side_one_never_draws_an_empty_array():
    with pytest.raises(NoSuchExample):
        find(jgs.shapes(min_side=1), lambda s: 0 in s, settings=MANY)


@MANY
@given(shapes=jgs.broadcastable_shapes(3, max_dims=3, max_side=4))
def test_broadcastable_shapes_broadcast(shapes):
    assert len(shapes) == 3
    np.broadcast_shapes(*shapes)  # raises if they do not


def test_broadcastable_shapes_do_broadcast_a_singleton_or_missing_axis():
    def broadcasts(pair):
        a, b = pair
        out = np.broadcast_shapes(a, b)
        return a != out and math.prod(out) > math.prod(a) > 0

    a, b = find(jgs.broadcastable_shapes(), broadcasts, settings=FIND)
    assert np.broadcast_shapes(a, b) != a


@pytest.mark.parametrize(
    "call",
    [
        lambda: jgs.shapes(min_side=-1),
        lambda: jgs.shapes(min_dims=3, max_dims=2),
        lambda: jgs.shapes(max_size=-1),
        lambda: jgs.broadcastable_shapes(0),
        lambda: jgs.arrays(max_magnitude=math.inf),
        lambda: jgs.pytrees(max_leaves=0),
    ],
)
def test_bad_bounds_are_refused_naming_the_argument(call):
    with pytest.raises(ValueError, match="`"):
        call()


# ------------------------------------------------------------------- dtypes


def _dtypes_drawn(strategy) -> set[str]:
    seen: set[str] = set()

    @MANY
    @given(d=strategy)
    def collect(d):
        seen.add(np.dtype(d).name)

    collect()
    return seen


def test_float_dtypes_follow_x64_at_draw_time():
    with jax.enable_x64(False):
        assert _dtypes_drawn(jgs.float_dtypes()) == {"float32"}
    with jax.enable_x64(True):
        assert _dtypes_drawn(jgs.float_dtypes()) == {"float32", "float64"}
    with jax.enable_x64(False):  # NumPy float64 arrays on request
        assert _dtypes_drawn(jgs.float_dtypes(x64=True)) == {"float32", "float64"}
    assert _dtypes_drawn(jgs.float_dtypes(x64=False, low_precision=True)) == {
        "float32",
        "bfloat16",
        "float16",
    }


# ------------------------------------------------------------------- arrays


@MANY
@given(
    x=jgs.arrays(
        jgs.float_dtypes(x64=True, low_precision=True),
        jgs.shapes(max_size=8),
        max_magnitude=300.0,
        as_jax=False,
    )
)
def test_arrays_are_finite_bounded_and_never_subnormal(x):
    assert isinstance(x, np.ndarray) and x.size <= 8
    w = x.astype(np.float64)
    assert np.all(np.isfinite(w))
    assert np.all(np.abs(w) <= 300.0)
    assert not np.any(_is_subnormal(x))


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_arrays_draw_every_edge_value_in_the_dtype(dtype):
    edges = jgs.edge_values(dtype, max_magnitude=300.0)
    tiny = float(jnp.finfo(dtype).tiny)
    assert {0.0, tiny, -tiny, 1.0, -1.0} < set(edges) and len(set(edges)) == 7
    assert 299.0 <= max(edges) <= 300.0  # 300 rounded to the dtype
    seen: set[float] = set()

    @MANY
    @given(x=jgs.arrays(dtype, (4,), max_magnitude=300.0, as_jax=False))
    def collect(x):
        assert x.dtype == np.dtype(jnp.dtype(dtype))
        seen.update(x.astype(np.float64).tolist())

    collect()
    assert set(edges) <= seen
    assert len(seen - set(edges)) > 10  # and ordinary values


def test_arrays_are_jax_arrays_of_the_asked_dtype_and_shape():
    x = find(jgs.arrays(jnp.bfloat16, (2, 3)), lambda x: True, settings=FIND)
    assert isinstance(x, jax.Array)
    assert x.dtype == jnp.bfloat16 and x.shape == (2, 3)


def test_float64_arrays_stay_numpy_while_x64_is_off():
    with jax.enable_x64(False):
        x = find(jgs.arrays(np.float64, (2,)), lambda x: True, settings=FIND)
        assert type(x) is np.ndarray and x.dtype == np.float64
    with jax.enable_x64(True):
        x = find(jgs.arrays(np.float64, (2,)), lambda x: True, settings=FIND)
        assert isinstance(x, jax.Array) and x.dtype == jnp.float64


def test_arrays_draw_nan_and_inf_only_when_asked():
    def non_finite(x):
        return not np.all(np.isfinite(x))

    with pytest.raises(NoSuchExample):
        find(jgs.arrays(np.float32, (3,), as_jax=False), non_finite, settings=MANY)
    x = find(
        jgs.arrays(np.float32, (3,), allow_nan=True, as_jax=False),
        non_finite,
        settings=FIND,
    )
    assert np.isnan(x).any()
    x = find(
        jgs.arrays(np.float32, (3,), allow_infinity=True, as_jax=False),
        non_finite,
        settings=FIND,
    )
    assert np.isinf(x).any()


def test_arrays_refuse_an_integer_dtype():
    with pytest.raises(TypeError, match="`dtype` must be a real floating-point"):
        find(jgs.arrays(np.int32, (2,)), lambda x: True, settings=FIND)


# ------------------------------------------------------------------- pytrees


def _depth(tree) -> int:
    if isinstance(tree, dict):
        return 1 + max(map(_depth, tree.values()))
    if isinstance(tree, (list, tuple)):
        return 1 + max(map(_depth, tree))
    return 0


LEAF = jgs.arrays(np.float32, jgs.shapes(max_size=4), as_jax=False)


@MANY
@given(tree=jgs.pytrees(LEAF, max_leaves=4))
def test_pytrees_hold_arrays_in_dicts_lists_and_tuples(tree):
    def walk(t):
        if isinstance(t, dict):
            assert t and all(k in ("a", "b", "w", "bias") for k in t)
            return sum(walk(v) for v in t.values())
        if isinstance(t, (list, tuple)):
            assert t
            return sum(walk(v) for v in t)
        assert isinstance(t, np.ndarray) and t.dtype == np.float32
        return 1

    leaves = walk(tree)
    assert leaves == len(jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("kind", [dict, list, tuple])
def test_pytrees_nest_each_container(kind):
    tree = find(
        jgs.pytrees(LEAF),
        lambda t: isinstance(t, kind) and _depth(t) >= 2,
        settings=FIND,
    )
    assert isinstance(tree, kind) and _depth(tree) >= 2


def test_pytrees_take_any_leaf_strategy():
    tree = find(jgs.pytrees(st.just(1.5)), lambda t: _depth(t) >= 2, settings=FIND)
    assert set(jax.tree_util.tree_leaves(tree)) == {1.5}


# ------------------------------------------------------- checks on drawn inputs


@jax.custom_vjp
def softplus(x):
    return jnp.logaddexp(x, 0.0)


softplus.defvjp(lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


@jax.custom_vjp
def softplus_unsaturated(x):
    return jnp.logaddexp(x, 0.0)


def _bwd_without_saturation(x, g):
    # bug: "the branch above 15 is flat", but there softplus(x) ≈ x: slope 1.
    return (g * jnp.where(x > 15.0, 0.0, jax.nn.sigmoid(x)),)


softplus_unsaturated.defvjp(
    lambda x: (softplus_unsaturated(x), x), _bwd_without_saturation
)

DRAWN = jgs.arrays(np.float32, (3,), max_magnitude=30.0)


@CHECKS
@given(x=DRAWN)
def test_given_a_correct_rule_passes_on_drawn_inputs(x):
    jgc.assert_vjp(softplus, x, localize=0)


def test_given_finds_a_rule_wrong_only_in_its_saturation_branch():
    # Invisible at the usual example input ...
    assert jgc.check_vjp(softplus_unsaturated, jnp.linspace(-3.0, 3.0, 3)).ok
    # ... found among the same few drawn inputs the correct rule passes on.
    x = find(
        DRAWN,
        lambda x: not jgc.check_vjp(softplus_unsaturated, x, localize=0).ok,
        settings=SEARCH,
    )
    assert float(jnp.max(x)) > 15.0


def test_without_hypothesis_the_import_error_names_the_extra(monkeypatch):
    for name in ("hypothesis", "hypothesis.strategies", "hypothesis.extra.numpy"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "jgradcheck.strategies")
    with pytest.raises(ImportError, match=r"pip install jgradcheck\[hypothesis\]"):
        importlib.import_module("jgradcheck.strategies")
    monkeypatch.undo()
    assert importlib.import_module("jgradcheck.strategies") is jgs
