"""A task's descendants end with the task (issue #24, item 2), and a task has at most
MODELOPS_MAX_TASK_PROCESSES processes alive at once: real warm processes, real forks,
real daemons (setsid and a double fork), driven through IsolatedWarmExecEnv in this
process (the worker's side)."""

from __future__ import annotations

import os

import pytest

from modelops_runtime.errors import ProcessLimitExceeded
from modelops_runtime.models import Call
from support.bundles import make_bundle
from support.cluster import wait_for
from support.seccomp import EXECUTOR, PRELUDE

MODEL = '''
import os, subprocess, sys


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def spawn(params, seed):
    """A child, a grandchild (its parent still running), and a daemon: setsid and a double
    fork, so it is nobody's child but its subreaper's. All sleep for minutes."""
    child = subprocess.Popen(["sleep", "300"])
    middle = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, time; p = subprocess.Popen(['sleep', '300']);"
         " print(p.pid, flush=True); time.sleep(300)"], stdout=subprocess.PIPE)
    grandchild = int(middle.stdout.readline())
    r, w = os.pipe()
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode().ljust(16))
            os.execvp("sleep", ["sleep", "300"])
        os._exit(0)
    os.waitpid(first, 0)
    daemon = int(os.read(r, 16))
    import ctypes  # turning its subreaper bit off would let the next ones leave its tree
    libc = ctypes.CDLL(None, use_errno=True)
    escape = libc.prctl(36, 0, 0, 0, 0), ctypes.get_errno()
    if params.get("fail"):
        raise RuntimeError("the task fails, its processes still run")
    return {"pid": os.getpid(), "started": [child.pid, middle.pid, grandchild, daemon],
            "escape": list(escape)}


def states(params, seed):
    return {"pid": os.getpid(), "states": [_state(p) for p in params["pids"]]}


def many(params, seed):
    procs, error = [], None
    for _ in range(params["n"]):
        try:
            procs.append(subprocess.Popen(["sleep", "300"]))
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
    return {"pid": os.getpid(), "started": [p.pid for p in procs], "error": error}


def ok(params, seed):
    return {"pid": os.getpid()}


def hold(params, seed):
    """A child in its own group, its pids and thread count written down, then busy until
    it is killed (in C, holding the GIL: no Python-level watcher could act meanwhile)."""
    child = subprocess.Popen(["sleep", "300"])
    threads = len(os.listdir("/proc/self/task"))
    with open(params["mark"] + ".tmp", "w") as fh:
        fh.write(f"{os.getpid()} {child.pid} {threads}")
    os.rename(params["mark"] + ".tmp", params["mark"])
    import re
    re.match(r"(a+)+b", "a" * 40)  # catastrophic backtracking: minutes in one C call


def wait(params, seed):
    """Sleeps until it is killed (a sibling for ``attack``)."""
    import time
    time.sleep(300)


def attack(params, seed):
    """Signal the template and a sibling task process; escape its own tree by a clone whose
    parent is the worker (CLONE_PARENT, as the template forks task processes)."""
    import ctypes, signal
    out = {}
    for name in ("template", "sibling"):
        if params[name] is None:
            continue
        try:
            os.kill(params[name], signal.SIGTERM)
            out[name] = "sent"
        except OSError as exc:
            out[name] = type(exc).__name__
    libc = ctypes.CDLL(None, use_errno=True)
    nr = {"x86_64": 56, "aarch64": 220}[os.uname().machine]
    pid = libc.syscall(nr, 0x8000 | 17, 0, 0, 0, 0)  # CLONE_PARENT | SIGCHLD
    if pid == 0:
        os._exit(0)
    out["escape"] = [pid if pid < 0 else "forked", ctypes.get_errno()]
    return out


def neighbours(params, seed):
    """List the directory above its scratch: where the other warm processes' scratch
    directories are (or, forked from a template, the template's and its siblings')."""
    try:
        os.listdir(os.path.dirname(os.getcwd()))
        above = "listed"
    except OSError as exc:
        above = type(exc).__name__
    return {"above": above, "own": isinstance(os.listdir("."), list)}
'''


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _call(ref, fn, **params):
    return Call(bundle=ref, entrypoint=f"model:{fn}", args=(params, 0))


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "src", tmp_path / "repo", {"model.py": MODEL}, name="tree")


