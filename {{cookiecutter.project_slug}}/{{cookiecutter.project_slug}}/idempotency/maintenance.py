"""Upkeep of the status rows: the recovery pass (leases, dead owners, lost messages), the pruner, the admin's retry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q
from django.dispatch import Signal
from django.utils import timezone

from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force

from .claims import AppendJSON, error_entry, error_fields
from .exceptions import AttemptsExhaustedError, DeliveryLostError
from .models import FINISHED, Status, TaskRecord, WorkerLiveness
from .publishing import PUBLISH_FAILED, publish_or_flag, unflag_unpublished

__all__ = [
    "ReapReport",
    "owner_node",
    "prune_finished",
    "publish_due",
    "reap_expired_leases",
    "reclaim_dead_nodes",
    "reclaim_orphans",
    "recover",
    "republish_owed",
    "retry_failed",
    "rows_pruning",
]

logger = logging.getLogger(__name__)
RECLAIMED_LOG = "key %r: %s; published again"
REPUBLISHED_LOG = "key %r: pending since %s with no sign of its message (%s); published again"
#: Sent with ``records`` (the final rows about to be deleted) by ``prune_finished``, inside its transaction.
rows_pruning = Signal()


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one pass of the reaper did."""

    republished: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def reap_expired_leases(*, now: datetime | None = None, limit: int = 500) -> ReapReport:
    """Publish again every running row whose lease expired; fail those out of attempts for good.

    A lease expires when its delivery died without a word (SIGKILL, OOM, a lost early-acked
    message); redelivery by the broker may come much later or never. Pending rows whose message the
    broker did not take (``PUBLISH_FAILED``) are published again too.
    """
    now = now or timezone.now()
    expired = Q(status=Status.RUNNING, lease_expires_at__lt=now)
    republished: list[str] = []
    failed: list[str] = []
    unpublished = Q(status=Status.PENDING, error_type=PUBLISH_FAILED)
    for record in TaskRecord.objects.filter(unpublished).order_by("enqueued_at")[:limit]:
        # The row is committed already: publish now. Listed only if the broker took it this time.
        if unflag_unpublished(record):
            if not publish_or_flag(record):
                break  # the broker is still down: the rest would only wait for it too
            republished.append(record.key)
    for record in TaskRecord.objects.filter(expired).order_by("lease_expires_at")[:limit]:
        assert record.lease_expires_at is not None  # selected for having expired
        lost = f"Lease of {record.owner} expired at {record.lease_expires_at.isoformat()} without a result."
        _give_back(record, "LeaseExpired", lost, now, republished, failed, still=expired)
    return ReapReport(tuple(republished), tuple(failed))


def _give_back(
    record: TaskRecord,
    error_type: str,
    message: str,
    now: datetime,
    republished: list[str],
    failed: list[str],
    *,
    still: Q | None = None,
) -> None:
    """Return a running row whose delivery is gone to pending and publish it, or fail it if out of attempts.

    The writes hold only while the row is still running under the owner it was read with (and matches
    ``still``): a holder that finished, or a concurrent pass that reclaimed it first, makes this a no-op.
    """
    from celery import current_app

    fence = TaskRecord.objects.filter(still or Q(), pk=record.pk, status=Status.RUNNING, owner=record.owner)

    task = current_app.tasks.get(record.task_name)
    get_max_attempts = getattr(task, "get_max_attempts", None)
    max_attempts = get_max_attempts() if get_max_attempts is not None else 0
    if record.attempts >= max_attempts:
        error: Exception = AttemptsExhaustedError(record.key, record.attempts, max_attempts)
        if task is None:
            error = LookupError(f"Task {record.task_name!r} is not registered with this worker.")
        if fence.update(
            status=Status.FAILED,
            lease_expires_at=None,
            finished_at=now,
            error_log=AppendJSON("error_log", error_entry(error)),
            **error_fields(error),
        ):
            failed.append(record.key)
        return
    lost = error_entry(type_path=f"{DeliveryLostError.__module__}.{DeliveryLostError.__qualname__}", text=message)
    with transaction.atomic():
        if fence.update(
            status=Status.PENDING,
            owner="",
            lease_expires_at=None,
            published_at=now,
            error_type=error_type,
            error_message=message,
            error_traceback="",
            error_log=AppendJSON("error_log", lost),
        ):
            transaction.on_commit(partial(publish_or_flag, record))
            republished.append(record.key)


def owner_node(owner: str) -> str:
    """Return the worker node of a row owner (``node:pid:token``)."""
    return owner.rsplit(":", 2)[0]


