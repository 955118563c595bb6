"""Every input a user can give gets a verdict or an error naming the argument
and the fix (issue 13): never a traceback from inside jgradcheck, never an
empty pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc


def scalar_and_vector(p):
    return jnp.sum(p["a"] ** 2) + p["b"] ** 2


SV = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(0.5)}


# ------------------------------------------------------------ grad= outputs


@pytest.mark.parametrize("b", [1.0, np.float64(1.0), np.asarray(1.0)])
def test_grad_returning_python_or_numpy_scalar_gets_a_verdict(b):
    report = jgc.check_grad(
        scalar_and_vector, SV, grad=lambda p: {"a": np.asarray(2 * p["a"]), "b": b}
    )
    assert report.ok


def test_grad_returning_a_wrong_python_float_fails():
    report = jgc.check_grad(
        scalar_and_vector, SV, grad=lambda p: {"a": 2 * p["a"], "b": 3.0}
    )
    assert not report.ok
    assert [e.path for e in report.failures()] == ["['b']"]


def test_grad_with_another_signature_names_grad_and_how_it_is_called():
    def loss(p, x, y):
        return jnp.sum(p * x * y)

    with pytest.raises(
        TypeError,
        match=r"`grad` is called as `grad\(params, args\[0\], args\[1\]\)`.*The fix",
    ):
        jgc.check_grad(loss, jnp.ones(3), 2.0, 3.0, grad=lambda p: 6 * p)


@pytest.mark.parametrize("budget", ["2GB", "512MiB", " 1.5 gib ", 10**9])
def test_memory_budget_sizes(budget):
    assert jgc.check_grad(lambda p: jnp.sum(p**2), jnp.ones(2), memory_budget=budget).ok


@pytest.mark.parametrize("budget", ["2 parsecs", "-1GB", True, [1]])
def test_memory_budget_refused_clearly(budget):
    with pytest.raises(ValueError, match="`memory_budget`"):
        jgc.check_grad(lambda p: jnp.sum(p**2), jnp.ones(2), memory_budget=budget)


def test_grad_none_for_non_array_fields_is_accepted():
    # What eqx.filter_grad returns: None where a field is not a float array.
    params = {"w": jnp.array([0.5, 1.0]), "act": jnp.tanh, "n": jnp.arange(2)}

    def loss(p):
        return jnp.sum(p["act"](p["w"]) * p["n"])

    def grad(p):
        g = jax.grad(lambda w: loss({**p, "w": w}))(p["w"])
        return {"w": g, "act": None, "n": None}

    assert jgc.check_grad(loss, params, grad=grad).ok


def test_equinox_filter_grad_is_accepted():
    eqx = pytest.importorskip("equinox")

    class Model(eqx.Module):
        w: jax.Array
        n: int = 3

        def __call__(self):
            return jnp.sum(jnp.tanh(self.w) * self.n)

    model = Model(jnp.array([0.5, 1.0]))
    loss = lambda m: m()  # noqa: E731
    assert jgc.check_grad(loss, model, grad=eqx.filter_grad(loss)).ok


# ------------------------------------------------------------ rule outputs


def sin_and_argmax(x):
    return {"y": jnp.sin(x), "i": jnp.argmax(x)}


def sin_plus_sum(x, y):
    return jnp.sin(x) * 2.0 + jnp.sum(y)


def sin_and_empty(x):
    return {"y": jnp.sin(x), "e": x[:0] * 3.0}


def cos_broken(x, y):
    return jnp.cos(x) + jnp.sum(y)


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_empty_inputs_and_outputs_are_held_out_not_crashed_on(check):
    # Found by jgradcheck.strategies (shapes with a 0-size axis).
    x, empty = jnp.array([1.0, 2.0, 0.5]), jnp.zeros((0,))
    report = check(sin_plus_sum, x, empty, localize=0)
    assert report.ok and report.held == ("[1]",)
    report = check(sin_and_empty, x, localize=0)
    assert report.ok and report.held_outputs == ("['e']",)
    with pytest.raises(ValueError, match="no entries"):
        check(jnp.sin, empty)


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_an_empty_input_does_not_hide_a_wrong_rule(check):
    @jax.custom_jvp
    def f(x, y):
        return cos_broken(x, y)

    f.defjvp(lambda p, t: (f(*p), jnp.sin(p[0]) * t[0] + jnp.sum(t[1])))  # sign
    report = check(f, jnp.array([1.0, 2.0, 0.5]), jnp.zeros((0,)), localize=0)
    assert not report.ok and report.held == ("[1]",)


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_integer_outputs_are_held_out_and_listed(check):
    report = check(sin_and_argmax, jnp.array([1.0, 2.0, 0.5]))
    assert report.ok
    assert report.held_outputs == ("['i']",)
    assert (
        "outputs not checked (integer, boolean or empty: nothing to differentiate): ['i']"
        in str(report)
    )
    assert report.to_dict()["held_outputs"] == ["['i']"]


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_integer_output_beside_a_broken_rule_still_fails(check):
    @jax.custom_jvp
    def bad_sin(x):
        return jnp.sin(x)

    bad_sin.defjvp(lambda p, t: (jnp.sin(p[0]), 2 * jnp.cos(p[0]) * t[0]))
    report = check(lambda x: (bad_sin(x), jnp.argmax(x)), jnp.array([1.0, 2.0]))
    assert not report.ok
    assert report.held_outputs == ("[1]",)


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_string_output_names_its_path(check):
    with pytest.raises(
        TypeError, match=r"`f` returned a str at output \['name'\].*fix"
    ):
        check(lambda x: {"y": jnp.sin(x), "name": "abc"}, jnp.array([1.0, 2.0]))


# ------------------------------------------------------------ transformations


def sum_sq(p):
    return jnp.sum(p**2)


OUTSIDE = "Checks run outside transformations; call check_grad"


@pytest.mark.parametrize(
    "transform",
    [
        lambda fn: jax.jit(fn)(jnp.ones(3)),
        lambda fn: jax.vmap(fn)(jnp.ones((2, 3))),
        lambda fn: jax.grad(lambda x: fn(x) * 0.0)(jnp.ones(3)),
    ],
    ids=["jit", "vmap", "grad"],
)
def test_check_grad_inside_a_transformation(transform):
    with pytest.raises(TypeError, match=f"`params` holds a traced value.*{OUTSIDE}"):
        transform(lambda x: jnp.float32(jgc.check_grad(sum_sq, x).ok))


def test_check_grad_with_traced_args_or_closure():
    with pytest.raises(TypeError, match=f"`args` holds a traced value.*{OUTSIDE}"):
        jax.jit(
            lambda y: jgc.check_grad(lambda p, y: jnp.sum(p * y), np.ones(2), y).ok
        )(jnp.ones(2))
    with pytest.raises(TypeError, match="`loss` closes over a traced value"):
        jax.jit(lambda y: jgc.check_grad(lambda p: jnp.sum(p * y), np.ones(2)).ok)(
            jnp.ones(2)
        )


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_rule_check_inside_jit(check):
    with pytest.raises(TypeError, match=f"`primals` holds a traced value.*{OUTSIDE}"):
        jax.jit(lambda x: jnp.float32(check(jnp.sin, x).ok))(jnp.ones(3))


def test_under_disable_jit_the_check_runs_compiled_with_a_note():
    bad = lambda p: 3 * p  # noqa: E731
    with jax.disable_jit():
        report = jgc.check_grad(sum_sq, jnp.array([1.0, 2.0]), grad=bad)
        good = jgc.check_grad(sum_sq, jnp.array([1.0, 2.0]))
        rule = jgc.check_vjp(jnp.sin, jnp.array([1.0, 2.0]))
        assert jax.config.jax_disable_jit  # the caller's setting is restored
    assert not report.ok and good.ok and rule.ok
    assert "note: jax.disable_jit() is on: jgradcheck compiled" in str(good)
    assert "disable_jit" not in str(jgc.check_grad(sum_sq, jnp.array([1.0, 2.0])))


def branchy(p):
    if p[0] > 0:  # Python control flow on a value: jax.grad accepts it
        return jnp.sum(p**2)
    return jnp.sum(p)


def test_python_control_flow_explained_at_the_users_line():
    with pytest.raises(TypeError) as info:
        jgc.check_grad(branchy, jnp.ones(3))
    msg = str(info.value)
    assert "`loss` uses Python control flow" in msg
    assert "if p[0] > 0:" in msg and "test_bad_input.py" in msg
    assert "jnp.where" in msg and "lax.cond" in msg
    assert isinstance(info.value.__cause__, jax.errors.TracerBoolConversionError)


@pytest.mark.parametrize("check", [jgc.check_vjp, jgc.check_jvp])
def test_rule_check_of_python_control_flow(check):
    with pytest.raises(TypeError, match="`f` uses Python control flow.*jnp.where"):
        check(lambda x: jnp.sin(x) if x[0] > 0 else x, jnp.ones(2))


def test_numpy_inside_the_loss_explained():
    with pytest.raises(TypeError, match="`loss` turns a value.*NumPy.*`jnp`"):
        jgc.check_grad(lambda p: jnp.sum(np.sin(p)), jnp.ones(2))


# ------------------------------------------------------------ nothing verified


def test_zero_size_float_leaves_verify_nothing():
    report = jgc.check_grad(
        lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.zeros((0, 3)), "n": jnp.arange(2)}
    )
    assert not report.ok and not report.verified and report.n_fail == 0
    assert str(report).startswith(
        "gradient check UNSURE: nothing was verified: no entry was compared"
    )
    with pytest.raises(jgc.GradCheckError):
        jgc.assert_grad(lambda p: jnp.sum(p**2), jnp.zeros((2, 0)))


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_every_entry_at_a_kink_verifies_nothing(mode):
    report = jgc.check_grad(lambda p: jnp.sum(jnp.abs(p)), jnp.zeros(3), mode=mode)
    assert not report.ok and report.n_kink == 3 and report.n_fail == 0
    head = str(report).splitlines()[0]
    assert head.startswith("gradient check UNSURE: nothing was verified: all 3")
    assert "away from the kinks" in head
    assert report.to_dict()["ok"] is False


def test_one_entry_off_the_kink_is_a_pass():
    report = jgc.check_grad(lambda p: jnp.sum(jnp.abs(p)), jnp.array([0.0, 0.0, 1.0]))
    assert report.ok and report.verified and report.n_kink == 2


# ------------------------------------------------------------ report lines


def test_rule_localisation_says_what_is_under_test():
    vjp = jgc.check_vjp(jnp.sin, jnp.array([0.5, 1.0]))
    ((_, rep),) = vjp.localized
    assert rep.settings.gradient.startswith("the rule's Jᵀȳ")
    jvp = jgc.check_jvp(lambda x: 2.0 * jnp.sin(x), jnp.array([0.5, 1.0]))
    assert "grad=grad" not in str(jvp) and "grad=grad" not in str(vjp)
    assert "(largest |a-n|/tolerance " in str(vjp)  # not an alarming max rel err


def test_rule_report_names_fs_own_inputs():
    one = str(jgc.check_vjp(jnp.sin, jnp.array([0.5, 1.0])))
    assert "inputs are named by position: [0] is f's argument\n" in one
    assert "[1]['w']" not in one
    two = jgc.check_vjp(
        lambda x, p: jnp.sin(x * p["w"]), jnp.array([0.5, 1.0]), {"w": jnp.array(2.0)}
    )
    assert "[1]['w'] is f's 2nd argument, key 'w'" in str(two)


def test_rule_failure_lines_are_capped():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (2 * g * jnp.cos(x),))
    report = jgc.check_vjp(f, jnp.linspace(0.1, 1.0, 30))
    lines = report.failures()
    assert len([x for x in lines if "rule=" in x]) == 20
    assert any(x.endswith("… and 10 more failing entries") for x in lines)
    assert len([x for x in report.failures(None) if "rule=" in x]) == 30


def test_sampled_headline_and_timing_line():
    report = jgc.check_grad(
        lambda p: jnp.sum(jnp.sin(p)), jnp.linspace(0, 1, 400), coords=8
    )
    lines = str(report).splitlines()
    assert lines[0] == "gradient check passed: 8 of 400 entries (2% sampled) agree"
    t = report.timing
    assert t.wall_seconds is not None
    assert t.wall_seconds >= t.sweep_seconds + t.compile_seconds
    assert any(x.startswith(f"{t.wall_seconds:.2f} s in all: ") for x in lines)


def test_entry_has_its_index_within_the_leaf():
    params = {"a": jnp.ones(3), "w": jnp.ones((2, 2))}
    report = jgc.check_grad(
        lambda p: jnp.sum(p["a"]) + jnp.sum(p["w"] ** 2),
        params,
        grad=lambda p: {"a": jnp.ones(3), "w": (2 * p["w"]).at[1, 0].set(0.0)},
    )
    (e,) = report.failures()
    assert e.index == (1, 0) and e.leaf_index == 2 and e.flat_index == 3 + 2
    assert np.ravel(params["w"])[e.leaf_index] == params["w"][e.index]


def test_eps_sweep_repr_is_short():
    sweep = jgc.eps_sweep(lambda p: jnp.sum(p**3), jnp.linspace(0.5, 1.0, 6))
    assert repr(sweep).startswith("EpsSweep(6 coordinates × 49 steps")
    assert len(repr(sweep)) < 200


def test_one_nonzero_entry_is_not_called_scaled():
    from jgradcheck._numerics.diagnose import diagnose
    from jgradcheck._numerics.verdict import FAIL
    from jgradcheck._pytree.flat import LeafInfo

    info = LeafInfo("['w']", 0, (4,), np.dtype(np.float64), "float", 0)
    a = np.array([-0.598715, 0.1, 0.0, 0.0])
    n = np.array([1.0, 0.0, 0.0, 0.0])
    fail = np.full(4, FAIL, np.uint8)
    text = diagnose(info, np.arange(4), a, n, np.zeros(4), np.full(4, 1e-6), fail)
    assert text is None or not text.startswith("scaled")
    two = diagnose(
        info,
        np.arange(4),
        2 * n + 2 * n[::-1],
        n + n[::-1],
        np.zeros(4),
        np.full(4, 1e-6),
        fail,
    )
    assert two == "scaled: a ≈ 2·n (a missing or extra factor 2?)"


# ------------------------------------------- numerical_grad's own error bars


def test_numerical_grad_warns_where_its_error_bar_is_wide():
    # |p| with p[0] = 2e-7, a kink within every step of the ladder (h ≈ 6e-6):
    # an estimate numerical_grad cannot vouch for, and says so.
    p = jnp.array([2e-7, 1.0, 2.0])
    with pytest.warns(UserWarning, match=r"1 of 3 entries of <root> \(widest at \[0\]"):
        jgc.numerical_grad(lambda p: jnp.sum(jnp.abs(p)), p)


def test_numerical_grad_is_quiet_where_its_error_bars_are_tight():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = jgc.numerical_grad(
            lambda p: jnp.sum(jnp.sin(p) ** 2), jnp.array([0.3, 1.0])
        )
    assert np.allclose(g, np.sin(2 * np.array([0.3, 1.0])), atol=1e-8)
