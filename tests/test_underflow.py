"""Gradients below the smallest normal number (issue 12, items 7-8).

float32 on a CPU flushes results below 1.2e-38 to zero: softplus'(x) =
sigmoid(x) is 0 in float32 for x < -88 though its float64 finite difference is
not, and the loss itself is 0 there. A correct float32 rule at such inputs
must pass (not FAIL as "the gradient is 0 where finite differences are not",
nor be refused as "a different function in float64"); a rule wrong by more
than float32 can resolve there, or wrong anywhere in the normal range, must
still fail.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._engine.context import different_function
from jgradcheck._numerics.verdict import FAIL, PASS, judge, underflow_floor


def _softplus(offset: float):
    """softplus as a custom_vjp whose backward pass adds ``offset``."""

    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defvjp(
        lambda x: (softplus(x), x),
        lambda x, g: (g * jax.nn.sigmoid(x) + offset,),
    )
    return softplus


GOOD, OFF = _softplus(0.0), _softplus(1e-30)
DEEP = jnp.array([-100.0, -95.0, -90.0], jnp.float32)  # every value underflows
MIXED = jnp.array([-100.0, 0.5, 2.0], jnp.float32)


def _loss(rule):
    return lambda p: jnp.sum(rule(p))


def test_correct_gradients_below_the_normal_range_pass():
    assert jgc.check_grad(lambda p: jnp.sum(jnp.logaddexp(p, 0.0)), DEEP).ok
    assert jgc.check_grad(_loss(GOOD), DEEP).ok
    assert jgc.check_vjp(GOOD, DEEP).ok
    assert jgc.check_vjp(GOOD, MIXED).ok


def test_errors_float32_can_resolve_are_still_caught():
    # 1e-30 where the true value is 4e-44: far above what float32 resolves.
    bad = jgc.check_grad(_loss(OFF), DEEP)
    assert not bad.ok and bad.n_fail == 3
    assert not jgc.check_vjp(OFF, DEEP).ok
    # And a wrong derivative in the normal range, next to an underflowing entry.
    twice = jgc.check_grad(_loss(GOOD), MIXED, grad=lambda p: 2 * jax.nn.sigmoid(p))
    assert [e.where for e in twice.failures()] == ["[1]", "[2]"]


@pytest.mark.parametrize(
    ("eps", "numeric", "status"),
    [
        (2.0**-23, 1e-39, PASS),  # float32 flushed to 0: within 16·2⁻¹²⁶
        (2.0**-23, 1e-36, FAIL),  # 0 against 1e-36: float32 resolves that
        (2.0**-52, 1e-39, FAIL),  # float64 resolves 1e-39 (normal there)
        (2.0**-10, 5e-7, PASS),  # float16: 8 subnormal spacings
        (2.0**-10, 5e-6, FAIL),
    ],
)
def test_judge_excuses_only_what_the_dtype_cannot_resolve(eps, numeric, status):
    grad, n = np.zeros(1), np.array([numeric])
    j = judge(grad, n, np.zeros(1), np.zeros(1), eps_grad=eps, scale=numeric)
    assert j.status[0] == status
    assert j.tolerance[0] >= underflow_floor(eps)


@pytest.mark.skipif(
    jax.config.read("jax_enable_x64"), reason="with x64 on, the params are float64"
)
def test_a_loss_whose_intermediate_underflows_names_the_range_first():
    # exp(-100) is 3.7e-44: 0 in float32 on a CPU, so the loss is 0 there and
    # 3.7e-30 per entry in float64. Refused, with the range named as the likely
    # cause (randomness second); precision="native" checks it as computed.
    def loss(p):
        return jnp.sum(jnp.exp(-100.0 * p) * 1e14)

    p = jnp.ones(3, jnp.float32)
    with pytest.raises(ValueError, match="different function") as e:
        jgc.check_grad(loss, p)
    message = str(e.value)
    assert message.index("cannot hold") < message.index("randomness")
    assert "smallest normal number, 1.18e-38" in message
    assert jgc.check_grad(loss, p, precision="native").ok
    # a loss whose float32 value is not 0 (the dropout case) names randomness first
    text = different_function(0.25, 0.5, np.dtype(np.float32), "float64")
    assert text.index("randomness") < text.index("cannot hold")
