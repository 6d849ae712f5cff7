"""Loopback ports for processes a test starts, without the bind-close-hand-over race.

- covers: :class:`HeldPort` keeps a port bound (not listening, ``SO_REUSEADDR``) until
  the process it is given to listens on it: the kernel hands a bound port to no other
  ``bind(0)``, while a server that sets ``SO_REUSEADDR`` itself (tornado, so Dask; every
  Go listener, so etcd and kube-apiserver) can still bind and listen on it. A held port
  nobody listens on refuses connections for as long as it is held.
  :func:`retry_on_eaddrinuse` is for a consumer that binds without ``SO_REUSEADDR``
  (podman's published ports): fresh ports until it does not fail with EADDRINUSE.
- does not: reserve anything beyond 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
ATTEMPTS = 5


class HeldPort:
    """A loopback port bound by this process until :meth:`release` (or the ``with``
    block's end)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> None:
        self._sock.close()

    def __enter__(self) -> HeldPort:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold_ports(n: int) -> list[HeldPort]:
    """``n`` distinct held loopback ports (release each once its server listens)."""
    return [HeldPort() for _ in range(n)]


def free_port() -> int:
    """A port free right now, not held: only for :func:`retry_on_eaddrinuse`'s callers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(Exception):
    """Raised by a starter whose server could not bind its port (EADDRINUSE)."""


def address_in_use(text: str) -> bool:
    """Whether a tool's error output says its port was taken."""
    lowered = text.lower()
    return "address already in use" in lowered or "eaddrinuse" in lowered


def retry_on_eaddrinuse(start: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """``start()`` (which picks its ports anew each call) until it does not raise
    :class:`PortTaken`; the last attempt's failure is raised as an AssertionError."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except PortTaken as exc:
            if attempt == attempts:
                raise AssertionError(f"a port was taken on each of {attempts} attempts: "
                                     f"{exc}") from exc
    raise AssertionError("unreachable")
