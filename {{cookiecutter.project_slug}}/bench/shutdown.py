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
#: The baseline of the idle prefork worker: the same worker on Celery's own prefork pool, which the registry's
#: ``-P prefork`` replaces (worker/prefork.py: no billiard naps between the children's goodbye and the exit).
STOCK_PREFORK = ("-P", "custom")
STOCK_PREFORK_ENV = {**CONTAINER_ENV, "CELERY_CUSTOM_WORKER_POOL": "support.stockpool:TaskPool"}
STOCK_IDLE = "prefork idle, Celery's own pool"


def _one_round(stack: Stack, busy_seconds: float) -> dict[str, float]:
    """Run a busy and an idle worker of each pool type (and the baseline), SIGTERM all together; return seconds to exit.

    The figures are dominated by timers (the soft shutdown's), not by CPU, so the four run side by
    side and each is timed on its own. The busy workers start first and take the only message of
    their queue before the idle ones of the same queue start.
    """
    from . import tasks

    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    workers = {f"{kind} busy": stack.spawn(queue, env=CONTAINER_ENV) for queue, kind in POOL_TYPES}
    try:
        for worker in workers.values():
            stack.ready(worker)
        tasks.sleep_on_default.delay(busy_seconds)
        tasks.sleep_on_emails.delay(busy_seconds)
        deadline = time.monotonic() + 60
        while int(client.get("bench:started") or 0) < len(POOL_TYPES):
            if time.monotonic() > deadline:
                logs = "\n".join(w.log()[-1500:] for w in workers.values())
                raise TimeoutError(f"the tasks never started:\n{logs}")
            time.sleep(0.01)
        idle = {f"{kind} idle": stack.spawn(queue, env=CONTAINER_ENV) for queue, kind in POOL_TYPES}
        idle[STOCK_IDLE] = stack.spawn("default", *STOCK_PREFORK, env=STOCK_PREFORK_ENV)
        workers.update(idle)
        for worker in idle.values():
            stack.ready(worker)
        if int(client.get(tasks.DONE_KEY) or 0) != 0:
            raise RuntimeError("a busy task ended before the SIGTERM: make busy_seconds longer")
        started = time.monotonic()
        for worker in workers.values():
            worker.signal(signal.SIGTERM)
        exited: dict[str, float] = {}
        deadline = started + 120
        while len(exited) < len(workers):
            for name, worker in workers.items():
                if name not in exited and not worker.alive():
                    exited[name] = time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers still running 120 s after SIGTERM: {set(workers) - set(exited)}")
            time.sleep(0.005)
        return exited
    finally:
        for worker in workers.values():
            worker.stop()


def shutdown(stack: Stack, repeats: int, busy_seconds: float = 20.0) -> dict[str, Any]:
    """Measure SIGTERM-to-exit for an idle and a busy worker of each pool type."""
    rounds = [_one_round(stack, busy_seconds) for _ in range(repeats)]
    results: dict[str, Any] = {}
    for _, kind in POOL_TYPES:
        results[f"{kind} idle"] = summary([run[f"{kind} idle"] for run in rounds])
        results[f"{kind} busy ({busy_seconds:.0f}s task)"] = summary([run[f"{kind} busy"] for run in rounds])
    results[STOCK_IDLE] = summary([run[STOCK_IDLE] for run in rounds])
    # Side by side in each round, so the ratio cancels the machine's load.
    paired = [run["prefork idle"] / run[STOCK_IDLE] for run in rounds]
    results["prefork idle / Celery's own pool, per round"] = summary(paired)
    return results
