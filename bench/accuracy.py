"""Accuracy of finite-difference stencils per dtype on smooth functions, vs theory.

    python bench/accuracy.py

For each function of a fixed suite (200 points each, as the loss
``Σ f(p) − f(x₀)`` so each coordinate's rounding is that of one scalar f),
``jgc.eps_sweep`` evaluates
the 2-point and 4-point central stencils over 49 steps; the table gives the
median and max relative error against the exact (autodiff, float64) derivative
at the step jgradcheck uses by default (cbrt(eps)·max(1,|x|), 2-point) and at
the best step of the grid, next to the theory: the 2-point error at its optimal
step is about (9/8)^(1/3)·eps^(2/3)·|f|^(2/3)|f'''|^(1/3)/|f'| — ~1e-11 in
float64, ~3e-5 in float32 for unit-scale functions.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jgradcheck as jgc  # noqa: E402

SUITE = {
    "exp(sin x)·tanh x": lambda x: jnp.exp(jnp.sin(x)) * jnp.tanh(x),
    "sin(3x) + x³/10": lambda x: jnp.sin(3 * x) + x**3 / 10,
    "log(1 + x²)": lambda x: jnp.log1p(x**2),
    "softplus(2x)": lambda x: jax.nn.softplus(2 * x),
}


XS = np.linspace(-2.0, 2.0, 200)
DTYPES = ((jnp.float64, "float64"), (jnp.float32, "native"))


def cases():
    """(name, loss, exact derivative, dtype, precision, points) for the suite."""
    for name, fn in SUITE.items():

        def loss(p, x0, fn=fn):
            # Σ f(p) − f(x0): the untouched terms cancel exactly, so the sum's
            # rounding is that of the one perturbed term, as for a scalar f.
            return jnp.sum(fn(p) - fn(x0))

        exact = np.asarray(jax.vmap(jax.grad(fn))(jnp.asarray(XS)))
        for dtype, precision in DTYPES:
            yield name, loss, exact, dtype, precision, jnp.asarray(XS, dtype)


def main():
    print(f"jax {jax.__version__}; 200 points per function, errors relative to |f'(x)|")
    header = f"{'function':20s} {'J dtype':8s} {'method':9s} {'median@default':>15s} {'median@best':>12s} {'max@best':>10s} {'median best ε':>14s}"
    print(header)
    for name, loss, exact, dtype, precision, x in cases():
        grid = np.logspace(-13, -1, 49)
        s = jgc.eps_sweep(
            loss,
            x,
            x,
            coords=None,
            eps=grid,
            precision=precision,
            grad=lambda p, x0, exact=exact: exact,
        )
        default = np.cbrt(np.finfo(dtype).eps)
        k = int(np.argmin(np.abs(np.log(grid / default))))
        for m, err in s.errors.items():
            at_default = np.nanmedian(err[:, k]) if m == "central" else np.nan
            best = np.nanmin(err, axis=1)
            print(
                f"{name:20s} {np.dtype(dtype).name:8s} {m:9s} {at_default:15.2e} "
                f"{np.median(best):12.2e} {np.max(best):10.2e} "
                f"{np.median(s.best_eps[m]):14.2e}"
            )


def methods_table():
    """check_grad's own estimates per method, against the exact derivative."""
    print(
        "\ncheck_grad's finite-difference estimates (report.leaves[0].numeric) per method:"
    )
    print(
        f"{'function':20s} {'J dtype':8s} {'method':11s} {'median rel':>11s} {'max rel':>10s} {'evals/coord':>12s}"
    )
    for name, loss, exact, dtype, precision, x in cases():
        for method in (
            "auto",
            "central",
            "central4",
            "central6",
            "richardson",
            "complex",
        ):
            r = jgc.check_grad(
                loss,
                x,
                x,
                grad=lambda p, x0, exact=exact: jnp.asarray(exact, p.dtype),
                method=method,
                precision=precision,
            )
            rel = np.abs(r.leaves[0].numeric - exact) / np.abs(exact)
            evals = r.timing.evaluations / XS.size
            print(
                f"{name:20s} {np.dtype(dtype).name:8s} {method:11s} "
                f"{np.median(rel):11.2e} {np.max(rel):10.2e} {evals:12.1f}"
            )


if __name__ == "__main__":
    main()
    methods_table()
