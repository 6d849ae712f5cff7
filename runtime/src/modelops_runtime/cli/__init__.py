"""`modelops-runtime` command line: one thin module per sub-command.

Each entry of COMMANDS is a module exposing ``register(subparsers)``, which adds its
sub-parser and sets ``func`` (called with the parsed args; its return value is the exit
code).
"""

from __future__ import annotations

import argparse
import importlib

from .. import __version__

# module of this package → registers one sub-command
COMMANDS = [
    "config",
    "bundle",
    "local",
    "compare",
    "diagnose",
    "stats",
    "results",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelops-runtime",
        description="Run simulation bundles on Dask workers (modelops-dask runtime).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
