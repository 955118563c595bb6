"""The ``jgradcheck`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jgradcheck",
        description="Check JAX gradients against finite differences, with evidence.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "demo",
        help="run the built-in example: an autoencoder with a backprop bug",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run

        return 0 if run() else 1
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
