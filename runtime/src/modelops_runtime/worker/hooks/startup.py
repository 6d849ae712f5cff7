"""`dask worker --preload modelops_runtime.preload --preload-nanny modelops_runtime.preload`
(which delegates here). In a worker process: harden it (hardening.py), validate, then
register ``modelops``. In the launcher (as a nanny preload, before the nanny starts its
worker process): harden it, and let SIGTERM retire its workers gracefully (retire.py).

Dask logs and swallows exceptions raised by preloads and by WorkerPlugin.setup, which
would leave a worker serving tasks with a configuration nobody validated. So a bad
configuration ends the worker *process* here, before it has registered with the
scheduler, with the ConfigError's one line as the last log line. Under a nanny that is a
failed *start* (the nanny does not restart a worker that never started), so the whole
`dask worker` command exits non-zero instead of restarting in a loop.
"""

from __future__ import annotations

import os

from ...errors import ConfigError
from ...exitcodes import EXIT_CONFIG
from . import logs
from .hardening import harden_process

# sysexits.h EX_CONFIG: the worker process's exit code for a bad configuration


def _die(line: str) -> None:
    logs.log.error("%s", line)
    logs.flush()
    # os._exit, not SystemExit: nothing may catch it, and no non-daemon thread of the
    # half-started worker can keep the process alive
    os._exit(EXIT_CONFIG)


def _task_timeout() -> float | None:
    """MODELOPS_TASK_TIMEOUT as the worker process reads it (the worker process warns about
    unknown variables and ends on a bad value; the launcher stays quiet)."""
    from ...config import RuntimeConfig

    try:
        return RuntimeConfig.model_validate(
            {"task_timeout": os.environ.get("MODELOPS_TASK_TIMEOUT") or None}).task_timeout
    except Exception:  # noqa: BLE001 - the worker process ends with the clear line
        return None


async def dask_setup(worker) -> None:
    from distributed import Nanny, Worker

    from .plugin import PLUGIN_NAME, ModelOpsPlugin, load_config

    logs.configure()
    if isinstance(worker, (Worker, Nanny)):
        hardened = harden_process()  # first: before anything can start bundle code
        if not all(hardened.values()):
            logs.log.warning("modelops runtime: could not harden the %s process (%s): bundle "
                             "code of the same uid may read its /proc/<pid>/environ",
                             type(worker).__name__.lower(), hardened)
    if isinstance(worker, Nanny):
        from .retire import retire_on_sigterm

        retire_on_sigterm(worker, _task_timeout())  # SIGTERM: retire through the scheduler
        return
    if not isinstance(worker, Worker):
        logs.log.warning("modelops_runtime.preload is a worker and nanny preload; ignored "
                         "on %s", type(worker).__name__)
        return
    try:
        config = load_config()
    except ConfigError as exc:
        _die(str(exc))
        return  # pragma: no cover
    logs.configure(config.log_level.value)
    # before any task: bundle code run by executor=direct loads its native libraries here
    from ..native import apply_to_this_process
    late = apply_to_this_process(config.native_threads)
    if late:
        logs.log.warning(
            "modelops runtime: MODELOPS_NATIVE_THREADS=%s changed %s after numpy (or another "
            "native library) was loaded in this worker process; its thread pool keeps the old "
            "size. Set these variables in the worker's environment (the chart does) so that "
            "executor=direct tasks get %s native thread(s)", config.native_threads,
            ", ".join(late), config.native_threads)
    try:
        await worker.plugin_add(ModelOpsPlugin(), name=PLUGIN_NAME, catch_errors=False)
    except Exception as exc:  # setup failed: do not serve tasks without an executor
        _die(f"modelops runtime: cannot start executor={config.executor_type.value}: "
             f"{type(exc).__name__}: {exc}")


async def dask_teardown(worker) -> None:
    import asyncio

    from .plugin import shutdown_runtime

    await asyncio.to_thread(shutdown_runtime)
