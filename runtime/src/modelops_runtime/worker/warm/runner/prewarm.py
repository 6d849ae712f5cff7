"""Which modules a template may import on behalf of its task processes (runner program,
stdlib only; template.py uses it).

- covers: learned names (third-party modules task processes imported, in their import
  order) are first imported in two throw-away *probe* processes forked from the template,
  one step at a time, each step checked for what a fork could not reproduce: threads
  started, files or sockets opened, atexit or signal handlers registered, the environment,
  cwd or sys.path changed, Python's, numpy's legacy or libc's RNG touched, and module
  globals that differ between the two probes (which differ in pid, time, TMPDIR, cwd and
  the OS's randomness: a value read from them at import). The template imports only the
  steps both probes found clean; a name that is not is *excluded*: each task process
  imports it itself, as a new interpreter does.
- does not: import the bundle's own modules (never learned), decide anything for the
  worker (it reports exclusions and, if the template's own state moved, why).
- see also: docs/modes.md "fresh-process from a template"; tests/runtime/test_fresh_equivalence.py.
"""

import os
import sys

frames = None  # set by runner.py's loader (see main.py ``_load``)

FIRST = ("random", "numpy.random")  # RNG owners: imported alone, before the rest
PROBE_TIMEOUT = 120.0  # s a probe may take to import a batch
ROUNDS = 3  # probe rounds per order at most (each ends at the first unclean step)
TIME_SHIFT = 86400.0 * 400 + 3601.5  # s added to time.time() in the second probe
_SEED = 0x5EED  # the RNGs' seed in both probes: what a task process reseeds is compared

excluded: dict = {}  # name → why each task process imports it itself
prewarmed: list = []  # learned names the template imported
_pending: list = []  # learned, not yet probed
_failed: set = set()  # names the template could not import (not retried)


def learn(names) -> None:
    """Queue learned names (in the task process's import order) for the next probe."""
    for name in names:
        if (isinstance(name, str) and name not in sys.modules and name not in excluded
                and name not in _failed and name not in _pending):
            _pending.append(name)


def adopt(plan) -> dict:
    """Take what an earlier template of the same venv, bundle, module, runner and
    environment decided (worker/warm/plans.py): import its clean names in its order, no
    probe (the probes' verdicts depend on nothing else: the same steps from the same state
    again), and exclude what it excluded. Returns the exclusions taken."""
    new: dict = {}
    if not isinstance(plan, dict):
        return new
    for name, why in dict(plan.get("excluded") or {}).items():
        if isinstance(name, str) and name not in excluded:
            excluded[name] = new[name] = str(why)
    for name in list(plan.get("imports") or ()):
        if isinstance(name, str) and name not in excluded and name not in _failed:
            _import(name)
    return new


def prewarm() -> dict:
    """Probe the pending names and import the clean ones in the template. Returns the names
    excluded by this call with their reasons."""
    new: dict = {}
    for _ in range(ROUNDS):
        steps = _steps()
        if not steps:
            break
        clean, dirty, reason = _probe_pair(steps)
        for name in steps[:clean]:
            _import(name)
        del _pending[:]
        if dirty is None:
            break
        excluded[dirty] = new[dirty] = reason
        _pending.extend(steps[clean + 1:])  # probed again without it next round
    return new


def _steps() -> list:
    names = [n for n in _pending if n not in sys.modules and n not in excluded]
    first = [n for n in FIRST if n in names]
    return first + [n for n in names if n not in first]


def _import(name: str) -> None:
    if name in sys.modules:
        return
    try:
        __import__(name)
        prewarmed.append(name)
    except BaseException:  # noqa: BLE001 - e.g. an alias some module put in sys.modules
        _failed.add(name)


def _probe_pair(steps: list) -> tuple:
    """(number of leading clean steps, the first unclean step or None, why)."""
    started = [_start_probe(steps, shifted) for shifted in (False, True)]  # side by side
    results = [_answer(*probe) for probe in started]
    for result in results:
        if "error" in result:
            return 0, steps[0], f"could not be checked: {result['error']}"
    a, b = (r["steps"] for r in results)
    for i, name in enumerate(steps):
        if i >= len(a) or i >= len(b):
            return i, name, "could not be checked (a probe ended early)"
        why = a[i][0] or b[i][0]
        if not why:
            differs = sorted(m for m in set(a[i][1]) | set(b[i][1])
                             if a[i][1].get(m) != b[i][1].get(m))
            if differs:
                why = (f"module globals of {', '.join(differs[:3])} differ between two "
                       "processes (read from the time, the pid, the environment or the "
                       "OS's randomness at import)")
        if why:
            return i, name, why
    return len(steps), None, ""


def _start_probe(steps: list, shifted: bool) -> tuple:
    """(pid, read end) of a probe importing ``steps``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the probe: never returns
        code = 0
        try:
            os.close(read)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)
            result = _probe(steps, shifted)
        except BaseException as exc:  # noqa: BLE001 - reported, never raised in a probe
            result, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
        try:
            frames.write_frame(write, result)
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _answer(pid: int, read: int) -> dict:
    """A probe's answer (an error if it gave none within PROBE_TIMEOUT); it is reaped."""
    try:
        result = _read_within(read, PROBE_TIMEOUT)
    finally:
        os.close(read)
        _end(pid)
    return result if isinstance(result, dict) else {"error": "no answer within "
                                                    f"{PROBE_TIMEOUT:g}s"}


