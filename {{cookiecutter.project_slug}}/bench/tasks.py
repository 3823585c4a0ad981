"""Tasks the benchmarks run: the same no-op body on plain Celery, the idempotent base task and django.tasks."""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
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


#: The two statements of the claim protocol, written as one would by hand: what "once" costs at the least.
FLOOR_CLAIM = (
    "UPDATE idempotency_taskrecord SET status = 'running', owner = %s, task_id = %s, lease_expires_at = %s,"
    " started_at = %s, progress = NULL, progress_message = '', attempts = attempts + 1,"
    " attempt_log = COALESCE(attempt_log, '[]'::jsonb) || jsonb_build_array(%s::jsonb)"
    " WHERE key = %s AND attempts < 3 AND (status = 'pending' OR (status = 'running' AND lease_expires_at < %s))"
)
FLOOR_SUCCEED = (
    "UPDATE idempotency_taskrecord SET status = 'succeeded', result = NULL, lease_expires_at = NULL,"
    " finished_at = %s, progress = 1.0, error_type = '', error_message = '', error_traceback = ''"
    " WHERE key = %s AND owner = %s AND status = 'running'"
)


def floor_key(i: int) -> str:
    """Return the status row key the floor task ``i`` claims."""
    return f"bench-floor:{i}"


@shared_task(base=Task, worker_pool=DEFAULT, ignore_result=True, bind=True)
def noop_floor(self: Task, i: int) -> None:
    """Claim a status row, count one completion, mark the row succeeded: two prepared statements, no protocol.

    The least any design that keeps "claim before the body, success before the ack" pays per task, through
    psycopg directly (no Django cursor, no field preparation, no error handling): the idempotent task's floor.
    """
    from django.db import connection

    now = datetime.now(UTC)
    owner = f"{self.request.hostname}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = 2**31  # as the protocol's statements module: prepare what is asked, only that
    # psycopg's own cursor binds on the server; Django's connections default to client-side binding.
    with psycopg.Cursor(raw) as cursor:
        entry = json.dumps({"worker": owner, "started_at": now.isoformat()})
        lease = now + timedelta(seconds=60)
        cursor.execute(FLOOR_CLAIM, (owner, self.request.id, lease, now, entry, floor_key(i), now), prepare=True)
        if cursor.rowcount != 1:
            raise RuntimeError(f"the floor task {i} found no claimable row")
        _redis().incr(DONE_KEY)
        cursor.execute(FLOOR_SUCCEED, (datetime.now(UTC), floor_key(i), owner), prepare=True)


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
