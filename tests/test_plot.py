"""Report.plot / plot_report: one strip per leaf, failures above the line at 1."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import data, mlp_loss, mlp_params
from jgradcheck._report.plot import error_ratio

matplotlib.use("Agg")


def _one_wrong_entry(**options):
    params = mlp_params([5, 4, 2])
    x, y = data((3, 5), (3, 2))

    def grad(p, x, y):
        g = jax.grad(mlp_loss)(p, x, y)
        g[1]["w"] = g[1]["w"].at[2, 1].multiply(-1.0)
        return g

    return jgc.check_grad(mlp_loss, params, x, y, grad=grad, **options)


def _points(ax):
    return [c.get_offsets() for c in ax.collections]


@pytest.mark.parametrize("explicit", [False, True])
def test_strips_per_leaf_and_the_failure_above_one(explicit):
    options = {"rtol": 1e-3} if explicit else {}
    report = _one_wrong_entry(**options)
    assert report.n_fail == 1
    ax = report.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        leaf.path for leaf in report.leaves
    ]
    # One scatter per status present (pass, FAIL), every checked entry drawn.
    labels = [c.get_label() for c in ax.collections]
    assert labels == [f"pass ({report.n_checked - 1})", "FAIL (1)"]
    assert sum(len(p) for p in _points(ax)) == report.n_checked
    fail_xy = _points(ax)[1]
    leaf_no = [leaf.path for leaf in report.leaves].index("[1]['w']")
    assert abs(fail_xy[0, 0] - leaf_no) <= 0.3 and fail_xy[0, 1] > 1.0
    assert np.all(_points(ax)[0][:, 1] <= 1.0)
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 1  # the line at 1
    assert "FAILED" in ax.get_title()
    plt.close("all")


def test_ratio_above_one_is_exactly_the_failures():
    for options in ({}, {"rtol": 1e-3}, {"atol": 1e-6}):
        report = _one_wrong_entry(**options)
        explicit = bool(options)
        for leaf in report.leaves:
            np.testing.assert_array_equal(
                error_ratio(leaf, explicit) > 1.0, leaf.status == 1
            )


def test_existing_axes_and_passing_report():
    params = mlp_params([3, 2])
    x, y = data((4, 3), (4, 2))
    report = jgc.check_grad(mlp_loss, params, x, y)
    fig, (ax1, ax2) = plt.subplots(1, 2)
    out = jgc.plot_report(report, ax2)
    assert out is ax2 and not ax1.collections
    assert [c.get_label() for c in ax2.collections] == [f"pass ({report.n_checked})"]
    assert "passed" in ax2.get_title()
    plt.close(fig)


def test_named_terms_get_their_own_strips():
    def loss(p, x, y):
        return {"data": mlp_loss([p], x, y), "l2": 50.0 * jnp.sum(p["w"] ** 2)}

    def grad(p, x, y):
        g = jax.grad(lambda q: loss(q, x, y)["data"])(p)
        return {
            "data": {"w": g["w"] * 1.01, "b": g["b"]},
            "l2": {"w": 100.0 * p["w"], "b": jnp.zeros_like(p["b"])},
        }

    params = mlp_params([3, 2])[0]
    x, y = data((4, 3), (4, 2))
    report = jgc.check_grad(loss, params, x, y, grad=grad)
    ax = report.plot()
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == [
        "sum: ['b']",
        "sum: ['w']",
        "'data': ['b']",
        "'data': ['w']",
        "'l2': ['b']",
        "'l2': ['w']",
    ]
    assert sum(len(p) for p in _points(ax)) == 3 * report.n_checked
    assert len(report.plot(terms=False).get_xticklabels()) == 2
    plt.close("all")


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        _one_wrong_entry(coords=4).plot()


def test_importing_jgradcheck_does_not_import_matplotlib():
    code = "import sys, jgradcheck; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
