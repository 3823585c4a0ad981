"""Scenario 3: large payloads inline through Redis against claim check (local-disk storage)."""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import redis
from django.test import override_settings

from .harness import Stack, summary

INLINE = "inline (payload in the message)"
CLAIM_CHECK = "claim check (reference in the message)"


def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _one_run(stack: Stack, kind: str, tasks: int, payload: str) -> dict[str, float]:
    from . import tasks as bench_tasks
    from .tasks import DONE_KEY

    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    task = bench_tasks.consume_payload if kind == INLINE else bench_tasks.consume_payload_claimcheck
    before = _used_memory(client)
    started = time.monotonic()
    # The inline baseline must get past the project's broker cap, which exists to refuse exactly this, and
    # past the automatic offload: every project task is a ClaimCheckTask (ProjectCelery.task_cls).
    inline_only = {"CLAIMCHECK_ARGS_THRESHOLD": len(payload) * 2} if kind == INLINE else {}
    with override_settings(CLAIMCHECK_MESSAGE_MAX_BYTES=len(payload) * 2, **inline_only):
        for _ in range(tasks):
            task.delay(payload)
    enqueue_seconds = time.monotonic() - started
    queued = _used_memory(client)
    worker = stack.worker("default")
    try:
        deadline = time.monotonic() + 600
        while int(client.get(DONE_KEY) or 0) < tasks:
            if time.monotonic() > deadline or not worker.alive():
                raise TimeoutError(f"{kind}: tasks did not finish:\n{worker.log()[-2000:]}")
            time.sleep(0.01)
        end_to_end = time.monotonic() - started
    finally:
        stack.retire(worker)
    return {
        "redis_mb": (queued - before) / 1024**2,
        "enqueue_s": enqueue_seconds,
        "end_to_end_s": end_to_end,
    }


def payloads(stack: Stack, tasks: int, megabytes: float, repeats: int) -> dict[str, Any]:
    """Measure Redis memory held by queued tasks, enqueue time and end-to-end time for each kind."""
    raw = os.urandom(int(megabytes * 1024**2 * 3 / 4))
    payload = base64.b64encode(raw).decode()  # a JSON-safe string of the requested size
    runs: dict[str, list[dict[str, float]]] = {INLINE: [], CLAIM_CHECK: []}
    for _ in range(repeats):
        for kind in runs:
            runs[kind].append(_one_run(stack, kind, tasks, payload))
    result: dict[str, Any] = {}
    for kind, values in runs.items():
        for metric in ("redis_mb", "enqueue_s", "end_to_end_s"):
            result[f"{kind}: {metric}"] = summary([v[metric] for v in values])
    inline_mb = result[f"{INLINE}: redis_mb"]["median"]
    result["claim-check Redis memory as % of inline"] = 100 * result[f"{CLAIM_CHECK}: redis_mb"]["median"] / inline_mb
    result["claim-check end-to-end / inline"] = (
        result[f"{CLAIM_CHECK}: end_to_end_s"]["median"] / result[f"{INLINE}: end_to_end_s"]["median"]
    )
    return result
