"""The debugging walkthrough (docs/modes.md): its commands are real commands on real files."""

from __future__ import annotations

import re
import shlex

from e2e_support import PRESETS, REPO
from modelops_runtime.cli import build_parser

README = (REPO / "docs" / "modes.md").read_text()
DIAGNOSE = (REPO / "docs" / "diagnose.md").read_text()


def _walkthrough() -> str:
    """docs/diagnose.md (diagnose does it for you), then docs/modes.md's walkthrough (by hand)."""
    m = re.search(r"<!-- debugging:start -->\n(.*?)<!-- debugging:end -->", README, re.S)
    assert m, "docs/modes.md lacks the debugging walkthrough markers"
    return DIAGNOSE + m.group(1)


def _commands(text: str, program: str) -> list[list[str]]:
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S)).replace("\\\n", " ")
    out = []
    for line in blocks.splitlines():
        line = line.split("#", 1)[0].replace("$S", "runtime/examples/sir").strip()
        if line.startswith(program):
            out.append(shlex.split(line)[1:])
    return out


def test_walkthrough_follows_the_strategy_with_every_preset_in_order():
    """Cost and evidence order: your mode (twice by hand, for determinism), fresh-process
    before fresh-venv, then the worker environment (direct), then one process."""
    text = _walkthrough()
    order = ["prod-warm", "fresh-process", "diagnose-fresh-venv", "debug-parallel",
             "debug-isolated"]
    assert sorted(order) == PRESETS
    for program, expected in (("modelops-runtime", ["prod-warm", *order]), ("helm", order)):
        used = [m.group(1) for c in _commands(text, program)
                if (m := re.search(r"values-examples/([\w-]+)\.yaml", " ".join(c)))]
        assert used[:len(expected)] == expected, (program, used)


def test_local_commands_parse_and_name_existing_files():
    commands = _commands(_walkthrough(), "modelops-runtime")
    assert commands
    parser = build_parser()
    assert {c[0] for c in commands} == {"local", "compare", "diagnose"}
    for argv in commands:
        args = parser.parse_args(argv)
        if args.command == "compare":
            continue   # the files the local commands above write
        for f in args.values:
            assert args.command == "diagnose" or (REPO / f).is_file(), f
        if args.study:   # `local up`, `status` and `down` name none
            assert (REPO / args.study / "study.yaml").is_file()