@pytest.mark.parametrize("reuse", [1000, 1], ids=["warm", "fresh-from-template"])
def test_what_a_task_started_ends_before_the_next_task_runs(bundle, warm, reuse):
    """The issue's row: a task forks children (some with setsid) and returns; they were all
    still alive after it, beside the next task in that process."""
    ex = warm(max_process_reuse=reuse)
    first = ex.run(_call(bundle, "spawn")).outputs
    started = first["started"]
    assert len(started) == 4
    assert first["escape"] == [-1, 1]  # prctl(PR_SET_CHILD_SUBREAPER, 0): EPERM
    # when the task's result is back, each has ended (a zombie until its parent reaps it)
    assert [p for p in started if _state(p) not in ("gone", "Z")] == []
    then = ex.run(_call(bundle, "states", pids=started)).outputs
    if reuse > 1:  # the same warm process, which reaped them before this task
        assert then["pid"] == first["pid"]
        assert then["states"] == ["gone"] * 4
    else:  # a process of its own; the last one's orphans are the worker's to reap
        assert not set(then["states"]) - {"gone", "Z"}, then


@pytest.mark.parametrize("reuse", [1000, 1], ids=["warm", "fresh-from-template"])
def test_a_task_cannot_list_the_scratch_directories_beside_its_own(bundle, warm, reuse):
    """Read confinement, issue #24 item 3: a forked task process has a Landlock layer of
    its own, so its template's directory (its siblings' task directories) is closed too."""
    # (the fixture's writable path holds the scratch root: here none beyond /dev)
    ex = warm(max_process_reuse=reuse, warm_writable_paths="/dev")
    out = ex.run(_call(bundle, "neighbours")).outputs
    assert out == {"above": "PermissionError", "own": True}


@pytest.mark.parametrize("reuse", [1000, 1], ids=["warm", "fresh-from-template"])
def test_a_task_cannot_signal_its_template_or_a_sibling_nor_clone_out_of_its_tree(
        bundle, warm, reuse):
    """Attack: a template clones each task process with the worker as its parent
    (CLONE_PARENT). The task tries the same, to leave its own tree (uncounted, not ended
    with it): refused (EPERM) -- before, its clone became the worker's child. It cannot
    signal the template or a task process forked beside it either."""
    import threading

    ex = warm(max_process_reuse=reuse)
    if reuse > 1:  # (signals to other warm processes: test_security.py)
        out = ex.run(_call(bundle, "attack", template=None, sibling=None)).outputs
        assert out == {"escape": [-1, 1]}, out
        return
    ex.run(_call(bundle, "ok"))  # the template exists
    me, known = os.getpid(), set(ex.warm_pids())
    known |= set(_task_processes(me, known))  # the "ok" task process may still be exiting
    sibling_run = threading.Thread(target=_raised, args=(ex.run, _call(bundle, "wait")))
    sibling_run.start()
    try:
        (sibling,) = wait_for(lambda: _task_processes(me, known), 60,
                              "the sibling task process to start")
        template = ex.templates.pids()[0]
        out = ex.run(_call(bundle, "attack", template=template, sibling=sibling)).outputs
        assert out == {"template": "PermissionError", "sibling": "PermissionError",
                       "escape": [-1, 1]}, out
        assert _state(sibling) not in ("gone", "Z") and _state(template) not in ("gone", "Z")
    finally:
        for pid in _task_processes(me, known):
            os.kill(pid, 9)  # the sibling's run fails (ProcessCrashed)
        sibling_run.join(60)
    assert not sibling_run.is_alive()


def _task_processes(me: int, known: set) -> list[int]:
    """The worker's children forked from a template: session leaders not in the pool."""
    from modelops_runtime.worker.warm.memory import children

    return [p for p in children(me) or () if p not in known
            and _state(p) not in ("gone", "Z") and _session(p) == p]


def _raised(run, *args):
    try:
        run(*args)
    except Exception as exc:  # noqa: BLE001 - the sibling ends killed
        return exc
    return None


