"""The landing README's commands run as written: the two commands are Makefile targets, and
every other bash block (your own model in 5 minutes, compare, diagnose, the chart check)
runs, in order, in a fresh directory holding what a checkout has.

- covers: README.md's bash blocks, including the Parquet read with pandas (issue #27)
- does not: run `make run` / `make test` themselves (make run has its own tests; make test
  is what runs this), nor the blocks of SERVER_SECTIONS (a server of their test's own);
  reach an index: the blocks run as written, with uv's own UV_* variables (which
  the workers pass on to uv) pointing at the locked wheelhouse, offline, as a user behind
  a private mirror would set them
- see also: test_local_readme.py (the debugging walkthrough in docs/modes.md)
"""

from __future__ import annotations

import os
import re
import subprocess

from e2e_support import REPO

from support.wheelhouse import offline_env, real_wheels  # noqa: F401 - fixture

README = (REPO / "README.md").read_text()
# sections whose blocks need a server a test starts: run by their own tests
SERVER_SECTIONS = {"Bundles in S3": "tests/e2e/test_readme_s3.py"}


def sections(text: str) -> dict[str, str]:
    """README's ``## `` sections by title ("" for the text before the first)."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2]))}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


BLOCKS = [b for title, body in sections(README).items() if title not in SERVER_SECTIONS
          for b in bash_blocks(body)]


def test_the_two_commands_are_makefile_targets():
    first = BLOCKS[0]
    targets = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    commands = [line.split("#", 1)[0].split() for line in first.splitlines()]
    used = [c[1] for c in commands if c]
    assert used == ["run", "test"], used
    assert set(used) <= set(targets)
    for target in ("test-fast", "venv", "apiserver"):
        assert f"make {target}" in README and target in targets, target


def test_every_other_block_runs_as_written(tmp_path, real_wheels):  # noqa: F811
    env = {**os.environ, **offline_env(real_wheels)}  # numpy from the wheelhouse, offline
    for name in (".venv", ".tools", "chart", "values-examples"):
        (tmp_path / name).symlink_to(REPO / name)
    outputs = []
    for block in BLOCKS[1:]:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, (block, proc.stdout[-3000:], proc.stderr[-3000:])
        outputs.append(proc.stdout)
    quick, compare_and_diagnose, chart = outputs
    # the study ran its 4 sets, wrote both files, and pandas read the Parquet one
    assert (tmp_path / "runs.json").is_file() and (tmp_path / "runs.parquet").is_file()
    assert "param.drift" in quick and "0.1" in quick, quick[-2000:]
    # the same model gives the same outputs in fresh-process: compare exits 0, diagnose too
    assert (tmp_path / "fresh.json").is_file()
    assert chart.strip().endswith("ok"), chart
