"""The evaluation context: sweeps handed out, primed, counted and closed."""

from __future__ import annotations

import io

import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from jgradcheck._engine.context import EvalContext, Primed, evaluation_context
from jgradcheck._errors import NondeterministicLossError
from jgradcheck._leaf.escalate import check_leaf
from jgradcheck._numerics.rounding import (
    ENTRY_FLOOR_QUANTILE,
    PROBE_QUANTILE,
    TRIALS_QUANTILE,
    narrowest_dtype,
    rounding_from_probes,
)
from jgradcheck._options import EngineSettings, Options
from jgradcheck._pytree.flat import flatten_params


def _two_leaves():
    params = {"a": jnp.linspace(0.1, 1.0, 6), "b": jnp.linspace(-1.0, 1.0, 2000)}

    def loss(p):
        return jnp.sum(jnp.sin(p["a"])) + jnp.sum(p["b"] ** 3)

    return loss, flatten_params(params)


def test_priming_returns_what_it_measured_and_writes_nothing():
    loss, flat = _two_leaves()
    with evaluation_context(loss, flat, (), Options.build()) as ctx:
        sw = ctx.sweep(flat.checked[0], 10)
        primed = ctx.prime(sw)
    assert isinstance(primed, Primed)
    assert primed.j0 == pytest.approx(ctx.value, rel=1e-12)
    assert 0.0 <= primed.rounding < 1e-10
    assert not hasattr(sw, "j0") and not hasattr(sw, "noise")


def test_every_sweep_is_announced_counted_and_timed():
    loss, flat = _two_leaves()
    seen = []
    opts = Options.build(engine=EngineSettings(on_sweep=seen.append))
    with evaluation_context(loss, flat, (), opts) as ctx:
        sweeps = [ctx.sweep(info, 2 * info.size) for info in flat.checked]
        for sw in sweeps:
            ctx.prime(sw)
    assert seen == sweeps
    assert ctx.sweeps == tuple(sweeps)
    timing = ctx.timing()
    assert timing.evaluations == sum(sw.n_evals for sw in sweeps) > 0
    assert timing.compile_seconds > 0 and timing.devices


def test_sweeps_are_closed_when_a_check_raises():
    # sqrt is finite at 0 but not at 0 - h: the first pass raises, and the
    # leaf's progress bar must still be closed.
    seen = []
    opts = Options.build(
        progress=io.StringIO(), engine=EngineSettings(on_sweep=seen.append)
    )
    flat = flatten_params(jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="not finite at θ ± h"):
        with evaluation_context(lambda p: jnp.sum(jnp.sqrt(p)), flat, (), opts) as ctx:
            grad = jnp.array([1.0, 0.5])
            check_leaf(
                ctx, flat.checked[0], np.arange(2), grad, None, rtol=None, atol=None
            )
    assert len(seen) == 1 and seen[0].progress.bar is None


def test_a_compiled_value_that_differs_is_nondeterminism():
    loss, flat = _two_leaves()
    with evaluation_context(loss, flat, (), Options.build()) as ctx:
        ctx.check_deterministic(ctx.value * (1 + 1e-15), "again")  # rounding
        with pytest.raises(NondeterministicLossError, match="not deterministic"):
            ctx.check_deterministic(ctx.value + 1.0, "again")
    assert issubclass(jgc.NondeterministicLossError, ValueError)
    assert jgc.NondeterministicLossError is NondeterministicLossError


def test_the_context_casts_to_float64_only_in_its_scope():
    loss, flat = _two_leaves()
    f32 = flatten_params(
        {k: v.astype(jnp.float32) for k, v in flat.rebuild(flat.leaves).items()}
    )
    with evaluation_context(loss, f32, (), Options.build()) as ctx:
        assert ctx.leaf_dtype(f32.checked[0]) == np.float64
        assert ctx.j_dtype == np.float64
    with evaluation_context(loss, f32, (), Options.build(precision="native")) as ctx:
        assert ctx.leaf_dtype(f32.checked[0]) == np.float32
    assert isinstance(ctx, EvalContext)


def test_one_rounding_policy_three_quantiles():
    probes = np.array([1.0, 2.0, 3.0, 9.0, np.nan])
    assert float(rounding_from_probes(probes, quantile=PROBE_QUANTILE)) == 4.5
    assert float(rounding_from_probes(probes, quantile=TRIALS_QUANTILE)) == 9.0
    floored = rounding_from_probes(
        probes[:4], quantile=ENTRY_FLOOR_QUANTILE, per_entry=True
    )
    np.testing.assert_array_equal(floored, [2.5, 2.5, 3.0, 9.0])
    assert float(rounding_from_probes(np.array([np.nan]), quantile=0.75)) == 0.0
    # An overflowing trial bounds nothing: the rounding is infinite.
    assert rounding_from_probes(np.array([1.0, np.inf]), quantile=1.0) == np.inf
    assert narrowest_dtype(np.float64, np.float32) == np.float32
    assert narrowest_dtype(np.float32, np.float32) == np.float32
