"""Reduced matmul precision, not a wrong rule (issue 12, item 5).

A float32 ``dot_general`` keeps its dtype whatever its precision, but on a
TPU its DEFAULT precision rounds the operands to bfloat16, and on an NVIDIA
GPU to TensorFloat-32. A rule computed that way fails against a
full-precision reference although its formula is right; the failing check
says so when the reference, with its matrix products' operands rounded
alike, agrees with the rule (``jgradcheck._engine.matmul_precision``).

There is no accelerator here: the rules under test emulate the platform's
rounding with integer operations on the float32 bits (nothing in their
jaxprs is narrower than float32, so the dtype path cannot see it), and the
check is told which platform to explain for (``as_on``). Every "explained"
rule has a wrong-formula twin that must not be, and on the CPU, where the
table says full precision, nothing is claimed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax import lax

import jgradcheck as jgc
from jgradcheck._engine.matched import matmul_formats, matmuls_rounded, reduced_matmuls
from jgradcheck._engine.matmul_precision import (
    as_on,
    effective,
    operand_format,
    round_bf16,
    round_bf16_3x,
    round_tf32,
)

P = lax.Precision


def _keep_bits(v, drop):
    """``v`` with its ``drop`` low mantissa bits rounded off (to nearest
    even) by integer operations: the test's own emulation of a narrow pass."""
    u = lax.bitcast_convert_type(v, jnp.uint32)
    half, low = (1 << (drop - 1)) - 1, (1 << drop) - 1
    keep = jnp.uint32(0xFFFFFFFF ^ low)
    u = (u + jnp.uint32(half) + ((u >> drop) & jnp.uint32(1))) & keep
    return lax.bitcast_convert_type(u, jnp.float32)


def dense_reference(w, x):
    """tanh(x @ w) with a full float32 product on every platform."""
    return jnp.tanh(jnp.dot(x, w, precision=P.HIGHEST))


def _dense(drop: int, bug: float):
    """``dense_reference`` with a VJP whose two products round their operands
    to ``23 − drop`` mantissa bits (16: bfloat16, 13: TensorFloat-32, 0:
    none) at ``precision=DEFAULT``; ``bug``: dw[0, 0] off by that fraction."""

    @jax.custom_vjp
    def dense(w, x):
        return dense_reference(w, x)

    def fwd(w, x):
        y = dense_reference(w, x)
        return y, (w, x, y)

    def bwd(res, g):
        w, x, y = res
        d = g * (1 - y**2)
        if drop:
            cut = lambda v: _keep_bits(v, drop)  # noqa: E731
            dw = jnp.dot(cut(x).T, cut(d), precision=P.DEFAULT)
            dx = jnp.dot(cut(d), cut(w).T, precision=P.DEFAULT)
        else:
            dw = jnp.dot(x.T, d, precision=P.HIGHEST)
            dx = jnp.dot(d, w.T, precision=P.HIGHEST)
        return dw.at[0, 0].multiply(1 + bug), dx

    dense.defvjp(fwd, bwd)
    return dense


BF16_PASS, BF16_BUG = _dense(16, 0.0), _dense(16, 0.1)
TF32_PASS, TF32_BUG = _dense(13, 0.0), _dense(13, 0.01)
EXACT = _dense(0, 0.0)


def _data():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    w = jax.random.normal(k1, (4, 4), jnp.float32) / 2
    x = jax.random.normal(k2, (4, 4), jnp.float32)
    return w, x