def reclaim_orphans(node: str, running: Callable[[], Collection[str]], *, now: datetime | None = None) -> ReapReport:
    """Reclaim the running rows of worker ``node`` whose delivery this node no longer runs.

    Called in the node's own main process: ``running`` returns the task ids it holds (reserved or
    running). A delivery that ended without its finishing write (the database was down, the task
    was cancelled on a broker connection loss, its pool child was killed) leaves such a row. The rows
    are read before the task ids, so a delivery claimed in between is not mistaken for an orphan.
    """
    now = now or timezone.now()
    held = Q(status=Status.RUNNING, owner__startswith=f"{node}:")
    records = list(
        TaskRecord.objects.filter(held, started_at__lt=now - timedelta(seconds=1)).defer("result", "error_traceback")
    )
    if not records:
        return ReapReport()
    alive = set(running())
    republished: list[str] = []
    failed: list[str] = []
    for record in records:
        if record.task_id in alive:
            continue
        message = f"The delivery {record.task_id} of {record.owner} ended without a result."
        _give_back(record, "DeliveryLost", message, now, republished, failed)
    for key in republished:
        logger.warning(RECLAIMED_LOG, key, "its delivery ended without a result")
    return ReapReport(tuple(republished), tuple(failed))


def reclaim_dead_nodes(*, now: datetime | None = None) -> ReapReport:
    """Reclaim the running rows whose owner's node stopped proving it is alive (``WorkerLiveness``).

    Dead: its liveness expired, or it has none and claimed the row longer ago than the liveness
    timeout, or the node has restarted since it claimed the row (a new incarnation holds the name).
    """
    now = now or timezone.now()
    # Every worker runs this every few seconds: the decision reads three columns of the running rows, and only
    # the rows of lapsed nodes are read whole (one per reclaim, rare).
    running = list(TaskRecord.objects.filter(status=Status.RUNNING).values_list("pk", "owner", "started_at"))
    if not running:
        return ReapReport()
    nodes = {owner_node(owner) for _, owner, _ in running}
    liveness = {w.node: w for w in WorkerLiveness.objects.filter(node__in=nodes)}
    unproven = now - timedelta(seconds=settings.IDEMPOTENCY_LIVENESS_TIMEOUT)
    republished: list[str] = []
    failed: list[str] = []
    for pk, owner, started_at in running:
        node = owner_node(owner)
        proof = liveness.get(node)
        started = started_at or now
        lapsed = proof.alive_until < now or started < proof.started_at if proof else started < unproven
        fence = TaskRecord.objects.filter(pk=pk, status=Status.RUNNING, owner=owner)
        record = fence.defer("result", "error_traceback").first() if lapsed else None
        if record is None:  # alive, or it finished (or was reclaimed) since
            continue
        message = f"Worker {node} stopped proving it is alive while running this task."
        _give_back(record, "WorkerLost", message, now, republished, failed)
    for key in republished:
        logger.warning(RECLAIMED_LOG, key, "its worker node stopped proving it is alive")
    return ReapReport(tuple(republished), tuple(failed))


def republish_owed(*, now: datetime | None = None, limit: int = 500) -> tuple[str, ...]:
    """Publish again the pending rows whose message shows no sign of being queued; return their keys.

    A pending row is owed (its message lost in a broker crash, never sent by a web process killed
    after the commit, or acked after its delivery released the row) once its message has had the
    pool's grace (``IDEMPOTENCY_REPUBLISH_AFTER`` plus what the pool's prefetch can hold back behind
    running tasks) and either its queue holds no message at all, or a call of the same queue sent a
    grace later was already claimed (queues are FIFO). A legitimately queued backlog meets neither.
    """
    now = now or timezone.now()
    owed: list[TaskRecord] = []
    for pool in pools_in_force():
        held_back = (pool.prefetch_multiplier - 1) * pool.time_limit  # prefetched behind running tasks
        grace = timedelta(seconds=settings.IDEMPOTENCY_REPUBLISH_AFTER + held_back)
        waiting = TaskRecord.objects.filter(queue=pool.queue, status=Status.PENDING, published_at__lt=now - grace)
        waiting = waiting.exclude(error_type=PUBLISH_FAILED).order_by("published_at")
        oldest = waiting.values_list("published_at", flat=True).first()
        if oldest is None:
            continue
        # The newest call of the queue claimed since, after it was sent: everything sent a grace before it is gone.
        frontier = (
            TaskRecord.objects.filter(queue=pool.queue, started_at__gte=max(oldest, now - 4 * grace))
            .filter(published_at__isnull=False, started_at__gte=F("published_at"))
            .aggregate(newest=Max("published_at"))["newest"]
        )
        if frontier is not None and frontier - grace > oldest:
            owed += waiting.filter(published_at__lt=frontier - grace)[:limit]
        elif _queue_is_empty(pool.queue):
            owed += waiting[:limit]
    republished: list[str] = []
    for record in owed:
        # Fenced by the time it was sent: of the passes running at once, one publishes it.
        if TaskRecord.objects.filter(pk=record.pk, status=Status.PENDING, published_at=record.published_at).update(
            published_at=now
        ):
            assert record.published_at is not None  # selected for it
            logger.warning(REPUBLISHED_LOG, record.key, record.published_at.isoformat(), record.queue)
            if publish_or_flag(record):
                republished.append(record.key)
    return tuple(republished)


