"""Bad input gets a clear error, never a wrong verdict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc


def quad(p):
    return jnp.sum(p["w"] ** 2) + jnp.sum(p["b"])


PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}


def test_non_scalar_loss():
    with pytest.raises(ValueError, match=r"scalar.*shape \(3,\).*\.sum\(\)"):
        jgc.check_grad(lambda p: p["b"] * 2, PARAMS)


def test_tuple_loss_says_how_to_fix():
    with pytest.raises(TypeError, match=r"\(loss, aux\)"):
        jgc.check_grad(lambda p: (quad(p), 1.0), PARAMS)


def test_integer_loss():
    with pytest.raises(TypeError, match="floating-point"):
        jgc.check_grad(
            lambda p: jnp.sum(p["n"]), {"n": jnp.arange(3), "w": jnp.ones(1)}
        )


def test_loss_not_callable():
    with pytest.raises(TypeError, match="`loss` must be callable"):
        jgc.check_grad("quad", PARAMS)


def test_nan_loss():
    with pytest.raises(ValueError, match="nan at the given `params`"):
        jgc.check_grad(lambda p: jnp.sum(jnp.log(p["w"] - 2)), PARAMS)


def test_nan_in_gradient_names_the_place():
    def grad(p):
        g = jax.grad(quad)(p)
        return {"w": g["w"].at[1, 2].set(jnp.nan), "b": g["b"]}

    with pytest.raises(ValueError, match=r"not finite at: \['w'\]\[1, 2\] = nan"):
        jgc.check_grad(quad, PARAMS, grad=grad)


def test_loss_not_finite_at_the_finite_difference_points():
    # sqrt(|x|) at x = 0 has a singular derivative; θ−h gives sqrt of a negative.
    def loss(p):
        return jnp.sum(jnp.sqrt(p))

    with pytest.raises(ValueError, match=r"not finite at θ ± h.*\[0\]"):
        jgc.check_grad(loss, jnp.array([0.0, 1.0]), grad=lambda p: jnp.ones(2))


def test_grad_structure_mismatch_names_paths():
    with pytest.raises(
        ValueError, match=r"structure differs(.|\n)*missing from grad: \['b'\]"
    ):
        jgc.check_grad(quad, PARAMS, grad=lambda p: {"w": 2 * p["w"]})


def test_grad_transposed_shape_says_transpose():
    with pytest.raises(
        ValueError, match=r"\['w'\]: shape \(3, 2\) is the transpose.*`\.T`"
    ):
        jgc.check_grad(
            quad, PARAMS, grad=lambda p: {"w": 2 * p["w"].T, "b": jnp.ones(3)}
        )


def test_grad_wrong_shape_and_none_collected_together():
    with pytest.raises(ValueError) as info:
        jgc.check_grad(quad, PARAMS, grad=lambda p: {"w": jnp.ones(6), "b": None})
    msg = str(info.value)
    assert "['w']: shape (6,), expected (2, 3)" in msg
    assert "['b']: got None" in msg


def test_grad_not_callable():
    with pytest.raises(TypeError, match="`grad` must be callable"):
        jgc.check_grad(quad, PARAMS, grad=PARAMS)


def test_empty_params():
    with pytest.raises(ValueError, match="empty"):
        jgc.check_grad(lambda p: jnp.array(0.0), {})


def test_no_float_leaves():
    with pytest.raises(
        ValueError, match=r"no floating-point leaves.*\['n'\] \(int32\)"
    ):
        jgc.check_grad(
            lambda p: jnp.sum(p["n"]) * 1.0, {"n": jnp.arange(3, dtype=jnp.int32)}
        )


def test_coords_larger_than_parameter_count():
    with pytest.raises(
        ValueError, match=r"`coords`=10 is larger than the number of parameters \(9\)"
    ):
        jgc.check_grad(quad, PARAMS, coords=10)


def test_coords_fewer_than_leaves():
    with pytest.raises(ValueError, match="fewer than the 2 floating-point leaves"):
        jgc.check_grad(quad, PARAMS, coords=1)


@pytest.mark.parametrize("coords", [0, -3])
def test_coords_not_positive(coords):
    with pytest.raises(ValueError, match="at least 1"):
        jgc.check_grad(quad, PARAMS, coords=coords)


def test_bad_mask():
    mask = {"w": np.ones((3, 2), bool), "b": np.ones(3)}
    with pytest.raises(ValueError) as info:
        jgc.check_grad(quad, PARAMS, coords=mask)
    assert "['w']: shape (3, 2), expected (2, 3)" in str(info.value)
    assert "['b']: dtype float64, expected bool" in str(info.value)


def test_empty_mask():
    mask = {"w": np.zeros((2, 3), bool), "b": None}
    with pytest.raises(ValueError, match="selects no entries"):
        jgc.check_grad(quad, PARAMS, coords=mask)


def test_bad_precision_and_key():
    with pytest.raises(ValueError, match="`precision`"):
        jgc.check_grad(quad, PARAMS, precision="float128")
    with pytest.raises(TypeError, match="`key`"):
        jgc.check_grad(quad, PARAMS, coords=3, key="seed")


def test_bad_memory_budget():
    with pytest.raises(ValueError, match="`memory_budget`"):
        jgc.check_grad(quad, PARAMS, memory_budget=-1)


@pytest.mark.parametrize("budget", [2**20, "1MiB", "0.5 GB", None])
def test_memory_budget_as_bytes_or_a_size(budget):
    assert jgc.check_grad(quad, PARAMS, memory_budget=budget).ok


@pytest.mark.parametrize("budget", ["12 parsecs", "GB", "-1MB", True, [1]])
def test_memory_budget_that_is_not_a_size(budget):
    with pytest.raises(ValueError, match="`memory_budget`"):
        jgc.check_grad(quad, PARAMS, memory_budget=budget)


def test_options_are_checked_before_the_loss_runs_in_a_fixed_order():
    calls = []

    def loss(p):
        calls.append(1)
        return quad(p)

    # precision, then method, then mode and directions, then memory_budget.
    with pytest.raises(ValueError, match="`precision`"):
        jgc.check_grad(loss, PARAMS, precision="x", method="y", mode="z")
    with pytest.raises(ValueError, match="`method`"):
        jgc.check_grad(loss, PARAMS, method="y", mode="z", memory_budget=-1)
    with pytest.raises(ValueError, match="`mode`"):
        jgc.check_grad(loss, PARAMS, mode="z", memory_budget=-1)
    with pytest.raises(ValueError, match="`directions`"):
        jgc.check_grad(loss, PARAMS, directions=3, memory_budget=-1)
    for check in (jgc.numerical_grad, jgc.check_vjp, jgc.check_jvp):
        with pytest.raises(ValueError, match="`precision`"):
            check(loss, PARAMS, precision="float16")
        with pytest.raises(ValueError, match="`memory_budget`"):
            check(loss, PARAMS, memory_budget="lots")
    assert not calls


def test_numpy_randomness_in_the_loss_is_reported_not_checked():
    def loss(p):  # dropout with a fresh NumPy mask at every trace/call
        mask = np.random.rand(*p.shape) > 0.5
        return jnp.sum((p * mask) ** 2)

    with pytest.raises(ValueError, match="not deterministic.*fixed `jax.random` key"):
        jgc.check_grad(loss, jnp.linspace(0.1, 1.0, 16))


def test_a_changing_key_is_reported():
    state = {"n": 0}

    def loss(p):
        state["n"] += 1
        keep = jax.random.bernoulli(jax.random.PRNGKey(state["n"]), 0.5, p.shape)
        return jnp.sum(jnp.where(keep, p, 0.0) ** 2)

    with pytest.raises(ValueError, match="not deterministic"):
        jgc.check_grad(loss, jnp.linspace(0.1, 1.0, 16))


def test_dropout_with_a_fixed_key_is_fine():
    def loss(p, key):
        keep = jax.random.bernoulli(key, jnp.float32(0.5), p.shape)
        return jnp.sum(jnp.where(keep, p / 0.5, 0.0) ** 2)

    assert jgc.check_grad(loss, jnp.linspace(0.1, 1.0, 16), jax.random.PRNGKey(3)).ok


@pytest.mark.skipif(
    jax.config.read("jax_enable_x64"),
    reason="with x64 on, the float32 check and its float64 reference draw alike",
)
def test_randomness_that_depends_on_x64_is_reported():
    # bernoulli(key, 0.5) draws float64 uniforms under x64: another mask.
    def loss(p, key):
        keep = jax.random.bernoulli(key, 0.5, p.shape)
        return jnp.sum(jnp.where(keep, p / 0.5, 0.0) ** 2)

    params, key = jnp.linspace(0.1, 1.0, 16, dtype=jnp.float32), jax.random.PRNGKey(3)
    with pytest.raises(ValueError, match="different function.*explicit"):
        jgc.check_grad(loss, params, key)
    assert jgc.check_grad(loss, params, key, precision="native").ok
