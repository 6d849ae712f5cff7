"""SIGTERM retires the pod's Dask workers gracefully (a Deployment scaled down, a node
drained, a spot node reclaimed), instead of the `dask worker` command's plain close.

- covers: in the launcher (nanny preload), one SIGTERM handler for all its nannies: the
  scheduler stops sending them tasks and takes their results (``retire_workers`` without
  closing), running tasks get up to MODELOPS_TASK_TIMEOUT (else RUNNING_GRACE) seconds to
  finish, then ``retire_workers`` hands over what finished meanwhile and each nanny closes
  its worker process (a task still running is rescheduled by the scheduler). The chart's
  terminationGracePeriodSeconds is that wait plus HANDOVER_GRACE.
- does not: touch SIGINT (Ctrl-C stays the quick stop); a second SIGTERM, or a scheduler
  that does not answer, falls back to the plain close.
- see also: chart/templates/_helpers.tpl (the derived grace period), docs/modes.md "When the
  environment or the cluster fails around a task".
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

log = logging.getLogger("modelops_runtime.retire")

RUNNING_GRACE = 30.0   # s running tasks get to finish without MODELOPS_TASK_TIMEOUT
HANDOVER_GRACE = 30.0  # s for each hand-over of results to the scheduler's other workers
CLOSE_GRACE = 10.0     # s for the retired workers and their nannies to close

_nannies: list = []
_state = {"installed": False, "retiring": False}


def retire_on_sigterm(nanny, running_grace: float | None) -> None:
    """Register ``nanny``; the first call installs the process's SIGTERM handler."""
    _nannies.append(nanny)
    if _state["installed"]:
        return
    _state["installed"] = True
    loop = asyncio.get_running_loop()
    wait = running_grace or RUNNING_GRACE

    def on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
        # nothing that logs or locks here: hand it to the event loop
        if _state["retiring"]:
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(_close_plainly()))
        else:
            _state["retiring"] = True
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(_retire(wait)))

    signal.signal(signal.SIGTERM, on_sigterm)


async def _close_plainly() -> None:
    log.warning("modelops runtime: SIGTERM again: closing the worker processes without "
                "waiting (their running tasks are rescheduled, results they hold recomputed)")
    await asyncio.gather(*(n.close(timeout=10, reason="signal-15") for n in _nannies),
                         return_exceptions=True)


async def _retire(wait: float) -> None:
    nannies = [n for n in _nannies if n.status.name not in ("closing", "closed")]
    addresses = [n.worker_address for n in nannies if n.worker_address]
    if not addresses:
        await _close_plainly()
        return
    log.info("modelops runtime: SIGTERM: retiring %d worker process(es) gracefully: no new "
             "tasks, results handed over, running tasks get up to %.0f s", len(addresses), wait)
    for n in nannies:
        n.close_gracefully(reason="SIGTERM")  # the nanny does not restart its worker
    scheduler = nannies[0].scheduler
    stimulus = f"modelops-sigterm-{time.time()}"
    try:
        await asyncio.wait_for(scheduler.retire_workers(
            workers=addresses, close_workers=False, remove=False,
            stimulus_id=f"{stimulus}-drain"), HANDOVER_GRACE)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and await _executing(nannies[0], addresses):
            await asyncio.sleep(0.2)
        await asyncio.wait_for(scheduler.retire_workers(
            workers=addresses, close_workers=False, remove=False,
            stimulus_id=f"{stimulus}-handover"), HANDOVER_GRACE)
        log.info("modelops runtime: retired %s; results handed over", ", ".join(addresses))
        # each nanny closes its worker through the worker process's stop queue, as `dask
        # worker` does on a plain SIGTERM: a worker closed by the scheduler instead ends
        # without that message, and its process waits 2 s for it and logs "Worker process
        # died unexpectedly" (distributed's nanny.py)
        results = await asyncio.wait_for(asyncio.gather(
            *(n.close(timeout=CLOSE_GRACE, reason="modelops-retired") for n in nannies),
            return_exceptions=True), CLOSE_GRACE + 5)
        if errors := [r for r in results if isinstance(r, BaseException)]:
            raise errors[0]
        return
    except Exception as exc:  # noqa: BLE001 - the plain close below still runs
        log.warning("modelops runtime: graceful retirement failed (%s: %s); closing the "
                    "worker processes plainly (results they hold are recomputed elsewhere)",
                    type(exc).__name__, exc)
    await asyncio.gather(*(n.close(timeout=10, reason="signal-15") for n in nannies),
                         return_exceptions=True)


async def _executing(nanny, addresses: list[str]) -> int:
    """Tasks executing now on the workers at ``addresses`` (their call stacks; tasks only
    queued there are not started by a retiring worker and move with the retirement)."""
    total = 0
    for address in addresses:
        try:
            total += len(await nanny.rpc(address).call_stack())
        except Exception:  # noqa: BLE001 - a worker already gone runs nothing
            pass
    return total
