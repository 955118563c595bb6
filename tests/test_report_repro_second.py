"""``to_dict`` and ``save_repro`` of the reports of check_hvp and check_compositions.

Each failing check has a passing twin: the dicts say what the reports say
(a failing direction or row is ``FAIL`` in the dict, a passing one is not),
and the written pytest file fails for the failing check and passes for the
correct one. The written test functions are called in-process (``runpy``),
as in tests/test_repro.py; tests/test_plugin.py runs one the plugin wrote.
Four checks in all, on two or three entries, once per module.
"""

from __future__ import annotations

import json
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc


def _softplus_rule(blind: bool):
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    def bwd(x, g):
        # blind: right at first order; reverse over reverse loses σ'(x).
        return (g * jax.nn.sigmoid(jax.lax.stop_gradient(x) if blind else x),)

    softplus.defvjp(lambda x: (softplus(x), x), bwd)
    return softplus


softplus, softplus_blind = _softplus_rule(False), _softplus_rule(True)


def hvp_loss(w, x):
    return jnp.sum(softplus(w * x) ** 2)


def hvp_loss_blind(w, x):
    return jnp.sum(softplus_blind(w * x) ** 2)


@jax.custom_vjp
def softplus_rule(x):  # a module-level rule: the repro imports it by name
    return jnp.logaddexp(x, 0.0)


softplus_rule.defvjp(
    lambda x: (softplus_rule(x), x), lambda x, g: (g * jax.nn.sigmoid(x),)
)


@jax.custom_vjp
def softplus_numpy_bwd(x):
    return jnp.logaddexp(x, 0.0)


def _numpy_bwd(x, g):  # NumPy on the residual: right eagerly, fails when traced
    return (g * np.asarray(jax.nn.sigmoid(x)),)


softplus_numpy_bwd.defvjp(lambda x: (softplus_numpy_bwd(x), x), _numpy_bwd)

W, XS = jnp.array([0.5, -1.0]), jnp.array([1.0, 2.0])
PRIMALS = jnp.array([-1.0, 0.5, 2.0])


def _round_trip(d):
    """JSON text and back; allow_nan=False proves no NaN/inf float slipped in."""
    return json.loads(json.dumps(d, allow_nan=False))


def _test_function(test):
    """The written file's ``test_repro``, loaded with runpy (no pytest session)."""
    return runpy.run_path(str(test))["test_repro"]


@pytest.fixture(scope="module")
def hvp_reports():
    good = jgc.check_hvp(hvp_loss, W, XS, key=5)
    bad = jgc.check_hvp(hvp_loss_blind, W, XS, key=5, directions=3)
    assert good.ok and not bad.ok
    return good, bad


@pytest.fixture(scope="module")
def composition_reports():
    good = jgc.check_compositions(softplus_rule, PRIMALS, key=2)
    bad = jgc.check_compositions(softplus_numpy_bwd, PRIMALS, key=2, batch=2)
    assert good.ok and not bad.ok
    return good, bad


# ------------------------------------------------------------------ to_dict


def _hvp_dict_says_what_the_report_says(report):
    d = _round_trip(report.to_dict())
    assert d["kind"] == "hvp" and d["ok"] is report.ok
    assert d["summary"] == str(report).splitlines()[0]
    assert d["inputs"] == ["<root>"] and d["rounding"] == report.rounding
    assert len(d["directions"]) == len(report.directions)
    for got, want in zip(d["directions"], report.directions):
        assert got["direction"] == want.direction and got["where"] == want.where
        assert (got["hvp"], got["fd"]) == (want.hvp, want.fd)
        assert (got["err"], got["tolerance"]) == (want.error_bar, want.tolerance)
        assert got["abs_diff"] == abs(want.hvp - want.fd)
        assert (got["fail"], got["unsure"], got["size"]) == (
            want.n_fail,
            want.n_unsure,
            want.size,
        )
        assert got["ok"] is want.ok
    s = report.symmetry
    assert d["symmetry"] == {
        "ok": s.ok,
        "pairs": s.pairs,
        "worst": list(s.worst),
        "left": s.left,
        "right": s.right,
        "abs_diff": abs(s.left - s.right),
        "allowance": s.allowance,
    }
    return d


def test_hvp_dict_of_a_failing_check_says_FAIL(hvp_reports):
    d = _hvp_dict_says_what_the_report_says(hvp_reports[1])
    assert d["ok"] is False and d["summary"].startswith("check_hvp: FAILED")
    assert [v["status"] for v in d["directions"]] == ["FAIL"] * 3
    assert all(v["fail"] > 0 and not v["ok"] for v in d["directions"])
    assert d["symmetry"]["pairs"] == 3


def test_hvp_dict_of_a_passing_check_says_pass(hvp_reports):
    d = _hvp_dict_says_what_the_report_says(hvp_reports[0])
    assert d["ok"] is True and d["summary"].startswith("check_hvp: passed")
    assert [v["status"] for v in d["directions"]] == ["pass"] * 2
    assert all(v["fail"] == 0 and v["ok"] for v in d["directions"])
    assert d["symmetry"]["ok"] is True and d["symmetry"]["pairs"] == 1


