"""How a warm process confines itself and ends with its parent.

Part of the runner program (runner.py loads it; stdlib only, no imports of ours). Before
any bundle code runs, a warm process (and again each task process forked from a template):

- arms PR_SET_PDEATHSIG, so the kernel kills it when its parent dies
  (:func:`set_parent_death_signal`), and sets no_new_privs;
- points what scientific packages write at run time into its scratch directory
  (:func:`own_places`: HOME, TMPDIR, XDG_CACHE_HOME, MPLCONFIGDIR, JOBLIB_TEMP_FOLDER,
  and NUMBA_CACHE_DIR unless the worker chose the venv's compile cache);
- confines itself with Landlock (:func:`sandbox`): it may write only in its scratch
  directory (its cwd), /dev, its compile cache and the configured writable paths, never
  in the bundle cache or a venv,
  and read only those, its bundle, its venv, the Python prefix and the system's files
  (:func:`readable_roots`);
- caps its data size (:func:`cap_data`, RLIMIT_DATA) as the memory limit's backstop;
- starts the lifeline thread (:func:`start_lifeline`): EOF on the lifeline pipe means the
  worker is gone, even while the process is busy in user code;
- installs the signal guard (:func:`guard_signals`): a seccomp filter that lets the worker
  decide every signal to another process and every new process.

Ending takes its process group with it (:func:`die_with_group`): a warm process is a
session leader, so its own children end too.
"""

import _thread
import os
import sys
from _signal import SIGKILL  # the C half of `signal`, already loaded; `signal` adds enum

frames = None  # the runner's wire module: set by runner.py's loader (``_load``)
_LIBC: list = []  # the C library through ctypes, loaded once (a forked process inherits it)


def _libc():
    if not _LIBC:
        import ctypes

        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def die_with_group() -> None:
    try:
        os.killpg(os.getpgrp(), SIGKILL)
    finally:
        os._exit(1)