def _read_within(fd: int, timeout: float):
    import select

    if not select.select([fd], [], [], timeout)[0]:
        return None
    try:
        return frames.read_frame(fd)
    except Exception:  # noqa: BLE001 - a probe that died mid-answer
        return None


def _end(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


# -- inside a probe ------------------------------------------------------------------------

def _probe(steps: list, shifted: bool) -> dict:
    import atexit
    import random
    import signal

    if shifted:  # what a task process differs in from the template, and more
        import time

        real, real_ns = time.time, time.time_ns
        time.time = lambda: real() + TIME_SHIFT
        time.time_ns = lambda: real_ns() + int(TIME_SHIFT * 1e9)
        os.environ["TMPDIR"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), "elsewhere")
        os.environ[frames.TOKEN_VAR] = "probe"
        os.chdir("/")
    random.seed(_SEED)
    out = []
    for name in steps:
        if name in sys.modules:
            out.append(("", {}))
            continue
        before_modules = set(sys.modules)
        before = _observed(atexit, signal)
        try:
            __import__(name)
        except BaseException as exc:  # noqa: BLE001 - the template will not import it
            out.append((f"its import failed ({type(exc).__name__})", {}))
            break
        why = _compare(before, _observed(atexit, signal)) or _libc_rand_touched()
        if name == "numpy.random" and not why:  # seeded from the OS by its import, as in
            sys.modules[name].seed(_SEED)  # a task process (which reseeds it): compared now
        new = [m for m in sys.modules if m not in before_modules]
        out.append((why, {} if why else _globals(new)))
        if why:
            break
    return {"steps": out}


def _observed(atexit, signal) -> dict:
    """What a fork does not carry over or shares, and global state of the interpreter."""
    state = {
        "threads started": len(os.listdir("/proc/self/task")),
        "files or sockets opened": sorted(open_fds()),
        "atexit handlers registered": atexit._ncallbacks(),
        "signal handlers set": [signal.getsignal(s) for s in sorted(signal.valid_signals())
                                if s not in (signal.SIGKILL, signal.SIGSTOP)],
        "the environment changed": dict(os.environ),
        "the working directory changed": os.getcwd(),
        "sys.path changed": list(sys.path),
        "import hooks changed": [id(h) for h in (*sys.meta_path, *sys.path_hooks)],
        "sys hooks changed": [id(h) for h in (sys.excepthook, sys.displayhook, sys.stdout,
                                                sys.stderr, sys.stdin)],
        "Python's random state touched": sys.modules["random"].getstate(),
    }
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        kind, keys, pos, *rest = np_random.get_state()
        state["numpy's legacy RNG touched"] = (kind, keys.tobytes(), pos, *rest)
    return state


def open_fds() -> set:
    """This process's open file descriptors (those reading them left out)."""
    listed = os.listdir("/proc/self/fd")
    still = set()
    for fd in listed:
        try:
            os.fstat(int(fd))
        except OSError:  # the one the listing used
            continue
        still.add(fd)
    return still


def _compare(before: dict, after: dict) -> str:
    for what, value in after.items():
        if before.get(what, value) != value:
            return what
    return ""


_SKIP = (type(sys), type(_compare), type(len), type)


def _globals(names: list) -> dict:
    """A digest per module of its plain module globals (what a fork copies as-is)."""
    import _pickle
    import hashlib

    digests = {}
    for name in names:
        module = sys.modules.get(name)
        h = hashlib.blake2b(digest_size=12)
        try:
            items = sorted((k, v) for k, v in vars(module).items()
                           if isinstance(k, str) and not k.startswith("__"))
        except Exception:  # noqa: BLE001 - odd keys or a module without a dict
            continue
        for key, value in items:
            if not isinstance(value, _SKIP):
                h.update(key.encode() + b"\0" + _canonical(value, _pickle.dumps))
        digests[name] = h.hexdigest()
    return digests


def _canonical(value, dumps, depth: int = 0) -> bytes:
    """``value`` as bytes, sets in a fixed order: the order of a set of objects hashed by
    address (e.g. numpy's dtype classes) differs between any two processes, a fork or
    not, and is no value read at import."""
    kind = type(value)
    if kind in (set, frozenset):
        return b"{" + b",".join(sorted(_canonical(v, dumps, depth + 1) for v in value)) + b"}"
    if depth < 4 and kind in (tuple, list):
        return b"(" + b",".join(_canonical(v, dumps, depth + 1) for v in value) + b")"
    if depth < 4 and kind is dict:
        return b"[" + b",".join(_canonical(k, dumps, depth + 1) + b":" +
                                _canonical(v, dumps, depth + 1) for k, v in value.items()) + b"]"
    try:
        return dumps(value, protocol=5)
    except BaseException:  # noqa: BLE001 - not picklable: its type only
        return kind.__qualname__.encode()


def _libc_rand_touched() -> str:
    """'' if libc's rand() is still at its initial state (as in a new process): it is then
    left exactly there (srand(1) is the initial state)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return ""
    first = libc.rand()
    libc.srand(1)
    touched = libc.rand() != first
    libc.srand(1)  # the initial state again
    return "libc's rand() state touched" if touched else ""
