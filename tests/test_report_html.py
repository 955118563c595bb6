"""The HTML report (Jupyter) says what the text says: headings, diagnosis, terms."""

from __future__ import annotations

import html

import jax
import jax.numpy as jnp
import pytest

import jgradcheck as jgc
from helpers import data, parse_html


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


def _text_headings(text: str) -> list[str]:
    """Top-level headings of a text report: a line ending in ':' after a blank."""
    lines = text.splitlines()
    return [
        line
        for before, line in zip(lines, lines[1:])
        if not before and line.endswith(":") and not line.startswith(" ")
    ]


def _html_headings(page: str) -> list[str]:
    """Top-level headings of an HTML report ending in ':' (not inside a nested
    report; the symbols and row counts HTML adds left out)."""
    headings = [
        node.text(skip=("jgc-sym", "jgc-count")).strip()
        for node in parse_html(page).find_all("jgc-heading")
        if not node.inside("jgc-nested")
    ]
    return [h for h in headings if h.endswith(":")]


@pytest.mark.parametrize("scale", [1.0, 1.5], ids=["passing", "failing"])
@pytest.mark.parametrize("mode", ["full", "fast"])
def test_html_and_text_say_the_same_headings(mode, scale):
    x, y = data((6, 3), (6, 2))

    def loss(p, x, y):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    def grad(p, x, y):
        g = jax.grad(loss)(p, x, y)
        return {"w": g["w"].at[1, 0].multiply(scale), "b": g["b"]}

    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    report = jgc.check_grad(loss, params, x, y, grad=grad, mode=mode)
    assert report.ok == (scale == 1.0)
    text, page = str(report), report._repr_html_()
    headings = _text_headings(text)
    assert headings == _html_headings(page)
    assert headings[0].startswith("per leaf (norm ratio")
    if report.n_checked:  # a passing fast check compares no single entry
        entries = "worst entries:" if scale != 1.0 else "closest calls (largest"
        assert any(h.startswith(entries) for h in headings), headings
    if mode == "fast":
        directions = (
            "directions that disagree" if scale != 1.0 else "closest directional call"
        )
        assert any(h.startswith(directions) for h in headings), headings
    # The headline and its colour agree with the text's verdict.
    first = text.splitlines()[0]
    assert f"<b>{html.escape(first)}</b>" in page
    (banner,) = [
        b for b in parse_html(page).find_all("jgc-banner") if not b.inside("jgc-nested")
    ]
    assert ("jgc-pass" in banner.classes) == report.ok
    assert ("jgc-fail" in banner.classes) != report.ok
