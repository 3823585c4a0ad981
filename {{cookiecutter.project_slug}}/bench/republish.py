"""Scenario 6: what the recovery pass costs a legitimate backlog: extra deliveries of queued idempotent tasks."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from .harness import Stack
from .tasks import DONE_KEY

#: The harshest recovery settings: a pass every half second, a message owed after one second, prefetch 1.
STRESS = {
    "BENCH_REPUBLISH_STRESS": "1",
    "IDEMPOTENCY_LIVENESS_INTERVAL": "0.5",
    "IDEMPOTENCY_LIVENESS_TIMEOUT": "2",
    "IDEMPOTENCY_REPUBLISH_AFTER": "1",
}
REPUBLISHED = "no sign of its message"


def republish(stack: Stack, count: int) -> dict[str, Any]:
    """Queue ``count`` idempotent calls, drain them with two workers running recovery passes; count the extras.

    A duplicate delivery is safe (the claim skips it) but costs a message and a claim; the rule must
    tell a queued backlog from lost messages. The drain takes many times the grace, so every pass
    judges thousands of rows that are merely waiting.
    """
    from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord

    from .tasks import noop_idempotent

    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    TaskRecord.objects.all().delete()
    noop_idempotent.enqueue_many(((i,), {}) for i in range(count))
    started = time.monotonic()
    workers = [stack.worker("default", "-c", "1", env=STRESS, name=f"bench-republish-{n}") for n in range(2)]
    try:
        deadline = time.monotonic() + 900
        while int(client.get(DONE_KEY) or 0) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {int(client.get(DONE_KEY) or 0)}/{count} tasks completed")
            time.sleep(0.05)
        drained = time.monotonic() - started
        time.sleep(3)  # passes after the drain: a finished backlog is never republished
        extra = sum(w.log().count(REPUBLISHED) for w in workers)
        succeeded = TaskRecord.objects.filter(status=Status.SUCCEEDED).count()
    finally:
        for worker in workers:
            stack.retire(worker)
    result = {
        "tasks": count,
        "succeeded": succeeded,
        "drain seconds": drained,
        "extra deliveries (republished)": extra,
        "extra deliveries / tasks": extra / count,
    }
    print(json.dumps(result), flush=True)
    return result
