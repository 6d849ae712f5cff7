"""The README's debugging walkthrough: its commands are real commands on real files."""

from __future__ import annotations

import re
import shlex

from e2e_support import PRESETS, REPO
from modelops_runtime.cli import build_parser

README = (REPO / "README.md").read_text()


def _walkthrough() -> str:
    m = re.search(r"<!-- debugging:start -->\n(.*?)<!-- debugging:end -->", README, re.S)
    assert m, "README.md lacks the debugging walkthrough markers"
    return m.group(1)


def _commands(text: str, program: str) -> list[list[str]]:
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S)).replace("\\\n", " ")
    out = []
    for line in blocks.splitlines():
        line = line.split("#", 1)[0].replace("$S", "runtime/examples/sir").strip()
        if line.startswith(program):
            out.append(shlex.split(line)[1:])
    return out


def test_walkthrough_follows_the_strategy_with_every_preset_in_order():
    text = _walkthrough()
    order = ["prod-warm", "debug-parallel", "debug-isolated", "diagnose-fresh-venv",
             "fresh-process"]
    assert sorted(order) == PRESETS
    for program in ("modelops-runtime", "helm"):
        used = [re.search(r"values-examples/([\w-]+)\.yaml", " ".join(c)).group(1)
                for c in _commands(text, program)]
        assert used[:5] == order, (program, used)


def test_local_commands_parse_and_name_existing_files():
    commands = _commands(_walkthrough(), "modelops-runtime")
    assert commands
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.command == "local"
        for f in args.values:
            assert (REPO / f).is_file(), f
        assert (REPO / args.study / "study.yaml").is_file()
