"""``reference=``: a rule judged against JAX's derivative of a plain reference.

The flash-attention test: ``|rule − ref64| ≤ k·max|ref_native − ref64| + floor``
per leaf and entry, with float64 finite differences arbitrating where the
reference itself is wrong. Every "must catch" has a "must pass" twin.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc

SEQ, D = 8, 8
F32 = jnp.float32


def attention_reference(q, k, v):
    """softmax(q kᵀ/√d) v, plain jnp in the inputs' dtype."""
    s = (q @ k.T) / math.sqrt(q.shape[-1])
    return jax.nn.softmax(s, axis=-1) @ v


def make_attention(bug: str | None = None):
    """A bfloat16 attention with float32 accumulation and a hand-written VJP.

    It accumulates in ``promote_types(dtype, float32)``: float32 for bfloat16
    inputs, float64 when the check evaluates it at float64 (a kernel that
    hard-codes float32 would make the float64 finite differences float32).
    ``bug``: ``"scale"`` forgets the 1/√d in the backward pass,
    ``"softmax"`` the softmax Jacobian's ``− Σ p·dp`` term.
    """
    scale = 1.0 / math.sqrt(D)

    def forward(q, k, v):
        acc = jnp.promote_types(q.dtype, F32)
        s = jnp.einsum("id,jd->ij", q, k, preferred_element_type=acc) * scale
        p = jax.nn.softmax(s, axis=-1)
        o = jnp.einsum("ij,jd->id", p, v.astype(acc))
        return o.astype(q.dtype), p

    @jax.custom_vjp
    def attention(q, k, v):
        return forward(q, k, v)[0]

    def fwd(q, k, v):
        o, p = forward(q, k, v)
        return o, (q, k, v, p)

    def bwd(res, g):
        q, k, v, p = res
        g32, q32, k32, v32 = (x.astype(p.dtype) for x in (g, q, k, v))
        dv = p.T @ g32
        dp = g32 @ v32.T
        if bug == "softmax":
            ds = p * dp
        else:
            ds = p * (dp - jnp.sum(p * dp, axis=-1, keepdims=True))
        if bug != "scale":
            ds = ds * scale
        dq, dk = ds @ k32, ds.T @ q32
        return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)

    attention.defvjp(fwd, bwd)
    return attention


def _qkv(dtype=jnp.bfloat16):
    ks = jax.random.split(jax.random.PRNGKey(3), 3)
    return tuple(jax.random.normal(k, (SEQ, D)).astype(dtype) for k in ks)


@pytest.mark.parametrize("with_reference", [False, True])
def test_bf16_attention_with_float32_accumulation_passes(with_reference):
    ref = attention_reference if with_reference else None
    report = jgc.check_vjp(make_attention(), *_qkv(), reference=ref, localize=0)
    assert report.ok, report
    if with_reference:
        assert report.reference is not None and report.reference.native == "bfloat16"
        # float32 accumulation: more accurate than the plain bfloat16 reference
        assert max(leaf.ratio for leaf in report.reference.leaves) < 2.0


@pytest.mark.parametrize("bug", ["scale", "softmax"])
@pytest.mark.parametrize("with_reference", [False, True])
def test_bf16_attention_bugs_are_caught(bug, with_reference):
    ref = attention_reference if with_reference else None
    report = jgc.check_vjp(make_attention(bug), *_qkv(), reference=ref, localize=0)
    assert not report.ok
    assert not all(d.ok for d in report.dot_tests)
    if with_reference:
        r = report.reference
        assert r.reference_agrees, r.evidence  # the reference is fine, the rule not
        assert not r.ok
        bad = [leaf for leaf in r.leaves if not leaf.ok]
        assert bad and all(leaf.ratio > 2.0 for leaf in bad)
        # q and k carry the bug; v's cotangent does not depend on it
        assert all(not leaf.label.startswith("[2]") for leaf in bad)
        assert "against the reference attention_reference" in str(report)


def test_a_wrong_reference_is_blamed_not_the_rule():
    def wrong_reference(q, k, v):  # forgets 1/√d
        return jax.nn.softmax(q @ k.T, axis=-1) @ v

    report = jgc.check_vjp(
        make_attention(), *_qkv(), reference=wrong_reference, localize=0
    )
    assert all(d.ok for d in report.dot_tests)  # the rule agrees with FD
    r = report.reference
    assert not r.reference_agrees and not r.ok and not report.ok
    assert "the reference is wrong, not the rule" in r.verdict
    assert any("reference is wrong" in line for line in report.failures())
    assert report.to_dict()["reference"]["reference_agrees"] is False


def test_a_correct_reference_twin_agrees_with_finite_differences():
    report = jgc.check_vjp(
        make_attention(), *_qkv(), reference=attention_reference, localize=0
    )
    assert report.reference.reference_agrees
    assert "agrees with the finite differences" in report.reference.evidence