def publish_due(*, now: datetime | None = None, limit: int = 500) -> tuple[str, ...]:
    """Publish the deferred rows whose ``run_after`` has come (``django.tasks``' ``run_after``); return their keys.

    A deferred call waits as a row, not as a message: an ETA message would sit in a worker's memory, be
    redelivered by the broker after its visibility timeout while still waiting, and move with every restart.
    Every worker's recovery pass runs this, so a call starts within about ``IDEMPOTENCY_LIVENESS_INTERVAL``
    seconds of its time, once a worker is up.
    """
    now = now or timezone.now()
    due = TaskRecord.objects.filter(status=Status.PENDING, run_after__lte=now, published_at__isnull=True).exclude(
        error_type=PUBLISH_FAILED
    )
    published: list[str] = []
    for record in due.order_by("run_after").defer("result", "error_traceback")[:limit]:
        # Fenced by "not published yet": of the passes running at once, one publishes it.
        if TaskRecord.objects.filter(pk=record.pk, status=Status.PENDING, published_at__isnull=True).update(
            published_at=now
        ) and publish_or_flag(record):
            published.append(record.key)
    return tuple(published)


def _queue_is_empty(queue: str) -> bool:
    """Return whether the broker holds no message in ``queue``; ``False`` when it cannot tell."""
    from celery import current_app

    try:
        with current_app.connection_for_write() as connection:
            channel: Any = connection.default_channel
            # Not passive on Redis: it has no key for an empty list, so a passive declare of an empty queue fails.
            # Passive on RabbitMQ: a plain declare of a quorum queue without its arguments closes the channel.
            passive = connection.transport.driver_type == "amqp"
            _name, count, _consumers = channel.queue_declare(queue=queue, passive=passive)
    except Exception:  # broker down or queue not declared yet: no evidence either way
        return False
    return int(count) == 0


def recover(
    *,
    node: str | None = None,
    running: Callable[[], Collection[str]] = frozenset,
    other_nodes: bool = True,
    republish: bool = True,
    now: datetime | None = None,
) -> ReapReport:
    """One recovery pass: due deferred rows, expired leases, dead nodes (``other_nodes``), own orphans, owed rows.

    Safe to run in many processes at once: every write is one statement fenced by the state it read.
    """
    now = now or timezone.now()
    reports = [ReapReport(republished=publish_due(now=now)), reap_expired_leases(now=now)]
    if other_nodes:
        reports.append(reclaim_dead_nodes(now=now))
    if node is not None:
        reports.append(reclaim_orphans(node, running, now=now))
    extra = republish_owed(now=now) if republish else ()
    return ReapReport(
        tuple(k for r in reports for k in r.republished) + extra, tuple(k for r in reports for k in r.failed)
    )


def prune_finished(*, older_than: timedelta, now: datetime | None = None, batch_size: int = 1000) -> int:
    """Delete final rows finished more than ``older_than`` ago; return how many.

    ``rows_pruning`` is sent with each batch before it is deleted, in the same transaction, so an app
    that shows these calls (the jobs API) keeps their outcome: a pruned row must not read as unstarted.
    """
    cutoff = (now or timezone.now()) - older_than
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                TaskRecord.objects.select_for_update()
                .filter(status__in=FINISHED, finished_at__lt=cutoff)
                .order_by("finished_at")[:batch_size]
            )
            if not batch:
                return deleted
            rows_pruning.send(sender=TaskRecord, records=batch)
            count, _ = TaskRecord.objects.filter(pk__in=[record.pk for record in batch]).delete()
            deleted += count


def retry_failed(records: Iterable[TaskRecord]) -> list[str]:
    """Reset failed rows to pending with no attempts counted and publish them again; return their keys."""
    retried: list[str] = []
    with transaction.atomic():
        for record in records:
            if TaskRecord.objects.filter(pk=record.pk, status=Status.FAILED).update(
                status=Status.PENDING,
                attempts=0,
                owner="",
                finished_at=None,
                lease_expires_at=None,
                published_at=timezone.now(),
            ):
                transaction.on_commit(partial(publish_or_flag, record))
                retried.append(record.key)
    return retried