def set_parent_death_signal(parent_pid: int) -> None:
    """PR_SET_PDEATHSIG: the kernel kills us when the parent dies, even while user code
    holds the GIL (the lifeline thread needs it). Armed before any user code runs; ctypes
    is the one import here that is not free (~1.5 ms), and the only stdlib way to it."""
    if sys.platform.startswith("linux"):
        try:
            libc = _libc()
            libc.prctl(1, SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (the worker set it too)
        except Exception:  # noqa: BLE001 - best effort: the lifeline pipe is the main watch
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        die_with_group()


# Where a task process's libraries write at run time, relative to its scratch directory
# ("": the scratch directory itself). HOME and TMPDIR always (the worker's would be shared
# or read-only); the others only when the worker's environment does not set them (set by
# the executor, e.g. NUMBA_CACHE_DIR: the venv's compile cache, or by a passthrough).
PLACES = {"HOME": "", "TMPDIR": "", "XDG_CACHE_HOME": ".cache",
          "MPLCONFIGDIR": ".config/matplotlib", "JOBLIB_TEMP_FOLDER": "",
          "NUMBA_CACHE_DIR": ".cache/numba"}
ALWAYS = ("HOME", "TMPDIR")


def own_places(scratch: str, names: tuple | None = None) -> tuple:
    """Point the runtime's writable places at ``scratch`` (this process's own); returns the
    names it set. ``names``: those a template set, set again in a task process it forked
    (its own scratch, not the template's)."""
    if names is None:
        names = tuple(n for n in PLACES if n in ALWAYS or n not in os.environ)
    for name in names:
        os.environ[name] = os.path.join(scratch, PLACES[name]) if PLACES[name] else scratch
    return names


def refused_write(exc: BaseException, scratch: str):
    """The path of a write the sandbox (or a read-only mount) refused somewhere in
    ``exc``'s chain, outside this process's scratch directory; None if there is none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if (isinstance(exc, OSError) and exc.errno in (1, 13, 30)  # EPERM, EACCES, EROFS
                and isinstance(exc.filename, str)):
            path = os.path.abspath(exc.filename)
            if not path.startswith(os.path.join(scratch, "")):
                return path
        exc = exc.__cause__ or exc.__context__
    return None


# Landlock (Linux >= 5.13): what the sandbox takes away is every kind of write, and every
# read and execution outside the roots it is given
_LL_EXECUTE, _LL_READ_FILE, _LL_READ_DIR = 1 << 0, 1 << 2, 1 << 3
_LL_WRITE_FILE, _LL_REMOVE = 1 << 1, (1 << 4) | (1 << 5)
_LL_MAKE = sum(1 << bit for bit in range(6, 13))     # char, dir, reg, sock, fifo, block, sym
_LL_REFER, _LL_TRUNCATE = 1 << 13, 1 << 14             # ABI 2, ABI 3
_LL_READ = _LL_EXECUTE | _LL_READ_FILE | _LL_READ_DIR
_LL_FILE = _LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE | _LL_TRUNCATE  # rights of a file
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every arch
# the system's shared files a process needs to run (libraries, certificates, time zones,
# /proc and /sys for CPU counts and memory); never /tmp, /var, /home, /root, /run, /mnt
SYSTEM_READABLE = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc",
                   "/proc", "/sys")


def sandbox(writable: tuple[str, ...], readable: tuple[str, ...] = (),
            prepared: "Prepared | None" = None) -> str:
    """Confine this process (and everything it starts) with Landlock: it may create,
    write, truncate, rename or remove files only beneath ``writable`` (its scratch
    directory and /dev), and read, list or execute only beneath ``writable`` and
    ``readable`` (its bundle, its venv, the Python prefix, SYSTEM_READABLE). So bundle
    code cannot change the pod's bundle cache or venvs, whatever their modes, nor read
    another task's scratch, another bundle, other venvs or the worker's state. Returns ''
    once applied, else why not (an old kernel or a seccomp profile without the calls:
    the process then runs unconfined, as before). Roots that do not exist are skipped.
    ``prepared``: as for :func:`ruleset`."""
    return enforce(ruleset(writable, readable, prepared))


class Prepared:
    """Roots of a sandbox opened and encoded once (:func:`prepare_sandbox`), with the
    calls that make a ruleset of them: each rule a 12-byte struct in one buffer, the
    syscalls typed, so that making a ruleset touches few objects (a template makes one per
    fork, right after the previous fork made its pages copy-on-write)."""

    def __init__(self, libc, handled: int):
        import ctypes

        self.handled = handled
        self.attr = ctypes.c_uint64(handled)  # struct landlock_ruleset_attr, first field
        self.attr_at = ctypes.addressof(self.attr)
        self.create = libc["syscall"]  # a function object of its own: typed here only
        self.create.restype = ctypes.c_long
        self.create.argtypes = (ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t,
                                ctypes.c_long)
        self.add = libc["syscall"]
        self.add.restype = ctypes.c_long
        self.add.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                             ctypes.c_long)
        self.one = ctypes.create_string_buffer(12)  # a rule opened when a ruleset is made
        self.one_at = ctypes.addressof(self.one)
        self.fds: list = []  # O_PATH fds of the roots encoded in ``rules``
        self.rules = ctypes.create_string_buffer(0)
        self.rules_at = ctypes.addressof(self.rules)
        self.again: list = []  # (path, access, loud): missing writable roots, tried again

    def encode(self, roots: list) -> None:
        import ctypes

        encoded = b""
        for path, access, loud in _distinct(roots):
            fd, access = _open_root(path, access, None)
            if fd is None:
                if loud:  # a writable root: a configured directory made later
                    self.again.append((path, access, loud))
            else:
                self.fds.append(fd)
                encoded += _path_beneath(access, fd)
        self.rules = ctypes.create_string_buffer(encoded, len(encoded))
        self.rules_at = ctypes.addressof(self.rules)


def ruleset(writable: tuple[str, ...], readable: tuple[str, ...] = (),
            prepared: Prepared | None = None):
    """The Landlock ruleset :func:`sandbox` applies, not applied yet: (its fd, what to say
    on stderr about roots left out), or why there is none (a str). ``prepared``: more
    roots, opened beforehand by :func:`prepare_sandbox`. A template makes one per task
    process before forking it (the rules a task process would make itself, made where
    its code is warm); the task process applies it with :func:`enforce` and closes the
    prepared fds with :func:`release`, the template closes its copy (:func:`discard`)."""
    if prepared is None:
        prepared = _prepare([])
        if isinstance(prepared, str):
            return prepared
    p = prepared
    fd = p.create(_SYS_CREATE_RULESET, p.attr_at, 8, 0)
    if fd < 0:
        return f"cannot create a Landlock ruleset ({_errno()})"
    notes: list = []
    try:
        for offset in range(0, len(p.fds) * 12, 12):  # opened and encoded once
            if p.add(_SYS_ADD_RULE, fd, 1, p.rules_at + offset, 0) < 0:
                return f"cannot add a Landlock rule ({_errno()})"
        rules = [(path, p.handled, True) for path in writable]
        rules += [(path, _LL_READ, False) for path in readable]
        for path, access, loud in (*rules, *p.again):
            root, access = _open_root(path, access, notes if loud else None)
            if root is None:
                continue
            try:
                p.one.raw = _path_beneath(access, root)
                if p.add(_SYS_ADD_RULE, fd, 1, p.one_at, 0) < 0:
                    return f"cannot add a Landlock rule ({_errno()})"
            finally:
                os.close(root)
        made, fd = (fd, notes), -1
    finally:
        if fd >= 0:
            os.close(fd)
    return made


def enforce(rules) -> str:
    """Apply a :func:`ruleset` to this process (its fd closed): '' once applied, else why
    not (``rules`` itself when it is the reason there is no ruleset)."""
    if isinstance(rules, str):
        return rules
    fd, notes = rules
    try:
        for note in notes:
            sys.stderr.write(note)
        libc = _libc()
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: required by landlock_restrict_self
        if libc.syscall(_SYS_RESTRICT_SELF, fd, 0) < 0:
            return f"cannot enforce the Landlock ruleset ({_errno()})"
    finally:
        os.close(fd)
    return ""


def discard(rules) -> None:
    """Close a :func:`ruleset` that is not to be applied here (a template's copy)."""
    if not isinstance(rules, str):
        os.close(rules[0])


def _errno() -> str:
    import ctypes

    return os.strerror(ctypes.get_errno())


def _handled(libc):
    """The access rights a ruleset handles on this kernel, or why there is none."""
    abi = libc.syscall(_SYS_CREATE_RULESET, None, 0, 1)  # 1 = LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return f"Landlock is not available ({_errno()})"
    handled = _LL_WRITE_FILE | _LL_REMOVE | _LL_MAKE | _LL_READ
    return handled | (_LL_REFER if abi >= 2 else 0) | (_LL_TRUNCATE if abi >= 3 else 0)


def _open_root(path: str, access: int, notes: list | None) -> tuple:
    """(O_PATH fd of ``path`` or None if it cannot be opened (said in ``notes``, if
    given), the rights a rule on it may hold: a file's rule holds file rights only)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:  # e.g. a configured directory that does not exist
        if notes is not None:
            notes.append(f"modelops runner: {path} stays read-only: {exc}\n")
        return None, access
    if os.fstat(fd).st_mode & 0o170000 != 0o040000:  # not a directory (S_IFDIR)
        access &= _LL_FILE
    return fd, access


def _path_beneath(access: int, fd: int) -> bytes:
    """struct landlock_path_beneath_attr (packed): u64 allowed_access, s32 parent_fd."""
    return access.to_bytes(8, sys.byteorder) + fd.to_bytes(4, sys.byteorder, signed=True)


def _distinct(roots: list) -> list:
    """``roots`` ((path, access, loud) each) without those another existing directory
    among them covers (beneath it once symlinks are resolved, its rights among that one's:
    /lib -> usr/lib beneath /usr, a prefix given twice): fewer rules per task process."""
    real = [(os.path.realpath(path), access, os.path.isdir(path))
            for path, access, _loud in roots]
    kept = []
    for i, root in enumerate(roots):
        mine, access, _ = real[i]
        if not any(j != i and isdir and more & access == access and (
                   (mine == other and j < i) or mine.startswith(os.path.join(other, "")))
                   for j, (other, more, isdir) in enumerate(real)):
            kept.append(root)
    return kept


def _prepare(roots: list):
    """A :class:`Prepared` of ``roots`` ((path, access, loud) each), or why Landlock
    cannot be used here (a str)."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    libc = _libc()
    handled = _handled(libc)
    if isinstance(handled, str):
        return handled
    prepared = Prepared(libc, handled)
    prepared.encode([(path, handled if access is None else access, loud)
                     for path, access, loud in roots])
    return prepared


def prepare_sandbox(writable: tuple[str, ...], readable: tuple[str, ...]):
    """In a template: the roots of its task processes' own sandbox that are the same for
    every task (all but its scratch directory), opened and encoded once (the template
    makes each task process's ruleset of them with :func:`ruleset`; the task process
    inherits the open fds and closes them with :func:`release` once sandboxed, so no fd
    is left to bundle code). Roots another one covers are left out (:func:`_distinct`);
    a writable root that cannot be opened now is tried again for each ruleset, a readable
    one is left out. None where Landlock is unavailable (:func:`sandbox` then says why)."""
    prepared = _prepare([(path, None, True) for path in writable]
                        + [(path, _LL_READ, False) for path in readable])
    return None if isinstance(prepared, str) else prepared


def release(prepared) -> None:
    """Close the fds of :func:`prepare_sandbox` (in a task process, once sandboxed)."""
    for fd in prepared.fds if prepared is not None else ():
        try:
            os.close(fd)
        except OSError:
            pass


def readable_roots(bundle_dir: str, program_dir: str) -> tuple[str, ...]:
    """What a warm process reads besides what it may write: its bundle, its venv, the
    Python installation the venv was made from, the runner program, the system's files."""
    return (bundle_dir, sys.prefix, sys.base_prefix, sys.base_exec_prefix,
            os.path.realpath(sys.executable), program_dir, *SYSTEM_READABLE)


def cap_data(limit: int) -> None:
    """RLIMIT_DATA: the hard backstop of the memory limit. An allocation past it fails with
    MemoryError at once, however fast it came (the pool samples memory only every 100 ms).
    RLIMIT_DATA, not RLIMIT_AS: it leaves out shared libraries and reservations that are
    not writable (e.g. malloc arenas), so imports like numpy's are unaffected."""
    import resource  # C extension, ~0.1 ms; only with a memory limit

    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def start_lifeline(fd: int, thread: bool = True) -> int | None:
    """The lifeline thread's ident (``_thread``: `threading` costs ms per start), or None
    (unless ``thread``) when the kernel watches the pipe for us (:func:`kernel_watched`)."""
    if not thread and kernel_watched(fd):
        return None
    return _thread.start_new_thread(_watch_lifeline, (fd,))


def kernel_watched(fd: int) -> bool:
    """The worker armed the lifeline's read end (worker/warm/lifeline.py): O_ASYNC and
    F_SETSIG SIGKILL, aimed at our group, so the kernel kills it as :func:`die_with_group`
    would when the write end's last copy closes; no thread need watch it."""
    try:
        libc = _libc()
        return (libc.fcntl(fd, _F_GETSIG, 0) == SIGKILL
                and libc.fcntl(fd, _F_GETFL, 0) & _O_ASYNC != 0)
    except Exception:  # noqa: BLE001 - then a thread watches it
        return False


_F_GETFL, _F_GETSIG, _O_ASYNC = 3, 11, 0o20000


def _watch_lifeline(fd: int) -> None:
    """Block on the lifeline pipe; EOF means the worker process is gone (even if we missed
    it until now)."""
    try:
        while os.read(fd, 1):
            pass
    except BaseException:  # noqa: BLE001 - whatever went wrong, the watch must not vanish
        pass
    die_with_group()


# The signal guard: a seccomp filter (installed under no_new_privs, no capability needed)
# that hands every signal aimed at another process, and every new process, to the worker
# (SECCOMP_RET_USER_NOTIF): the worker answers from outside the task's reach, knowing its
# process tree (worker/warm/guard.py). See docs/design.md "The signal guard".
_RET_ALLOW, _RET_NOTIFY, _RET_ERRNO = 0x7FFF0000, 0x7FC00000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_LD_ABS, _JEQ, _JSET, _JGE, _RET = 0x20, 0x15, 0x45, 0x35, 0x06
_FLAG_NEW_LISTENER = 1 << 3
_PR_SET_CHILD_SUBREAPER = 36


def _arg(i: int) -> int:
    """Offset of the low 32 bits of argument ``i`` in struct seccomp_data (little endian:
    the only byte order of the machines in GUARD_SYSCALLS)."""
    return 16 + 8 * i


def signal_filter(nrs: dict, own_pid: int) -> list[tuple[int, int, int, int]]:
    """The BPF program (code, jt, jf, k): ALLOW anything but the calls below; kill-likes
    to process group 0 (our own), to ``own_pid`` (0: none) or with signal 0 are allowed, to
    every process (-1) refused, to anyone else asked of the worker; pidfd_send_signal and
    the ioctls that aim SIGIO are refused (fcntl F_SETOWN is asked); a new process (clone
    without CLONE_THREAD, fork, vfork) is asked (the worker counts the task's processes);
    clone3, whose flags BPF cannot read, answers ENOSYS (libc then uses clone); turning
    the subreaper bit off (which would let orphans leave the tree, uncounted) is refused."""
    allow, notify = ("ret", _RET_ALLOW), ("ret", _RET_NOTIFY)
    eperm, enosys = ("ret", _RET_ERRNO | _EPERM), ("ret", _RET_ERRNO | _ENOSYS)
    labels = {"allow": allow, "notify": notify, "eperm": eperm, "enosys": enosys}
    code: list = [("ld", 4), ("jeq", nrs["arch"], None, "enosys"), ("ld", 0)]
    if "fork" in nrs:  # x86_64: the x32 ABI's numbers (bit 30) are never ours
        code.append(("jge", 0x40000000, "enosys", None))
    targets = [("kill", "pid"), ("rt_sigqueueinfo", "pid"), ("tkill", "pid"),
               ("tgkill", "tg"), ("rt_tgsigqueueinfo", "tg"),
               ("pidfd_send_signal", "eperm"), ("fcntl", "fcntl"), ("ioctl", "ioctl"),
               ("clone", "clone"), ("fork", "notify"), ("vfork", "notify"),
               ("clone3", "enosys"), ("prctl", "prctl")]
    for name, where in targets:
        if name in nrs:
            code.append(("jeq", nrs[name], where, None))
    code += [allow,
             "pid", ("ld", _arg(0)), ("jeq", 0, "allow", None), ("jeq", 0xFFFFFFFF, "eperm", None),
             ("jeq", own_pid, "allow", None), ("ld", _arg(1)), ("jeq", 0, "allow", None), notify,
             "tg", ("ld", _arg(0)), ("jeq", own_pid, "allow", None), ("ld", _arg(2)),
             ("jeq", 0, "allow", None), notify,
             "fcntl", ("ld", _arg(1)), ("jeq", frames.F_SETOWN, "notify", None),
             ("jeq", frames.F_SETOWN_EX, "eperm", None), allow,
             "ioctl", ("ld", _arg(1)), ("jeq", frames.FIOSETOWN, "eperm", None),
             ("jeq", frames.SIOCSPGRP, "eperm", None), allow,
             "clone", ("ld", _arg(0)), ("jset", frames.CLONE_THREAD, "allow", None), notify,
             "prctl", ("ld", _arg(0)), ("jeq", frames.PR_SET_CHILD_SUBREAPER, None, "allow"),
             ("ld", _arg(1)), ("jeq", 0, "eperm", None), allow]
    for name, op in labels.items():
        code += [name, op]
    at, pos = {}, 0
    for item in code:  # label → index of the instruction after it
        if isinstance(item, str):
            at[item] = pos
        else:
            pos += 1
    out, pos = [], 0
    for item in code:
        if isinstance(item, str):
            continue
        if item[0] == "ld":
            out.append((_LD_ABS, 0, 0, item[1]))
        elif item[0] == "ret":
            out.append((_RET, 0, 0, item[1]))
        else:
            op, k, yes, no = item
            jump = [0 if t is None else at[t] - pos - 1 for t in (yes, no)]
            assert all(0 <= j < 256 for j in jump), item
            out.append(({"jeq": _JEQ, "jset": _JSET, "jge": _JGE}[op], *jump, k))
        pos += 1
    return out


def become_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: orphans among our descendants (a daemon's double fork, a
    setsid'd child whose parent exited) become our children, so they stay in our tree,
    where the worker finds and ends them after the task."""
    _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def guard_signals(sock_fd: int, subreaper: bool, template: bool = False) -> str:
    """Install the signal guard on this process (and so on everything it starts) and send
    its listener to the worker over ``sock_fd`` (closed either way). ``subreaper``: also
    :func:`become_subreaper`. ``template``: signals to ourselves are asked too (the task
    processes we fork keep our filter, and ourselves are not theirs to signal).
    Returns '' once installed, else why not (the process then runs unguarded)."""
    import _socket
    import ctypes

    sock = _socket.socket(fileno=sock_fd)
    try:
        nrs = frames.GUARD_SYSCALLS.get(os.uname().machine)
        if nrs is None:
            return f"no signal guard for the {os.uname().machine} architecture"
        libc = _libc()
        if subreaper:
            become_subreaper()
        program = signal_filter(nrs, 0 if template else os.getpid())
        insns = (ctypes.c_uint64 * len(program))(*(
            code | (jt << 16) | (jf << 24) | (k << 32) for code, jt, jf, k in program))

        class _Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        prog = _Prog(len(program), ctypes.addressof(insns))
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: what lets us filter unprivileged
        listener = libc.syscall(nrs["seccomp"], 1, _FLAG_NEW_LISTENER, ctypes.byref(prog))
        if listener < 0:
            return f"cannot install the seccomp filter ({os.strerror(ctypes.get_errno())})"
        try:
            sock.sendmsg([b"L"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                   listener.to_bytes(4, sys.byteorder))])
        finally:
            os.close(listener)
        return ""
    except OSError as exc:
        return f"cannot hand the signal guard to the worker ({exc})"
    finally:
        sock.close()
