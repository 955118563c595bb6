"""``report.save_repro``: the written pytest file repeats the check.

A failing rule's repro fails the same way; a passing report's repro passes
(the twin); a function that cannot be imported gives a file that fails with
instructions, never one that passes silently. The written test functions are
called in-process (``runpy``); tests/test_plugin.py runs one written by the
plugin as a pytest file. The inputs' encoding is
tested without compiling anything.
"""

from __future__ import annotations

import json
import runpy
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._checks.recorded import recorded
from jgradcheck._pytree.coords import seed_of
from jgradcheck._report.call import Call
from jgradcheck._report.repro import save_repro
from jgradcheck._report.repro_tree import Unsavable, encode, rebuild


@jax.custom_vjp
def cube_bad(x):
    return x**3


cube_bad.defvjp(lambda x: (cube_bad(x), x), lambda x, g: (2 * g * x**2,))  # 3, not 2


X = jnp.array([1.0, -2.0, 0.5])


def _test_function(test):
    """The written file's ``test_repro``, loaded with runpy (no pytest session)."""
    return runpy.run_path(str(test))["test_repro"]


def test_a_failing_rule_repro_fails_the_same_way(tmp_path):
    report = jgc.check_vjp(cube_bad, X, key=7, localize=None)
    assert not report.ok
    test = report.save_repro(tmp_path / "repro")
    assert test == tmp_path / "repro" / "test_repro_cube_bad.py"
    assert sorted(p.name for p in test.parent.iterdir()) == [
        "inputs.npz",
        "repro.json",
        "test_repro_cube_bad.py",
    ]
    record = json.loads((test.parent / "repro.json").read_text())
    assert record["check"] == "check_vjp" and record["function"] == "cube_bad"
    assert record["seed"] == 7 and record["ok"] is False
    assert record["options"] == {"key": 7, "localize": None}
    assert set(record["versions"]) == {
        "jgradcheck",
        "jax",
        "jaxlib",
        "numpy",
        "python",
        "backend",
    }
    source = test.read_text()
    assert "from test_repro import cube_bad as f" in source
    assert "jgc.assert_vjp(f, *args, key=7, localize=None)" in source
    with pytest.raises(jgc.GradCheckError) as failed:
        _test_function(test)()
    # The same entries fail with the same numbers.
    again = failed.value.report
    assert again.failures() == report.failures()
    assert again.localized[0][1].worst(3) == report.localized[0][1].worst(3)


@pytest.fixture(scope="module")
def sin_report():
    """A passing report (one check for the tests below)."""
    report = jgc.check_vjp(jnp.sin, jnp.array([0.5, 1.0]), key=2, pairs=3)
    assert report.ok
    return report


def test_a_passing_report_repro_passes(tmp_path, sin_report):
    test = sin_report.save_repro(tmp_path)
    source = test.read_text()
    assert "from jax.numpy import sin as f" in source
    assert "sys.path" not in source  # an installed package: nothing to add
    assert "jgc.assert_vjp(f, *args, key=2, pairs=3)" in source
    _test_function(test)()  # passes: no GradCheckError


def loss(params, x):
    return jnp.sum(jnp.tanh(params["w"] * x) ** 2)


def test_an_unimportable_function_gives_a_repro_that_fails_saying_so(tmp_path):
    params = {"w": jnp.array([0.5, -1.0])}
    report = jgc.check_grad(
        loss,
        params,
        jnp.array([1.0, 2.0]),
        grad=lambda p, x: {"w": 2 * p["w"]},  # wrong, and a lambda
        coords={"w": jnp.array([True, False])},
    )
    assert not report.ok
    test = report.save_repro(tmp_path)
    source = test.read_text()
    assert "from test_repro import loss\n" in source
    assert "# `grad` could not be imported: it is a lambda" in source
    assert 'grad=lambda p, x: {"w": 2 * p["w"]},' in source  # its source, quoted
    assert "coords=load('coords')" in source
    with pytest.raises(pytest.fail.Exception, match="this repro needs grad, which"):
        _test_function(test)()  # fails before any check runs


# ------------------------------------------------- reports and their records


