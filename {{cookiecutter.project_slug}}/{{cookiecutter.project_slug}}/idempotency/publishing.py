"""Publishing task calls: write the pending row, then publish the message once the row is committed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.constants import OnConflict
from django.utils import timezone

from {{ cookiecutter.project_slug }}.worker.queues import broker_priority

from . import statements
from .exceptions import PayloadMismatchError
from .models import Status, TaskRecord
from .selectors import TaskResult

__all__ = [
    "ERROR_MESSAGE_LIMIT",
    "KEY_HEADER",
    "PUBLISH_FAILED",
    "Call",
    "check_batch_size",
    "enqueue",
    "enqueue_many",
    "enqueue_record",
    "flag_unpublished",
    "publish",
    "publish_all",
    "publish_or_flag",
    "unflag_unpublished",
]

logger = logging.getLogger(__name__)

#: ``error_type`` of a pending row whose message the broker did not take; the recovery pass publishes it again.
PUBLISH_FAILED = "PublishFailed"
PUBLISH_FAILED_LOG = "key %r: the broker did not take the message (%r); the recovery pass will publish it again"
#: Message header carrying the idempotency key from ``enqueue`` (and retries) to the worker.
KEY_HEADER = "idempotency_key"
#: Longest error message kept on a row.
ERROR_MESSAGE_LIMIT = 4000


def _nothing_to_discard() -> None:
    """Leave storage alone: the call stored nothing of its own."""


@dataclass(frozen=True, slots=True)
class Call:
    """One task call, checked and ready to be written: what the row stores and the message carries.

    Built by the task (``IdempotentTask.prepare_call``), which has already checked the arguments and
    offloaded a large argument set to the claim check; publishing needs nothing else from the task.
    """

    key: str
    task_name: str
    queue: str
    payload_hash: str
    #: The arguments as published: inline, or the claim-check envelope of an offloaded set.
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: Deletes what the call stored (its offloaded argument blob) when another row already holds the key.
    discard: Callable[[], None] = field(default=_nothing_to_discard, compare=False)
    #: ``django.tasks`` priority (-100 to 100); ``None``: the broker's default, as for a Celery call.
    priority: int | None = None
    #: Not before this time; a later time leaves the row unpublished until the recovery pass finds it due.
    run_after: datetime | None = None

    def is_deferred(self, now: datetime) -> bool:
        """Return whether the call must wait for its ``run_after``."""
        return self.run_after is not None and self.run_after > now

    def record(self) -> TaskRecord:
        """Return the unsaved pending row of this call."""
        now = timezone.now()
        return TaskRecord(
            key=self.key,
            task_name=self.task_name,
            queue=self.queue,
            payload_hash=self.payload_hash,
            args=list(self.args),
            kwargs=self.kwargs,
            priority=self.priority,
            run_after=self.run_after,
            # Published once the row commits, a few milliseconds later: the recovery pass judges it from now.
            # A deferred row has none until the recovery pass publishes it (maintenance.publish_due).
            published_at=None if self.is_deferred(now) else now,
        )


def enqueue(call: Call) -> TaskResult:
    """Create the pending row of ``call`` and publish it once the transaction commits.

    The same key returns the row it already has (nothing is published again); the same key with
    other arguments raises :class:`PayloadMismatchError`.
    """
    return TaskResult.from_record(enqueue_record(call)[0])


def enqueue_record(call: Call) -> tuple[TaskRecord, bool]:
    """Do what :func:`enqueue` does; return the row itself and whether this call created it.

    Outside a transaction the row is one autocommit ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, the
    message published as it returns; only a conflict reads the row. Inside one, the publish waits for
    its commit. A deferred call (``run_after`` later than now) is not published here but by the
    recovery pass, once due.
    """
    candidate = call.record()
    using = router.db_for_write(TaskRecord)
    if not transaction.get_connection(using).in_atomic_block:
        return _enqueue_record(call, candidate, using)
    with transaction.atomic(using=using):
        return _enqueue_record(call, candidate, using)


#: Every column of the row, in the order of the placeholders of :func:`_insert_statement`.
_INSERTED_FIELDS = tuple(f for f in TaskRecord._meta.concrete_fields if not f.generated)
#: The statement text by database vendor, built once.
_INSERT_STATEMENTS: dict[str, str] = {}


def _insert_statement(connection: BaseDatabaseWrapper) -> str:
    """Return the ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of one row for ``connection``'s database.

    Django's insert compiler builds the same text again for every call, about half a millisecond of Python
    (a fifth of a ``delay()``), and ``enqueue()`` is on the path of every request that starts a task.
    """
    statement = _INSERT_STATEMENTS.get(connection.vendor)
    if statement is None:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(str(f.column)) for f in _INSERTED_FIELDS)
        placeholders = ", ".join(["%s"] * len(_INSERTED_FIELDS))
        table, pk = quote(TaskRecord._meta.db_table), quote(str(TaskRecord._meta.get_field("id").column))
        # Only the model's own quoted names go into the text; every value is a bound parameter.
        statement = (
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "  # noqa: S608
            f"ON CONFLICT DO NOTHING RETURNING {pk}"
        )
        _INSERT_STATEMENTS[connection.vendor] = statement
    return statement


def _insert_if_absent(candidate: TaskRecord, using: str) -> bool:
    """Insert ``candidate`` unless a row has its key (two callers racing on one key create one row)."""
    connection = connections[using]
    if connection.vendor not in ("postgresql", "sqlite") or not connection.features.can_return_columns_from_insert:
        inserted = TaskRecord._base_manager.using(using)._insert(  # type: ignore[attr-defined]
            [candidate],
            fields=list(_INSERTED_FIELDS),
            returning_fields=[TaskRecord._meta.pk],
            using=using,
            on_conflict=OnConflict.IGNORE,
        )
        return bool(inserted)
    # The values as the compiler prepares them (JSON, UUID and datetime adaptation per backend).
    values = [f.get_db_prep_save(f.pre_save(candidate, True), connection) for f in _INSERTED_FIELDS]
    with statements.cursor(connection) as cursor:
        cursor.execute(_insert_statement(connection), values)
        return cursor.fetchone() is not None


def _enqueue_record(call: Call, candidate: TaskRecord, using: str) -> tuple[TaskRecord, bool]:
    if _insert_if_absent(candidate, using):
        candidate._state.adding, candidate._state.db = False, using
        record = candidate
    else:  # the key's row exists (or the backend returns no rows: then it is this one)
        record = TaskRecord.objects.using(using).get(key=candidate.key)
    created = record.pk == candidate.pk
    if not created:
        call.discard()  # nothing is published for this call
    if record.payload_hash != candidate.payload_hash:
        raise PayloadMismatchError(call.key, call.task_name, record.payload_hash, candidate.payload_hash)
    if (created and candidate.published_at is not None) or unflag_unpublished(record):
        # A row whose message the broker refused earlier is published again by this call. Outside a
        # transaction on_commit runs at once: the row committed with its statement.
        transaction.on_commit(partial(publish_all, [record]), using=using)
    return record, created


def enqueue_many(calls: Sequence[Call], *, batch_size: int = 500) -> list[TaskResult]:
    """Create the pending rows of many calls and publish the new ones once the transaction commits.

    Equal calls share one row. Rows are written ``batch_size`` at a time, one ``INSERT ... ON
    CONFLICT DO NOTHING`` and one ``SELECT`` each, and the messages go out over one broker
    connection. Return one handle per call, in order.
    """
    check_batch_size(batch_size)
    candidates = [call.record() for call in calls]
    first: dict[str, TaskRecord] = {}
    for candidate in candidates:
        first.setdefault(candidate.key, candidate)
    keys = list(first)
    records: dict[str, TaskRecord] = {}
    with transaction.atomic():
        for start in range(0, len(keys), batch_size):
            batch = keys[start : start + batch_size]
            TaskRecord.objects.bulk_create([first[k] for k in batch], ignore_conflicts=True)
            records.update((r.key, r) for r in TaskRecord.objects.filter(key__in=batch))
        for call, candidate in zip(calls, candidates, strict=True):
            if records[candidate.key].pk != candidate.pk:
                call.discard()  # an equal call has the row
        fresh = [r for k, r in records.items() if r.pk == first[k].pk or unflag_unpublished(r)]
        if fresh:
            transaction.on_commit(partial(publish_all, fresh))
    return [TaskResult.from_record(records[candidate.key]) for candidate in candidates]


def check_batch_size(batch_size: int) -> None:
    """Raise ``ValueError`` naming ``batch_size`` unless it is a usable number of rows per statement."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer of at least 1; got {batch_size!r}.")


