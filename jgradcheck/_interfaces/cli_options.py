"""The arguments of each ``jgradcheck`` command: groups shared by the commands
that take them, and the parser that assembles them (docs/cli.md)."""

from __future__ import annotations

import argparse

from .._options import METHOD_NAMES, MODES, PRECISIONS

SPEC = "FILE.py:NAME or package.module:NAME"
EPILOG = (
    "Exit codes: 0 passed, 1 the check did not pass, 2 nothing was checked "
    "(usage or input error). See docs/cli.md."
)


def nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _at_least_2(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {value}")
    return value


def _loss_arguments(p: argparse.ArgumentParser) -> None:
    """``LOSS --params SPEC [--args SPEC]``: ``check`` and ``check-hvp``."""
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


def _function_arguments(p: argparse.ArgumentParser) -> None:
    """``F --primals SPEC``: the rule checks and ``check-compositions``."""
    p.add_argument("f", metavar="F", help=f"the function, {SPEC}")
    p.add_argument(
        "--primals",
        required=True,
        metavar="SPEC",
        help="a function of no arguments returning F's arguments (a tuple; "
        "anything else is one argument)",
    )


def _engine_options(p: argparse.ArgumentParser) -> None:
    """How the finite-difference sweeps run: the commands that sweep."""
    p.add_argument(
        "--method", choices=METHOD_NAMES, default="auto", help="default: auto"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float64",
        help="dtype of the finite differences (default: float64)",
    )
    p.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="memory one batch of evaluations may use: bytes or a size such as "
        "2GB, 512MiB (default: 2GiB)",
    )
    p.add_argument(
        "--devices",
        type=positive,
        metavar="N",
        help="run the sweeps on the first N local devices (default: all)",
    )


def _output_options(p: argparse.ArgumentParser, *, max_entries: bool) -> None:
    """``--key`` and ``--json`` (every check); ``--max-entries`` where the JSON
    has lists of entries to cut."""
    p.add_argument("--key", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout instead of text",
    )
    if max_entries:
        p.add_argument(
            "--max-entries",
            type=nonnegative,
            default=100,
            metavar="N",
            help="with --json: at most N entries per list of failures, unsure "
            "and kinks (counts stay complete; 0: all; default: 100)",
        )


def _check_options(p: argparse.ArgumentParser) -> None:
    """The options of ``check`` that the other commands do not have."""
    p.add_argument(
        "--grad",
        metavar="SPEC",
        help="the gradient under test, grad(params, *args) (default: jax.grad)",
    )
    p.add_argument(
        "--coords",
        type=positive,
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
        type=positive,
        metavar="N",
        help="with --mode fast: random directions per leaf (default: 4)",
    )


def _rule_options(p: argparse.ArgumentParser) -> None:
    """The options of ``check-vjp`` and ``check-jvp``."""
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
        type=positive,
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


def _hvp_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--directions",
        type=positive,
        default=2,
        metavar="N",
        help="random directions v (default: 2; 2 or more also check the "
        "Hessian's symmetry)",
    )


def _composition_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kind",
        choices=["auto", "vjp", "jvp"],
        default="auto",
        help="which derivative the rows run (default: auto, jvp for a "
        "custom_jvp, else vjp)",
    )
    p.add_argument(
        "--batch",
        type=_at_least_2,
        default=3,
        metavar="N",
        help="input points for vmap, scan and shard_map (default: 3)",
    )


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    what: str,
    call: str,
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=what, description=f"Run jgradcheck.{call}.", epilog=EPILOG
    )


def build_parser() -> argparse.ArgumentParser:
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
    p = _command(
        sub,
        "check",
        "check_grad: the gradient of LOSS(params, *args) vs finite differences",
        "check_grad(LOSS, make_params(), *make_batch())",
    )
    _loss_arguments(p)
    _check_options(p)
    _engine_options(p)
    _output_options(p, max_entries=True)
    for name, what in [
        ("check-vjp", "check_vjp: the reverse-mode rule (custom_vjp) of F"),
        ("check-jvp", "check_jvp: the forward-mode rule (custom_jvp) of F"),
    ]:
        p = _command(sub, name, what, f"{name.replace('-', '_')}(F, *make_inputs())")
        _function_arguments(p)
        _rule_options(p)
        _engine_options(p)
        _output_options(p, max_entries=True)
    p = _command(
        sub,
        "check-hvp",
        "check_hvp: Hessian-vector products of LOSS through its custom rules",
        "check_hvp(LOSS, make_params(), *make_batch())",
    )
    _loss_arguments(p)
    _hvp_options(p)
    _output_options(p, max_entries=False)
    p = _command(
        sub,
        "check-compositions",
        "check_compositions: F's rule under jit, vmap, scan, remat, other modes",
        "check_compositions(F, *make_inputs())",
    )
    _function_arguments(p)
    _composition_options(p)
    _output_options(p, max_entries=False)
    return parser
