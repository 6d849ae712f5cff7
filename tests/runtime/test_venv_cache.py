"""VenvCache on a cache directory shared by several pods (a ReadWriteMany volume): a pid
means something only on its own host, so only this host's leftovers are ever reaped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import psutil

from modelops_runtime.worker.warm.venvs.store import FINGERPRINT, VenvCache, venv_key

# builds a fresh venv (FORCE_FRESH_VENV's kind) with the real VenvCache, then dies holding it
_DIES_HOLDING_A_FRESH_VENV = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from modelops_runtime.worker.warm.venvs.store import VenvCache

    venv = VenvCache(Path(sys.argv[1])).fresh([])
    print(venv.path.name, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_only_this_hosts_leftovers_of_dead_processes_are_removed(tmp_path):
    root = tmp_path / "venvs"
    child = subprocess.Popen([sys.executable, "-c", _DIES_HOLDING_A_FRESH_VENV, str(root)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    try:
        out, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, err[-3000:]
    dead = child.pid  # reaped above
    assert not psutil.pid_exists(dead)
    host = socket.gethostname()
    mine = root / out.strip()
    assert mine.name.startswith(f".fresh-{host}-{dead}-") and mine.is_dir()

    # what other pods sharing the volume have in use or in progress: their pids do not
    # exist here (another PID namespace), which says nothing about them
    other = root / mine.name.replace(f"-{host}-", "-worker-pod-b-", 1)
    shutil.copytree(mine, other, symlinks=True)
    key = venv_key([])
    other_build = root / f".tmp-{key}-worker-pod-b-{dead}-0123abcd"
    legacy = root / f".fresh-{dead}-{'b' * 12}"  # named before names carried the host
    # this host's: a build of a dead process, and a fresh venv of a live one (us)
    my_build = root / f".tmp-{key}-{host}-{dead}-4567cdef"
    live = root / f".fresh-{host}-{os.getpid()}-{'a' * 12}"
    for path in (other_build, legacy, my_build, live):
        path.mkdir()

    cache = VenvCache(root)  # a worker process (re)starting on this host
    assert not mine.exists() and not my_build.exists()
    assert other.is_dir() and other_build.is_dir() and legacy.is_dir() and live.is_dir()

    # building the key under its lock (held across pods) clears every unfinished build of
    # that key, whoever started it: nobody else can be building it meanwhile
    venv = cache.get([])
    assert (venv.path / FINGERPRINT).is_file() and not other_build.exists()
    assert other.is_dir() and legacy.is_dir() and live.is_dir()