def unflag_unpublished(record: TaskRecord) -> bool:
    """Clear the publish-failed flag of ``record`` if it still has it; return whether this call did."""
    if record.status != Status.PENDING or record.error_type != PUBLISH_FAILED:
        return False
    return bool(
        TaskRecord.objects.filter(pk=record.pk, status=Status.PENDING, error_type=PUBLISH_FAILED).update(
            error_type="", error_message="", published_at=timezone.now()
        )
    )


#: Calls per broker round trip in :func:`publish_all` (two commands each on Redis: the message and its
#: ``task-sent`` event).
PUBLISH_BATCH = 250


def publish_all(records: Iterable[TaskRecord]) -> int:
    """Publish the calls of ``records`` over one broker connection; return how many the broker took.

    On Redis the messages go out ``PUBLISH_BATCH`` at a time in one pipeline (kombu's ``Producer.batch``):
    one round trip and one client for a whole batch, where a call on its own costs two of each.
    """
    from celery import current_app

    records = list(records)
    try:
        with current_app.producer_or_acquire() as producer:
            return sum(
                _publish_batch(records[start : start + PUBLISH_BATCH], producer)
                for start in range(0, len(records), PUBLISH_BATCH)
            )
    except Exception as exc:  # no producer at all: every row is flagged, none is lost
        for record in records:
            flag_unpublished(record, exc)
        return 0


