"""Report.to_dict and RuleReport.to_dict: plain JSON that says what the report says."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import data, mlp_loss, mlp_params
from jgradcheck._numerics.verdict import UNSURE
from jgradcheck._report.serialize import number


def _round_trip(d):
    """JSON text and back; allow_nan=False proves no NaN/inf float slipped in."""
    return json.loads(json.dumps(d, allow_nan=False))


def _broken_report():
    params = mlp_params([5, 4, 2])
    params[0]["steps"] = jnp.array(7, jnp.int32)  # an integer leaf: skipped
    x, y = data((3, 5), (3, 2))

    def loss(p, x, y):
        return mlp_loss([{k: v for k, v in q.items() if k != "steps"} for q in p], x, y)

    def grad(p, x, y):
        g = jax.grad(mlp_loss)([{"w": q["w"], "b": q["b"]} for q in p], x, y)
        g[1]["w"] = g[1]["w"].at[2, 1].multiply(-1.0)
        g[0]["steps"] = None
        return g

    return jgc.check_grad(loss, params, x, y, grad=grad)


def test_report_dict_matches_the_report():
    report = _broken_report()
    d = _round_trip(report.to_dict())
    assert d["kind"] == "grad" and d["ok"] is False and report.ok is False
    assert d["summary"] == str(report).splitlines()[0]
    assert d["counts"] == {
        "checked": report.n_checked,
        "fail": report.n_fail,
        "unsure": report.n_unsure,
        "kink": report.n_kink,
    }
    assert d["counts"]["fail"] == 1
    s = report.settings
    assert d["settings"] == {
        "gradient": s.gradient,
        "reference_dtype": s.reference_dtype,
        "rel_step": s.rel_step,
        "rounding": s.rounding,
        "rtol": None,
        "atol": None,
        "method": "auto",
        "mode": "full",
        "directions": s.directions,
    }
    assert d["timing"]["evaluations"] == report.timing.evaluations
    assert d["timing"]["sweep_seconds"] == report.timing.sweep_seconds
    assert [leaf["path"] for leaf in d["leaves"]] == [
        leaf.path for leaf in report.leaves
    ]
    for got, leaf in zip(d["leaves"], report.leaves):
        assert got["shape"] == list(leaf.info.shape)
        assert got["dtype"] == "float32" and got["grad_dtype"] == "float32"
        assert (got["checked"], got["total"]) == (leaf.checked, leaf.total)
        assert got["max_abs_err"] == leaf.max_abs_err
        assert got["max_rel_err"] == leaf.max_rel_err
        assert got["norm_ratio"] == leaf.norm_ratio
        assert got["verdict"] == leaf.verdict and got["ok"] == leaf.ok
        assert got["fail"] == leaf.n_fail and got["diagnosis"] == leaf.diagnosis
    (bad,) = d["failures"]
    (entry,) = report.failures()
    assert bad == {
        "where": "[1]['w'][2, 1]",
        "path": "[1]['w']",
        "index": [2, 1],
        "flat_index": entry.flat_index,
        "leaf_index": 5,
        "a": entry.grad,
        "n": entry.numeric,
        "err": entry.error_bar,
        "abs_err": entry.abs_err,
        "rel_err": entry.rel_err,
        "tolerance": entry.tolerance,
        "status": "FAIL",
    }
    assert d["unsure"] == [] and d["kinks"] == [] and d["terms"] == {}
    assert d["skipped"] == [
        {"path": "[0]['steps']", "shape": [], "dtype": "int32", "kind": "fixed"}
    ]


def test_passing_report_and_kinks():
    # |p| at p = 0: jax.grad gives 1, within the one-sided slopes -1 and 1.
    report = jgc.check_grad(lambda p: jnp.sum(jnp.abs(p)), jnp.array([0.0, 2.0]))
    d = _round_trip(report.to_dict())
    assert d["ok"] is True and d["failures"] == [] and d["counts"]["kink"] == 1
    (kink,) = d["kinks"]
    assert kink["where"] == "[0]" and kink["status"] == "kink" and kink["a"] == 1.0
    assert d["leaves"][0]["path"] == "" and d["leaves"][0]["verdict"].endswith(
        "(1 at kinks)"
    )


def test_terms():
    def loss(p):
        return {"data": jnp.sum(jnp.sin(p)), "l2": 50.0 * jnp.sum(p**2)}

    def grad(p):
        return {"data": jnp.cos(p) * 1.001, "l2": 100.0 * p}

    p = jnp.linspace(0.1, 1.0, 4)
    report = jgc.check_grad(loss, p, grad=grad)
    d = _round_trip(report.to_dict())
    assert list(d["terms"]) == ["data", "l2"]
    assert d["ok"] is False and d["summary"].startswith("gradient check FAILED in term")
    assert d["terms"]["data"]["ok"] is False and d["terms"]["l2"]["ok"] is True
    assert d["terms"]["data"]["counts"]["fail"] == report.terms[0][1].n_fail > 0
    assert d["terms"]["data"]["settings"]["gradient"].startswith("grad=grad['data']")


def test_max_entries_caps_lists_not_counts():
    p = jnp.linspace(0.1, 1.0, 6)
    report = jgc.check_grad(lambda p: jnp.sum(p**3), p, grad=lambda p: 3 * p**2 + p)
    assert report.n_fail == 6
    d = report.to_dict(max_entries=2)
    assert d["counts"]["fail"] == 6 and len(d["failures"]) == 2
    # Worst first: the largest |a - n| relative to the tolerance.
    assert [e["index"] for e in d["failures"]] == [[5], [4]]
    assert len(report.to_dict()["failures"]) == 6
    assert report.to_dict(max_entries=0)["failures"] == []
    with pytest.raises(ValueError, match="max_entries"):
        report.to_dict(max_entries=-1)


def test_non_finite_values_are_strings():
    assert number(float("nan")) == "nan"
    assert number(np.inf) == "inf" and number(-np.inf) == "-inf"
    assert number(np.float32(1.5)) == 1.5 and isinstance(number(np.float32(1.5)), float)
    assert number(None) is None
    report = jgc.check_grad(lambda p: jnp.sum(p**2), jnp.array([1.0, 2.0]))
    leaf = report.leaves[0]
    odd = leaf._replace(
        error_bar=np.array([np.inf, np.nan]),
        tolerance=np.array([np.inf, 1.0]),
        status=np.array([UNSURE, UNSURE]),
    )
    odd_report = dataclasses.replace(report, leaves=(odd,))
    d = _round_trip(odd_report.to_dict())
    assert d["ok"] is False and d["counts"]["unsure"] == 2
    assert [e["err"] for e in d["unsure"]] == ["inf", "nan"]
    assert [e["tolerance"] for e in d["unsure"]] == ["inf", 1.0]


def _vjp_rule(slope):
    f = jax.custom_vjp(lambda x: jnp.logaddexp(x, 0.0))
    f.defvjp(
        lambda x: (jnp.logaddexp(x, 0.0), x),
        lambda x, g: (g * jax.nn.sigmoid(slope * x),),
    )
    return f


def test_rule_report_dict_vjp():
    x = jnp.array([-1.5, -0.2, 0.3, 2.0])
    report = jgc.check_vjp(_vjp_rule(2.0), x)
    d = _round_trip(report.to_dict())
    assert d["kind"] == "vjp" and d["ok"] is False and d["summary"].endswith("FAILED")
    assert d["failures"] == report.failures()
    assert d["primal"] == {
        "name": report.primal.name,
        "ok": report.primal.ok,
        "ran": True,
        "detail": report.primal.detail,
    }
    (dot,) = d["dot_tests"]
    assert dot["ok"] is False and len(dot["pairs"]) == report.dot_tests[0].rule.size
    assert dot["pairs"][0]["rule"] == float(report.dot_tests[0].rule[0])
    assert {p["status"] for p in dot["pairs"]} <= {"pass", "FAIL", "unsure"}
    assert [c["name"] for c in d["structure"]] == [c.name for c in report.structure]
    (loc,) = d["localized"]
    assert loc["label"] == report.localized[0][0]
    assert loc["report"]["counts"]["fail"] == report.localized[0][1].n_fail > 0
    assert d["second_order"] is None and d["held"] == []
    assert jgc.check_vjp(_vjp_rule(1.0), x).to_dict()["ok"] is True


def test_rule_report_dict_jvp_second_order():
    report = jgc.check_jvp(jnp.tanh, jnp.array([0.3, -1.2]), order=2)
    d = _round_trip(report.to_dict())
    assert d["kind"] == "jvp" and d["ok"] is True
    assert d["second_order"]["kind"] == "jvp" and d["second_order"]["ok"] is True
