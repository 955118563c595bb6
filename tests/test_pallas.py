"""A Pallas kernel's hand-written VJP, checked in bfloat16 (issue 12, item 9).

``examples/pallas_softmax.py``: a row-wise softmax(x/√d) whose forward and
backward passes are ``pallas_call`` kernels (interpret mode, so it runs on
the CPU), wrapped in a ``jax.custom_vjp``, against the plain
``jax.nn.softmax``. The correct kernel passes with and without
``reference=``; a kernel that drops a term and one that forgets the 1/√d in
one block of rows are caught, and the second is localised to that block.
Interpret mode compiles slowly: each check takes seconds, so there are few.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jgradcheck as jgc

pytest.importorskip(
    "jax.experimental.pallas", reason="this jax build has no jax.experimental.pallas"
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pallas_softmax.py"
_spec = importlib.util.spec_from_file_location("pallas_softmax", EXAMPLE)
assert _spec is not None and _spec.loader is not None
kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernels)

FAIL = 1


def test_the_kernel_is_the_reference_softmax():
    x = kernels.logits()
    np.testing.assert_allclose(
        np.asarray(kernels.make_softmax()(x), np.float32),
        np.asarray(kernels.softmax_reference(x.astype(jnp.float32))),
        atol=2.0**-8,
    )


@pytest.mark.parametrize("with_reference", [False, True])
def test_the_bfloat16_kernel_passes(with_reference):
    ref = kernels.softmax_reference if with_reference else None
    report = jgc.check_vjp(kernels.make_softmax(), kernels.logits(), reference=ref)
    assert report.ok, report
    assert [rep.ok for _, rep in report.localized] == [True]
    # JAX cannot differentiate a pallas_call in reverse mode: the report says
    # which allowance it used instead of autodiff of the primal
    assert report.rounding.startswith("fixed (the primal could not be differentiated")
    if with_reference:
        r = report.reference
        assert r.ok and r.reference_agrees and r.native == "bfloat16"
        # float32 accumulation: at most as far off as the plain bfloat16 softmax
        assert max(leaf.ratio for leaf in r.leaves) < 1.0


def test_a_missing_term_is_caught_against_the_reference():
    report = jgc.check_vjp(
        kernels.make_softmax("term"),
        kernels.logits(),
        reference=kernels.softmax_reference,
        localize=0,
    )
    assert not report.ok
    assert not any(d.ok for d in report.dot_tests)
    r = report.reference
    assert r.reference_agrees, r.evidence  # the reference is right, the kernel not
    assert not r.ok and all(leaf.ratio > 10 for leaf in r.leaves)
    assert any(line.startswith("reference: FAIL") for line in report.failures())


def test_a_wrong_scale_in_one_block_is_localised_to_its_rows():
    x = kernels.logits()
    report = jgc.check_vjp(kernels.make_softmax("block"), x)
    assert not report.ok
    ((_, loc),) = report.localized
    (leaf,) = loc.leaves
    rows = np.unravel_index(leaf.idx[leaf.status == FAIL], x.shape)[0]
    last_block = x.shape[0] - kernels.BLOCK_ROWS
    assert rows.size > 0.9 * kernels.BLOCK_ROWS * x.shape[1]
    assert rows.min() >= last_block  # the other blocks' rows all pass
    # the cotangent is 1/√d = 1/4 of the kernel's in those rows
    bad = leaf.status == FAIL
    np.testing.assert_allclose(leaf.grad[bad] / leaf.numeric[bad], 4.0, rtol=0.05)
