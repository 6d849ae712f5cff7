"""The template's fork of a task process whose parent is the worker (CLONE_PARENT).

- covers: checking once per template that the raw clone is as safe as glibc's fork() here
  (Linux x86_64/aarch64 with glibc; the template's only threads are its main thread and
  its lifeline thread, seen blocked in read(); no robust mutex held) and the clone itself,
  bracketed by Python's own fork handling (PyOS_BeforeFork / PyOS_AfterFork_*), with the
  GIL held throughout; what glibc's fork() does in the child that matters without other
  threads is done here (the thread's tid in its TCB, the robust-list registration).
- does not: fall back by itself (template.py double-forks when :attr:`CloneParent.why_not`
  says why, or when a clone fails); become a task process (template.py).
- see also: docs/design.md "Task processes forked from a template" (why this is faithful).
"""

import ctypes
import os
import sys

CLONE_PARENT, CLONE_CHILD_SETTID, CLONE_CHILD_CLEARTID = 0x8000, 0x01000000, 0x00200000
SIGCHLD = 17
FLAGS = CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
# syscall numbers; the clone argument order differs: x86_64 (flags, stack, ptid, ctid,
# tls), aarch64 (flags, stack, ptid, tls, ctid)
NRS = {"x86_64": {"clone": 56, "set_robust_list": 273, "get_robust_list": 274, "read": 0},
       "aarch64": {"clone": 220, "set_robust_list": 99, "get_robust_list": 100, "read": 63}}
TCB_SCAN = 1024  # bytes of a struct pthread searched for its tid (offset ~720 on x86_64)
READ_WAIT = 2.0  # s the lifeline thread is given to reach its read() (once per template)


class CloneParent:
    """Forks with the worker as the parent, once :attr:`why_not` is '' (else why not)."""

    def __init__(self, lifeline_ident: int | None, lifeline_fd: int) -> None:
        self.why_not = "not checked yet"
        self._lifeline = (lifeline_ident, lifeline_fd)
        self._checked = False
        self._api = None
        self._nrs: dict = {}
        self._tid_at = 0  # the address of this thread's tid in its struct pthread
        self._robust = (0, 0)  # (head, length) of this thread's robust list
        self._x86 = True

    def usable(self) -> bool:
        """Checked once (the lifeline thread may still be starting at the first order)."""
        if not self._checked:
            self._checked = True
            try:
                self.why_not = self._check()
            except Exception as exc:  # noqa: BLE001 - anything odd: the double fork
                self.why_not = f"{type(exc).__name__}: {exc}"
        return not self.why_not

    def _check(self) -> str:
        machine = os.uname().machine
        if not sys.platform.startswith("linux") or machine not in NRS:
            return f"no raw clone on {sys.platform}/{machine}"
        libc = (os.confstr("CS_GNU_LIBC_VERSION") or "") if hasattr(os, "confstr") else ""
        if not libc.startswith("glibc "):
            return f"the C library is not glibc ({libc or 'unknown'})"
        self._nrs, self._x86 = NRS[machine], machine == "x86_64"
        self._api = ctypes.PyDLL(None, use_errno=True)  # calls keep the GIL
        for name in ("PyOS_BeforeFork", "PyOS_AfterFork_Parent", "PyOS_AfterFork_Child"):
            getattr(self._api, name).restype = None
        self._api.syscall.restype = ctypes.c_long
        ident, fd = self._lifeline
        me = os.getpid()
        threads = {int(t) for t in os.listdir("/proc/self/task")}
        others = threads - {me}
        if ident is None or len(others) != 1:
            return f"the template has {len(threads)} threads, not its main and lifeline threads"
        (lifeline_tid,) = others
        import _thread

        main_ident = _thread.get_ident()
        if main_ident == ident or threads != {me, lifeline_tid}:
            return "the template's lifeline thread is not known"
        at = _tid_offset((main_ident, me), (ident, lifeline_tid))
        if at is None:
            return "the thread id in glibc's thread control block was not found"
        self._tid_at = main_ident + at
        if not self._in_read(lifeline_tid, fd):
            return "the template's lifeline thread is not blocked in read()"
        head, size = ctypes.c_void_p(), ctypes.c_size_t()
        if self._api.syscall(ctypes.c_long(self._nrs["get_robust_list"]), ctypes.c_long(0),
                             ctypes.byref(head), ctypes.byref(size)) != 0 or not head.value:
            return "the robust mutex list cannot be read"
        self._robust = (head.value, size.value)
        return ""

    def _in_read(self, tid: int, fd: int) -> bool:
        """The lifeline thread blocked in read(fd): from then on it holds no lock of the C
        library (it only ever reads, then waits for the GIL we hold while cloning)."""
        deadline = None
        while True:
            try:
                with open(f"/proc/self/task/{tid}/syscall") as fh:
                    fields = fh.read().split()
            except OSError:
                return False
            if (len(fields) > 1 and fields[0] == str(self._nrs["read"])
                    and int(fields[1], 16) == fd):
                return True
            import time  # only while it is starting (task processes inherit what we import)

            deadline = deadline or time.monotonic() + READ_WAIT
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)

    def fork(self) -> int:
        """fork() with the worker as the parent: the pid in the template, 0 in the task
        process; raises OSError (the template then double-forks)."""
        api, c_long = self._api, ctypes.c_long
        head, size = self._robust
        if ctypes.c_void_p.from_address(head).value != head:  # a robust mutex is held
            raise OSError(0, "the template holds a robust mutex")
        tid = ctypes.c_void_p(self._tid_at)
        ctid_tls = (tid, c_long(0)) if self._x86 else (c_long(0), tid)
        api.PyOS_BeforeFork()
        pid = api.syscall(c_long(self._nrs["clone"]), c_long(FLAGS), c_long(0),
                          ctypes.c_void_p(None), *ctid_tls)
        error = ctypes.get_errno()
        if pid == 0:  # as glibc's fork() in its child: the kernel reset the registration
            api.syscall(c_long(self._nrs["set_robust_list"]), ctypes.c_void_p(head),
                        ctypes.c_size_t(size))
            api.PyOS_AfterFork_Child()
            return 0
        api.PyOS_AfterFork_Parent()
        if pid < 0:
            raise OSError(error, f"clone(CLONE_PARENT): {os.strerror(error)}")
        return pid


def _tid_offset(main: tuple, other: tuple) -> int | None:
    """Where glibc keeps a thread's kernel tid in its struct pthread (pthread_self()): the
    first offset holding each of two threads' own tid."""
    a = ctypes.string_at(main[0], TCB_SCAN)
    b = ctypes.string_at(other[0], TCB_SCAN)
    for at in range(0, TCB_SCAN - 3, 4):
        if (int.from_bytes(a[at:at + 4], sys.byteorder) == main[1]
                and int.from_bytes(b[at:at + 4], sys.byteorder) == other[1]):
            return at
    return None
