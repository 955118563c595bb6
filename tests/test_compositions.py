"""check_compositions: a rule's derivative under jit, vmap, scan, remat and the
other modes, against the same derivative run eagerly."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc


@jax.custom_vjp
def softplus(x):
    return jnp.logaddexp(x, 0.0)


softplus.defvjp(lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


@jax.custom_vjp
def softplus_numpy_bwd(x):
    return jnp.logaddexp(x, 0.0)


def _numpy_bwd(x, g):  # NumPy on the residual: fine eagerly, fails when traced
    return (g * np.asarray(jax.nn.sigmoid(x)),)


softplus_numpy_bwd.defvjp(lambda x: (softplus_numpy_bwd(x), x), _numpy_bwd)


@jax.custom_vjp
def center(x):
    return x - jnp.mean(x)


center.defvjp(lambda x: (center(x), None), lambda _, g: (g - jnp.mean(g),))


def _centered(g):
    return (g - np.mean(g)).astype(g.dtype)


@jax.custom_vjp
def center_callback(x):
    return x - jnp.mean(x)


def _callback_bwd(_, g):
    # A host kernel written for one example; under vmap it receives the whole
    # batch ("expand_dims") and its mean runs over the batch axis too.
    out = jax.ShapeDtypeStruct(g.shape, g.dtype)
    return (jax.pure_callback(_centered, out, g, vmap_method="expand_dims"),)


center_callback.defvjp(lambda x: (center_callback(x), None), _callback_bwd)


@jax.custom_jvp
def sine(x):
    return jnp.sin(x)


sine.defjvp(lambda p, t: (jnp.sin(p[0]), jnp.cos(p[0]) * t[0]))


@jax.custom_jvp
def sine_nonlinear(x):
    return jnp.sin(x)


# Right for every tangent JAX passes forward, but not linear in t: JAX cannot
# transpose it, so reverse mode of this rule is broken.
sine_nonlinear.defjvp(
    lambda p, t: (jnp.sin(p[0]), jnp.cos(p[0]) * t[0] + 0.0 * t[0] ** 2)
)

X = [-1.5, 0.25, 2.0]
ROWS = ("jit", "vmap", "lax.scan", "jax.checkpoint", "jax.linear_transpose")


@functools.cache
def _numpy_bwd_report():
    return jgc.check_compositions(softplus_numpy_bwd, jnp.array(X))


def test_correct_custom_vjp_passes_every_row(dtype):
    report = jgc.check_compositions(softplus, jnp.array(X, dtype))
    assert report.ok, report
    assert report.kind == "vjp"
    for name in ROWS:
        assert report.row(name).status == "ok", report
    # JAX has no forward mode for a custom_vjp: a fact, not a failure.
    assert report.row("jvp").status == "not defined"
    assert report.row("jax.linearize").status == "not defined"
    assert "allowance" in report.row("vmap").detail
    shard = report.row("shard_map").status
    assert shard == ("ok" if len(jax.devices()) > 1 else "skipped")


def test_plain_function_passes_every_row_including_forward_mode():
    x, w = jnp.array([[0.5, -1.0, 2.0]]), jnp.array([[0.3], [0.2], [-0.4]])
    report = jgc.check_compositions(lambda x, w: jnp.tanh(x @ w), x, w)
    assert report.ok, report
    assert report.row("jvp").status == "ok"
    assert report.row("jax.linearize").status == "ok"


def test_vmap_bug_in_a_callback_shows_in_the_vmap_row_only():
    report = jgc.check_compositions(center_callback, jnp.array([1.0, 2.0, 4.0]))
    assert not report.ok
    assert report.row("vmap").status == "FAIL", report
    assert "beyond it" in report.row("vmap").detail
    for name in ("jit", "lax.scan", "jax.checkpoint"):
        assert report.row(name).status == "ok", report
    assert "vmap" in str(report).splitlines()[0]


def test_same_rule_without_the_callback_passes(dtype):
    report = jgc.check_compositions(center, jnp.array([1.0, 2.0, 4.0], dtype))
    assert report.ok, report


def test_numpy_in_the_bwd_fails_every_traced_row_with_the_error():
    report = _numpy_bwd_report()
    assert not report.ok
    for name in ("jit", "vmap", "lax.scan", "jax.checkpoint"):
        row = report.row(name)
        assert row.status == "FAIL" and "TracerArrayConversionError" in row.detail


def test_custom_jvp_rows_and_a_tangent_nonlinear_rule():
    good = jgc.check_compositions(sine, jnp.array(X))
    assert good.ok and good.kind == "jvp", good
    assert good.row("vjp (reverse mode)").status == "ok"
    assert good.row("jax.linearize").status == "ok"
    bad = jgc.check_compositions(sine_nonlinear, jnp.array(X))
    assert bad.row("jax.linearize").status == "ok"  # forward mode is fine
    assert bad.row("jax.linear_transpose").status == "FAIL", bad
    assert bad.row("vjp (reverse mode)").status == "FAIL"
    assert not bad.ok


def test_report_renders_and_assert_raises():
    report = _numpy_bwd_report()
    text, html = str(report), report._repr_html_()
    assert text.startswith("check_compositions: FAILED under jit")
    assert "not defined" in text and "TracerArrayConversionError" in html
    assert "failed_rows=4" in repr(report)
    with pytest.raises(jgc.GradCheckError) as e:
        jgc.assert_compositions(softplus_numpy_bwd, jnp.array(X))
    assert e.value.report.row("jit").status == "FAIL"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="`batch`"):
        jgc.check_compositions(softplus, jnp.array(X), batch=1)
    with pytest.raises(ValueError, match="`kind`"):
        jgc.check_compositions(softplus, jnp.array(X), kind="hvp")
    with pytest.raises(KeyError, match="rows are"):
        _numpy_bwd_report().row("pmap")
