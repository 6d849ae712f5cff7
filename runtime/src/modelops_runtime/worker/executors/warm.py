"""IsolatedWarmExecEnv: bundle code runs in warm processes inside cached uv venvs.

The production mode. Each task is sent to a long-lived process (warm/pool.py) that runs in a
venv built for the bundle's dependencies (warm/venvs/store.py) and imports the bundle once; replies
come back as plain data, failures as the typed errors of errors.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...bundles import bytecode_dir, read_dependencies, read_reply_types
from ...errors import MemoryLimitExceeded, ModelOpsError, ProcessLimitExceeded
from ...config import FreshProcessFrom
from ...models import Call, SimResult
from ..counters import FallbackReason, RemovalReason, StatsRecorder
from ..warm.failures import Lost
from ..warm.orphans import sweep
from ..warm.pool import WarmPool
from ..native import thread_env
from ..packages import package_digest, venv_packages
from ..warm.process import WarmProcess, data_cap, warm_env
from ..warm.runner.program import compile_runner
from ..warm.runner.frames import BYTECODE_ENV, WRITABLE_ENV
from ..warm.plans import DIRECTORY as PLANS_DIRECTORY, Plans, plan_key
from ..warm.runner.program import program_dir
from ..warm.scratch import CompileCaches
from ..warm.venvs.prefetch import FreshVenvs
from ..warm.template import Templates, TemplateTainted
from ..warm.venvs.store import FINGERPRINT, Venv, VenvCache, venv_key
from .base import ExecEnv
from .replies import user_error

log = logging.getLogger("modelops_runtime.pool")


@dataclass(frozen=True)
class _Bundle:
    ref: str
    path: Path
    requirements: tuple[str, ...]
    venv_key: str
    reply_types: frozenset[str]  # extra classes its replies may hold (decode.py)

    @property
    def pool_key(self) -> tuple[str, str]:
        # one process serves one bundle: module names and module state never mix
        return (self.ref, self.venv_key)


class IsolatedWarmExecEnv(ExecEnv):
    name = "isolated_warm"

    def __init__(self, config, bundles) -> None:
        super().__init__(config, bundles)
        self._stats = StatsRecorder()
        self.venvs = VenvCache(config.venvs_dir, validate=config.validate_deps,
                               stats=self._stats, passthrough=config.env_passthrough,
                               allow_sdist_builds=config.allow_sdist_builds,
                               prepare=compile_runner, max_bytes=config.venvs_max_bytes,
                               uv_cache_max_bytes=config.uv_cache_max_bytes)
        self.bundles.on_collect = lambda done: self._stats.incr("bundles_collected",
                                                                  done.entries)
        self.pool = WarmPool(max_processes=config.max_warm_processes,
                             max_reuse=config.max_process_reuse, ttl=config.process_ttl,
                             memory_budget=config.pool_memory_bytes, stats=self._stats)
        self._bundles: dict[str, _Bundle] = {}
        self.compile_caches = CompileCaches()  # numba's, per (venv, bundle): scratch.py
        # what templates' probes decided, for the next template of the same inputs
        self.plans = Plans(config.venvs_dir / PLANS_DIRECTORY)
        # MAX_PROCESS_REUSE=1 (and FORCE_FRESH_VENV: in the pod's pristine uv build of the
        # venv, venvs/pristine.py): fork each task's process from a template (template.py)
        self.templates: Templates | None = None
        self._template_wanted = ((config.max_process_reuse == 1 or config.force_fresh_venv)
                                 and config.fresh_process_from is FreshProcessFrom.template)
        if self._template_wanted and self.pool.subreaper:
            self.templates = Templates(ttl=config.process_ttl, track=self.pool.track_unpooled,
                                       drop=self.pool.drop_unpooled)
        self._fallbacks: dict[tuple, FallbackReason] = {}  # bundles exec'd instead of forked
        # FORCE_FRESH_VENV: the pristine builds (stopped at shutdown) and, for exec'd
        # processes, the next venvs cloned while tasks run (prefetch.py)
        self.fresh_venvs: FreshVenvs | None = None
        if config.force_fresh_venv and (self.templates is not None
                                        or config.fresh_venvs_ahead > 0):
            self.fresh_venvs = FreshVenvs(self.venvs, config.fresh_venvs_ahead)
        self._lock = threading.Lock()
        # package set of each warm process's venv, read when it was spawned
        self._env_of: weakref.WeakKeyDictionary[WarmProcess, str] = weakref.WeakKeyDictionary()
        self._package_sets: dict[str, list[str]] = {}

    # -- ExecEnv -----------------------------------------------------------------------

    def run(self, call: Call) -> SimResult:
        started = time.monotonic()
        bundle = self._bundle(call.bundle)
        fresh = self.config.force_fresh_venv
        key = (*bundle.pool_key, call.entrypoint.partition(":")[0], fresh)
        if self._template_wanted and self.templates is None:
            self._fall_back(key, FallbackReason.no_subreaper, "this worker process cannot "
                            "adopt the processes a template forks (PR_SET_CHILD_SUBREAPER)")
        elif self.templates is not None and key not in self._fallbacks:
            return self._run_forked(call, bundle, started, key)
        return self._run_exec(call, bundle, started)

    def _run_exec(self, call: Call, bundle: _Bundle, started: float) -> SimResult:
        """The plain path: a process exec'd for the task (fresh modes) or a warm one."""
        if self.config.force_fresh_venv:
            return self._run_fresh(call, bundle, started)
        venv: list[Venv] = []  # got before a slot is taken: a failed build evicts nothing
        try:
            proc, reused = self.pool.acquire(
                bundle.pool_key, lambda: self._spawn(bundle, venv[0]),
                prepare=lambda: venv.append(self.venvs.get(bundle.requirements)))
        finally:  # our venv lease: a process started in it holds its own copy
            _close_all([v.lease for v in venv if v.lease is not None])
        # the run's time (docs/studies.md): a process started for it alone counts from its
        # start; one that runs several tasks from now (its start and venv are shared)
        started = proc.started if proc.max_tasks == 1 and not reused else time.monotonic()
        try:
            outputs = self._send(proc, call, bundle)
            # read while this thread owns the process: once released, another thread may
            # take it and count its own task
            pid, count = proc.pid, proc.task_count
            env_digest = self._env_of.get(proc, "")
        finally:
            self.pool.release(proc)
        return self._result(outputs, pid, count, True if reused else proc.venv.cache_hit,
                            started, env_digest)

    def run_many(self, calls: list[Call]) -> list[SimResult | Exception]:
        """A batch of runs of one entrypoint in one round trip to one warm process (each
        run its own result or error, as :meth:`run` gives). Fresh modes, and runs left when
        the process is lost mid-batch, go one by one."""
        if (self.config.force_fresh_venv or self.config.max_process_reuse == 1
                or len(calls) < 2 or len({(c.bundle, c.entrypoint) for c in calls}) != 1):
            return super().run_many(calls)
        first = calls[0]
        bundle = self._bundle(first.bundle)
        venv: list[Venv] = []
        proc, reused = self.pool.acquire(
            bundle.pool_key, lambda: self._spawn(bundle, venv[0]),
            prepare=lambda: venv.append(self.venvs.get(bundle.requirements)))
        out: list[SimResult | Exception] = []
        left = calls
        try:
            label = f"{first.entrypoint} from bundle {first.bundle[:19]}…"
            request = {"op": "batch", "entrypoint": first.entrypoint,
                       "args_list": [tuple(c.args) for c in calls]}
            timeout = self.config.task_timeout
            self._stats.incr("tasks", len(calls))
            before = proc.task_count
            try:
                reply, mark = proc.run(request, label=label, tasks=len(calls),
                                       timeout=None if timeout is None else timeout * len(calls),
                                       mem_limit=self.config.mem_limit_bytes)
            except Lost as lost:
                proc.lost = lost.reason
                if lost.reason is RemovalReason.shutdown:
                    raise lost.error from None
                reply, mark = {"batch": []}, 0  # lost mid-batch: every run again, alone
            pid, env_digest = proc.pid, self._env_of.get(proc, "")
            hit = True if reused else proc.venv.cache_hit
            items = reply.get("batch", [])
            for i, (call, item) in enumerate(zip(calls, items)):
                try:
                    outputs = self._outputs(proc, item, call, bundle, label, mark)
                except ModelOpsError as exc:
                    out.append(exc)
                    continue
                out.append(SimResult(outputs=outputs, executor=self.name, pid=pid,
                                     process_task_count=before + i + 1, venv_cache_hit=hit,
                                     duration_s=item.get("seconds", 0.0),
                                     env_digest=env_digest))
            left = calls[len(items):]
        finally:
            self.pool.release(proc)
        return out + super().run_many(left)

    def shutdown(self) -> None:
        if self.fresh_venvs is not None:  # first: no build outlives a shutdown cut short
            self.fresh_venvs.stop()
        if self.templates is not None:
            self.templates.close()
        self.pool.shutdown()
        sweep(())  # orphans that exited since the pool's last housekeeping
        if self.fresh_venvs is not None:  # used venvs go once their processes are gone
            self.fresh_venvs.close()
        self.venvs.pristines.close()  # FORCE_FRESH_VENV's uv builds, cloned per task
        self.compile_caches.close()

    def stats(self) -> dict[str, Any]:
        return self.pool.snapshot().model_dump(mode="json")

    def package_sets(self) -> dict[str, list[str]]:
        with self._lock:
            return {k: list(v) for k, v in self._package_sets.items()}

    def template_pids(self) -> list[int]:
        """Pids of the templates alive now (MAX_PROCESS_REUSE=1 from templates)."""
        return [] if self.templates is None else self.templates.pids()

    def warm_pids(self) -> list[int]:
        """Pids of the warm processes alive now (for diagnostics and tests)."""
        return self.pool.pids()

    # -- internals -----------------------------------------------------------------------

    def _bundle(self, ref: str) -> _Bundle:
        # refs are content digests: a bundle's directory and dependencies never change
        with self._lock:
            known = self._bundles.get(ref)
        if known is not None:
            return known
        path, lease = self.bundles.lease(ref)
        try:
            requirements = tuple(read_dependencies(path))
            reply_types = frozenset(read_reply_types(path))
        finally:
            os.close(lease)
        bundle = _Bundle(ref, path, requirements, venv_key(requirements), reply_types)
        with self._lock:
            return self._bundles.setdefault(ref, bundle)

    def _env(self, bundle: _Bundle, venv: Venv, fresh: bool) -> dict[str, str]:
        """The environment a warm process (or template) of ``bundle`` starts with."""
        env = {**warm_env(venv, self.config.env_passthrough),
               **thread_env(self.config.native_threads)}
        writable = [str(p) for p in self.config.warm_writable_paths]
        if not fresh and "NUMBA_CACHE_DIR" not in env:  # unless passed through
            # compiled once per venv and bundle; a fresh venv's is in its own scratch
            env["NUMBA_CACHE_DIR"] = str(self.compile_caches.directory(venv.path, bundle.ref))
            writable.append(env["NUMBA_CACHE_DIR"])
        if writable:  # read (and dropped) by the runner's sandbox
            env[WRITABLE_ENV] = ",".join(writable)
        compiled = bytecode_dir(bundle.path)
        if compiled.is_dir():  # read (and dropped) by the runner (pycache.py)
            env[BYTECODE_ENV] = str(compiled)
        return env

    def _plan_key(self, bundle: _Bundle, venv: Venv, module: str) -> str | None:
        """The key of the plans of templates of ``bundle``'s ``module`` in ``venv``
        (plans.py); None if the venv's fingerprint cannot be read. A cached venv is named
        by its path (one generation) and its fingerprint; a worker process's own pristine
        build (FORCE_FRESH_VENV) by what is installed in it (its fingerprint but the build
        time and file record), its path being this worker process's own."""
        try:
            fingerprint = (venv.path / FINGERPRINT).read_bytes()
        except OSError:
            return None
        env = self._env(bundle, venv, False)
        # this worker process's own places: its compile caches, its TMPDIR (`local` gives
        # each worker process of each run its own); the probes' verdicts never depend on
        # them (the two probes differ in TMPDIR: a module reading it is excluded)
        per_process = [str(self.compile_caches.root or ""), env.get("TMPDIR", "")]
        if venv.fresh:
            try:
                built = json.loads(fingerprint)
                built.pop("built_at", None)
                built.pop("files", None)  # its file record: this build's times (record.py)
            except (ValueError, AttributeError):
                return None
            fingerprint = json.dumps(built, sort_keys=True).encode()
            # and its compile cache, named after it (unless one was passed through)
            cache = env.get("NUMBA_CACHE_DIR", "")
            own = bool(per_process[0]) and cache.startswith(per_process[0] + os.sep)
            per_process += [str(venv.path), cache if own else ""]
        return plan_key(venv_path=Path("<this worker process's venv>") if venv.fresh
                        else venv.path, fingerprint=fingerprint, bundle_ref=bundle.ref,
                        module=module, runner=program_dir(venv.path).name,
                        env=env, per_process=per_process)

    def _spawn(self, bundle: _Bundle, venv: Venv, *, fresh: bool = False,
               template: str | None = None) -> WarmProcess:
        # leases: the warm process inherits them, so its bundle and venv are not collected
        # while it (or a child of it) lives; the venv's lease is closed by our caller
        _, bundle_lease = self.bundles.lease(bundle.ref)
        leases = tuple(fd for fd in (bundle_lease, venv.lease) if fd is not None)
        try:
            packages = venv_packages(venv.path)
            env = self._env(bundle, venv, fresh)
            extra = {} if template is None else {"template": template}
            proc = self.pool.spawn(key=bundle.pool_key,
                                   venv=dataclasses.replace(venv, hold_fds=leases),
                                   bundle_dir=bundle.path, env=env, single_use=fresh,
                                   mem_limit=self.config.mem_limit_bytes,
                                   max_processes=self.config.max_task_processes, **extra)
            proc.reply_types = bundle.reply_types
            digest = package_digest(packages)
            with self._lock:
                self._package_sets.setdefault(digest, packages)
                self._env_of[proc] = digest
            return proc
        except BaseException:
            if fresh:
                self.venvs.remove(venv)
            raise
        finally:
            os.close(bundle_lease)  # ours: the process holds its own copy

    def _run_fresh(self, call: Call, bundle: _Bundle, started: float) -> SimResult:
        """FORCE_FRESH_VENV: a new venv and process for this task, both removed after it."""
        ahead = self.fresh_venvs
        venv = (ahead.take(bundle.requirements) if ahead is not None
                else self.venvs.fresh(bundle.requirements))
        proc = self._spawn(bundle, venv, fresh=True)
        try:
            self.pool.track_unpooled(proc)
            outputs = self._send(proc, call, bundle)
            pid, count = proc.pid, proc.task_count
            env_digest = self._env_of.get(proc, "")
        finally:
            self.pool.drop_unpooled(proc)
            # the reaper stops it; its venv goes once nothing runs in it any more
            gone = lambda: self.pool.wait_gone(proc, self.pool.stop_grace + 60)  # noqa: E731
            if ahead is not None:  # in the background
                ahead.discard(proc.venv, after=gone)
            else:
                gone()
                self.venvs.remove(proc.venv)
        return self._result(outputs, pid, count, False, started, env_digest)

    def _run_forked(self, call: Call, bundle: _Bundle, started: float,
                    key: tuple) -> SimResult:
        """A process forked for this task alone from the template of (bundle, venv,
        entrypoint module), stopped after it. The venv is the cached one, or with
        FORCE_FRESH_VENV the pod's pristine uv build (never a task's before its worker
        processes started, never the cache's; task processes cannot write into it). Falls
        back to the plain path for good when the template or the task's own code raises a
        doubt."""
        if key[-1]:
            self._stats.incr("venv_misses")
            venv = self.fresh_venvs.pristine(bundle.requirements)
        else:
            venv = self.venvs.get(bundle.requirements)
        module = key[2]

        def spawn_template() -> WarmProcess:
            template = self._spawn(bundle, venv, template=module)
            template.module = module
            template.on_excluded = lambda names: self._stats.incr("template_excluded_imports",
                                                                  len(names))
            plan = self._plan_key(bundle, venv, module)
            if plan is not None:  # what an earlier template of the same inputs decided
                template.plan = self.plans.load(plan)
                template.on_plan = functools.partial(self.plans.save, plan)
                if template.plan is not None:
                    log.info("the template of %s starts from the plan of an earlier template "
                             "of the same venv, bundle and environment: %d import(s) without "
                             "probes, %d left to its task processes", module,
                             len(template.plan["imports"]), len(template.plan["excluded"]))
            return template

        label = f"{call.entrypoint} from bundle {call.bundle[:19]}…"
        template_of: list[WarmProcess] = []
        try:
            proc = self.templates.fork(key, venv, spawn_template,
                                       start_timeout=self.pool.start_timeout,
                                       sampler=self.pool.sampler, label=label,
                                       picked=template_of.append)
        except TemplateTainted as exc:
            self._fall_back(key, FallbackReason.import_side_effects, str(exc))
            return self._run_exec(call, bundle, started)
        finally:  # our venv lease: the template (and what it forks) holds its own copy
            _close_all([venv.lease] if venv.lease is not None else [])
        self._stats.incr("spawns")
        # the run's time counts from its own process's start (docs/studies.md): not the
        # template's start, nor its importing what earlier task processes imported
        started = proc.started
        try:
            self.pool.track_unpooled(proc)
            with self._lock:
                self._env_of[proc] = self._env_of.get(template_of[-1], "")
            try:
                outputs = self._send(proc, call, bundle)
            except ModelOpsError:
                if not proc.doubt:
                    raise
            pid, count = proc.pid, proc.task_count
            env_digest = self._env_of.get(proc, "")
        finally:
            self.pool.drop_unpooled(proc, RemovalReason.reuse)
            template_of[-1].learn(proc.imported)  # what it imported: the next forks have it
        if proc.doubt:  # this task again, as every later one of the bundle: by exec
            self._fall_back(key, FallbackReason.state_changed, str(proc.doubt))
            return self._run_exec(call, bundle, started)
        return self._result(outputs, pid, count, venv.cache_hit, started, env_digest)

    def _fall_back(self, key: tuple, reason: FallbackReason, why: str) -> None:
        """From now on exec the processes of ``key``'s bundle (said once, counted once)."""
        with self._lock:
            if key in self._fallbacks:
                return
            self._fallbacks[key] = reason
        self._stats.fell_back(reason)
        log.warning("bundle %s, module %s: fresh processes are started by exec from now on, "
                    "not forked from a template (%s): %s", key[0], key[2], reason.value, why)

    def _send(self, proc: WarmProcess, call: Call, bundle: _Bundle) -> Any:
        label = f"{call.entrypoint} from bundle {call.bundle[:19]}…"
        request = {"op": "run", "entrypoint": call.entrypoint, "args": tuple(call.args)}
        self._stats.incr("tasks")
        try:
            reply, mark = proc.run(request, timeout=self.config.task_timeout,
                                   mem_limit=self.config.mem_limit_bytes, label=label)
        except Lost as lost:
            proc.lost = lost.reason
            raise lost.error from None
        proc.imported = reply.pop("imported", None)  # a forked task process's imports
        proc.doubt = reply.pop("doubt", "")  # ... and why it may differ from a new one
        return self._outputs(proc, reply, call, bundle, label, mark)

    def _outputs(self, proc: WarmProcess, reply: dict, call: Call, bundle: _Bundle,
                 label: str, mark: int) -> Any:
        """The outputs of one run's reply, or its typed error."""
        refused = proc.take_refused_processes()
        if refused:
            limit = self.config.max_task_processes
            raise ProcessLimitExceeded(
                f"{label} tried to have more than {limit} processes alive at once besides "
                f"its warm process (MODELOPS_MAX_TASK_PROCESSES={limit}); {refused} fork(s) "
                "failed with EAGAIN and the task fails, whatever it returned. Everything it "
                "started was ended. Start fewer processes (e.g. a smaller multiprocessing "
                "pool) or raise worker.executor.maxTaskProcesses.", limit=limit,
                refused=refused, pid=proc.pid, log_tail=proc.log.tail(mark))
        if reply.get("ok"):
            return reply["result"]
        if reply.get("kind") == "memory":  # at its data cap: its heap is suspect, replace it
            proc.kill()
            proc.lost = RemovalReason.mem_limit
            limit = self.config.mem_limit_bytes
            raise MemoryLimitExceeded(
                f"{label} ran out of memory ({reply.get('type')}: {reply.get('message')}): "
                f"an allocation passed the warm process's hard cap of {data_cap(limit)} bytes "
                f"(derived from MODELOPS_MEM_LIMIT_BYTES={limit}) or the machine's memory; its "
                f"warm process (pid {proc.pid}) was killed and will be replaced. Reduce the "
                "model's memory use or raise the limit.", limit_bytes=limit,
                peak_bytes=None, pid=proc.pid, log_tail=proc.log.tail(mark))
        raise user_error(reply, call, bundle.requirements, proc.log.tail(mark),
                         {str(self.config.bundle_cache_dir): "the bundle cache",
                          str(self.config.venvs_dir): "the venv cache"})

    def _result(self, outputs: Any, pid: int, task_count: int, venv_hit: bool,
                started: float, env_digest: str = "") -> SimResult:
        return SimResult(outputs=outputs, executor=self.name, pid=pid,
                         process_task_count=task_count, venv_cache_hit=venv_hit,
                         duration_s=time.monotonic() - started, env_digest=env_digest)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
