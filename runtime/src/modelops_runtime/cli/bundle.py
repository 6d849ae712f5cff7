"""`modelops-runtime bundle pack DIR --repo URL`: pack a bundle, print its reference."""

from __future__ import annotations

import sys
from pathlib import Path

from ..bundles import pack
from ..errors import ModelOpsError


def register(sub) -> None:
    p = sub.add_parser("bundle", help="bundle commands (pack)")
    bsub = p.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    pk = bsub.add_parser(
        "pack", help="pack DIR into a repository and print its sha256:<hex> reference",
        description="Pack a bundle directory into a deterministic, content-addressed "
                    "archive in REPO (a path or an fsspec URL). The same files always give "
                    "the same reference, whatever their mtimes, order or owner.")
    pk.add_argument("dir", type=Path, help="the bundle directory (model code + requirements)")
    pk.add_argument("--repo", required=True,
                    help="bundle repository: a path or an fsspec URL (MODELOPS_BUNDLE_REPO of the workers)")
    pk.set_defaults(func=run_pack)


def run_pack(args) -> int:
    try:
        ref = pack(args.dir, args.repo)
    except ModelOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(ref)
    return 0
