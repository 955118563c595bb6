"""The sweep engine: sparse evaluation, chunking and coordinate selection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc
from helpers import data, mlp_loss, mlp_params, normal
from jgradcheck._engine.batch import BatchRunner, choose_batch
from jgradcheck._engine.context import EvalContext, reference_precision
from jgradcheck._engine.devices import Layout
from jgradcheck._engine.groups import GROUP_LEAF_MAX, plan_groups
from jgradcheck._engine.sweep import LeafSweep, eval_bytes, leaf_evaluation
from jgradcheck._options import EngineSettings, Options
from jgradcheck._pytree.flat import Split, flatten_params


@jax.custom_vjp
def _scaled_tanh(x):
    return 2 * jnp.tanh(x)


_scaled_tanh.defvjp(
    lambda x: (_scaled_tanh(x), x), lambda x, g: (2 * g / jnp.cosh(x) ** 2,)
)


@jax.custom_jvp
def _square(x):
    return x * x


_square.defjvp(lambda p, t: (_square(p[0]), 2 * p[0] * t[0]))


def _losses():
    x = normal([0, 0], (5, 4))
    w = normal([0, 1], (4, 4)) * 0.5
    cases = {
        "x@W": (lambda p, x: jnp.sum(jnp.tanh(x @ p["w"]) ** 2), {"w": w}),
        "W@x.T (sparse lhs)": (lambda p, x: jnp.sum(jnp.sin(p["w"] @ x.T)), {"w": w}),
        "x@W.T": (lambda p, x: jnp.sum(jnp.tanh(x @ p["w"].T) ** 3), {"w": w}),
        "W used twice": (lambda p, x: jnp.sum(jnp.tanh(x @ p["w"] @ p["w"])), {"w": w}),
        "reshape then dot": (
            lambda p, x: jnp.sum(jnp.cos(x @ p["w"].reshape(4, 4))),
            {"w": w.reshape(16)},
        ),
        "batched einsum": (
            lambda p, x: jnp.sum(jnp.tanh(jnp.einsum("bi,bij->bj", x[:2], p["w"]))),
            {"w": normal([0, 2], (2, 4, 3))},
        ),
        "custom_vjp and custom_jvp": (
            lambda p, x: jnp.sum(_square(_scaled_tanh(x @ p["w"]))),
            {"w": w},
        ),
        "jitted loss": (
            jax.jit(lambda p, x: jnp.sum(jnp.exp(-((x @ p["w"]) ** 2)))),
            {"w": w},
        ),
        "scan (RNN)": (
            lambda p, x: jnp.sum(
                jax.lax.scan(lambda h, xt: (jnp.tanh(h @ p["w"] + xt), None), x[0], x)[
                    0
                ]
            ),
            {"w": w},
        ),
        "cond and while_loop": (
            lambda p, x: jax.lax.cond(
                x[0, 0] > 0,
                lambda w: jnp.sum(jnp.sin(w)),
                lambda w: jax.lax.while_loop(
                    lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] @ w), (0, w)
                )[1].sum(),
                p["w"],
            ),
            {"w": w},
        ),
        "embedding gather": (
            lambda p, x: jnp.sum(jnp.tanh(p["w"][jnp.array([0, 2, 2])] @ x.T)),
            {"w": w},
        ),
        "bias, tanh and the next layer (a patched column)": (
            lambda p, x: jnp.sum(jnp.tanh(jnp.tanh(x @ p["w"] + B) @ W2) ** 2),
            {"w": w},
        ),
        "a patch times itself": (
            lambda p, x: jnp.sum((x @ p["w"]) * (x @ p["w"]) + jnp.tanh(x @ p["w"])),
            {"w": w},
        ),
        "a patch with itself, one product": (
            lambda p, x: jnp.sum(jnp.square(x @ p["w"]) * jnp.exp(-(x @ p["w"]))),
            {"w": w},
        ),
        "row sums of a patch, then a product": (
            lambda p, x: jnp.sum(jnp.sum(jnp.tanh(x @ p["w"]), axis=0) @ W2),
            {"w": w},
        ),
        "a patch into a jitted layer": (
            lambda p, x: jnp.sum(jax.jit(lambda h: jnp.tanh(h) @ W2)(x @ p["w"])),
            {"w": w},
        ),
        "relu and where on a patch": (
            lambda p, x: jnp.sum(
                jnp.where(x @ p["w"] > 0.1, x @ p["w"], 0.0) @ W2
                + jnp.maximum(x @ p["w"], 0.0)
            ),
            {"w": w},
        ),
        "a patch scaled per row, and the patched product transposed": (
            lambda p, x: jnp.sum(jnp.sin((x @ p["w"]) * x[:, :1]).T @ x),
            {"w": w},
        ),
        "a patched row (sparse lhs) into a product": (
            lambda p, x: jnp.sum(jnp.tanh(p["w"] @ x.T) @ x),
            {"w": w},
        ),
        "convolution": (
            lambda p, x: jnp.sum(
                jax.lax.conv_general_dilated(
                    x[None, None], p["w"][None, None], (1, 1), "VALID"
                )
                ** 2
            ),
            {"w": w[:2, :2]},
        ),
    }
    return cases, x


B = normal([0, 3], (4,)) * 0.5
W2 = normal([0, 4], (4, 4)) * 0.5
CASES, X = _losses()


@pytest.mark.parametrize("name", list(CASES))
def test_sparse_evaluation_matches_dense(name):
    loss, params = CASES[name]
    with reference_precision("float64"):
        flat = flatten_params(params)
        ref = EvalContext(loss, flat, (X,), Options.build())
        info = flat.checked[0]
        idx = np.arange(info.size)
        out = {}
        for sparse in (False, True):
            sw = LeafSweep(loss, ref.flat, ref.args, info, batch=8, sparse=sparse)
            vals = sw.base[idx] + 1e-3 * (1 + idx)
            out[sparse] = sw(idx, vals)
        # and against plain evaluation, one coordinate at a time
        direct = []
        for i in idx[:5]:
            leaf = np.array(ref.flat.leaves[info.position]).reshape(-1)
            leaf[i] += 1e-3 * (1 + i)
            p = {"w": jnp.asarray(leaf.reshape(info.shape))}
            direct.append(float(loss(p, ref.args_tuple[0])))
    np.testing.assert_allclose(out[True], out[False], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(out[True][:5], direct, rtol=1e-13, atol=1e-13)


def test_a_first_layer_change_is_carried_into_the_next_product():
    # One entry of W1 changes one column of x @ W1; after tanh it is still one
    # column, and the next product needs a rank-one update, not the whole
    # product again. XLA's own count of the batch's operations falls by more
    # than 5x (about 10x here); the values agree with the dense evaluation.
    from jgradcheck._engine import sparse

    with jax.enable_x64(True):
        x = jnp.asarray(normal([1, 0], (8, 16)), jnp.float64)
        w1 = jnp.asarray(normal([1, 1], (16, 32)) * 0.3, jnp.float64)
        w2 = jnp.asarray(normal([1, 2], (32, 32)) * 0.3, jnp.float64)

        def of_leaf(w, rest):
            x, w2 = rest
            return jnp.sum(jnp.tanh(jnp.tanh(x @ w) @ w2) ** 2)

        idx = jnp.arange(64, dtype=jnp.int32)
        vals = w1.reshape(-1)[idx] + 1e-3
        flops, values = {}, {}
        for patches in (False, True):
            f = sparse.sparse_loss(of_leaf, w1, (x, w2), patches=patches)
            batch = jax.jit(jax.vmap(f, (0, 0, None, None)))
            compiled = batch.lower(idx, vals, w1, (x, w2)).compile()
            flops[patches] = compiled.cost_analysis()["flops"]
            values[patches] = np.asarray(compiled(idx, vals, w1, (x, w2)))
    assert flops[True] * 5 < flops[False]
    np.testing.assert_allclose(values[True], values[False], rtol=1e-13)


def test_chunk_boundaries_give_the_same_answer():
    # Leaf sizes 7*13 and 13: not divisible by any power-of-two batch.
    params = mlp_params([7, 13, 1])
    x, y = data((3, 7), (3, 1))
    big = jgc.check_grad(mlp_loss, params, x, y)
    tiny = jgc.check_grad(mlp_loss, params, x, y, memory_budget=1)  # batches of 1
    assert big.ok and tiny.ok
    for a, b in zip(big.leaves, tiny.leaves):
        assert a.checked == b.checked == a.total
        np.testing.assert_allclose(a.numeric, b.numeric, rtol=1e-12, atol=1e-15)


def test_sampling_covers_every_leaf_and_is_reproducible():
    params = mlp_params([6, 5, 4, 3])  # leaf sizes 30, 5, 20, 4, 12, 3
    x, y = data((2, 6), (2, 3))
    r1 = jgc.check_grad(mlp_loss, params, x, y, coords=10, key=3)
    r2 = jgc.check_grad(mlp_loss, params, x, y, coords=10, key=jax.random.PRNGKey(3))
    r3 = jgc.check_grad(mlp_loss, params, x, y, coords=10, key=3)
    r4 = jgc.check_grad(mlp_loss, params, x, y, coords=10, key=4)
    assert len(r1.leaves) == 6 and all(leaf.checked >= 1 for leaf in r1.leaves)
    assert r1.n_checked == 10
    assert r1.ok and r2.ok and r3.ok and r4.ok  # samples of a correct gradient
    assert [leaf.idx.tolist() for leaf in r1.leaves] == [
        leaf.idx.tolist() for leaf in r3.leaves
    ]
    assert [leaf.idx.tolist() for leaf in r1.leaves] != [
        leaf.idx.tolist() for leaf in r4.leaves
    ]
    assert r2.n_checked == 10
    for leaf in r1.leaves:  # distinct entries within range
        assert (
            len(set(leaf.idx.tolist())) == leaf.checked and leaf.idx.max() < leaf.total
        )


def test_mask_selects_exact_entries():
    params = {"w": jnp.ones((3, 4)) * 0.3, "b": jnp.zeros(4)}
    mask = {"w": np.zeros((3, 4), bool).copy(), "b": None}
    mask["w"][1, 2] = mask["w"][2, 0] = True
    report = jgc.check_grad(
        lambda p: jnp.sum(jnp.tanh(p["w"] + p["b"])), params, coords=mask
    )
    assert [leaf.path for leaf in report.leaves] == ["['w']"]
    assert {e.index for e in report.worst(5)} == {(1, 2), (2, 0)}
    assert report.ok and report.n_checked == 2


def test_timing_is_reported():
    params = mlp_params([4, 3])
    x, y = data((2, 4), (2, 3))
    r = jgc.check_grad(mlp_loss, params, x, y)
    assert r.timing.evaluations >= 2 * r.n_checked
    assert r.timing.compile_seconds > 0 and r.timing.sweep_seconds > 0


def _abstract_split(*leaves):
    return Split(
        dynamic=leaves,
        static=(None,) * len(leaves),
        is_dynamic=(True,) * len(leaves),
        treedef=jax.tree_util.tree_structure((0,) * len(leaves)),
    )


@pytest.mark.parametrize("sparse", [True, False])
def test_batch_fits_a_small_budget_for_a_large_leaf(sparse):
    # A 10M-entry leaf, described but never allocated: the L2 term makes every
    # evaluation materialise its own perturbed copy of the leaf (40 MB).
    w = jax.ShapeDtypeStruct((4000, 2500), jnp.float32)
    x = jax.ShapeDtypeStruct((8, 4000), jnp.float32)

    def loss(p, x):
        (w,) = p
        return jnp.sum(jnp.tanh(x @ w)) + 1e-3 * jnp.sum(w**2)

    one = leaf_evaluation(
        loss, _abstract_split(w), _abstract_split(x), 0, sparse=sparse
    )
    per, fixed = eval_bytes(one, jnp.float32, (w,), (x,))
    assert per >= 40e6  # the copy of the leaf is counted per evaluation
    for budget in (256 * 2**20, 2 * 2**30):
        for backend, devices in [("gpu", 1), ("gpu", 4), ("cpu", 1), ("cpu", 4)]:
            batch = choose_batch(
                per,
                10**7,
                memory_budget=budget,
                backend=backend,
                fixed=fixed,
                devices=devices,
            )
            per_device = batch // devices
            assert batch % devices == 0 and per_device >= 1
            if backend == "cpu":  # host devices share memory and caches
                assert per_device == 1
            else:  # the budget bounds each device's batch, and is used
                assert per_device * per + fixed <= budget < 2 * per_device * per + fixed


def test_batch_is_large_when_the_leaf_stays_sparse():
    # Without the L2 term the sparse evaluation never copies the leaf: one more
    # coordinate costs a few activations, so large batches fit.
    w = jax.ShapeDtypeStruct((4000, 2500), jnp.float32)
    x = jax.ShapeDtypeStruct((8, 4000), jnp.float32)

    def loss(p, x):
        return jnp.sum(jnp.tanh(x @ p[0]))

    one = leaf_evaluation(loss, _abstract_split(w), _abstract_split(x), 0, sparse=True)
    per, fixed = eval_bytes(one, jnp.float32, (w,), (x,))
    assert per < 2**20  # a few activations, no copy of the 40 MB leaf
    batch = choose_batch(per, 10**7, memory_budget=2**30, backend="gpu", fixed=fixed)
    assert batch >= 1024 and batch * per + fixed <= 2**30


def test_choose_batch_rounds_to_the_device_count():
    assert choose_batch(100, 6, memory_budget=2**30, backend="gpu", devices=4) == 8
    assert choose_batch(100, 6, memory_budget=2**30, backend="gpu", devices=3) == 6
    assert choose_batch(10**12, 6, memory_budget=1, backend="gpu", devices=3) == 3
    assert choose_batch(100, 10**6, memory_budget=2**30, backend="cpu") == 512


def test_choose_batch_keeps_cpu_batches_within_the_working_set():
    kw = dict(memory_budget=2**30, backend="cpu")
    assert choose_batch(2**16, 10**6, **kw) == 256  # 16 MiB by default
    assert choose_batch(2**16, 10**6, cpu_working_set=2**20, **kw) == 16
    assert choose_batch(2**16, 10**6, cpu_working_set=2**20, devices=4, **kw) == 16
    assert choose_batch(2**16, 10**6, cpu_working_set=1, **kw) == 1
    gpu = dict(memory_budget=2**30, backend="gpu")  # the working set is a CPU's
    assert choose_batch(2**16, 10**6, cpu_working_set=1, **gpu) == 8192


def _runner(batch, *, devices=1):
    layout = Layout(tuple(jax.local_devices()[:devices]))
    rows = (
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((2,), jnp.float32),
    )
    shared = layout.replicate((jnp.arange(10.0, dtype=jnp.float32),))

    def one(i, v, table):
        return table[i] * v[0] + v[1]

    return BatchRunner(one, rows, shared, batch=batch, layout=layout)


def test_batch_runner_pads_batches_and_counts():
    run = _runner(4)
    idx = np.arange(10, dtype=np.int32) % 7
    vals = np.stack([np.linspace(1, 2, 10), np.arange(10.0)], -1)
    fetched = []
    out = run(idx, vals, on_batch=fetched.append)
    expected = (idx * vals[:, 0].astype(np.float32) + vals[:, 1]).astype(np.float32)
    np.testing.assert_array_equal(out, expected.astype(np.float64))
    assert out.dtype == np.float64 and fetched == [4, 4, 2]
    assert run.timing.n_evals == 10 and run.timing.run_seconds > 0
    assert run.timing.ran_on == {jax.local_devices()[0]}
    assert run.compiled is not None and run.timing.compile_seconds > 0
    # A padded row that would fail is never part of the result.
    np.testing.assert_array_equal(run(idx[:1], vals[:1], fill=(9, (0, 0))), out[:1])
    assert run.timing.n_evals == 11


def test_batch_runner_views_share_one_compile():
    run = _runner(2)
    first = run(np.arange(3, dtype=np.int32), np.ones((3, 2), np.float32))
    seconds = run.timing.compile_seconds
    other = run.view()
    again = other(np.arange(3, dtype=np.int32), np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(first, again)
    assert other.timing.compile_seconds == 0 and other.timing.n_evals == 3
    assert run.timing.compile_seconds == seconds and run.timing.n_evals == 3
    run.release()  # frees the code of every view; a later call compiles again
    assert other.compiled is None
    other(np.arange(1, dtype=np.int32), np.ones((1, 2), np.float32))
    assert other.timing.compile_seconds > 0 and run.compiled is not None


def test_engine_settings_reach_the_leaf_sweep():
    w = normal(0, (200, 100)) / 10
    x = normal(1, (5, 200))

    def loss(p, x):
        return jnp.sum(jnp.tanh(x @ p["w"]))

    layout = Layout(tuple(jax.local_devices()[:1]))
    with reference_precision("float64"):
        flat = flatten_params({"w": w})
        ref = EvalContext(loss, flat, (x,), Options.build())

        def sweep(engine):
            info = ref.flat.checked[0]
            return LeafSweep(
                loss, ref.flat, ref.args, info, layout=layout, engine=engine
            )

        # Dense: every evaluation copies the leaf (20000 float64); sparse: a
        # few activations.
        leaf_bytes = 200 * 100 * 8
        assert sweep(None).per_eval < leaf_bytes // 10
        assert sweep(EngineSettings(sparse=False)).per_eval >= leaf_bytes
        if layout.platform == "cpu":  # the working set bounds CPU batches only
            assert sweep(None).batch == 512
            assert sweep(EngineSettings(cpu_working_set=1)).batch == 1


@pytest.mark.parametrize(
    "name, sparse",
    [("x@W", True), ("x@W", False), ("x@W + L2", True), ("embedding", True)],
)
def test_memory_estimate_bounds_what_xla_allocates(name, sparse):
    w = jax.ShapeDtypeStruct((500, 400), jnp.float32)
    x = jax.ShapeDtypeStruct((8, 500), jnp.float32)
    tok = jax.ShapeDtypeStruct((8, 3), jnp.int32)
    losses = {
        "x@W": (lambda p, x: jnp.sum(jnp.tanh(x @ p[0])), x),
        "x@W + L2": (lambda p, x: jnp.sum(jnp.tanh(x @ p[0])) + jnp.sum(p[0] ** 2), x),
        "embedding": (lambda p, t: jnp.sum(jnp.tanh(p[0][t])), tok),
    }
    loss, arg = losses[name]
    one = leaf_evaluation(
        loss, _abstract_split(w), _abstract_split(arg), 0, sparse=sparse
    )
    per, fixed = eval_bytes(one, jnp.float32, (w,), (arg,))
    fn = Layout(jax.local_devices()[:1]).jit(one)
    for batch in (1, 8):
        idx = jax.ShapeDtypeStruct((batch,), jnp.int32)
        vals = jax.ShapeDtypeStruct((batch,), jnp.float32)
        compiled = fn.lower(idx, vals, (w,), (arg,)).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        assert temp <= batch * per + fixed


def _small_leaves_model():
    params = {
        "a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3),
        "b": jnp.array([0.3, -0.2, 0.1]),
        "c": jnp.array([0.5]),
        "big": jnp.linspace(0.1, 2.0, 2048).reshape(32, 64),
    }

    def loss(p, x):
        h = jnp.tanh(x @ p["a"] + p["b"]) * p["c"]
        return jnp.sum(h**2) + jnp.sum(jnp.sin(p["big"]) * x[0, 0])

    return loss, params, jnp.array([[0.7, -1.2], [0.4, 0.9]])


def test_small_leaves_share_one_compiled_sweep():
    loss, params, x = _small_leaves_model()
    with reference_precision("float64"):
        ref = EvalContext(loss, flatten_params(params), (x,), Options.build())
        groups = plan_groups(ref.loss, ref.flat, ref.args)
        small = [i for i in ref.flat.checked if i.size <= GROUP_LEAF_MAX]
        assert sorted(groups) == sorted(i.position for i in small)
        assert len({groups[p] for p in groups}) == 1  # one group of a, b, c
        sweeps = {i.path: ref.sweep(i, 2 * i.size) for i in ref.flat.checked}
        assert sweeps["['a']"].grouped and not sweeps["['big']"].grouped
        # Each grouped leaf's values equal a sweep of that leaf alone.
        for info in small:
            alone = LeafSweep(loss, ref.flat, ref.args, info, batch=4, sparse=False)
            idx = np.arange(info.size)
            vals = alone.base + 1e-3 * (1 + idx)
            np.testing.assert_allclose(
                sweeps[info.path](idx, vals), alone(idx, vals), rtol=1e-14, atol=1e-14
            )
        ref.close()
    compiled = [s for s in sweeps.values() if s.compile_seconds > 0]
    assert len(compiled) == 1 and compiled[0].grouped  # the group, once


def test_group_size_follows_the_byte_budget(monkeypatch):
    loss, params, x = _small_leaves_model()
    import jgradcheck._engine.groups as groups

    with reference_precision("float64"):
        flat = flatten_params(params)
        ref = EvalContext(loss, flat, (x,), Options.build())
        monkeypatch.setattr(groups, "GROUP_BYTES", 1)
        assert plan_groups(ref.loss, ref.flat, ref.args) == {}
        assert not ref.sweep(ref.flat.checked[0], 12).grouped


def test_grouped_leaves_still_point_at_the_wrong_entry():
    loss, params, x = _small_leaves_model()

    def grad(p, x):
        g = jax.grad(loss)(p, x)
        return {**g, "b": g["b"].at[1].multiply(1.01)}

    report = jgc.check_grad(loss, params, x, grad=grad)
    assert not report.ok
    assert [(f.path, f.index) for f in report.failures()] == [("['b']", (1,))]
