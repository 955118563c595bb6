"""warm_up: a few optimizer steps, so gradients are checked away from the init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jgradcheck as jgc
from helpers import data, mlp_loss, mlp_params


def test_loss_falls_and_structure_and_dtypes_are_kept(dtype):
    params = mlp_params([4, 6, 2], dtype)
    params[0]["count"] = jnp.array(3, jnp.int32)  # held fixed
    params[1]["name"] = "head"  # a static leaf, passed through
    x, y = data((8, 4), (8, 2), dtype)

    def loss(p, x, y):
        return mlp_loss([{"w": q["w"], "b": q["b"]} for q in p], x, y)

    out = jgc.warm_up(loss, params, (x, y), steps=30, return_losses=True)
    assert isinstance(out, jgc.WarmUp) and out.losses.shape == (30,)
    assert out.losses[-1] < 0.95 * out.losses[0]
    assert np.all(np.diff(out.losses) < 0)  # adam at 1e-3 on one batch: monotone
    new = out.params
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(new)):
        if isinstance(a, str):
            assert b == a
        else:
            assert a.shape == b.shape and a.dtype == b.dtype
    assert int(new[0]["count"]) == 3
    assert not np.allclose(new[0]["w"], params[0]["w"])
    # Without return_losses: the params alone, equal to the traced run's.
    again = jgc.warm_up(loss, params, (x, y), steps=30)
    np.testing.assert_array_equal(again[1]["w"], new[1]["w"])


def test_batches_list_is_cycled_and_generator_is_taken_lazily():
    def loss(p, x):
        return jnp.sum((p - x) ** 2)

    xs = [(jnp.full(2, float(k)),) for k in range(3)]
    frozen = optax.sgd(0.0)  # params never move: each loss shows its batch
    out = jgc.warm_up(
        loss, jnp.zeros(2), xs, optimizer=frozen, steps=7, return_losses=True
    )
    np.testing.assert_allclose(out.losses, [2.0 * (k % 3) ** 2 for k in range(7)])

    def endless():
        k = 0
        while True:
            yield (jnp.full(2, float(k)),)
            k += 1

    out = jgc.warm_up(
        loss, jnp.zeros(2), endless(), optimizer=frozen, steps=4, return_losses=True
    )
    np.testing.assert_allclose(out.losses, [0.0, 2.0, 8.0, 18.0])


def test_loss_of_params_alone_and_named_terms():
    def terms(p):
        return {"data": jnp.sum((p - 1.0) ** 2), "l2": 0.1 * jnp.sum(p**2)}

    out = jgc.warm_up(
        terms, jnp.zeros(3), (), optimizer=optax.sgd(0.1), steps=5, return_losses=True
    )
    assert out.losses[0] == pytest.approx(3.0)  # the sum of the terms at 0
    assert out.losses[-1] < out.losses[0]


def test_the_step_is_compiled_once():
    traces = []

    def loss(p, x):
        traces.append(1)
        return jnp.sum((p * x) ** 2)

    jgc.warm_up(loss, jnp.ones(3), (jnp.ones(3),), steps=3)
    few = len(traces)
    traces.clear()
    jgc.warm_up(loss, jnp.ones(3), (jnp.ones(3),), steps=12)
    assert len(traces) == few <= 3


def test_complex_leaves_descend():
    c = jnp.array([1.0 + 2.0j, -0.5j])
    out = jgc.warm_up(
        lambda z: jnp.sum(jnp.abs(z - c) ** 2),
        jnp.zeros(2, jnp.complex64),
        (),
        optimizer=optax.sgd(0.1),
        steps=20,
        return_losses=True,
    )
    assert out.params.dtype == jnp.complex64
    assert out.losses[-1] < 1e-2 * out.losses[0]


def test_bad_input():
    loss = lambda p, x: jnp.sum((p - x) ** 2)  # noqa: E731
    p, x = jnp.zeros(3), jnp.ones(3)
    with pytest.raises(ValueError, match="`steps` must be at least 1; got 0"):
        jgc.warm_up(loss, p, (x,), steps=0)
    for bad in (2.5, True):
        with pytest.raises(TypeError, match="`steps` must be an int"):
            jgc.warm_up(loss, p, (x,), steps=bad)
    for empty in ([], iter([])):
        with pytest.raises(ValueError, match="`batches` is empty"):
            jgc.warm_up(loss, p, empty)
    with pytest.raises(TypeError, match=r"pass `\(x,\)`"):
        jgc.warm_up(loss, p, x)
    with pytest.raises(TypeError, match=r"item 0 is a ArrayImpl.*`\(x,\)`"):
        jgc.warm_up(loss, p, [x, x])
    with pytest.raises(ValueError, match="must return a scalar"):
        jgc.warm_up(lambda p, x: p * x, p, (x,))
    with pytest.raises(TypeError, match="`optimizer` must be an optax"):
        jgc.warm_up(loss, p, (x,), optimizer="adam")
    with pytest.raises(ValueError, match="no floating-point leaves to train"):
        jgc.warm_up(lambda p: 0.0 * p.sum(), jnp.arange(3), ())
    with pytest.raises(TypeError, match="`loss` must be callable"):
        jgc.warm_up("loss", p, (x,))


def test_a_loss_that_blows_up_names_the_step():
    # log(p) with p = 1 and steps of -1 per update: log(0) = -inf after 1 update.
    def loss(p):
        return jnp.sum(jnp.log(p))

    with pytest.raises(FloatingPointError, match=r"-inf at step 2 of 5 \(after 1"):
        jgc.warm_up(loss, jnp.ones(2), (), optimizer=optax.sgd(1.0), steps=5)
    with pytest.raises(FloatingPointError, match=r"nan at step 1 of 5 \(after 0"):
        jgc.warm_up(loss, -jnp.ones(2), (), optimizer=optax.sgd(1.0), steps=5)
    # The last update itself produces NaN params.
    with pytest.raises(FloatingPointError, match=r"params became non-finite.*\[1\]"):
        jgc.warm_up(
            lambda p: p[0] ** 2 + jnp.sqrt(p[1]),
            [jnp.ones(()), jnp.zeros(())],
            (),
            optimizer=optax.sgd(1.0),
            steps=1,
        )


# A linear model y ≈ x·w + b whose hand-written gradient for w uses the
# residual without the bias (x·w − y instead of x·w + b − y): exactly right
# while b = 0, as it is at the usual initialisation.


def linear_loss(p, x, y):
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


def backprop_forgets_bias(p, x, y):
    n = y.size  # the mean is over every entry of the output
    r_full = x @ p["w"] + p["b"] - y
    r_no_bias = x @ p["w"] - y  # the bug
    return {"w": 2 * x.T @ r_no_bias / n, "b": 2 * r_full.sum(0) / n}


def test_a_bug_hidden_at_the_initialisation_shows_after_warm_up():
    x, y = data((16, 3), (16, 2), seed=3)
    y = y + 2.0  # an offset the bias must learn
    params = {"w": mlp_params([3, 2])[0]["w"], "b": jnp.zeros(2, jnp.float32)}
    at_init = jgc.check_grad(linear_loss, params, x, y, grad=backprop_forgets_bias)
    assert at_init.ok
    warm = jgc.warm_up(linear_loss, params, (x, y), optimizer=optax.sgd(0.1), steps=5)
    assert np.all(np.abs(warm["b"]) > 0.1)
    after = jgc.check_grad(linear_loss, warm, x, y, grad=backprop_forgets_bias)
    assert not after.ok
    assert not after.leaf("['w']").ok and after.leaf("['b']").ok
    # The twin: the right backprop passes at the warmed-up parameters too.
    assert jgc.check_grad(linear_loss, warm, x, y, grad=backprop_right).ok


def backprop_right(p, x, y):
    r = x @ p["w"] + p["b"] - y
    return {"w": 2 * x.T @ r / y.size, "b": 2 * r.sum(0) / y.size}
