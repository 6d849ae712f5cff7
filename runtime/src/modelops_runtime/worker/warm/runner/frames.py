"""The wire between the worker and a warm process: frames, and the names both ends share.

Part of the runner program (runner.py loads it; stdlib only, no imports of ours) and
imported as a normal module by the worker side, so both ends always agree.

A frame is a 9-byte header (codec byte, 8-byte big-endian length) and a body: marshal
(``M``) for small plain data (:func:`is_plain`: no import needed on either side), pickle
protocol 5 (``P``) for anything else. Requests and replies are described in runner.py.
"""

import marshal
import os

MARSHAL = b"M"   # small plain data: no import needed on either side
PICKLE = b"P"    # anything else
HEADER_SIZE = 9  # codec byte + 8-byte big-endian body length
PLAIN = frozenset({str, int, float, bool, bytes, type(None)})  # + dict, list, tuple
PLAIN_ITEMS = 1000   # objects in a message beyond which pickle is used (bounds the walk)
PROTOCOL = 5
WRITABLE_ENV = "MODELOPS_WARM_WRITABLE_PATHS"  # extra writable dirs (comma-separated)
BYTECODE_ENV = "_MODELOPS_BUNDLE_BYTECODE"  # the bundle's compiled files (runner pycache.py)
NO_TEMPLATE = "-"  # --template value of a process that runs tasks itself
TOKEN_VAR = "_MODELOPS_WARM_PROCESS"  # marks a warm process's descendants (see orphans.py)
LEARNED_MAX = 4000  # module names a template imports on behalf of its task processes

# The signal guard (confine.py installs it, worker/warm/guard.py answers it): per machine,
# its audit arch and the numbers of the system calls the seccomp filter looks at.
GUARD_SYSCALLS = {
    "x86_64": {"arch": 0xC000003E, "seccomp": 317, "kill": 62, "tkill": 200, "tgkill": 234,
               "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_send_signal": 424,
               "fcntl": 72, "ioctl": 16, "clone": 56, "fork": 57, "vfork": 58,
               "clone3": 435, "prctl": 157},
    "aarch64": {"arch": 0xC00000B7, "seccomp": 277, "kill": 129, "tkill": 130, "tgkill": 131,
                "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "pidfd_send_signal": 424,
                "fcntl": 25, "ioctl": 29, "clone": 220, "clone3": 435, "prctl": 167},
}
F_SETOWN, F_SETOWN_EX = 8, 15  # fcntl commands that aim SIGIO (or any signal) at a pid
FIOSETOWN, SIOCSPGRP = 0x8901, 0x8902  # ioctls that do the same
CLONE_THREAD, CLONE_PARENT = 0x10000, 0x8000
PR_SET_CHILD_SUBREAPER = 36  # prctl(this, 0) would let a task's orphans leave its tree


def read_exact(fd: int, n: int) -> bytearray | None:
    """Read exactly ``n`` bytes; None on EOF (the parent closed the pipe or died)."""
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    while pos < n:
        got = os.readv(fd, [view[pos:]])
        if got == 0:
            return None
        pos += got
    return buf


def read_frame(fd: int):
    header = read_exact(fd, HEADER_SIZE)
    if header is None:
        return None
    body = read_exact(fd, int.from_bytes(header[1:], "big"))
    if body is None:
        return None
    return decode(header[:1], body)


def is_plain(obj, limit: int = PLAIN_ITEMS) -> bool:
    """True if ``obj`` is at most ``limit`` objects of exactly the PLAIN types. marshal
    must see nothing else: it would turn any buffer (a numpy array, a bytearray) into bytes
    and refuses subclasses only. Big payloads go to pickle: they pay its import anyway."""
    stack = [obj]
    while stack:
        limit -= 1
        if limit < 0:
            return False
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind not in PLAIN:
            return False
    return True


def encode(obj) -> tuple[bytes, bytes]:
    """(codec, body) of one message."""
    if is_plain(obj):
        return MARSHAL, marshal.dumps(obj)
    import _pickle  # pickle's C core: the `pickle` module also imports re, struct, ...

    return PICKLE, _pickle.dumps(obj, protocol=PROTOCOL)


def decode(codec: bytes, body):
    if codec == MARSHAL:
        return marshal.loads(body)
    if codec == PICKLE:
        import _pickle

        return _pickle.loads(body)
    raise ValueError(f"unknown frame codec {bytes(codec)!r}")


def header(codec: bytes, length: int) -> bytes:
    return codec + length.to_bytes(8, "big")


def send_body(fd: int, codec: bytes, body: bytes) -> None:
    _write_all(fd, memoryview(header(codec, len(body))))
    _write_all(fd, memoryview(body))


def write_frame(fd: int, obj) -> None:
    send_body(fd, *encode(obj))


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]