# bfloat16: 1% of dw[0, 0] is 1.3 bfloat16 ulps of the leaf's scale
# (rounding, by definition), so the wrong formula is off by 10%; TF32 has
# three more bits, and 1% is caught.
@pytest.mark.parametrize(
    ("platform", "rule", "fmt", "explained"),
    [
        ("tpu", BF16_PASS, "bfloat16", True),
        ("tpu", BF16_BUG, "bfloat16", False),
        ("gpu", TF32_PASS, "tensorfloat32", True),
        ("gpu", TF32_BUG, "tensorfloat32", False),
    ],
    ids=["tpu-bf16", "tpu-bug", "gpu-tf32", "gpu-bug"],
)
def test_reduced_matmul_explained_or_not(platform, rule, fmt, explained):
    with as_on(platform):
        report = jgc.check_vjp(rule, *_data(), reference=dense_reference, localize=0)
    assert not report.ok  # the verdict stays FAIL: the rule loses digits
    m = report.precision_match
    assert m is not None and m.platform == platform and m.dtype == fmt
    assert m.where == (("dot_general precision=DEFAULT", 2, 0),)
    assert m.other == "float32"
    assert m.agrees == explained, m.line
    if explained:
        assert m.rule_err <= m.allowed < m.rule_err * 10
        assert m.line.startswith(f"precision mismatch: on {platform} the rule's")
        assert "precision=jax.lax.Precision.HIGHEST" in m.line
        assert m.line in report.failures()
    else:
        assert m.rule_err > m.allowed
        assert m.line.startswith("not a precision mismatch")
        assert "precision does not explain" in str(report)
    assert report.to_dict()["precision_match"]["platform"] == platform


def test_on_cpu_full_precision_nothing_is_claimed():
    report = jgc.check_vjp(BF16_PASS, *_data(), reference=dense_reference, localize=0)
    assert not report.ok  # the emulated rounding is real on any platform
    assert report.precision_match is None
    assert "precision mismatch" not in str(report)


def test_exact_rule_passes_with_no_note_as_on_tpu():
    with as_on("tpu"):
        report = jgc.check_vjp(EXACT, *_data(), reference=dense_reference, localize=0)
    assert report.ok, report
    assert report.precision_match is None


def test_platform_table():
    both = {p: (p, p) for p in P}
    assert [operand_format(both[p], platform="cpu") for p in P] == [None] * 3
    assert [operand_format(both[p], platform="tpu") for p in P] == [
        "bfloat16",
        "bfloat16_3x",
        None,
    ]
    assert [operand_format(both[p], platform="gpu") for p in P] == [
        "tensorfloat32",
        "tensorfloat32",
        None,
    ]
    assert operand_format((P.DEFAULT, P.HIGHEST), platform="tpu") is None
    preset = lax.DotAlgorithmPreset
    assert operand_format(preset.BF16_BF16_F32, platform="gpu") == "bfloat16"
    assert operand_format(preset.BF16_BF16_F32, platform="cpu") is None
    assert operand_format(preset.F32_F32_F32, platform="tpu") is None
    assert operand_format(both[P.DEFAULT], platform="metal") is None
    assert effective(None, "tensorfloat32") == (P.HIGH, P.HIGH)
    assert effective(None, "BF16_BF16_F32") is preset.BF16_BF16_F32
    with pytest.raises(ValueError, match="`platform` must be one of"):
        with as_on("TPU"):
            pass


def _f(a):
    return jnp.sin(a @ a)


def test_default_matmul_precision_reaches_the_count():
    a = jnp.ones((2, 2), jnp.float32)
    plain = jax.make_jaxpr(jax.grad(lambda a: jnp.sum(_f(a))))(a)
    with jax.default_matmul_precision("bfloat16"):
        fast = jax.make_jaxpr(jax.grad(lambda a: jnp.sum(_f(a))))(a)
    with jax.default_matmul_precision("float32"):
        full = jax.make_jaxpr(jax.grad(lambda a: jnp.sum(_f(a))))(a)
        # an unset precision is resolved with the config in effect
        assert matmul_formats(plain, platform="tpu") == {
            ("precision=HIGHEST", "float32"): 3
        }
    assert matmul_formats(plain, platform="tpu") == {
        ("precision=DEFAULT", "bfloat16"): 3
    }
    assert matmul_formats(fast, platform="gpu") == {
        ("precision=DEFAULT", "tensorfloat32"): 3
    }
    red = reduced_matmuls(fast, full, platform="tpu")
    assert red is not None and red.format == "bfloat16" and red.other == "float32"
    assert reduced_matmuls(fast, plain, platform="tpu") is None  # as narrow
    assert reduced_matmuls(fast, full, platform="cpu") is None