def _publish_batch(records: Sequence[TaskRecord], producer: Any) -> int:
    """Publish ``records`` in one pipeline if the transport has them, else one by one; return how many it took.

    A single call gains too: its message and its ``task-sent`` event share the round trip.
    """
    if not producer.supports_batch_publish:
        return sum(publish_or_flag(record, producer=producer) for record in records)
    refused: set[int] = set()
    try:
        # Room for every command of the batch, so kombu never flushes part of it on its own.
        with producer.batch(max_size=10 * len(records)):
            for number, record in enumerate(records):
                # Buffering meets what one message can fail on (its size, a queue declared with the retry
                # policy): that row is flagged, the others stay in the batch.
                if not publish_or_flag(record, producer=producer):
                    refused.add(number)
    except Exception as exc:
        # The pipeline failed as it was sent: which messages Redis took is unknown (kombu's BatchPublishError).
        # Publish each again on its own, with the retry policy; a call whose message arrives twice is claimed once.
        logger.warning("a batch of %d messages failed (%r): publishing them one by one", len(records), exc)
        return sum(publish_or_flag(r, producer=producer) for n, r in enumerate(records) if n not in refused)
    return len(records) - len(refused)


def publish_or_flag(record: TaskRecord, *, producer: Any = None) -> bool:
    """Publish the call of ``record``; if the publish fails in any way, flag the row and return ``False``.

    Runs once the row is committed, so the call is not lost when the broker is down: the pending row
    keeps ``error_type = PUBLISH_FAILED`` until the recovery pass, or another ``enqueue`` of the same
    key, publishes it. Any exception counts: kombu raises ``OperationalError``, but the Redis result
    backend raises ``RuntimeError`` while disconnected. Not raising also lets the other calls committed
    in the same transaction publish.
    """
    try:
        publish(record, producer=producer)
    except Exception as exc:  # whatever failed, the row keeps the call
        flag_unpublished(record, exc)
        return False
    return True


def flag_unpublished(record: TaskRecord, exc: BaseException) -> None:
    """Mark the pending row of ``record`` as not taken by the broker, with ``exc`` as the reason."""
    logger.error(PUBLISH_FAILED_LOG, record.key, exc)
    message = f"The broker did not take the message: {type(exc).__name__}: {exc}"[:ERROR_MESSAGE_LIMIT]
    TaskRecord.objects.filter(pk=record.pk, status=Status.PENDING).update(
        error_type=PUBLISH_FAILED, error_message=message
    )


def publish(record: TaskRecord, *, producer: Any = None) -> None:
    """Send the task call of ``record`` to its queue, under the row's key (over ``producer`` if given).

    Gives up after about ``IDEMPOTENCY_PUBLISH_TIMEOUT`` seconds (the connection attempt is bounded by
    ``broker_connection_timeout``, the result subscription by the backend's retry policy, both set
    from it): a request never waits for the broker's reconnect loop.
    """
    from celery import current_app

    step = settings.IDEMPOTENCY_PUBLISH_TIMEOUT / 3
    task = current_app.tasks.get(record.task_name)
    # The task's own choice, as delay() passes it: left unset, send_task subscribes to the result's channel
    # on the result backend for every call (a round trip, and a subscription the caller never reads).
    # A task this process does not know keeps Celery's default (unset: the worker's task decides).
    ignoring: dict[str, Any] = {} if task is None else {"ignore_result": task.ignore_result}
    current_app.send_task(
        record.task_name,
        args=record.args,
        kwargs=record.kwargs,
        task_id=record.task_id or str(record.pk),
        queue=record.queue,
        priority=broker_priority(record.priority),
        headers={KEY_HEADER: record.key},
        producer=producer,
        **ignoring,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": step, "interval_max": step},
    )
