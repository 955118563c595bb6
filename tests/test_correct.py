"""Correct gradients must pass, including the hard cases."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import data, mlp_loss, mlp_params, normal


@pytest.mark.parametrize("jit", [False, True])
def test_mlp_passes(dtype, jit):
    params = mlp_params([5, 7, 3], dtype)
    x, y = data((4, 5), (4, 3), dtype)
    loss = jax.jit(mlp_loss) if jit else mlp_loss
    report = jgc.check_grad(loss, params, x, y)
    assert report.ok, report
    assert report.n_checked == 5 * 7 + 7 + 7 * 3 + 3
    assert report.n_fail == 0 and report.n_unsure == 0


def test_hand_written_mlp_gradient_passes(dtype):
    params = mlp_params([6, 3], dtype)
    x, y = data((8, 6), (8, 3), dtype)

    def grad(p, x, y):
        r = 2 * (x @ p[0]["w"] + p[0]["b"] - y) / y.size
        return [{"w": x.T @ r, "b": r.sum(0)}]

    assert jgc.check_grad(mlp_loss, params, x, y, grad=grad).ok


def test_convolution_passes(dtype):
    params = {
        "kernel": normal([3, 0], (4, 2, 3, 3), dtype) * 0.3,  # OIHW
        "bias": jnp.zeros((4,), dtype),
    }
    images = normal([3, 1], (2, 2, 6, 6), dtype)  # NCHW

    def loss(p, im):
        out = jax.lax.conv_general_dilated(
            im, p["kernel"], window_strides=(1, 1), padding="SAME"
        )
        out = out + p["bias"][None, :, None, None]
        return jnp.mean(jax.nn.softplus(out) ** 2)

    report = jgc.check_grad(loss, params, images)
    assert report.ok, report


class Layer(NamedTuple):
    w: jax.Array
    b: jax.Array


def test_nested_containers_and_paths():
    params = {
        "layers": [
            Layer(jnp.ones((2, 3)) * 0.1, jnp.zeros(3)),
            Layer(jnp.ones((3, 1)), jnp.ones(1)),
        ],
        "scale": (jnp.array(0.5), {"inner": jnp.arange(3.0)}),
        "step": jnp.array(3, jnp.int32),
        "name": "ignored",
    }
    x = jnp.arange(4.0).reshape(2, 2)

    def loss(p, x):
        h = x
        for layer in p["layers"]:
            h = jnp.tanh(h @ layer.w + layer.b)
        return (
            p["scale"][0] * jnp.sum(h**2)
            + jnp.sum(p["scale"][1]["inner"] ** 3)
            + p["step"]
        )

    report = jgc.check_grad(loss, params, x)
    assert report.ok, report
    paths = [leaf.path for leaf in report.leaves]
    assert "['layers'][0].w" in paths and "['scale'][1]['inner']" in paths
    skipped = {info.path for info in report.skipped}
    assert skipped == {"['name']", "['step']"}
    assert "not checked" in str(report) and "['step'] (int32)" in str(report)


def test_python_float_leaf_and_static_args():
    def loss(p, x, power, name):
        assert name == "cfg"
        return p["a"] * jnp.sum(x**power)

    report = jgc.check_grad(loss, {"a": 2.0}, jnp.arange(3.0), 3, "cfg")
    assert report.ok, report


def test_high_frequency_function_passes():
    # sin(2^10·π·x): a fixed ε=1e-4 has ~2% truncation error here.
    freqs = 2.0 ** jnp.arange(11) * jnp.pi
    params = jnp.linspace(0.1, 0.9, 11)

    def loss(x):
        return jnp.sum(jnp.sin(freqs * x)) + jnp.sum(jnp.cos(freqs * x**2))

    report = jgc.check_grad(loss, params)
    assert report.ok, report


def test_near_a_kink_passes():
    # A ReLU net whose pre-activation is 3e-5 from zero: ±2h steps would
    # straddle the kink for some coordinates; the refinement must still agree.
    w = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    x = jnp.array([[3e-5 - 0.6, 1.0]])  # x @ w[:, 0] + b[0] ≈ 3e-5
    params = {"w": w, "b": jnp.array([0.1, -0.3])}

    def loss(p, x):
        return jnp.sum(jax.nn.relu(x @ p["w"] + p["b"]) ** 2 + x @ p["w"])

    pre = x @ w + params["b"]
    assert 0 < float(pre[0, 0]) < 1e-4
    report = jgc.check_grad(loss, params, x)
    assert report.ok, report


def test_large_magnitude_float32_passes():
    params = 300.0 + 10 * normal(7, (50,), jnp.float32)

    def loss(p):
        return 0.5 * jnp.sum(p**2) / 50 + jnp.sum(jnp.sin(p))  # |J| ≈ 4.5e4

    assert abs(float(loss(params))) > 4e4
    report = jgc.check_grad(loss, params)
    assert report.ok, report


def test_native_precision_float32_passes():
    params = mlp_params([4, 5, 2])
    x, y = data((3, 4), (3, 2))
    report = jgc.check_grad(mlp_loss, params, x, y, precision="native")
    assert report.ok, report
    assert report.settings.reference_dtype == "float32"


def test_the_x64_setting_is_left_as_it_was():
    # The float64 reference runs in a scoped jax.enable_x64: with x64 off it
    # must not stay on; with JAX_ENABLE_X64=1 it must not be switched off.
    before = bool(jax.config.jax_enable_x64)
    default = jnp.zeros(1).dtype
    jgc.check_grad(lambda p: jnp.sum(p**2), jnp.ones(3, jnp.float32))
    assert bool(jax.config.jax_enable_x64) == before
    assert jnp.zeros(1).dtype == default == (jnp.float64 if before else jnp.float32)


def test_numerical_grad_matches_analytic():
    x = jnp.linspace(-1.0, 2.0, 7)
    tree = {"x": x, "n": jnp.array(1, jnp.int32)}
    g, err = jgc.numerical_grad(
        lambda p: jnp.sum(jnp.exp(jnp.sin(p["x"])) * jnp.tanh(p["x"])),
        tree,
        with_error=True,
    )
    xs = np.asarray(x, np.float64)
    exact = np.exp(np.sin(xs)) * (np.cos(xs) * np.tanh(xs) + 1 - np.tanh(xs) ** 2)
    assert g["n"] is None and g["x"].dtype == np.float64
    np.testing.assert_allclose(g["x"], exact, rtol=1e-9, atol=1e-9)
    # The error bar is honest: it covers the actual error.
    assert np.all(np.abs(g["x"] - exact) <= 10 * err["x"] + 1e-15)


def test_relu_exactly_at_a_kink_is_marked_not_failed():
    w = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    x = jnp.array([[-0.5, 1.0]])  # first pre-activation is exactly 0
    params = {"w": w, "b": jnp.array([0.0, 0.1])}

    def loss(p, x):
        return 3.0 * jnp.sum(jax.nn.relu(x @ p["w"] + p["b"]))

    report = jgc.check_grad(loss, params, x)
    assert report.ok, report
    assert report.n_kink == 3 and report.n_fail == 0
    assert {e.where for e in report.kinks()} == {
        "['b'][0]",
        "['w'][0, 0]",
        "['w'][1, 0]",
    }
    assert "kink" in str(report).splitlines()[0]


def test_a_gradient_outside_the_one_sided_slopes_fails_at_a_kink():
    report = jgc.check_grad(
        lambda t: jnp.sum(jnp.abs(t)),
        jnp.array([0.0, 1.0]),
        grad=lambda t: jnp.array([3.0, 1.0]),
    )
    assert report.leaves[0].entry(0).status == "FAIL"  # |x| at 0: slopes -1 and 1
    assert report.leaves[0].entry(1).status == "pass"


def test_smooth_functions_have_no_kinks():
    params = mlp_params([5, 7, 3])
    x, y = data((4, 5), (4, 3))

    def grad(p, x, y):  # every entry off, so every entry is refined
        return jax.tree_util.tree_map(lambda g: g * 1.5, jax.grad(mlp_loss)(p, x, y))

    report = jgc.check_grad(mlp_loss, params, x, y, grad=grad)
    assert report.n_kink == 0 and report.n_fail > 0


def test_a_rule_that_jit_cannot_trace_is_differentiated_eagerly():
    # The backward pass branches on a concrete value: fine eagerly, an error
    # under jit. The gradient under test is taken compiled when possible and
    # eagerly otherwise; the sweeps only evaluate the (traceable) forward.
    @jax.custom_vjp
    def scaled(x):
        return 3.0 * x

    def bwd(_, g):
        if float(jnp.max(jnp.abs(g))) > 1e9:  # concrete only outside jit
            raise ValueError("huge cotangent")
        return (3.0 * g,)

    scaled.defvjp(lambda x: (scaled(x), None), bwd)
    loss = lambda p: jnp.sum(jnp.sin(scaled(p)))  # noqa: E731
    x = jnp.linspace(-1.0, 1.0, 7)
    with pytest.raises(jax.errors.ConcretizationTypeError):
        jax.jit(jax.grad(loss))(x)
    assert jgc.check_grad(loss, x).ok

    def wrong(_, g):
        float(jnp.max(g))
        return (-3.0 * g,)

    scaled.defvjp(lambda x: (scaled(x), None), wrong)
    assert jgc.check_grad(loss, x).n_fail == 7


def test_small_leaves_of_two_dtypes_in_native_precision():
    # Small leaves share a compiled sweep per dtype; float32 and float64
    # leaves are never mixed in one.
    with jax.enable_x64(True):
        params = {
            "a32": jnp.linspace(0.1, 0.9, 5, dtype=jnp.float32),
            "b32": jnp.linspace(-0.5, 0.5, 3, dtype=jnp.float32),
            "a64": jnp.linspace(0.2, 0.8, 4),
            "b64": jnp.linspace(-0.3, 0.3, 2),
        }

        def loss(p):
            s32 = jnp.sum(jnp.tanh(p["a32"])) * jnp.sum(p["b32"] ** 2)
            s64 = jnp.sum(jnp.sin(p["a64"])) + jnp.sum(jnp.exp(p["b64"]))
            return s32.astype(jnp.float64) + s64

        assert jgc.check_grad(loss, params, precision="native").ok

        def grad(p):
            g = jax.grad(loss)(p)
            return {**g, "a64": g["a64"].at[2].multiply(1.001)}

        r = jgc.check_grad(loss, params, precision="native", grad=grad)
    assert [(e.path, e.index) for e in r.failures()] == [("['a64']", (2,))]
