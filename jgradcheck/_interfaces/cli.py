"""The ``jgradcheck`` command line: ``demo``, ``check``, ``check-vjp``, ``check-jvp``.

``jgradcheck check model.py:loss --params model.py:make_params`` loads the
functions from a file (or ``package.module:name``), calls ``make_params()``
(and ``make_batch()`` for ``--args``), runs :func:`jgradcheck.check_grad` and
prints the report. Exit codes:

* 0: the check passed;
* 1: it did not pass: entries disagree (or could not be judged, ``unsure``,
  or nothing was verified), or the gradient under test is NaN/inf somewhere;
* 2: nothing was checked: bad options, a file or name that cannot be loaded,
  a user function that raised, or input :func:`jgradcheck.check_grad` refused.
  The reason is one message on stderr, without a traceback.

1 never means anything but "the derivative did not pass", so scripts and CI
can tell a wrong gradient from a broken setup. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from .._errors import NonFiniteGradientError
from .._options import METHOD_NAMES, MODES, PRECISIONS, Options
from .load import (
    Loader,
    UsageError,
    call,
    describe,
    in_package,
    is_user_file,
    traceback_frames,
)

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


def _run_check(
    name: str, fn: Callable[..., Any], *args: Any, hint: str = "", **kw: Any
) -> Any:
    """Call a jgradcheck check; anything it raises means nothing was checked."""
    try:
        return fn(*args, **kw)
    except NonFiniteGradientError:
        raise  # a broken gradient: a failed check (exit 1), not a setup error
    except Exception as e:
        extra = hint if "positional argument" in str(e) else ""
        frames = traceback_frames(e)
        if isinstance(e, (ValueError, TypeError)) and (
            frames and in_package(frames[-1].filename)
        ):
            # jgradcheck's own message for bad input: it names the argument.
            raise UsageError(f"{name} refused the input: {e}{extra}") from e
        if any(is_user_file(f.filename) for f in frames):
            raise UsageError(
                f"{name} could not run: your function raised {describe(e)}.{extra}"
            ) from e
        raise UsageError(
            f"{name} failed: {describe(e)}.{extra} If your functions run without "
            "error from Python, please report this with the traceback of the same "
            f"call in Python (jgradcheck.{name}(...))."
        ) from e


def _output(report: Any, args: argparse.Namespace) -> int:
    if args.json:
        limit = None if args.max_entries == 0 else args.max_entries
        print(json.dumps(report.to_dict(max_entries=limit), indent=2, allow_nan=False))
    else:
        print(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _check(args: argparse.Namespace) -> int:
    from .._checks.grad import check_grad_with

    load = Loader()
    loss = load.function(args.loss, "LOSS")
    params = call(load.function(args.params, "--params"), args.params, "--params")
    extra: tuple[Any, ...] = ()
    if args.args is not None:
        make_batch = load.function(args.args, "--args")
        extra = _as_tuple(call(make_batch, args.args, "--args"))
    grad = None if args.grad is None else load.function(args.grad, "--grad")

    def check() -> Any:
        opts = Options.build(
            coords=args.coords,
            key=args.key,
            method=args.method,
            precision=args.precision,
            rtol=args.rtol,
            atol=args.atol,
            mode=args.mode,
            directions=args.directions,
            memory_budget=args.memory_budget,
            devices=args.devices,
        )
        return check_grad_with(loss, params, extra, grad=grad, opts=opts)

    try:
        report = _run_check(
            "check_grad",
            check,
            hint=""
            if args.args
            else " (the loss's other arguments are given with --args FILE.py:make_batch)",
        )
    except NonFiniteGradientError as e:
        return _not_finite(e, args)
    return _output(report, args)


def _not_finite(error: NonFiniteGradientError, args: argparse.Namespace) -> int:
    """A gradient with NaN/inf entries: the check failed (exit 1)."""
    summary = f"gradient check FAILED: {error}"
    if args.json:
        print(json.dumps({"kind": "grad", "ok": False, "summary": summary}, indent=2))
    else:
        print(summary)
    return EXIT_FAILED


def _check_rule(args: argparse.Namespace) -> int:
    from .._checks.jvp import JVP
    from .._checks.points import with_points
    from .._checks.rules import check_rule
    from .._checks.vjp import VJP

    name, direction = (
        ("check_vjp", VJP()) if args.command == "check-vjp" else ("check_jvp", JVP())
    )
    load = Loader()
    f = load.function(args.f, "F")
    primals = call(load.function(args.primals, "--primals"), args.primals, "--primals")
    reference = (
        None if args.reference is None else load.function(args.reference, "--reference")
    )

    def check() -> Any:
        opts = Options.build(
            key=args.key,
            precision=args.precision,
            method=args.method,
            memory_budget=args.memory_budget,
            devices=args.devices,
        )
        report = check_rule(
            f,
            _as_tuple(primals),
            direction,
            nondiff_argnums=(),
            order=args.order,
            opts=opts,
            reference=reference,
            reference_factor=args.reference_factor,
        )
        return with_points(
            report,
            f,
            _as_tuple(primals),
            direction,
            nondiff_argnums=(),
            opts=opts,
            count=args.points,
        )

    report = _run_check(name, check)
    return _output(report, args)


SPEC = "FILE.py:NAME or package.module:NAME"
EPILOG = (
    "Exit codes: 0 passed, 1 the check did not pass, 2 nothing was checked "
    "(usage or input error). See docs/cli.md."
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method", choices=METHOD_NAMES, default="auto", help="default: auto"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float64",
        help="dtype of the finite differences (default: float64)",
    )
    p.add_argument("--key", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="memory one batch of evaluations may use: bytes or a size such as "
        "2GB, 512MiB (default: 2GiB)",
    )
    p.add_argument(
        "--devices",
        type=_positive,
        metavar="N",
        help="run the sweeps on the first N local devices (default: all)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout instead of text",
    )
    p.add_argument(
        "--max-entries",
        type=_nonnegative,
        default=100,
        metavar="N",
        help="with --json: at most N entries per list of failures, unsure and "
        "kinks (counts stay complete; 0: all; default: 100)",
    )


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _check_options(p: argparse.ArgumentParser) -> None:
    """The options of ``check`` that the rule checks do not have."""
    p.add_argument(
        "--coords",
        type=_positive,
        metavar="N",
        help="check N coordinates drawn with --key (default: all)",
    )
    p.add_argument("--rtol", type=float, help="explicit relative tolerance")
    p.add_argument("--atol", type=float, help="explicit absolute tolerance")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="full",
        help="full: every selected entry (default); fast: random directions per "
        "leaf, sweeping only the leaves that disagree (docs/fast_mode.md)",
    )
    p.add_argument(
        "--directions",
        type=_positive,
        metavar="N",
        help="with --mode fast: random directions per leaf (default: 4)",
    )


def _rule_options(p: argparse.ArgumentParser) -> None:
    """The arguments of ``check-vjp`` and ``check-jvp`` besides the common ones."""
    p.add_argument("f", metavar="F", help=f"the function, {SPEC}")
    p.add_argument(
        "--primals",
        required=True,
        metavar="SPEC",
        help="a function of no arguments returning F's arguments (a tuple; "
        "anything else is one argument)",
    )
    p.add_argument(
        "--order",
        type=int,
        choices=[1, 2],
        default=1,
        help="2: also check the derivative of the rule (default: 1)",
    )
    p.add_argument(
        "--reference",
        metavar="SPEC",
        help="a plain JAX implementation of F: the rule is also judged against "
        "JAX's derivative of it (reference=; see docs/guide/low-precision.md)",
    )
    p.add_argument(
        "--points",
        type=_positive,
        metavar="K",
        help="also check the rule at K input points (0, ±1, ±tiny, large, the "
        "thresholds it compares with, spreads; the failing ones summarised and "
        "shrunk: points=K; see docs/guide/points.md)",
    )
    p.add_argument(
        "--reference-factor",
        type=float,
        default=2.0,
        metavar="K",
        help="with --reference: the rule may be K times the reference's own "
        "error at the native precision (default: 2)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jgradcheck",
        description="Check JAX gradients against finite differences, with evidence.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "demo",
        help="run the built-in example: an autoencoder with a backprop bug",
    )
    p = sub.add_parser(
        "check",
        help="check_grad: the gradient of LOSS(params, *args) vs finite differences",
        description="Run jgradcheck.check_grad(LOSS, make_params(), *make_batch()).",
        epilog=EPILOG,
    )
    p.add_argument("loss", metavar="LOSS", help=f"the loss function, {SPEC}")
    p.add_argument(
        "--params",
        required=True,
        metavar="SPEC",
        help="a function of no arguments returning the params pytree",
    )
    p.add_argument(
        "--args",
        metavar="SPEC",
        help="a function of no arguments returning the extra arguments of the "
        "loss (a tuple; anything else is one argument)",
    )
    p.add_argument(
        "--grad",
        metavar="SPEC",
        help="the gradient under test, grad(params, *args) (default: jax.grad)",
    )
    _check_options(p)
    _common(p)
    for command, what in [
        ("check-vjp", "check_vjp: the reverse-mode rule (custom_vjp) of F"),
        ("check-jvp", "check_jvp: the forward-mode rule (custom_jvp) of F"),
    ]:
        p = sub.add_parser(
            command,
            help=what,
            description=f"Run jgradcheck.{command.replace('-', '_')}"
            "(F, *make_inputs()).",
            epilog=EPILOG,
        )
        _rule_options(p)
        _common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises SystemExit).

    Args:
      argv: the arguments after ``jgradcheck`` (default: ``sys.argv[1:]``).

    Returns:
      0 when the check passed, 1 when it did not, 2 when nothing was checked.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error argparse printed (2)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    if args.command == "demo":
        from .demo import run

        return EXIT_OK if run() else EXIT_FAILED
    try:
        if args.command == "check":
            return _check(args)
        return _check_rule(args)
    except UsageError as e:
        print(f"jgradcheck {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
