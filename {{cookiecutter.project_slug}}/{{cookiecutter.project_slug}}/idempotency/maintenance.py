"""Upkeep of the status rows: the reaper, the pruner and the admin's retry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from .claims import error_fields
from .exceptions import AttemptsExhaustedError
from .models import FINISHED, Status, TaskRecord
from .publishing import PUBLISH_FAILED, publish_or_flag, unflag_unpublished

__all__ = ["ReapReport", "prune_finished", "reap_expired_leases", "retry_failed", "rows_pruning"]

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
    from celery import current_app

    now = now or timezone.now()
    expired = Q(status=Status.RUNNING, lease_expires_at__lt=now)
    republished: list[str] = []
    failed: list[str] = []
    unpublished = Q(status=Status.PENDING, error_type=PUBLISH_FAILED)
    for record in TaskRecord.objects.filter(unpublished).order_by("enqueued_at")[:limit]:
        # The row is committed already: publish now. Listed only if the broker took it this time.
        if unflag_unpublished(record) and publish_or_flag(record):
            republished.append(record.key)
    for record in TaskRecord.objects.filter(expired).order_by("lease_expires_at")[:limit]:
        task = current_app.tasks.get(record.task_name)
        get_max_attempts = getattr(task, "get_max_attempts", None)
        max_attempts = get_max_attempts() if get_max_attempts is not None else 0
        fence = TaskRecord.objects.filter(expired, pk=record.pk, owner=record.owner)
        if record.attempts >= max_attempts:
            error: Exception = AttemptsExhaustedError(record.key, record.attempts, max_attempts)
            if task is None:
                error = LookupError(f"Task {record.task_name!r} is not registered with this worker.")
            if fence.update(status=Status.FAILED, lease_expires_at=None, finished_at=now, **error_fields(error)):
                failed.append(record.key)
            continue
        assert record.lease_expires_at is not None  # selected for having expired
        lost = f"Lease of {record.owner} expired at {record.lease_expires_at.isoformat()} without a result."
        with transaction.atomic():
            if fence.update(
                status=Status.PENDING,
                owner="",
                lease_expires_at=None,
                error_type="LeaseExpired",
                error_message=lost,
                error_traceback="",
            ):
                transaction.on_commit(partial(publish_or_flag, record))
                republished.append(record.key)
    return ReapReport(tuple(republished), tuple(failed))


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
                status=Status.PENDING, attempts=0, owner="", finished_at=None, lease_expires_at=None
            ):
                transaction.on_commit(partial(publish_or_flag, record))
                retried.append(record.key)
    return retried
