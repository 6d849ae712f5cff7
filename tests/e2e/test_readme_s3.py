"""The README's "Bundles in S3" section runs as written against the tests' S3 server: the
bundle packed into a bucket, `local` fetching it from there in its workers, the runs
stored in the bucket, read back by `results`, and a second run resuming with nothing to do.

- covers: item 6 of issue #26 (the newcomer's path), local mode with an s3:// bundle
  repository and an s3:// results store, offline (the server is local; uv installs from the
  locked wheelhouse).
- does not: run the other README blocks (test_readme_quickstart.py does).
"""

from __future__ import annotations

import os
import subprocess

from e2e_support import REPO
from support.wheelhouse import offline_env, require_wheelhouse
from test_readme_quickstart import README, bash_blocks, sections

SECTION = "Bundles in S3"
OWN_MODEL = "Run your own model in 5 minutes"


def _run(block: str, cwd, env) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (block, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def test_bundles_in_s3_runs_as_written(s3_server, tmp_path):
    wheels = require_wheelhouse()
    for name in (".venv", ".tools", "chart", "values-examples"):
        (tmp_path / name).symlink_to(REPO / name)
    bucket = s3_server.bucket("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELOPS_", "AWS_"))}
    env.update(offline_env(wheels), **s3_server.env(), BUCKET=bucket, PYTHONUNBUFFERED="1")

    # the study the section runs: the files "Run your own model" writes (not its run)
    [own] = bash_blocks(sections(README)[OWN_MODEL])[:1]
    _run(own.split("\nmodelops-runtime ", 1)[0], tmp_path, env)
    [block] = bash_blocks(sections(README)[SECTION])

    first = _run(block, tmp_path, env)
    lines = first.stdout.splitlines()
    ref = lines[0]
    assert ref.startswith("sha256:") and len(ref) == 71, first.stdout[-2000:]
    assert f"bundle: {ref}" in first.stdout          # local packed the same bundle there
    assert "resuming from" not in first.stdout
    assert "runs: 40 of 40 done (0 failed), 0 missing" in first.stdout, first.stdout[-3000:]
    keys = s3_server.keys(bucket)
    assert f"bundles/{ref[7:]}.tar.gz" in keys and "results/walk/manifest.json" in keys, keys
    assert [k for k in keys if k.startswith("results/walk/parts/part-")], keys
    assert not [k for k in keys if "/.partial-" in k or "/_tmp-" in k], keys

    again = _run(block, tmp_path, env)
    assert (f"resuming from s3://{bucket}/results/walk: 40 of 40 runs done, 0 to go"
            in again.stdout), again.stdout[-3000:]
    assert "runs: 40 of 40 done (0 failed), 0 missing" in again.stdout
    assert s3_server.keys(bucket) == keys          # no part written twice
