"""The built-in example: the seeds' sigmoid autoencoder with hand-written backprop.

A user on a Q&A site wrote a feed-forward autoencoder in Matlab::

    a = sigmoid(x*encoder);  z = sigmoid(a*decoder);  J = sum(0.5*(z - x).^2)

with hand-written gradients, and their numeric check disagreed. This demo runs
their backprop and two variants through :func:`jgradcheck.check_grad`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .._checks.grad import check_grad

Params = dict[str, jax.Array]


def sigmoid(t: jax.Array) -> jax.Array:
    return 1.0 / (1.0 + jnp.exp(-t))


def autoencoder_loss(params: Params, x: jax.Array) -> jax.Array:
    """``J = Σ ½(z − x)²`` with ``a = σ(x·E)`` and ``z = σ(a·D)``."""
    a = sigmoid(x @ params["encoder"])
    z = sigmoid(a @ params["decoder"])
    return jnp.sum(0.5 * (z - x) ** 2)


def _forward(params: Params, x: jax.Array) -> tuple[jax.Array, ...]:
    h1 = x @ params["encoder"]
    a = sigmoid(h1)
    z = sigmoid(a @ params["decoder"])
    err0 = (z - x) * z * (1 - z)
    err1 = (err0 @ params["decoder"].T) * a * (1 - a)
    return h1, a, err0, err1


def backprop_as_posted(params: Params, x: jax.Array) -> Params:
    """The seed's code: ``gDecoder = error_0' * a`` (transposed)."""
    _, a, err0, err1 = _forward(params, x)
    return {"encoder": x.T @ err1, "decoder": err0.T @ a}


def backprop_preactivation_bug(params: Params, x: jax.Array) -> Params:
    """Transposed back, but using the pre-activation ``x·E`` instead of ``a``."""
    h1, _, err0, err1 = _forward(params, x)
    return {"encoder": x.T @ err1, "decoder": h1.T @ err0}


def backprop_correct(params: Params, x: jax.Array) -> Params:
    """``gD = aᵀ·δ₀`` and ``gE = xᵀ·δ₁``."""
    _, a, err0, err1 = _forward(params, x)
    return {"encoder": x.T @ err1, "decoder": a.T @ err0}


def make_problem(
    visible: int = 64, hidden: int = 16, batch: int = 8, seed: int = 0
) -> tuple[Params, jax.Array]:
    """Parameters initialised as in the seed (uniform ±4·sqrt(6/(h+v))) and data."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    r = 4 * (6.0 / (hidden + visible)) ** 0.5
    params = {
        "encoder": jax.random.uniform(k1, (visible, hidden), minval=-r, maxval=r),
        "decoder": jax.random.uniform(k2, (hidden, visible), minval=-r, maxval=r),
    }
    x = jax.random.uniform(k3, (batch, visible))
    return params, x


def run(print_fn: Callable[[str], object] = print) -> bool:
    """Run the demo; True when it behaved as intended (bug found, fix passes)."""
    params, x = make_problem()
    n = sum(p.size for p in params.values())
    print_fn(f"jgradcheck demo: a sigmoid autoencoder, {n} parameters, float32\n")

    print_fn("1. The backprop as posted (gDecoder = error_0' * a):")
    try:
        check_grad(autoencoder_loss, params, x, grad=backprop_as_posted)
        print_fn("   unexpectedly accepted")
        return False
    except ValueError as e:
        print_fn("   ValueError: " + str(e).replace("\n", "\n   "))

    print_fn(
        "\n2. Transposed back, but the decoder gradient uses x·E, not a = σ(x·E):\n"
    )
    bad = check_grad(autoencoder_loss, params, x, grad=backprop_preactivation_bug)
    print_fn(str(bad))
    found = not bad.ok and not bad.leaf("['decoder']").ok and bad.leaf("['encoder']").ok

    print_fn("\n3. The corrected backprop (gDecoder = aᵀ·δ₀):\n")
    good = check_grad(autoencoder_loss, params, x, grad=backprop_correct)
    print_fn(str(good))
    return found and good.ok