def _session(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return 0


def test_a_failing_task_takes_its_processes_with_it(bundle, warm):
    from modelops_runtime.errors import SimulationError

    ex = warm()
    pid = ex.run(_call(bundle, "ok")).outputs["pid"]
    with pytest.raises(SimulationError):
        ex.run(_call(bundle, "spawn", fail=True))
    children = [p for p in _children_of(pid) if _state(p) not in ("gone", "Z")]
    assert children == []
    assert ex.run(_call(bundle, "ok")).outputs["pid"] == pid  # kept warm


def test_more_processes_than_the_limit_fail_the_task_typed(bundle, warm):
    ex = warm(max_task_processes=5)
    with pytest.raises(ProcessLimitExceeded) as info:
        ex.run(_call(bundle, "many", n=20))
    err = info.value
    assert err.limit == 5 and err.refused >= 1
    message = str(err)
    assert "MODELOPS_MAX_TASK_PROCESSES=5" in message and "maxTaskProcesses" in message
    wait_for(lambda: not [p for p in _children_of(err.pid) if _state(p) not in ("gone", "Z")],
             10, "the task's processes to end")
    # within the limit, the same process serves the next task
    out = ex.run(_call(bundle, "many", n=5)).outputs
    assert out["error"] is None and len(out["started"]) == 5 and out["pid"] == err.pid


def _children_of(pid: int) -> list[int]:
    from modelops_runtime.worker.warm.memory import tree_pids

    return tree_pids(pid)[1:]


# Runs a warm executor inside a seccomp profile that refuses seccomp(2) itself (as a
# stricter profile than RuntimeDefault might): the runner cannot install the signal guard.
_WITHOUT_SECCOMP = PRELUDE + r'''
install_filter([(0x20, 0, 0, 0), (0x15, 0, 1, SECCOMP_NR), (0x06, 0, 0, 0x00050000 | 38),
                (0x06, 0, 0, 0x7FFF0000)])  # ld nr; seccomp? ERRNO(ENOSYS) : ALLOW
''' + EXECUTOR + r'''
try:
    out = [ex.run(Call(bundle=ref, entrypoint="model:ok", args=({}, 0))).outputs
           for ref in sys.argv[2:]]
finally:
    ex.shutdown()
print(json.dumps({"out": out, "warnings": [m for m in records if "signal guard" in m]}))
'''


def test_without_seccomp_the_guard_is_missing_logged_once_and_tasks_still_run(
        tmp_path, uv_offline, scratch_root):
    import json
    import subprocess
    import sys

    refs = [make_bundle(tmp_path / "src", tmp_path / "repo",
                        {"model.py": MODEL, "name.txt": name}, name=name)
            for name in ("one", "two")]  # two bundles: two warm processes
    env = {"MODELOPS_BUNDLE_REPO": str(tmp_path / "repo"),
           "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "bundles"),
           "MODELOPS_VENVS_DIR": str(tmp_path / "venvs")}
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_SECCOMP, json.dumps(env), *refs],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert len(result["out"]) == 2 and all("pid" in o for o in result["out"])
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "cannot install the seccomp filter (Function not implemented)" in \
        result["warnings"][0]


# a child script's start: the runner's confine module (and its frames) loaded from the
# runner's source directory (argv[1]), as a runner process has them
_RUNNER_PRELUDE = '''
import importlib.util, os, subprocess, sys

def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(sys.argv[1], name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

confine = load("confine")
confine.frames = load("frames")
'''


_STARTS_BEFORE_HELLO = _RUNNER_PRELUDE + '''why = confine.guard_signals(int(sys.argv[2]), subreaper=False)
rc = subprocess.run(["/bin/true"]).returncode  # a new process between filter and hello
os.write(int(sys.argv[3]), f"hello {rc} {why}".encode())
'''


