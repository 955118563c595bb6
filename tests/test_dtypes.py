"""bfloat16 and float16 are first-class: checks, rules, fast mode, determinism.

Every "must catch" test has a "must pass" twin on the same model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._engine.context import deterministic_rel
from jgradcheck._numerics.verdict import rounding_cap, rounding_floor
from tests.helpers import data, mlp_loss, mlp_params

NARROW = [jnp.bfloat16, jnp.float16]


def _mlp(dtype):
    params = mlp_params((4, 8, 3), dtype, seed=0)
    x, y = data((6, 4), (6, 3), dtype, seed=1)
    return params, x, y


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("dtype", NARROW, ids=["bfloat16", "float16"])
def test_narrow_mlp_passes_with_jax_grad(dtype, mode):
    params, x, y = _mlp(dtype)
    r = jgc.check_grad(mlp_loss, params, x, y, mode=mode)
    assert r.ok, str(r)
    assert jnp.dtype(dtype).name in str(r)


@pytest.mark.parametrize("dtype", NARROW, ids=["bfloat16", "float16"])
def test_numerical_grad_of_a_narrow_mlp(dtype):
    params, x, y = _mlp(dtype)
    g = jgc.numerical_grad(mlp_loss, params, x, y)
    with jax.enable_x64(True):
        wide = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, x, y))
        exact = jax.grad(mlp_loss)(*wide)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(exact)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-9)


def _hand_grad(scale_w0: float):
    def grad(params, x, y):
        g = jax.grad(mlp_loss)(params, x, y)
        g[0]["w"] = (g[0]["w"].astype(jnp.float32) * scale_w0).astype(jnp.bfloat16)
        return g

    return grad


def test_bf16_hand_gradient_5_percent_off_in_one_leaf_is_caught_and_localised():
    params, x, y = _mlp(jnp.bfloat16)
    r = jgc.check_grad(mlp_loss, params, x, y, grad=_hand_grad(1.05))
    assert not r.ok
    failing = {leaf.path for leaf in r.leaves if not leaf.ok}
    assert failing == {"[0]['w']"}, str(r)


def test_bf16_hand_gradient_that_is_right_passes():
    params, x, y = _mlp(jnp.bfloat16)
    r = jgc.check_grad(mlp_loss, params, x, y, grad=_hand_grad(1.0))
    assert r.ok, str(r)


def test_allowances_float32_float64_unchanged_narrow_from_their_ulps():
    # float32/float64: the fixed 16 ulps and the 2⁻¹⁰ cap, as before.
    for eps in (2.0**-23, 2.0**-52):
        assert rounding_floor(eps) == 16 * eps
        assert rounding_cap(eps) == 2.0**-10
        assert deterministic_rel(eps) == 2.0**10 * eps
    # bfloat16: a 5% error must be above the floor (it is 2 ulps = 1.6%).
    assert rounding_floor(2.0**-7) < 0.05 / 2
    assert deterministic_rel(2.0**-10) < 0.01  # float16: 0.8%, not 100%


# ----------------------------------------------------------- determinism


def _sum_sin(p):
    return jnp.sum(jnp.sin(3.0 * p) * p)


@pytest.mark.parametrize("precision", ["float64", "native"])
def test_deterministic_float16_loss_is_not_refused(precision):
    p = jnp.linspace(-2.0, 2.0, 200).astype(jnp.float16)
    r = jgc.check_grad(_sum_sin, p, precision=precision, coords=20)
    assert r.n_fail == 0, str(r)


def test_random_float16_loss_is_still_refused():
    rng = np.random.default_rng(0)

    def noisy(p):  # a factor drawn anew at every trace: a different function
        return jnp.sum(p * p) * jnp.float16(1.0 + rng.random())

    p = jnp.linspace(-2.0, 2.0, 20).astype(jnp.float16)
    with pytest.raises(jgc.NondeterministicLossError):
        jgc.check_grad(noisy, p, precision="native")


def test_float32_loss_computing_in_bfloat16_inside_is_not_refused():
    def loss(p):
        return jnp.sum(jnp.tanh(p.astype(jnp.bfloat16)) ** 2).astype(jnp.float32)

    p = jnp.linspace(-2.0, 2.0, 64, dtype=jnp.float32)
    jgc.check_grad(loss, p, precision="native", coords=4)  # must not raise


def _float32_inside(p):
    q = p.astype(jnp.float32)  # a float64 leaf, computed in float32
    return jnp.sum(jnp.sin(q) * q**2).astype(p.dtype)


def test_a_float64_leaf_cast_to_float32_inside_the_loss_is_a_float32_check():
    # Under x64 (scoped here, global with JAX_ENABLE_X64=1): J and the leaf are
    # float64, but the leaf's contribution rounds at float32. float64 steps
    # saw that rounding as noise (10 of 50 entries unsure) and the header said
    # "in float64".
    with jax.enable_x64(True):
        p = jnp.asarray(np.random.default_rng(0).normal(size=50), jnp.float64)
        report = jgc.check_grad(_float32_inside, p)
        assert report.ok, report
        assert report.settings.gradient == (
            "jax.grad(loss) in float32 "
            "(float64 leaves, computed in float32 inside the loss)"
        )

        def wrong(p):  # 1% off in one entry (float32 J resolves ~2e-4 here)
            return jax.grad(_float32_inside)(p).at[7].multiply(1.01)

        bad = jgc.check_grad(_float32_inside, p, grad=wrong)
    assert {e.index for e in bad.failures()} == {(7,)}, bad


def test_a_float32_leaf_cast_to_bfloat16_inside_is_not_a_false_failure():
    # float64 finite differences of a loss that rounds its input to bfloat16
    # are a staircase: steps below its ulps gave n = 0 and "FAIL" on every
    # entry. Probed at bfloat16's steps, its rounding is seen.
    def loss(p):
        return jnp.sum(jnp.sin(p.astype(jnp.bfloat16)) * p**2).astype(jnp.float32)

    p = jnp.asarray(np.random.default_rng(0).normal(size=50), jnp.float32)
    report = jgc.check_grad(loss, p)
    assert report.n_fail == 0, report
    assert "computed in bfloat16 inside the loss" in report.settings.gradient


def test_a_float64_gradient_of_a_float32_leaf_is_judged_at_float32():
    # With x64 on, a float64 bias promotes a hand-written gradient of the
    # float32 weight to float64; x @ w itself ran in float32, so the right
    # formula carries float32's rounding (5e-8 relative): judged at float64's
    # allowance it failed "isolated: 2 wrong entries".
    def loss(p, x, y):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    def grad(p, x, y):
        r = x @ p["w"] + p["b"] - y
        return {"w": 2 * x.T @ r / y.size, "b": 2 * r.sum(0) / y.size}

    x, y = data((16, 3), (16, 2), seed=3)
    with jax.enable_x64(True):
        w = mlp_params([3, 2])[0]["w"]
        p = {"w": w, "b": jnp.asarray([-0.4, 0.7], jnp.float64)}
        assert grad(p, x, y)["w"].dtype == jnp.float64
        report = jgc.check_grad(loss, p, x, y, grad=grad)
        assert report.ok, report
        assert report.settings.gradient == "grad=grad in float32, float64"
        bad = jgc.check_grad(
            loss, p, x, y, grad=lambda *a: {**grad(*a), "w": grad(*a)["w"] * 1.01}
        )
    assert not bad.ok and not bad.leaf("['w']").ok and bad.leaf("['b']").ok


def _dropout(p, key):
    return jnp.sum(jnp.where(jax.random.bernoulli(key, 0.5, p.shape), p / 0.5, 0) ** 2)


def _dropout_f32(p, key):
    keep = jax.random.bernoulli(key, jnp.float32(0.5), p.shape)
    return jnp.sum(jnp.where(keep, p / 0.5, 0) ** 2)


@pytest.mark.skipif(
    jax.config.read("jax_enable_x64"), reason="with x64 on, both draws are float64"
)
@pytest.mark.parametrize("dtype", NARROW, ids=["bfloat16", "float16"])
def test_narrow_randomness_that_depends_on_x64_is_reported(dtype):
    # bernoulli(key, 0.5) draws float64 uniforms under x64: another mask, which
    # 64 ulps of bfloat16 (50% of J) used to excuse.
    params, key = jnp.linspace(0.1, 1.0, 16).astype(dtype), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="different function"):
        jgc.check_grad(_dropout, params, key, coords=4)


@pytest.mark.parametrize("dtype", NARROW, ids=["bfloat16", "float16"])
def test_narrow_dropout_with_an_explicit_dtype_is_the_same_function(dtype):
    params, key = jnp.linspace(0.1, 1.0, 16).astype(dtype), jax.random.PRNGKey(0)
    assert jgc.check_grad(_dropout_f32, params, key, coords=4).ok


# ----------------------------------------------------------------- rules


@jax.custom_vjp
def softplus(x):
    return jnp.logaddexp(x, 0.0)


softplus.defvjp(lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


@jax.custom_vjp
def softplus_wrong(x):
    return jnp.logaddexp(x, 0.0)


softplus_wrong.defvjp(
    lambda x: (softplus_wrong(x), x), lambda x, g: (g * jax.nn.sigmoid(0.8 * x),)
)


@jax.custom_jvp
def softplus_jvp(x):
    return jnp.logaddexp(x, 0.0)


@softplus_jvp.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return softplus_jvp(x), t * jax.nn.sigmoid(x)


@jax.custom_jvp
def softplus_jvp_wrong(x):
    return jnp.logaddexp(x, 0.0)


@softplus_jvp_wrong.defjvp
def _softplus_jvp_wrong(primals, tangents):
    (x,), (t,) = primals, tangents
    return softplus_jvp_wrong(x), t * jax.nn.sigmoid(x) * 1.2


X_BF16 = jnp.linspace(-3.0, 3.0, 9).astype(jnp.bfloat16)


def test_bf16_custom_vjp_passes_and_broken_one_fails():
    assert jgc.check_vjp(softplus, X_BF16).ok
    assert not jgc.check_vjp(softplus_wrong, X_BF16).ok


def test_bf16_custom_jvp_passes_and_broken_one_fails():
    assert jgc.check_jvp(softplus_jvp, X_BF16).ok
    assert not jgc.check_jvp(softplus_jvp_wrong, X_BF16).ok


# ------------------------------------------------------------ refusals


def test_a_dtype_jax_cannot_compute_in_is_refused_by_path():
    leaf = np.ones(3, ml_dtypes.float6_e2m3fn)
    if jgc._dtypes._why_no_arithmetic(np.dtype(leaf.dtype)) is None:  # type: ignore[attr-defined]
        pytest.skip("this backend computes in float6_e2m3fn")
    with pytest.raises(TypeError, match=r"\['w'\].*float6_e2m3fn.*cannot compute"):
        jgc.check_grad(lambda p: jnp.sum(p["w"]), {"w": leaf})


# ----------------------------------------------------------- pytest plugin


def test_plugin_has_a_bfloat16_variant(pytester):
    pytester.makepyfile(
        """
        import jax
        import jax.numpy as jnp
        import pytest


        @jax.custom_vjp
        def cube(x):
            return x**3


        cube.defvjp(lambda x: (cube(x), x), lambda x, g: (3 * g * x**2,))


        @jax.custom_vjp
        def cube_bad(x):
            return x**3


        cube_bad.defvjp(lambda x: (cube_bad(x), x), lambda x, g: (2 * g * x**2,))

        X = jnp.array([1.0, 2.0, -0.5])


        @pytest.mark.jgradcheck(dtypes=("bfloat16",), jit=True)
        def test_good(jgc_variant):
            assert jgc_variant.cast(X).dtype == jnp.bfloat16
            jgc_variant.assert_vjp(cube, X)


        @pytest.mark.jgradcheck(dtypes=(jnp.bfloat16,), jit=False)
        def test_bad(jgc_variant):
            jgc_variant.assert_vjp(cube_bad, X)
        """
    )
    result = pytester.runpytest("-v", "--strict-markers")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines_random(
        [
            "*::test_good[[]bfloat16-jit] PASSED*",
            "*::test_bad[[]bfloat16-eager] FAILED*",
        ]
    )