def test_hvp_dict_writes_nan_as_a_string_and_no_symmetry_as_none():
    row = jgc.HvpDirection(0, "[1]", float("nan"), 1.0, 0.0, 1e-6, 1, 0, 2)
    report = jgc.HvpReport((row,), None, ("['w']",), "16 ulps")
    d = _round_trip(report.to_dict())
    assert d["symmetry"] is None and d["ok"] is False
    (v,) = d["directions"]
    assert (v["hvp"], v["abs_diff"], v["fd"]) == ("nan", "nan", 1.0)
    assert v["status"] == "FAIL" and v["where"] == "[1]"


def _composition_dict_says_what_the_report_says(report):
    d = _round_trip(report.to_dict())
    assert d["kind"] == "compositions" and d["ok"] is report.ok
    assert d["summary"] == str(report).splitlines()[0]
    assert d["rule"] == "vjp" and d["points"] == report.points
    assert d["rounding"] == report.rounding
    assert d["rows"] == [
        {"name": c.name, "status": c.status, "ok": c.ok, "detail": c.detail}
        for c in report.rows
    ]
    return d


def test_composition_dict_of_a_failing_check_says_FAIL(composition_reports):
    d = _composition_dict_says_what_the_report_says(composition_reports[1])
    assert d["ok"] is False and d["points"] == 2
    status = {row["name"]: row["status"] for row in d["rows"]}
    assert status["jit"] == "FAIL" and status["vmap over 2 points"] == "FAIL"
    assert "TracerArrayConversionError" in d["rows"][0]["detail"]


def test_composition_dict_of_a_passing_check_says_ok(composition_reports):
    d = _composition_dict_says_what_the_report_says(composition_reports[0])
    assert d["ok"] is True and d["points"] == 3
    assert {row["status"] for row in d["rows"]} <= {"ok", "not defined", "skipped"}
    assert [r["status"] for r in d["rows"] if r["name"] == "jit"] == ["ok"]


def test_the_recorded_call_is_not_serialised(hvp_reports, composition_reports):
    for report in (hvp_reports[1], composition_reports[1]):
        assert report._call is not None
        fields = [f for f in report.__dataclass_fields__ if f != "_call"]
        bare = type(report)(**{f: getattr(report, f) for f in fields})
        assert bare == report and bare.to_dict() == report.to_dict()
        with pytest.raises(ValueError, match="check_compositions and check_hvp"):
            bare.save_repro("unused")


# --------------------------------------------------------------- save_repro


def test_a_failing_hvp_repro_fails_with_the_same_numbers(tmp_path, hvp_reports):
    report = hvp_reports[1]
    test = report.save_repro(tmp_path)
    assert test.name == "test_repro_hvp_loss_blind.py"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "inputs.npz",
        "repro.json",
        test.name,
    ]
    record = json.loads((tmp_path / "repro.json").read_text())
    assert record["check"] == "check_hvp" and record["function"] == "hvp_loss_blind"
    assert record["options"] == {"key": 5, "directions": 3} and record["ok"] is False
    assert record["summary"][0] == str(report).splitlines()[0]
    source = test.read_text()
    assert "from test_report_repro_second import hvp_loss_blind as loss" in source
    assert "jgc.assert_hvp(loss, *args, key=5, directions=3)" in source
    with pytest.raises(jgc.GradCheckError) as failed:
        _test_function(test)()
    assert failed.value.report.to_dict() == report.to_dict()


def test_a_passing_hvp_repro_passes(tmp_path, hvp_reports):
    test = hvp_reports[0].save_repro(tmp_path)
    assert "jgc.assert_hvp(loss, *args, key=5)" in test.read_text()
    assert json.loads((tmp_path / "repro.json").read_text())["ok"] is True
    _test_function(test)()  # passes: no GradCheckError


def test_a_failing_composition_repro_fails_in_the_same_rows(
    tmp_path, composition_reports
):
    report = composition_reports[1]
    test = report.save_repro(tmp_path)
    record = json.loads((tmp_path / "repro.json").read_text())
    assert record["check"] == "check_compositions" and record["ok"] is False
    assert record["options"] == {"key": 2, "batch": 2}
    source = test.read_text()
    assert "from test_report_repro_second import softplus_numpy_bwd as f" in source
    assert "jgc.assert_compositions(f, *args, key=2, batch=2)" in source
    with pytest.raises(jgc.GradCheckError) as failed:
        _test_function(test)()
    again = failed.value.report
    assert [(c.name, c.status) for c in again.rows] == [
        (c.name, c.status) for c in report.rows
    ]


def test_a_passing_composition_repro_passes(tmp_path, composition_reports):
    test = composition_reports[0].save_repro(tmp_path)
    assert "jgc.assert_compositions(f, *args, key=2)" in test.read_text()
    _test_function(test)()  # passes: no GradCheckError
