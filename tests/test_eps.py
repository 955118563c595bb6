"""eps_sweep: V-shaped error curves with the best ε where theory puts it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import jgradcheck as jgc

matplotlib.use("Agg")


def f(p):
    return jnp.sum(jnp.exp(jnp.sin(p)) * jnp.tanh(p))


def test_float64_best_step_near_cbrt_eps():
    with jax.enable_x64(True):
        s = jgc.eps_sweep(f, jnp.linspace(-1.0, 2.0, 5))
    assert s.dtype == "float64" and s.errors["central"].shape == (5, 49)
    best = np.median(s.best_eps["central"])
    assert 1e-6 <= best <= 5e-5  # theory: cbrt(2.2e-16) = 6e-6
    # The 4-point stencil reaches a lower floor than the 2-point one.
    floor2 = np.median(np.nanmin(s.errors["central"], 1))
    floor4 = np.median(np.nanmin(s.errors["central4"], 1))
    assert floor4 < floor2 < 1e-9
    # V shape: both ends are worse than the bottom.
    e = s.errors["central"]
    assert np.all(e[:, 0] > 100 * np.nanmin(e, 1)) and np.all(
        e[:, -1] > 100 * np.nanmin(e, 1)
    )


def test_float32_native_moves_the_best_step_up():
    p = jnp.linspace(-1.0, 2.0, 5, dtype=jnp.float32)
    s = jgc.eps_sweep(f, p, precision="native")
    assert s.dtype == "float32"
    assert 3e-4 <= np.median(s.best_eps["central"]) <= 3e-2  # cbrt(1.2e-7) = 4.9e-3
    # Steps below float32 resolution give no estimate rather than a wrong one.
    assert np.isnan(s.errors["central"][:, 0]).all()


def test_theory_lines_and_plot():
    with jax.enable_x64(True):
        s = jgc.eps_sweep(f, jnp.linspace(-1.0, 2.0, 3), methods=("central",))
    assert set(s.truncation) == {"central"} and s.roundoff.shape == (3, 49)
    # Roundoff theory falls like 1/h; truncation rises like h².
    assert np.allclose(
        s.roundoff[:, 0] / s.roundoff[:, 1], s.eps[1] / s.eps[0], rtol=0.2
    )
    assert np.allclose(
        s.truncation["central"][:, -1] / s.truncation["central"][:, -2],
        (s.eps[-1] / s.eps[-2]) ** 2,
    )
    ax = s.plot()
    assert len(ax.get_lines()) == 3 * 3 and ax.get_xscale() == "log"


def test_truncation_lines_match_the_stencils_theory():
    # For exp, f''' = f^(5) = f', so at |θ| <= 1 (h = ε) the relative
    # truncation error is ε²/6 for the 2-point stencil and ε⁴/30 for the 4-point
    # one: the fitted lines must find these constants from the measured errors.
    with jax.enable_x64(True):
        s = jgc.eps_sweep(lambda p: jnp.sum(jnp.exp(p)), jnp.array([0.1, 0.3, 0.5]))
    top = slice(-3, None)
    assert np.allclose(s.truncation["central"][:, top], s.eps[top] ** 2 / 6, rtol=0.02)
    assert np.allclose(s.truncation["central4"][:, top], s.eps[top] ** 4 / 30, rtol=0.1)
    # Where truncation dominates, the measured errors follow the lines.
    assert np.allclose(
        s.errors["central"][:, top], s.truncation["central"][:, top], rtol=0.02
    )


def test_theory_lines_match_taylor_theory():
    # Independently of how eps_sweep fits its lines: the central difference's
    # relative truncation error is h²·|f‴|/(6·|f′|) and its roundoff error
    # eps·|J|/(h·|f′|), with h = ε·max(1, |θ|) and f‴ from jax.grad thrice.
    def g(t):
        return jnp.exp(jnp.sin(t)) * jnp.tanh(t)

    with jax.enable_x64(True):
        x = jnp.linspace(-1.0, 2.0, 3)
        s = jgc.eps_sweep(f, x, methods=("central",))
        d1 = np.abs(jax.vmap(jax.grad(g))(x))
        d3 = np.abs(jax.vmap(jax.grad(jax.grad(jax.grad(g))))(x))
        j = abs(float(f(x)))
    assert s.where == ("[0]", "[1]", "[2]")
    h = s.eps[None, :] * np.maximum(1.0, np.abs(np.asarray(x)))[:, None]
    truncation = h**2 * d3[:, None] / (6.0 * d1[:, None])
    roundoff = np.finfo(np.float64).eps * j / (h * d1[:, None])
    np.testing.assert_allclose(s.truncation["central"], truncation, rtol=0.02)
    np.testing.assert_allclose(s.roundoff, roundoff, rtol=0.1)
    # Where truncation dominates (ε = 1e-3), the measured error is on the line.
    k = int(np.argmin(np.abs(s.eps - 1e-3)))
    np.testing.assert_allclose(s.errors["central"][:, k], truncation[:, k], rtol=1e-3)


def test_eps_sweep_bad_input():
    with pytest.raises(ValueError, match="`methods`"):
        jgc.eps_sweep(f, jnp.ones(3), methods=("forward",))
    with pytest.raises(ValueError, match="`eps`"):
        jgc.eps_sweep(f, jnp.ones(3), eps=[1e-3, -1.0])
    with pytest.raises(ValueError, match="`precision`"):
        jgc.eps_sweep(f, jnp.ones(3), precision="float16")
