"""Models from libraries people use: Equinox modules and Flax NNX state.

Their pytrees mix arrays with other leaves (an ``eqx.nn.MLP`` holds its
activation functions, an NNX state can hold integer variables). Those are held
fixed and listed; the float leaves are checked and failures are named by the
library's own paths (``.layers[1].weight``, ``['norm']['scale'].value``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx
from jax.tree_util import keystr, tree_map_with_path

import jgradcheck as jgc
from helpers import data, failing_places


def _change_leaf(tree, path, fn):
    """``tree`` with the leaf at ``path`` (a keystr) replaced by ``fn(leaf)``."""
    seen = []

    def visit(kp, leaf):
        if keystr(kp) == path:
            seen.append(path)
            return fn(leaf)
        return leaf

    out = tree_map_with_path(visit, tree)
    assert seen, f"no leaf at {path}"
    return out


# ----------------------------------------------------------------- equinox


def _mlp():
    return eqx.nn.MLP(3, 2, width_size=4, depth=2, key=jax.random.PRNGKey(0))


def _mlp_loss(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


MLP_FLOATS = {f".layers[{i}].{w}" for i in range(3) for w in ("weight", "bias")}


def test_equinox_mlp_passes_and_lists_its_functions_as_skipped():
    model = _mlp()
    x, y = data((5, 3), (5, 2))
    report = jgc.check_grad(_mlp_loss, model, x, y)  # vs jax.grad (float leaves)
    assert report.ok, report
    assert {leaf.path for leaf in report.leaves} == MLP_FLOATS
    assert report.n_checked == 3 * 4 + 4 + 4 * 4 + 4 + 4 * 2 + 2
    skipped = {info.path: info.kind for info in report.skipped}
    assert skipped == {".activation": "static", ".final_activation": "static"}
    assert ".activation (static)" in str(report)


def test_equinox_mlp_wrong_gradient_is_localised():
    model = _mlp()
    x, y = data((5, 3), (5, 2))

    def grad_missing_half(m, x, y):  # the middle layer's bias gradient doubled
        g = eqx.filter_grad(_mlp_loss)(m, x, y)
        return eqx.tree_at(lambda t: t.layers[1].bias, g, 2 * g.layers[1].bias)

    def grad_one_entry(m, x, y):  # one weight entry off by 0.01
        g = eqx.filter_grad(_mlp_loss)(m, x, y)
        return _change_leaf(g, ".layers[2].weight", lambda w: w.at[1, 3].add(0.01))

    # A correct hand-written gradient (None at the function leaves) passes.
    assert jgc.check_grad(_mlp_loss, model, x, y, grad=eqx.filter_grad(_mlp_loss)).ok
    report = jgc.check_grad(_mlp_loss, model, x, y, grad=grad_missing_half)
    assert not report.ok
    assert {e.path for e in report.failures()} == {".layers[1].bias"}
    # Entries whose gradient is 0 (ReLU units dead on this batch) stay right.
    assert report.leaf(".layers[1].bias").n_fail >= 1
    assert "scaled" in report.leaf(".layers[1].bias").diagnosis
    assert all(leaf.ok for leaf in report.leaves if leaf.path != ".layers[1].bias")
    assert "in .layers[1].bias" in str(report)

    report = jgc.check_grad(_mlp_loss, model, x, y, grad=grad_one_entry)
    assert failing_places(report) == {(".layers[2].weight", (1, 3))}
    assert report.failures()[0].where == ".layers[2].weight[1, 3]"


# ---------------------------------------------------------------- flax nnx


class _Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.l2 = nnx.Linear(4, 2, rngs=rngs)
        self.calls = nnx.Variable(jnp.array(0, jnp.int32))  # an integer: held fixed

    def __call__(self, x):
        return self.l2(jnp.tanh(self.norm(self.l1(x))))


def _nnx_setup():
    graphdef, state = nnx.split(_Net(nnx.Rngs(0)))

    def loss(state, x, y):
        model = nnx.merge(graphdef, state)
        return jnp.mean((model(x) - y) ** 2)

    return loss, state


NNX_FLOATS = {
    "['l1']['kernel'].value",
    "['l1']['bias'].value",
    "['norm']['scale'].value",
    "['norm']['bias'].value",
    "['l2']['kernel'].value",
    "['l2']['bias'].value",
}


def test_flax_nnx_state_passes():
    loss, state = _nnx_setup()
    x, y = data((5, 3), (5, 2))
    report = jgc.check_grad(loss, state, x, y)
    assert report.ok, report
    assert {leaf.path for leaf in report.leaves} == NNX_FLOATS
    assert [(i.path, str(i.dtype)) for i in report.skipped] == [
        ("['calls'].value", "int32")
    ]


def test_flax_nnx_wrong_gradient_is_localised():
    loss, state = _nnx_setup()
    x, y = data((5, 3), (5, 2))

    def grad_sign_bug(state, x, y):
        g = jax.grad(loss, allow_int=True)(state, x, y)
        return _change_leaf(g, "['norm']['scale'].value", lambda s: -s)

    def grad_one_entry(state, x, y):
        g = jax.grad(loss, allow_int=True)(state, x, y)
        return _change_leaf(g, "['l1']['kernel'].value", lambda k: k.at[2, 1].add(0.01))

    report = jgc.check_grad(loss, state, x, y, grad=grad_sign_bug)
    assert not report.ok
    assert {e.path for e in report.failures()} == {"['norm']['scale'].value"}
    assert "sign flipped" in report.leaf("['norm']['scale'].value").diagnosis

    report = jgc.check_grad(loss, state, x, y, grad=grad_one_entry)
    assert failing_places(report) == {("['l1']['kernel'].value", (2, 1))}
