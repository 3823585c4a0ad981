"""Scenario 5: seconds from SIGTERM to exit, idle and with a task running, per pool type."""

from __future__ import annotations

import signal
import time
from typing import Any

import redis

from .harness import Stack, summary

#: The container recipe: SIGTERM enters the soft shutdown (see the README's deploy section).
CONTAINER_ENV = {"REMAP_SIGTERM": "SIGQUIT"}
#: One worker per pool type: the queue it consumes and the pool type the registry gives that queue.
POOL_TYPES = (("default", "prefork"), ("emails", "threads"))


def _stop_seconds(stack: Stack, busy_seconds: float | None) -> dict[str, float]:
    """Start one worker per pool type, busy or idle, SIGTERM them together; return each one's seconds to exit.

    The pool types run side by side to halve the scenario's time: the figures are dominated by
    timers (the soft shutdown's), not by CPU, and each worker is timed on its own.
    """
    from . import tasks

    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    workers = {kind: stack.spawn(queue, env=CONTAINER_ENV) for queue, kind in POOL_TYPES}
    try:
        for worker in workers.values():
            stack.ready(worker)
        if busy_seconds is not None:
            tasks.sleep_on_default.delay(busy_seconds)
            tasks.sleep_on_emails.delay(busy_seconds)
            deadline = time.monotonic() + 60
            while int(client.get("bench:started") or 0) < len(workers):
                if time.monotonic() > deadline:
                    logs = "\n".join(w.log()[-1500:] for w in workers.values())
                    raise TimeoutError(f"the tasks never started:\n{logs}")
                time.sleep(0.01)
        started = time.monotonic()
        for worker in workers.values():
            worker.signal(signal.SIGTERM)
        exited: dict[str, float] = {}
        deadline = started + 120
        while len(exited) < len(workers):
            for kind, worker in workers.items():
                if kind not in exited and not worker.alive():
                    exited[kind] = time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers still running 120 s after SIGTERM: {set(workers) - set(exited)}")
            time.sleep(0.005)
        return exited
    finally:
        for worker in workers.values():
            worker.stop()


def shutdown(stack: Stack, repeats: int, busy_seconds: float = 3.0) -> dict[str, Any]:
    """Measure SIGTERM-to-exit for an idle and a busy worker of each pool type."""
    idle = [_stop_seconds(stack, None) for _ in range(repeats)]
    busy = [_stop_seconds(stack, busy_seconds) for _ in range(repeats)]
    results: dict[str, Any] = {}
    for _, kind in POOL_TYPES:
        results[f"{kind} idle"] = summary([run[kind] for run in idle])
        results[f"{kind} busy ({busy_seconds:.0f}s task)"] = summary([run[kind] for run in busy])
    return results