def test_the_recorded_call_changes_no_equality_or_serialisation(tmp_path, sin_report):
    report = sin_report
    bare = type(report)(
        **{f: getattr(report, f) for f in report.__dataclass_fields__ if f != "_call"}
    )
    assert bare._call is None and report._call is not None
    assert bare == report and repr(bare) == repr(report)
    assert bare.to_dict() == report.to_dict() and str(bare) == str(report)
    with pytest.raises(ValueError, match="does not record how it was made"):
        bare.save_repro(tmp_path)
    with pytest.raises(ValueError, match="does not record how it was made"):
        report.localized[0][1].save_repro(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="`path` must be a directory"):
        report.save_repro(tmp_path / "file")


class Pair(NamedTuple):
    a: object
    b: object


def test_inputs_rebuild_with_their_types_dtypes_and_structure():
    tree = (
        {"w": jnp.array([1.5, -2.0], jnp.bfloat16), "x": np.arange(3.0)},
        {2: np.ones(1, np.int32)},
        [np.float32(2.5), 3, "tanh", None, 1.0 + 2.0j, True],
        Pair(jnp.zeros((0, 2)), jax.random.key(5)),
    )
    arrays: dict = {}
    node = encode(tree, arrays, "args")
    json.dumps(node)  # the description is JSON
    back = rebuild(json.loads(json.dumps(node)), arrays)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(tree)
    w = back[0]["w"]
    assert isinstance(w, jax.Array) and w.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(w, np.float32), [1.5, -2.0])
    assert type(back[0]["x"]) is np.ndarray and back[0]["x"].dtype == np.float64
    assert list(back[1]) == [2] and back[1][2].dtype == np.int32
    assert back[2][0] == np.float32(2.5) and type(back[2][0]) is np.float32
    assert back[2][1:] == [3, "tanh", None, 1.0 + 2.0j, True]
    assert type(back[3]) is Pair and back[3].a.shape == (0, 2)
    assert jax.random.key_data(back[3].b).tolist() == [0, 5]


def test_an_input_it_cannot_describe_is_named():
    class Box:
        pass

    with pytest.raises(Unsavable, match=r"args\[0\]\['w'\].*Box"):
        encode(({"w": Box()},), {}, "args")
    with pytest.raises(TypeError, match=r"keys \[\(1, 2\)\]"):
        encode({(1, 2): 1.0}, {}, "args")


def fit(params, x):
    return loss(params, x)


def test_options_become_arguments_imports_placeholders_or_notes(tmp_path):
    # A hand-made record: no check runs.
    call = Call(
        check="check_grad",
        f=loss,
        args=({"w": jnp.ones(2)}, np.ones(2)),
        options={
            "key": 3,
            "rtol": float("inf"),
            "coords": {"w": np.array([True, False])},
            "terms": {"fit": fit, "l2": lambda p, x: 0.0},
            "devices": jax.devices()[:1],
            "progress": True,
        },
        x64=True,
    )
    test = save_repro(call, tmp_path, ["gradient check FAILED: ..."], False)
    source = test.read_text()
    compile(source, str(test), "exec")
    assert "from test_repro import fit as terms_0" in source
    assert "terms_1 = None" in source  # the lambda: a placeholder
    assert (
        "jgc.assert_grad(loss, *args, key=3, rtol=float('inf'), "
        "coords=load('coords'), terms={'fit': terms_0, 'l2': terms_1})"
    ) in source
    assert "# Note: devices= named 1 device(s), which are not repeated" in source
    assert "# Note: progress= is not repeated" in source
    assert "X64 = True" in source and "jax_enable_x64 was on" in source
    namespace = runpy.run_path(str(test))
    with pytest.raises(pytest.fail.Exception, match="needs terms_1, which"):
        namespace["test_repro"]()
    coords = namespace["load"]("coords")
    assert coords["w"].tolist() == [True, False]


def test_a_jax_key_is_recorded_as_its_int_seed_and_defaults_are_left_out(
    sin_report,
):
    key = jax.random.key(5)
    options = {"key": key, "pairs": 4, "localize": 0}
    call = recorded(sin_report, jgc.check_vjp, jnp.sin, (1.0,), options)._call
    assert call.options == {"key": seed_of(key), "localize": 0}
    assert call.check == "check_vjp" and call.args == (1.0,)
