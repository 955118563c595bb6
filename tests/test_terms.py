"""Named terms: one Options object reaches the sum's and every term's check."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._checks.grad import check_grad_with
from jgradcheck._options import Options

W = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
X = jnp.linspace(0.0, 2.0, 8).reshape(4, 2)


def fit(p, x):
    return jnp.sum(jnp.tanh(x @ p["w"]) ** 2)


def l2(p, x):
    return 0.1 * jnp.sum(p["w"] ** 2)


def named(p, x):
    return {"fit": fit(p, x), "l2": l2(p, x)}


def total(p, x):
    return fit(p, x) + l2(p, x)


@pytest.mark.parametrize("how", ["dict loss", "terms="])
def test_every_term_is_checked_with_the_callers_options(how):
    options = dict(method="central4", mode="fast", directions=2, coords=3, key=7)
    if how == "dict loss":
        report = jgc.check_grad(named, {"w": W}, X, **options)
    else:
        terms = {"fit": fit, "l2": l2}
        report = jgc.check_grad(total, {"w": W}, X, terms=terms, **options)
    assert report.ok, report
    reports = [report] + [r for _, r in report.terms]
    assert [name for name, _ in report.terms] == ["fit", "l2"]
    for r in reports:
        s = r.settings
        assert (s.method, s.mode, s.directions) == ("central4", "fast", 2)


def test_a_wrong_term_fails_with_the_same_options_and_the_other_passes():
    def grad(p, x):
        g = {k: jax.grad(f)(p, x) for k, f in (("fit", fit), ("l2", l2))}
        g["fit"] = {"w": 1.01 * g["fit"]["w"]}
        return g

    report = jgc.check_grad(named, {"w": W}, X, grad=grad, method="central")
    terms = dict(report.terms)
    assert not report.ok and not terms["fit"].ok and terms["l2"].ok
    assert all(r.settings.method == "central" for r in terms.values())


def test_check_grad_with_is_check_grad_with_options_built_once():
    opts = Options.build(method="richardson", rtol=1e-6, atol=1e-9)
    direct = check_grad_with(total, {"w": W}, (X,), opts=opts)
    public = jgc.check_grad(
        total, {"w": W}, X, method="richardson", rtol=1e-6, atol=1e-9
    )
    assert direct.ok and public.ok
    assert direct.settings == public.settings
    for a, b in zip(direct.leaves, public.leaves, strict=True):
        assert a.checked == b.checked == 6
        assert np.array_equal(a.numeric, b.numeric)
        assert np.array_equal(a.status, b.status)
