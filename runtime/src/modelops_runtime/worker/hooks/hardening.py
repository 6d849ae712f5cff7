"""What the worker side does to itself before any bundle code runs: the ``dask worker``
launcher with its nannies (``--preload-nanny``) and every Dask worker process
(``--preload``) become non-dumpable and set no_new_privs.

- ``PR_SET_DUMPABLE 0``: ``/proc/<pid>/environ``, ``mem``, ``fd/*`` of this process are
  then open only to a process with CAP_SYS_PTRACE, so a warm process running as the same
  (unprivileged) uid cannot read the worker's or the nanny's environment (secrets). The
  flag is reset by ``execve``: every exec'd program (the worker process under a nanny, uv,
  a warm process) starts dumpable again, which is why both the nanny and the worker set it.
- ``PR_SET_NO_NEW_PRIVS 1``: inherited by every child across fork and exec, so no
  descendant (bundle code included) can gain privileges through a setuid/setgid binary or
  file capabilities.
"""

from __future__ import annotations

import ctypes
import sys

PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 38, 39


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.restype = ctypes.c_int
    return libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0))


def harden_process() -> dict[str, bool]:
    """Make this process non-dumpable and set no_new_privs; return what holds now
    (``{"non_dumpable": …, "no_new_privs": …}``; both False off Linux)."""
    if not sys.platform.startswith("linux"):
        return {"non_dumpable": False, "no_new_privs": False}
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    return state()


def state() -> dict[str, bool]:
    if not sys.platform.startswith("linux"):
        return {"non_dumpable": False, "no_new_privs": False}
    return {"non_dumpable": _prctl(PR_GET_DUMPABLE) == 0,
            "no_new_privs": _prctl(PR_GET_NO_NEW_PRIVS) == 1}
