"""Scenario 1 and 2: throughput of no-op tasks and enqueue latency, plain Celery against the base task."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import redis
from celery.utils.nodenames import host_format

from support.servers import Process

from .harness import Stack, analyze, empty_tables, percentile, summary

PLAIN_DEFAULTS = "plain @shared_task, Celery defaults"
PLAIN_PROJECT = "plain @shared_task, project delivery settings"
IDEMPOTENT = "IdempotentTask (status row), project delivery settings"
FLOOR = "plain @shared_task + the claim and success statements by hand (the floor), project delivery settings"
#: Tasks of each kind drained untimed before the repetitions.
WARMUP_TASKS = 500


def _consume(node: str, *, on: bool) -> None:
    """Make the resident worker ``node`` start or stop consuming the default queue (remote control)."""
    from celery import current_app

    control = current_app.control
    command = control.add_consumer if on else control.cancel_consumer
    if not command("default", destination=[node], reply=True, timeout=10):
        raise RuntimeError(f"worker {node} did not answer the {'add' if on else 'cancel'}_consumer command")


def _drain_rate(stack: Stack, worker: Process, node: str, count: int) -> float:
    """Let the resident worker ``node`` drain the prefilled queue and return completed tasks per second."""
    from .tasks import DONE_KEY

    client = redis.Redis.from_url(stack.redis_url)
    _consume(node, on=True)
    try:
        deadline = time.monotonic() + 600
        while int(client.get(DONE_KEY) or 0) < 1:
            if time.monotonic() > deadline or not worker.alive():
                raise TimeoutError(f"no task completed:\n{worker.log()[-2000:]}")
            time.sleep(0.005)
        first = time.monotonic()
        while (done := int(client.get(DONE_KEY) or 0)) < count:
            if time.monotonic() > deadline or not worker.alive():
                raise TimeoutError(f"only {done}/{count} tasks completed:\n{worker.log()[-2000:]}")
            time.sleep(0.005)
        return (count - 1) / (time.monotonic() - first)
    finally:
        _consume(node, on=False)


def _reset(stack: Stack) -> None:
    """Forget the previous measurement: its completion count and its rows (the queue is empty by now)."""
    from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

    from .tasks import DONE_KEY

    client = redis.Redis.from_url(stack.redis_url)
    client.delete(DONE_KEY)
    if client.llen("default"):
        raise RuntimeError(f"{client.llen('default')} messages left in the default queue")
    empty_tables(TaskRecord._meta.db_table)


def _flush(stack: Stack) -> None:
    """Empty Redis and the status table (no worker is running)."""
    from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

    redis.Redis.from_url(stack.redis_url).flushdb()
    empty_tables(TaskRecord._meta.db_table)


@contextlib.contextmanager
def _without_sent_events() -> Iterator[None]:
    """Publish without the ``task-sent`` event messages (Flower's), which the drain does not need."""
    from celery import current_app

    before = current_app.conf.task_send_sent_event
    current_app.conf.task_send_sent_event = False
    try:
        yield
    finally:
        current_app.conf.task_send_sent_event = before


def _prefill_plain(first: int, count: int, task: Any = None) -> None:
    """Queue ``count`` plain calls (of ``noop_plain``, or ``task``) over one broker connection."""
    from celery import current_app

    from .tasks import noop_plain

    task = task or noop_plain
    with _without_sent_events(), current_app.producer_or_acquire() as producer:
        for i in range(first, first + count):
            task.apply_async((i,), producer=producer)


def _prefill_idempotent(first: int, count: int) -> None:
    """Queue ``count`` idempotent calls: rows written in batches, messages published on commit."""
    from django.db import connection

    from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

    from .tasks import noop_idempotent

    with _without_sent_events():
        noop_idempotent.enqueue_many(((i,), {}) for i in range(first, first + count))
    with connection.cursor() as cursor:
        analyze(cursor, TaskRecord._meta.db_table)


def _prefill_floor(first: int, count: int) -> None:
    """Queue ``count`` floor calls: their pending rows written in batches, then the plain messages."""
    from django.db import connection

    from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

    from .tasks import floor_key, noop_floor

    rows = [
        TaskRecord(key=floor_key(i), task_name=noop_floor.name, queue="default", payload_hash="", args=[i])
        for i in range(first, first + count)
    ]
    TaskRecord.objects.bulk_create(rows, batch_size=500)
    with connection.cursor() as cursor:
        analyze(cursor, TaskRecord._meta.db_table)
    _prefill_plain(first, count, task=noop_floor)


def throughput(stack: Stack, count: int, repeats: int) -> dict[str, Any]:
    """Measure tasks per second through one default-pool worker for each kind of task.

    Two workers stay up for the whole scenario, paused (``cancel_consumer``) while their queue is
    filled and resumed (``add_consumer``) to drain it: one on Celery's defaults, one on the project's
    settings, which runs both the plain and the idempotent task.
    """
    # Celery's defaults: prefork, one process per core, prefetch 4; the project's: the registry's default pool.
    defaults_args = ("-P", "prefork", "-c", "2", "--prefetch-multiplier", "4")
    workers = {
        "defaults": stack.worker("default", *defaults_args, env={"BENCH_CELERY_DEFAULTS": "1"}, name="bench-defaults"),
        "project": stack.worker("default", name="bench-project"),
    }
    nodes = {name: host_format(f"bench-{name}@%h") for name in workers}
    kinds = {
        PLAIN_DEFAULTS: (_prefill_plain, "defaults"),
        PLAIN_PROJECT: (_prefill_plain, "project"),
        IDEMPOTENT: (_prefill_idempotent, "project"),
        FLOOR: (_prefill_floor, "project"),
    }
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        for node in nodes.values():
            _consume(node, on=False)
        # A fresh worker's first drain runs at about half speed (imports, connections, caches): one untimed
        # drain of each kind first, so it lands in no repetition.
        warmup = min(count, WARMUP_TASKS)
        for prefill, name in kinds.values():
            _reset(stack)
            prefill(-warmup, warmup)
            _drain_rate(stack, workers[name], nodes[name], warmup)
        for repeat in range(repeats):
            for kind, (prefill, name) in kinds.items():
                _reset(stack)
                prefill(repeat * count, count)
                rates[kind].append(_drain_rate(stack, workers[name], nodes[name], count))
    finally:
        for worker in workers.values():
            stack.retire(worker)
    print(json.dumps({"tasks/s per repetition": rates}), flush=True)
    result: dict[str, Any] = {kind: summary(values) for kind, values in rates.items()}
    # Each repetition runs the kinds back to back, so their ratio within it cancels the machine's drift.
    paired = [idempotent / plain for idempotent, plain in zip(rates[IDEMPOTENT], rates[PLAIN_PROJECT], strict=True)]
    result["idempotent / plain, same settings, per repetition"] = summary(paired)
    # What two statements per task cost by themselves, and how far the protocol's own code is above that.
    floor = [f / plain for f, plain in zip(rates[FLOOR], rates[PLAIN_PROJECT], strict=True)]
    result["floor / plain, per repetition"] = summary(floor)
    above = [idempotent / f for idempotent, f in zip(rates[IDEMPOTENT], rates[FLOOR], strict=True)]
    result["idempotent / floor, per repetition"] = summary(above)
    return result


def enqueue_latency(stack: Stack, count: int) -> dict[str, Any]:
    """Measure p50/p99 of ``delay()``, ``IdempotentTask.enqueue()`` and django.tasks' ``enqueue()``, no worker running.

    Both ``enqueue()`` write the row and publish on commit; the django.tasks one also checks Django's JSON rule,
    builds a ``TaskResult`` and sends ``task_enqueued``.
    """
    from .tasks import noop_django, noop_idempotent, noop_plain

    _flush(stack)
    timings: dict[str, list[float]] = {
        "plain delay()": [],
        "IdempotentTask.enqueue()": [],
        "django.tasks enqueue()": [],
    }
    for i in range(count):
        started = time.perf_counter()
        noop_plain.delay(i)
        timings["plain delay()"].append(time.perf_counter() - started)
        started = time.perf_counter()
        noop_idempotent.enqueue(i)
        timings["IdempotentTask.enqueue()"].append(time.perf_counter() - started)
        started = time.perf_counter()
        noop_django.enqueue(i)
        timings["django.tasks enqueue()"].append(time.perf_counter() - started)
    _flush(stack)
    result: dict[str, Any] = {
        kind: {"p50_ms": percentile(v, 50) * 1000, "p99_ms": percentile(v, 99) * 1000, "n": len(v)}
        for kind, v in timings.items()
    }
    # One call of many: rows in batches of 500, messages over one producer once they commit.
    started = time.perf_counter()
    noop_idempotent.enqueue_many(((i,), {}) for i in range(count, 2 * count))
    result["IdempotentTask.enqueue_many(), per call"] = {"mean_ms": (time.perf_counter() - started) / count * 1000}
    _flush(stack)
    delay, enqueue = result["plain delay()"]["p50_ms"], result["IdempotentTask.enqueue()"]["p50_ms"]
    result["enqueue() p50 / delay() p50"] = enqueue / delay
    return result
