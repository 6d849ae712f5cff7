"""Running uv for the venv store: its binary, its environment (never the worker's whole
one: a build backend uv runs sees only this), and a parent-death signal for it."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

# uv's environment besides UV_* and LC_*: the warm processes' base allow-list (process.py's
# BASE_ENV) plus what reaching a package index takes
BUILD_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME",
             "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
             "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy")


def _uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _die_with_parent():
    """A preexec_fn that arms PR_SET_PDEATHSIG (SIGKILL) in the child: uv must not outlive a
    SIGKILLed worker and go on writing into a build directory that the next builder
    removes. It fires when the forking *thread* ends; the task thread forking uv waits for
    it. Resolved here, so that the child only makes one foreign call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL


def uv_env(default_cache: Path, passthrough: Sequence[str] = ()) -> dict[str, str]:
    """uv's environment: the warm processes' allow-list plus uv's own UV_* variables and
    what reaching an index takes (CA bundle, proxies). A build backend uv runs (only
    with allow_sdist_builds) sees nothing else of the worker's environment."""
    allowed = set(BUILD_ENV) | set(passthrough)
    env = {k: v for k, v in os.environ.items()
           if k in allowed or k.startswith(("UV_", "LC_"))}
    env.setdefault("UV_CACHE_DIR", str(default_cache))
    env.setdefault("UV_LINK_MODE", "hardlink")
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env["UV_NO_PROGRESS"] = "1"
    return env
