"""Scenario 5: seconds from SIGTERM to exit, idle and with a task running, per pool type."""

from __future__ import annotations

import signal
import time
from typing import Any

import redis

from .harness import Stack, summary

#: The container recipe: SIGTERM enters the soft shutdown (see the README's deploy section).
CONTAINER_ENV = {"REMAP_SIGTERM": "SIGQUIT"}


def _stop_seconds(stack: Stack, queue: str, busy_seconds: float | None) -> float:
    from . import tasks

    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    worker = stack.worker(queue, env=CONTAINER_ENV)
    try:
        if busy_seconds is not None:
            task = tasks.sleep_on_default if queue == "default" else tasks.sleep_on_emails
            task.delay(busy_seconds)
            deadline = time.monotonic() + 60
            while not client.get("bench:started"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the task on {queue} never started:\n{worker.log()[-2000:]}")
                time.sleep(0.01)
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        worker.wait(timeout=120)
        return time.monotonic() - started
    finally:
        worker.stop()


def shutdown(stack: Stack, repeats: int, busy_seconds: float = 3.0) -> dict[str, Any]:
    """Measure SIGTERM-to-exit for an idle and a busy worker of each pool type."""
    results: dict[str, Any] = {}
    for queue, kind in (("default", "prefork"), ("emails", "threads")):
        idle = [_stop_seconds(stack, queue, None) for _ in range(repeats)]
        busy = [_stop_seconds(stack, queue, busy_seconds) for _ in range(repeats)]
        results[f"{kind} idle"] = summary(idle)
        results[f"{kind} busy ({busy_seconds:.0f}s task)"] = summary(busy)
    return results