def test_matmuls_rounded_rounds_only_float32_products():
    a = jnp.array([[1 + 2.0**-9, 0.0], [0.0, 1.0]], jnp.float32)
    g = matmuls_rounded(lambda a: (a @ a, a + 0.0), "bfloat16")
    prod, same = g(a)
    np.testing.assert_array_equal(prod, [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(same, a)  # not a product: untouched
    tf = matmuls_rounded(lambda a: a @ a, "tensorfloat32")(a)
    np.testing.assert_array_equal(tf, a @ a)  # 1 + 2⁻⁹ is a TF32 value


def _bits(*words):
    return np.array(words, np.uint32).view(np.float32)


def test_round_bf16_matches_ml_dtypes_on_every_kind_of_value():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edge = _bits(
        0x3F808000,  # 1 + 2⁻⁸: a tie, to even (down)
        0x3F818000,  # 1 + 3·2⁻⁸: a tie, to even (up)
        0xBF808001,  # just above a tie, negative
        0x00000001,  # the smallest subnormal
        0x807FFFFF,  # the largest subnormal, negative
        0x7F7FFFFF,  # the largest float32: rounds to inf
        0x7F800000,  # inf
        0xFF800000,  # -inf
        0x7FC00001,  # a NaN
        0x7F800001,  # a signalling NaN whose payload would round away
    )
    x = np.concatenate([x, edge])
    with np.errstate(invalid="ignore"):  # NumPy warns casting NaN
        want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    got = np.asarray(round_bf16(x))
    assert (np.isnan(got) == np.isnan(want)).all()
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(got[ok].view(np.uint32), want[ok].view(np.uint32))
    np.testing.assert_array_equal(
        got[:-10], np.asarray(jnp.asarray(x[:-10]).astype(jnp.bfloat16), np.float32)
    )


def test_round_tf32_hand_computed():
    one = 0x3F800000
    x = _bits(
        one + 0x1000,  # 1 + 2⁻¹¹: a tie, to even (1)
        one + 0x3000,  # 1 + 3·2⁻¹¹: a tie, to even (1 + 2⁻⁹)
        one + 0x1001,  # just above the tie: up (1 + 2⁻¹⁰)
        0x80000000 | (one + 0x0FFF),  # -(just below the tie): down (-1)
        0x00001000,  # a subnormal tie (2⁻¹³⁷), to even: 0
        0x00003000,  # a subnormal tie, to even: up (2⁻¹³⁵)
        0x7F7FFFFF,  # the largest float32: inf
        0xFF800000,  # -inf
        0x7F800001,  # a NaN with only low payload bits: still NaN
    )
    got = np.asarray(round_tf32(x))
    want = [1.0, 1 + 2.0**-9, 1 + 2.0**-10, -1.0, 0.0, 2.0**-135, np.inf, -np.inf]
    np.testing.assert_array_equal(got[:-1], np.array(want, np.float32))
    assert np.isnan(got[-1])


def test_round_bf16_3x_keeps_sixteen_bits():
    x = jnp.array([1 / 3, -np.pi, 1e-30, np.inf, np.nan], jnp.float32)
    got = np.asarray(round_bf16_3x(x))
    exact = np.array([1 / 3, -np.pi, 1e-30])
    rel = np.abs(got[:3] - exact) / np.abs(exact)
    assert (rel <= 2.0**-16).all() and (rel > 2.0**-24).any()
    assert got[3] == np.inf and np.isnan(got[4])
