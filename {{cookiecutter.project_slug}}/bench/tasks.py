"""Tasks the benchmarks run: the same no-op body on plain Celery, the idempotent base task and django.tasks."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import redis
from celery import Task
from django.conf import settings
from django.tasks import task

from {{ cookiecutter.project_slug }}.claimcheck.base import ClaimCheckTask
from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task
from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask
from {{ cookiecutter.project_slug }}.pools import DEFAULT, EMAILS

#: Redis key the no-op tasks increment, so the benchmark sees completions at the same cost for each kind.
DONE_KEY = "bench:done"


@functools.cache
def _redis() -> redis.Redis:
    # The harness sets it: the broker's Redis, or the results' Redis when RabbitMQ is the broker.
    return redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", settings.CELERY_BROKER_URL))


def _sleep(seconds: float) -> None:
    """Sleep in 0.1 s steps, as a task busy with short I/O calls would: a stop takes effect between two."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))


@shared_task(base=Task, worker_pool=DEFAULT, ignore_result=True)
def noop_plain(i: int) -> None:
    """Count one completion, as a plain Celery task."""
    _redis().incr(DONE_KEY)


@shared_task(base=IdempotentTask, worker_pool=DEFAULT, ignore_result=True)
def noop_idempotent(i: int) -> None:
    """Count one completion, on the idempotent base task."""
    _redis().incr(DONE_KEY)


@task
def noop_django(i: int) -> None:
    """Count one completion, as a django.tasks task on the pool backend (the idempotent base underneath)."""
    _redis().incr(DONE_KEY)


@shared_task(base=Task, worker_pool=DEFAULT, ignore_result=True)
def consume_payload(payload: Any) -> int:
    """Count one completion of a plain Celery task that carried its large payload inline; return its size."""
    _redis().incr(DONE_KEY)
    return len(payload)


@shared_task(worker_pool=DEFAULT, ignore_result=True)
def sleep_on_default(seconds: float) -> None:
    """Mark the start, then sleep: a busy prefork worker for the shutdown scenario."""
    _redis().incr("bench:started")
    _sleep(seconds)
    _redis().incr(DONE_KEY)


@shared_task(worker_pool=EMAILS, ignore_result=True)
def sleep_on_emails(seconds: float) -> None:
    """Mark the start, then sleep: a busy threads worker for the shutdown scenario."""
    _redis().incr("bench:started")
    _sleep(seconds)
    _redis().incr(DONE_KEY)


@shared_task(base=ClaimCheckTask, worker_pool=DEFAULT, ignore_result=True)
def consume_payload_claimcheck(payload: Any) -> int:
    """Count one completion of a task whose large payload travelled as a claim-check reference."""
    _redis().incr(DONE_KEY)
    return len(payload)


@shared_task(base=IdempotentTask, worker_pool=DEFAULT, ignore_result=True)
def read_upload(*, upload: str) -> int:
    """Read an uploaded file to the end (its pin and size checked); return its size: the bench's job kind."""
    from {{ cookiecutter.project_slug }} import claimcheck

    return len(claimcheck.read_bytes(claimcheck.Reference.from_token(upload)))
