"""Compiled programs shared across checks (jgradcheck._engine.programs).

The cache must reuse a program exactly when the computation is the same, and
never when it is not: two custom_vjp rules that differ only in their backward
pass, two callbacks, two literals, two nested constants must each get their
own program (a wrong hit would silently check the wrong rule).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jgradcheck as jgc
from jgradcheck._engine import programs
from jgradcheck._engine.gradient import Pullback


def _compiles(fn, *args) -> int:
    """Programs compiled by ``fn(*args)``; none dropped meanwhile: a count
    taken with the caches full would hide a compile behind an eviction."""
    held = len(programs._FUNCTIONS), len(programs.Batch._compiled)
    if held[0] > programs.MAX_PROGRAMS // 2 or held[1] > programs.MAX_COMPILED // 2:
        programs.clear()
    before = programs.compiled_count()
    fn(*args)
    return programs.compiled_count() - before


def _rule(scale: float):
    """A custom_vjp named ``rule`` whose backward pass multiplies by ``scale``."""

    @jax.custom_vjp
    def rule(x):
        return jnp.sin(x)

    rule.defvjp(lambda x: (rule(x), x), lambda x, g: (scale * g * jnp.cos(x),))
    return rule


def test_two_closures_of_one_computation_share_one_program():
    x = jnp.arange(4.0)
    first = _compiles(programs.call, lambda v: jnp.tanh(v) * 3.0, x)
    again = _compiles(programs.call, lambda v: jnp.tanh(v) * 3.0, x)
    assert (first, again) == (1, 0)


def test_other_constants_reuse_the_program_with_their_own_values():
    x = jnp.arange(4.0)
    w1, w2 = jnp.full(4, 2.0), jnp.full(4, 5.0)
    a = programs.call(lambda v: v * w1 + 1.25, x)
    assert _compiles(programs.call, lambda v: v * w2 + 1.25, x) == 0
    b = programs.call(lambda v: v * w2 + 1.25, x)
    np.testing.assert_array_equal(a, x * 2.0 + 1.25)
    np.testing.assert_array_equal(b, x * 5.0 + 1.25)


def test_a_different_literal_is_a_different_program():
    x = jnp.arange(4.0, dtype=jnp.float32)
    programs.call(lambda v: v * 1.5, x)
    assert _compiles(programs.call, lambda v: v * 1.5000001, x) == 1
    np.testing.assert_array_equal(
        programs.call(lambda v: v * 1.5000001, x), x * np.float32(1.5000001)
    )


def test_the_wiring_and_the_types_are_part_of_the_program():
    # Same primitives, shapes and literals; only which value feeds which
    # operand, which result is returned first, or a weak type differs.
    x, y = jnp.arange(4.0), jnp.full(4, 10.0)
    same = [
        (lambda a, b: a - b, lambda a, b: b - a),
        (lambda a, b: (jnp.sin(a), jnp.cos(b)), lambda a, b: (jnp.sin(b), jnp.cos(a))),
        (lambda a, b: (a * 2.0, b), lambda a, b: (b, a * 2.0)),
    ]
    for first, second in same:
        p1 = programs.trace(first, x, y)[0]
        p2 = programs.trace(second, x, y)[0]
        assert p1 != p2
        np.testing.assert_array_equal(
            jax.tree_util.tree_leaves(programs.call(second, x, y)),
            jax.tree_util.tree_leaves(second(x, y)),
        )
    strong = programs.trace(lambda a: a + 1.0, jnp.float32(1.0))[0]
    weak = programs.trace(lambda a: a + 1.0, 1.0)[0]
    assert strong != weak
    again = programs.trace(lambda a, b: a - b, x, y)[0]
    assert again == programs.trace(lambda u, v: u - v, x, y)[0]


def test_rules_differing_only_in_their_backward_pass_are_not_confused():
    x = jnp.linspace(0.1, 1.0, 4)
    ct = jnp.ones(4)
    good, bad = _rule(1.0), _rule(2.0)
    (g,) = Pullback(lambda v: good(v), x)(ct)
    (b,) = Pullback(lambda v: bad(v), x)(ct)
    np.testing.assert_allclose(g, np.cos(x), rtol=1e-6)
    np.testing.assert_allclose(b, 2 * np.cos(x), rtol=1e-6)


def test_a_check_of_a_broken_rule_after_a_correct_one_still_fails():
    # The two rules have the same name, primal and shapes: only a cache that
    # keyed on what is printed would pass the broken one.
    x = jnp.linspace(0.1, 1.0, 5)
    assert jgc.check_vjp(_rule(1.0), x).ok
    assert not jgc.check_vjp(_rule(2.0), x).ok
    assert jgc.check_vjp(_rule(1.0), x).ok


def test_callbacks_are_compared_by_identity():
    x = np.arange(3.0, dtype=np.float32)
    shape = jax.ShapeDtypeStruct((3,), jnp.float32)

    def through(cb):
        return lambda v: jax.pure_callback(cb, shape, v)

    one = programs.call(through(lambda v: v + 1), x)
    two = programs.call(through(lambda v: v + 2), x)
    np.testing.assert_array_equal(one, x + 1)
    np.testing.assert_array_equal(two, x + 2)


def test_nested_constants_are_part_of_the_program():
    # jit inside the function: its closed jaxpr may carry the constant.
    x = jnp.arange(3.0)
    outs = [
        programs.call(lambda v, c=c: jax.jit(lambda u: u + jnp.asarray(c))(v), x)
        for c in (np.float32([1, 2, 3]), np.float32([4, 5, 6]))
    ]
    np.testing.assert_array_equal(outs[0], x + np.float32([1, 2, 3]))
    np.testing.assert_array_equal(outs[1], x + np.float32([4, 5, 6]))


def test_a_batch_is_compiled_once_for_every_check_that_needs_it():
    spec = jax.ShapeDtypeStruct((4,), jnp.float32)
    first = programs.Batch(lambda v: jnp.exp(v) - 0.375, [spec])
    second = programs.Batch(lambda v: jnp.exp(v) - 0.375, [spec])
    other = programs.Batch(lambda v: jnp.exp(v) - 0.5, [spec])
    assert second.reused and not other.reused
    assert first.compiled is second.compiled
    x = jnp.arange(4.0, dtype=jnp.float32)
    np.testing.assert_allclose(second(x), np.exp(x) - 0.375, rtol=1e-6)
    np.testing.assert_allclose(other(x), np.exp(x) - 0.5, rtol=1e-6)


def test_a_repeat_rule_check_compiles_nothing():
    rule, x = _rule(1.0), jnp.linspace(-1.0, 1.0, 6)
    jgc.check_vjp(rule, x)
    assert _compiles(jgc.check_vjp, rule, x) == 0


def test_an_eager_leg_over_budget_is_skipped_and_says_so(monkeypatch):
    from jgradcheck._checks import structure

    rule, x = _rule(1.0), jnp.linspace(-1.0, 1.0, 6)
    ran = jgc.check_vjp(rule, x, localize=0)
    check = next(c for c in ran.structure if c.name == "jit agrees with eager")
    assert check.ran and check.ok and "ulp" in check.detail

    monkeypatch.setattr(structure, "EAGER_BUDGET", 2)
    skipped = jgc.check_vjp(rule, x, localize=0)
    check = next(c for c in skipped.structure if c.name == "jit agrees with eager")
    assert not check.ran and "not compared" in check.detail
    assert skipped.ok and "skip jit agrees with eager" in str(skipped)
    assert skipped.to_dict()["structure"][2]["ran"] is False


def test_the_eager_budget_still_catches_a_rule_that_differs_under_jit():
    # Within the budget (a handful of operations) the eager leg runs, and a
    # rule whose backward pass differs eagerly (a NumPy constant that changes
    # when traced: here, a Python-side branch on tracer type) fails it.
    @jax.custom_vjp
    def odd(x):
        return jnp.sin(x)

    def bwd(x, g):
        traced = isinstance(x, jax.core.Tracer)
        return ((1.0 if traced else 1.5) * g * jnp.cos(x),)

    odd.defvjp(lambda x: (odd(x), x), bwd)
    report = jgc.check_vjp(odd, jnp.linspace(-1.0, 1.0, 6), localize=0)
    check = next(c for c in report.structure if c.name == "jit agrees with eager")
    assert check.ran and not check.ok


def test_cpu_programs_compile_with_the_faster_code_generator(monkeypatch):
    # On a CPU the programs jgradcheck compiles use XLA's older fused-operation
    # code generator (faster to compile, bench/RESULTS.md); the environment
    # variable restores XLA's defaults. Either way the values agree to the
    # last bits of float32 rounding, and the option is really passed: XLA
    # rejects an unknown one, so a misspelt option would fail here.
    assert jax.default_backend() == "cpu"
    assert programs.compiler_options() == programs.CPU_OPTIONS
    x = jnp.linspace(-3.0, 3.0, 7)

    def fn(v):
        return jnp.sum(jnp.tanh(v) * jnp.exp(-v * v) + jnp.logaddexp(v, 0.0))

    legacy = programs.jit(fn)
    np.testing.assert_allclose(float(legacy(x)), float(jax.jit(fn)(x)), rtol=1e-6)
    bogus = jax.jit(fn, compiler_options={"xla_cpu_no_such_option": False})
    with np.testing.assert_raises(Exception):
        bogus(x)
    monkeypatch.setenv("JGC_XLA_DEFAULT_EMITTERS", "1")
    programs.compiler_options.cache_clear()
    try:
        assert programs.compiler_options() is None
    finally:
        monkeypatch.delenv("JGC_XLA_DEFAULT_EMITTERS")
        programs.compiler_options.cache_clear()
    assert programs.compiler_options() == programs.CPU_OPTIONS
