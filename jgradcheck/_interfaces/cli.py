"""The ``jgradcheck`` command line: ``demo``, ``check``, ``check-vjp``,
``check-jvp``, ``check-hvp``, ``check-compositions``.

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
from typing import Any, NamedTuple

from .._errors import NonFiniteGradientError
from .._options import Options
from .cli_options import build_parser
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
        if extra and isinstance(e, TypeError):
            # The user's function called with fewer arguments than it takes.
            raise UsageError(f"{name} could not call your function: {e}{extra}") from e
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
        # check-hvp and check-compositions have no lists to cut: no --max-entries
        limit = getattr(args, "max_entries", None)
        kw = {} if limit is None else {"max_entries": limit or None}
        print(json.dumps(report.to_dict(**kw), indent=2, allow_nan=False))
    else:
        print(report)
    return EXIT_OK if report.ok else EXIT_FAILED


class _LossInputs(NamedTuple):
    loss: Callable[..., Any]
    params: Any
    extra: tuple[Any, ...]
    hint: str  # for a loss called without the arguments it needs


def _loss_inputs(args: argparse.Namespace, load: Loader) -> _LossInputs:
    """``LOSS``, ``make_params()`` and ``make_batch()`` of check / check-hvp."""
    loss = load.function(args.loss, "LOSS")
    params = call(load.function(args.params, "--params"), args.params, "--params")
    if args.args is None:
        hint = " (the loss's other arguments are given with --args FILE.py:make_batch)"
        return _LossInputs(loss, params, (), hint)
    make_batch = load.function(args.args, "--args")
    return _LossInputs(
        loss, params, _as_tuple(call(make_batch, args.args, "--args")), ""
    )


def _function_inputs(
    args: argparse.Namespace, load: Loader
) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """``F`` and ``make_inputs()`` of check-vjp / check-jvp / check-compositions."""
    f = load.function(args.f, "F")
    primals = call(load.function(args.primals, "--primals"), args.primals, "--primals")
    return f, _as_tuple(primals)


def _check(args: argparse.Namespace) -> int:
    from .._checks.grad import check_grad_with

    load = Loader()
    inp = _loss_inputs(args, load)
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
        return check_grad_with(inp.loss, inp.params, inp.extra, grad=grad, opts=opts)

    try:
        report = _run_check("check_grad", check, hint=inp.hint)
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
    f, primals = _function_inputs(args, load)
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
            primals,
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
            primals,
            direction,
            nondiff_argnums=(),
            opts=opts,
            count=args.points,
        )

    return _output(_run_check(name, check), args)


def _check_hvp(args: argparse.Namespace) -> int:
    from .._checks.hvp import check_hvp

    inp = _loss_inputs(args, Loader())
    report = _run_check(
        "check_hvp",
        check_hvp,
        inp.loss,
        inp.params,
        *inp.extra,
        directions=args.directions,
        key=args.key,
        hint=inp.hint,
    )
    return _output(report, args)


def _check_compositions(args: argparse.Namespace) -> int:
    from .._checks.compositions import check_compositions

    f, primals = _function_inputs(args, Loader())
    report = _run_check(
        "check_compositions",
        check_compositions,
        f,
        *primals,
        kind=args.kind,
        batch=args.batch,
        key=args.key,
    )
    return _output(report, args)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": _check,
    "check-vjp": _check_rule,
    "check-jvp": _check_rule,
    "check-hvp": _check_hvp,
    "check-compositions": _check_compositions,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises SystemExit).

    Args:
      argv: the arguments after ``jgradcheck`` (default: ``sys.argv[1:]``).

    Returns:
      0 when the check passed, 1 when it did not, 2 when nothing was checked.
    """
    parser = build_parser()
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
        return _COMMANDS[args.command](args)
    except UsageError as e:
        print(f"jgradcheck {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