def test_check_jvp_with_reference():
    @jax.custom_jvp
    def gelu(x):
        return jax.nn.gelu(x, approximate=False)

    def tangent(slope):
        def rule(p, t):
            (x,), (tx,) = p, t
            return gelu(x), slope(x) * tx

        return rule

    def right(x):
        x32 = x.astype(F32)
        cdf = 0.5 * (1 + jax.lax.erf(x32 / jnp.sqrt(2.0)))
        return (cdf + x32 * jnp.exp(-(x32**2) / 2) / jnp.sqrt(2 * jnp.pi)).astype(
            x.dtype
        )

    x = jnp.linspace(-2.0, 2.0, 9).astype(jnp.bfloat16)
    ref = lambda x: jax.nn.gelu(x, approximate=False)  # noqa: E731
    gelu.defjvp(tangent(right))
    good = jgc.check_jvp(gelu, x, reference=ref)
    assert good.ok, good
    gelu2 = jax.custom_jvp(lambda x: jax.nn.gelu(x, approximate=False))
    gelu2.defjvp(tangent(lambda x: 0.5 * right(x)))
    bad = jgc.check_jvp(gelu2, x, reference=ref, localize=0)
    assert not bad.ok and not bad.reference.ok and bad.reference.reference_agrees


def test_check_grad_with_reference_in_bfloat16():
    attention, broken = make_attention(), make_attention("scale")
    q, k, v = _qkv()

    def loss_with(attn):
        return lambda p, v: jnp.sum(attn(p["q"], p["k"], v).astype(F32) ** 2)

    ref = loss_with(attention_reference)
    good = jgc.check_grad(loss_with(attention), {"q": q, "k": k}, v, reference=ref)
    assert good.reference.ok and good.reference.native == "bfloat16", good
    bad = jgc.check_grad(loss_with(broken), {"q": q, "k": k}, v, reference=ref)
    assert not bad.reference.ok and bad.reference.reference_agrees
    assert not bad.ok
    assert "html" not in str(bad)
    assert "against the reference" in bad._repr_html_()


def test_reference_arguments_are_validated():
    x = jnp.ones(3)
    with pytest.raises(TypeError, match="`reference`"):
        jgc.check_vjp(jnp.sin, x, reference=3)
    with pytest.raises(ValueError, match="`reference_factor`"):
        jgc.check_vjp(jnp.sin, x, reference=jnp.sin, reference_factor=0)
    with pytest.raises(ValueError, match="what `f` returns"):
        jgc.check_vjp(jnp.sin, x, reference=lambda x: x[:2])


def test_reference_factor_is_the_allowed_multiple():
    q, k, v = _qkv()
    loose = jgc.check_vjp(
        make_attention(),
        q,
        k,
        v,
        reference=attention_reference,
        reference_factor=4.0,
        localize=0,
    )
    leaf = loose.reference.leaves[0]
    scale_ulp = leaf.allowed - 4.0 * leaf.ref_err
    assert 0 <= scale_ulp < 0.1 * leaf.allowed + 1.0
    assert np.isfinite(leaf.ratio)


def _dense64(rel_error: float):
    """A float64 tanh layer whose VJP sums in another order than autodiff
    (einsum), with ``rel_error`` planted in one entry of dW."""

    @jax.custom_vjp
    def layer(x, w):
        return jnp.tanh(x @ w)

    def fwd(x, w):
        y = jnp.tanh(x @ w)
        return y, (x, w, y)

    def bwd(res, g):
        x, w, y = res
        d = g * (1 - y * y)
        dw = jnp.einsum("bi,bj->ij", x, d)
        return jnp.einsum("bj,ij->bi", d, w), dw.at[2, 3].multiply(1 + rel_error)

    layer.defvjp(fwd, bwd)
    return layer


@pytest.mark.parametrize("rel_error", [0.0, 1e-6])
def test_float64_rule_against_its_reference(rel_error):
    # In float64 the reference at the native precision is ref64 itself (its
    # error is 0): the rounding floor decides. A correct rule summing in
    # another order passes; a 1e-6 error in one entry does not.
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((8, 16)))
        w = jnp.asarray(rng.standard_normal((16, 16)) * 0.3)
        report = jgc.check_vjp(
            _dense64(rel_error), x, w, reference=lambda x, w: jnp.tanh(x @ w)
        )
    assert report.reference is not None
    assert report.reference.ok == (rel_error == 0.0), report
    if rel_error == 0.0:
        assert "within the rounding floor" in str(report)


@pytest.mark.parametrize("bug", [None, "scale"])
def test_float16_attention_against_its_reference(bug):
    # float16 too: the correct kernel passes reference= with the reference at
    # float16 as the yardstick; the missing 1/√d is caught on q and k.
    report = jgc.check_vjp(
        make_attention(bug),
        *_qkv(jnp.float16),
        reference=attention_reference,
        localize=0,
    )
    assert report.reference is not None and report.reference.native == "float16"
    assert report.ok == (bug is None), report
    assert report.reference.ok == (bug is None), report
