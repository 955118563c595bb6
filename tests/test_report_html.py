"""The HTML report (Jupyter) carries the diagnosis and the named terms."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jgradcheck as jgc
from helpers import data


def test_html_has_diagnosis_and_failing_term():
    x, y = data((6, 3), (6, 2))

    def loss(p, x, y):
        return {"data": jnp.mean((x @ p["w"] - y) ** 2), "l2": jnp.sum(p["w"] ** 2)}

    def grad(p, x, y):
        g = jax.grad(lambda q: loss(q, x, y)["data"])(p)
        return {"data": {"w": 0.5 * g["w"]}, "l2": {"w": 2 * p["w"]}}

    params = {"w": jnp.ones((3, 2))}
    report = jgc.check_grad(loss, params, x, y, grad=grad)
    page = report._repr_html_()
    assert "FAILED in term &#x27;data&#x27;" in page
    assert "term &#x27;l2&#x27;: ok" in page
    # The failing term's own report is nested, with its diagnosis.
    assert "<b>term &#x27;data&#x27;:</b>" in page and "diagnosis:" in page
    assert "scaled: a ≈ 0.5·n" in page
