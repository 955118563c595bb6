"""Reports say what each number is and point at the bug; the demo and CLI work."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jgradcheck as jgc
from helpers import data, mlp_loss, mlp_params
from jgradcheck._interfaces import cli as _cli
from jgradcheck._interfaces import demo as _demo


def _broken_report():
    params = mlp_params([5, 4, 2])
    x, y = data((3, 5), (3, 2))

    def grad(p, x, y):
        g = jax.grad(mlp_loss)(p, x, y)
        g[1]["w"] = g[1]["w"].at[2, 1].multiply(-1.0)
        return g

    return jgc.check_grad(mlp_loss, params, x, y, grad=grad)


def test_text_report_names_columns_and_the_bad_entry():
    report = _broken_report()
    text = str(report)
    assert text.startswith("gradient check FAILED: 1 of")
    for needle in [
        "a   = gradient under test",
        "n   = central finite differences in float64",
        "err = error bar of n",
        "a (under test)",
        "n (finite diff)",
        "±err",
        "[1]['w'][2, 1]",
        "FAIL (1 wrong)",
        "norm ratio",
    ]:
        assert needle in text, needle
    # The worst entry comes first in the entries table.
    entries = text.split("worst entries:")[1].splitlines()
    assert "[1]['w'][2, 1]" in entries[2]


def test_entries_and_leaf_results():
    report = _broken_report()
    (bad,) = report.failures()
    assert bad.path == "[1]['w']" and bad.index == (2, 1) and bad.status == "FAIL"
    assert bad.grad == -bad.numeric or abs(bad.grad + bad.numeric) < 1e-6
    assert bad.rel_err > 1.0 and bad.abs_err > bad.tolerance
    leaf = report.leaf("[1]['w']")
    assert leaf.n_fail == 1 and not leaf.ok and leaf.norm_ratio > 0
    assert len(report.worst(3)) == 3 and report.worst(3)[0] == bad
    assert report.unsure() == ()
    assert "ok=False" in repr(report)


def test_html_report():
    html = _broken_report()._repr_html_()
    assert "<table" in html and "FAILED" in html and "[1][&#x27;w&#x27;][2, 1]" in html


def test_passing_report_shows_closest_calls():
    params = mlp_params([3, 2])
    x, y = data((2, 3), (2, 2))
    text = str(jgc.check_grad(mlp_loss, params, x, y))
    assert text.startswith("gradient check passed: 8 entries agree")
    assert "closest calls" in text


@pytest.mark.parametrize("gap, resolvable", [(1e-8, True), (1e-12, False)])
def test_a_jump_next_to_theta(gap, resolvable):
    # A step of height 1e-3 just right of θ₀. At 1e-8 the default steps
    # straddle it (their differences grow as h shrinks: no Taylor behaviour),
    # so the ladder descends below 1e-8, where J is smooth and the gradient is
    # confirmed. At 1e-12 every step straddles it: never a pass. Either way
    # the huge numeric value there must not loosen the tolerance of the
    # other entries: a 20% error in entry 3 fails.
    def loss(p):
        return jnp.sum(p**2) + 1e-3 * (p[0] > 0.3 + gap)

    def grad(p):
        return (2 * p).at[3].multiply(1.2)

    with jax.enable_x64(True):
        report = jgc.check_grad(loss, jnp.linspace(0.3, 1.0, 8), grad=grad)
    statuses = [report.leaves[0].entry(k).status for k in range(8)]
    assert statuses[3] == "FAIL"
    assert statuses[1:3] + statuses[4:] == ["pass"] * 6
    if resolvable:
        assert statuses[0] == "pass"
    else:
        assert statuses[0] in ("FAIL", "unsure")


def test_demo_finds_the_bug_and_passes_the_fix():
    lines = []
    assert _demo.run(print_fn=lines.append)
    out = "\n".join(lines)
    assert "transpose" in out
    assert "FAILED" in out and "['decoder']" in out
    assert "gradient check passed" in out


def test_cli(capsys):
    assert _cli.main(["demo"]) == 0
    assert "jgradcheck demo" in capsys.readouterr().out
    assert _cli.main([]) == 2