def test_a_new_process_before_the_hello_is_answered_not_left_waiting():
    """The runner installs its filter, then sends its hello; whatever starts a process in
    between (a template's imports did: matplotlib's font cache runs fc-list) is asked of a
    worker that must already answer. Before, the worker took the listener only after the
    hello: the process waited forever for its own answer (the template of a matplotlib
    bundle "did not answer within 120 s")."""
    import select
    import socket
    import subprocess
    import sys

    from modelops_runtime.worker.warm.guard import GUARD
    from modelops_runtime.worker.warm.runner import program

    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    hello_r, hello_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-I", "-c", _STARTS_BEFORE_HELLO,
                             str(program.SOURCE), str(theirs.fileno()), str(hello_w)],
                            pass_fds=(theirs.fileno(), hello_w))
    theirs.close()
    os.close(hello_w)
    guarded = GUARD.expect(proc.pid, "", ours, None)
    try:
        ready, _, _ = select.select([hello_r], [], [], 60)  # bounded: a wait is the bug
        hello = os.read(hello_r, 4096).decode() if ready else ""
        assert hello == "hello 0 ", (
            f"no hello within 60 s: the process waits for the guard's answer ({hello!r})")
        assert GUARD.settle(guarded) and guarded.forks == 1
    finally:
        GUARD.remove(guarded)
        os.close(hello_r)
        proc.kill()
        proc.wait(timeout=30)


_ASKS_AFTER_GO = _RUNNER_PRELUDE + '''os.read(int(sys.argv[4]), 1)  # the test's go: install the filter, send the listener
why = confine.guard_signals(int(sys.argv[2]), subreaper=False)
os.write(int(sys.argv[3]), f"hello {why}".encode())
os.read(int(sys.argv[4]), 1)  # the test's go: a new process, asked of the guard
rc = subprocess.run(["/bin/true"]).returncode
os.write(int(sys.argv[3]), f"ran {rc}".encode())
'''


def _start_asking_after_go():
    """A process running _ASKS_AFTER_GO: (its Popen, our end of its socket, the pipe it
    says what it did on, the pipe its go is written to). The caller kills and closes."""
    import socket
    import subprocess
    import sys

    from modelops_runtime.worker.warm.runner import program

    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    said_r, said_w = os.pipe()
    go_r, go_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-I", "-c", _ASKS_AFTER_GO, str(program.SOURCE),
                             str(theirs.fileno()), str(said_w), str(go_r)],
                            pass_fds=(theirs.fileno(), said_w, go_r))
    theirs.close()
    os.close(said_w)
    os.close(go_r)
    return proc, ours, said_r, go_w


def test_a_listener_taken_at_the_hello_is_answered_though_its_socket_number_is_reused():
    """The guard's thread reads what to poll (a starting process's socket, its listener not
    there yet), then polls. If the hello comes in between, settle() takes the listener and
    closes the socket; the next fork's pipes reuse its number. Before, settle() did not wake
    the thread: it polled that pipe, not the listener, and the template's next fork waited
    for an answer until the worker's 120 s start timeout killed it (the fresh-process SIR
    study's ~120 s stalls, in about 1 run in 5). The interleaving is forced: the thread
    is held between its second reading (its first poll returned on expect()'s wake, which
    it consumed; the runner is held until then) and its poll while the test does the
    rest."""
    import select
    import threading

    from modelops_runtime.worker.warm.guard import Guard

    in_window, proceed, polls = threading.Event(), threading.Event(), []

    def before_poll() -> None:
        polls.append(1)
        if len(polls) == 2:  # the socket, no listener yet, no wake left to read
            in_window.set()
            proceed.wait(60)

    guard = Guard(before_poll=before_poll)
    proc, ours, said_r, go_w = _start_asking_after_go()
    number = ours.fileno()
    never_r, never_w = os.pipe()  # readable never: what now has the socket's number
    guarded = guard.expect(proc.pid, "", ours, None)

    reused = []

    def said() -> str:
        ready, _, _ = select.select([said_r], [], [], 30)  # bounded: a wait is the bug
        return os.read(said_r, 4096).decode() if ready else ""

    try:
        assert in_window.wait(60), "the guard's thread never read what to poll twice"
        os.write(go_w, b"x")  # the runner installs its filter, sends its listener, hello
        assert said() == "hello ", "no hello: the runner could not install its filter"
        assert guard.settle(guarded)  # the listener is taken, the socket closed
        reused.append(os.dup2(never_r, number))  # ... its number reused, as by a fork's pipes
        proceed.set()
        os.write(go_w, b"x")
        assert said() == "ran 0", (
            "no answer within 30 s to a new process: the guard's thread polls the closed "
            "socket's number (a pipe now), not the listener that came with the hello")
        assert guarded.forks == 1
    finally:
        proceed.set()
        guard.remove(guarded)
        proc.kill()
        proc.wait(timeout=30)
        for fd in (said_r, go_w, never_r, never_w, *reused):
            os.close(fd)


