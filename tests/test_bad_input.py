"""Every input a user can give gets a verdict or an error naming the argument
and the fix (issue 13): never a traceback from inside jgradcheck, never an
empty pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc


def scalar_and_vector(p):
    return jnp.sum(p["a"] ** 2) + p["b"] ** 2


SV = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(0.5)}


# ------------------------------------------------------------ grad= outputs


@pytest.mark.parametrize("b", [1.0, np.float64(1.0), np.asarray(1.0)])
def test_grad_returning_python_or_numpy_scalar_gets_a_verdict(b):
    report = jgc.check_grad(
        scalar_and_vector, SV, grad=lambda p: {"a": np.asarray(2 * p["a"]), "b": b}
    )
    assert report.ok


def test_grad_returning_a_wrong_python_float_fails():
    report = jgc.check_grad(
        scalar_and_vector, SV, grad=lambda p: {"a": 2 * p["a"], "b": 3.0}
    )
    assert not report.ok
    assert [e.path for e in report.failures()] == ["['b']"]


def test_grad_with_another_signature_names_grad_and_how_it_is_called():
    def loss(p, x, y):
        return jnp.sum(p * x * y)

    with pytest.raises(
        TypeError,
        match=r"`grad` is called as `grad\(params, args\[0\], args\[1\]\)`.*The fix",
    ):
        jgc.check_grad(loss, jnp.ones(3), 2.0, 3.0, grad=lambda p: 6 * p)


@pytest.mark.parametrize("budget", ["2GB", "512MiB", " 1.5 gib ", 10**9])
def test_memory_budget_sizes(budget):
    assert jgc.check_grad(lambda p: jnp.sum(p**2), jnp.ones(2), memory_budget=budget).ok


@pytest.mark.parametrize("budget", ["2 parsecs", "-1GB", True, [1]])
def test_memory_budget_refused_clearly(budget):
    with pytest.raises(ValueError, match="`memory_budget`"):
        jgc.check_grad(lambda p: jnp.sum(p**2), jnp.ones(2), memory_budget=budget)


def test_grad_none_for_non_array_fields_is_accepted():
    # What eqx.filter_grad returns: None where a field is not a float array.
    params = {"w": jnp.array([0.5, 1.0]), "act": jnp.tanh, "n": jnp.arange(2)}

    def loss(p):
        return jnp.sum(p["act"](p["w"]) * p["n"])

    def grad(p):
        g = jax.grad(lambda w: loss({**p, "w": w}))(p["w"])
        return {"w": g, "act": None, "n": None}

    assert jgc.check_grad(loss, params, grad=grad).ok


def test_equinox_filter_grad_is_accepted():
    eqx = pytest.importorskip("equinox")

    class Model(eqx.Module):
        w: jax.Array
        n: int = 3

        def __call__(self):
            return jnp.sum(jnp.tanh(self.w) * self.n)

    model = Model(jnp.array([0.5, 1.0]))
    loss = lambda m: m()  # noqa: E731
    assert jgc.check_grad(loss, model, grad=eqx.filter_grad(loss)).ok