def test_a_process_waiting_for_an_unanswered_guard_call_is_named():
    """What a timed-out wait names (watch.py): the threads of a warm process's tree that
    wait for the guard's answer. Here nobody answers the listener (the test holds it), as
    when the guard's thread polled a stale fd: the new process the runner asks for waits."""
    from modelops_runtime.worker.warm.guard import receive_listener, waiting_for_answer

    proc, ours, said_r, go_w = _start_asking_after_go()
    listener = None
    try:
        assert waiting_for_answer(proc.pid) == []
        os.write(go_w, b"x")
        wait_for(lambda: os.read(said_r, 4096), 30, "the runner's hello")
        listener = receive_listener(ours)
        assert listener is not None, "the runner sent no listener"
        os.write(go_w, b"x")  # its new process is asked of a guard that never answers
        waiting = wait_for(lambda: waiting_for_answer(proc.pid), 30,
                           "the runner's thread to wait for the guard's answer")
        assert waiting == [f"{proc.pid}/{proc.pid}"]
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for fd in (said_r, go_w) + ((listener,) if listener is not None else ()):
            os.close(fd)
        ours.close()


_WORKER_DIES = PRELUDE + EXECUTOR + """  # (no filter of its own installed)
ref, mark = sys.argv[2], sys.argv[3]
ex.run(Call(bundle=ref, entrypoint="model:hold", args=({"mark": mark}, 0)))
"""


@pytest.mark.parametrize("settings", [
    {"max_process_reuse": 1000}, {"max_process_reuse": 1},
    {"max_process_reuse": 1, "fresh_process_from": "exec"}],
    ids=["warm", "fresh-from-template", "fresh-exec"])
def test_a_busy_task_ends_when_its_worker_is_killed_and_sees_one_thread(
        tmp_path, uv_offline, bundle, procs, settings):
    """The worker is SIGKILLed while a task runs (busy in one C call, holding the GIL): the
    task process ends, in every mode (the kernel's lifeline: the worker armed the read end
    of its lifeline pipe with O_ASYNC, F_SETSIG SIGKILL and F_SETOWN its group; and
    PR_SET_PDEATHSIG). A task process sees one thread, its own (no watcher thread), in
    every mode alike."""
    import json
    import signal
    import subprocess
    import sys

    env = {"MODELOPS_BUNDLE_REPO": str(tmp_path / "repo"),
           "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "bundles"),
           "MODELOPS_VENVS_DIR": str(tmp_path / "venvs"),
           "MODELOPS_WARM_WRITABLE_PATHS": str(tmp_path)}
    env.update({f"MODELOPS_{k.upper()}": str(v) for k, v in settings.items()})
    mark = tmp_path / "held"
    worker = subprocess.Popen([sys.executable, "-c", _WORKER_DIES, json.dumps(env), bundle,
                               str(mark)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    started = []
    try:
        wait_for(lambda: mark.exists() or worker.poll() is not None, 300,
                 "the task to start its child")
        assert mark.exists(), worker.communicate()[1][-3000:]
        task, child, threads = (int(x) for x in mark.read_text().split())
        started = [procs.track(task), procs.track(child)]
        assert threads == 1
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        procs.wait_gone(started[:1], 30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        for proc in procs.running(started):  # its child, if the parent-death signal came
            proc.kill()  # before the lifeline broke (the worker's threads end one by one)
        import glob
        import shutil
        # what only the killed worker would have removed (its next start does in a pod)
        tmp = os.environ.get("TMPDIR", "/tmp")
        for left in glob.glob(os.path.join(tmp, f"modelops-*-{worker.pid}-*")):
            shutil.rmtree(left, ignore_errors=True)
