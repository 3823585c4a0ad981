"""The claim protocol: a delivery claims its row, reports progress, and finishes it, fenced by owner.

Each write is one statement, conditional on the row's state and owner: the statement decides, reads
only explain a refusal.
"""

from __future__ import annotations

import enum
import functools
import json
import threading
import time
import traceback as tb
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, NotSupportedError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    F,
    Field,
    FloatField,
    Func,
    JSONField,
    Q,
    QuerySet,
    TextField,
    Value,
    When,
)
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone
from psycopg import pq

from . import statements
from .exceptions import AttemptsExhaustedError
from .models import Status, TaskRecord
from .publishing import ERROR_MESSAGE_LIMIT

__all__ = [
    "AppendJSON",
    "Claim",
    "Outcome",
    "attempt_failed",
    "claim",
    "error_entry",
    "error_fields",
    "fail",
    "fail_exhausted",
    "fail_own_delivery",
    "log_error",
    "note_refusal",
    "release",
    "report_progress",
    "retry_due",
    "succeed",
]


class Outcome(enum.Enum):
    """What a delivery found when it tried to claim its row."""

    CLAIMED = "claimed"  # this delivery owns the row: run the body
    SUCCEEDED = "succeeded"  # done before: return the stored result
    BUSY = "busy"  # another delivery holds a live lease: do not run
    FAILED = "failed"  # failed for good before: do not run
    CANCELLED = "cancelled"  # cancelled on request: do not run, and drop the message quietly
    EXHAUSTED = "exhausted"  # claimed max_attempts times already: failed for good now
    MISMATCH = "mismatch"  # the key belongs to another payload: do not run


#: Seconds after a status-row statement answered during which the worker skips Django's health check of its
#: connection before the next task (apps.close_old_connections): the claim itself finds a dead one.
FRESH_CONNECTION_SECONDS = 1.0

#: When each connection last answered a status-row statement (``time.monotonic()``).
_answered_at: weakref.WeakKeyDictionary[BaseDatabaseWrapper, float] = weakref.WeakKeyDictionary()


def answered_recently(connection: BaseDatabaseWrapper) -> bool:
    """Return whether ``connection`` answered a status-row statement less than ``FRESH_CONNECTION_SECONDS`` ago."""
    answered = _answered_at.get(connection)
    return answered is not None and time.monotonic() - answered < FRESH_CONNECTION_SECONDS


#: Longest traceback kept per entry of a row's ``error_log`` (a row keeps at most one entry per attempt).
TRACEBACK_LIMIT = 20_000


def append_sql(vendor: str, column: str) -> str:
    """Return SQL for the JSON list ``column`` with one value appended, given as JSON text by one ``%s``."""
    # One statement appends: the claim that counts an attempt also logs it, so a death right after it is counted.
    if vendor == "postgresql":
        return f"(COALESCE({column}, '[]'::jsonb) || jsonb_build_array((%s)::jsonb))"
    if vendor == "sqlite":
        return f"json_insert(COALESCE({column}, '[]'), '$[#]', json(%s))"
    raise NotSupportedError(f"Appending to a JSON list is written for PostgreSQL and SQLite, not {vendor}.")


class AppendJSON(Func):
    """The JSON list ``field`` with ``entry`` appended, for ``QuerySet.update()``."""

    output_field = JSONField()

    def __init__(self, field: str, entry: Any) -> None:
        super().__init__(F(field), Value(json.dumps(entry)))

    def as_sql(
        self,
        compiler: SQLCompiler,
        connection: BaseDatabaseWrapper,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> tuple[str, tuple[str | int, ...]]:
        column, value = self.source_expressions
        column_sql, column_params = compiler.compile(column)
        value_sql, value_params = compiler.compile(value)
        sql = append_sql(connection.vendor, column_sql).replace("%s", value_sql)
        return sql, (*column_params, *value_params)


def attempt_entry(owner: str, started_at: datetime) -> dict[str, str]:
    """Return the ``attempt_log`` entry of a claim by ``owner`` (``node:pid:token``): its worker and start."""
    return {"worker": owner.rsplit(":", 1)[0], "started_at": started_at.isoformat()}


def error_entry(exc: BaseException | None = None, *, type_path: str = "", text: str = "") -> dict[str, str]:
    """Return the ``error_log`` entry of a failed attempt: ``exc``'s class path and traceback, or the given ones."""
    if exc is not None:
        type_path = f"{type(exc).__module__}.{type(exc).__qualname__}"
        text = "".join(tb.format_exception(exc))
    return {"type": type_path, "traceback": text[-TRACEBACK_LIMIT:]}


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim and the row as read when the claim did not succeed."""

    outcome: Outcome
    record: TaskRecord | None = None


def claim(
    *,
    key: str,
    task_name: str,
    queue: str,
    payload_hash: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    owner: str,
    task_id: str,
    lease_seconds: float,
    max_attempts: int,
    expect_row: bool = True,
    dead_owner: str | None = None,
) -> Claim:
    """Claim the row of ``key`` for the delivery ``owner``, counting the attempt, or say why not.

    A pending row, or a running one whose lease expired, is claimed by one conditional UPDATE; a
    missing row (the call was published without ``enqueue``: ``expect_row=False``) is created
    already claimed by one INSERT ... ON CONFLICT DO NOTHING. The statement decides; reads only
    explain a refusal. ``dead_owner`` names a lease holder known to be dead, whose lease is void.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds)
    inserts = 0
    for _ in range(4):  # each pass decides, or saw the row change between two statements
        if expect_row:
            if _claim_row(
                key=key,
                payload_hash=payload_hash,
                owner=owner,
                task_id=task_id,
                now=now,
                lease=lease,
                max_attempts=max_attempts,
                dead_owner=dead_owner,
            ):
                return Claim(Outcome.CLAIMED)
        else:
            candidate = TaskRecord(
                # The Celery task id doubles as the row id, unless another row already has it.
                id=_uuid_or_new(task_id) if inserts == 0 else uuid.uuid4(),
                key=key,
                task_name=task_name,
                queue=queue,
                status=Status.RUNNING,
                payload_hash=payload_hash,
                args=list(args),
                kwargs=dict(kwargs),
                attempts=1,
                attempt_log=[attempt_entry(owner, now)],
                task_id=task_id,
                owner=owner,
                lease_expires_at=lease,
                enqueued_at=now,
                started_at=now,
            )
            TaskRecord.objects.bulk_create([candidate], ignore_conflicts=True)
            inserts += 1
            if TaskRecord.objects.filter(key=key, owner=owner).exists():
                return Claim(Outcome.CLAIMED)
        record = TaskRecord.objects.filter(key=key).first()
        if record is None:
            expect_row = False
            continue
        expect_row = True
        if record.payload_hash != payload_hash:
            return Claim(Outcome.MISMATCH, record)
        if record.status == Status.SUCCEEDED:
            return Claim(Outcome.SUCCEEDED, record)
        if record.status == Status.FAILED:
            return Claim(Outcome.FAILED, record)
        if record.status == Status.CANCELLED:
            return Claim(Outcome.CANCELLED, record)
        lease_live = record.lease_expires_at is not None and record.lease_expires_at >= now
        if record.status == Status.RUNNING and lease_live and not (dead_owner and record.owner == dead_owner):
            return Claim(Outcome.BUSY, record)
        if record.attempts >= max_attempts and fail_exhausted(
            key=key, max_attempts=max_attempts, now=now, dead_owner=dead_owner
        ):
            record.refresh_from_db()
            return Claim(Outcome.EXHAUSTED, record)
    return Claim(Outcome.BUSY, TaskRecord.objects.filter(key=key).first())


def transaction_unused(using: str) -> bool:
    """Return whether the transaction open on ``using`` has run no statement and waits for no ``on_commit``.

    psycopg sends BEGIN only before the transaction's first statement: until then the server has no
    transaction, and committing or rolling back sends nothing.
    """
    connection = connections[using]
    if connection.vendor != "postgresql" or connection.connection is None or connection.run_on_commit:
        return False
    return bool(connection.connection.info.transaction_status == pq.TransactionStatus.IDLE)


def _claimable_sql(now: datetime, dead_owner: str | None) -> tuple[str, list[tuple[str, Any]]]:
    """Return the condition under which a row may be claimed, as SQL over field names, and its parameters.

    Pending, or running under a lease that expired, or running under a holder known to be dead (its
    process no longer exists), whose lease is void. The one statement of the condition: the claim and
    the exhausted-attempts failure both use it.
    """
    sql = "{status} = %s OR ({status} = %s AND {lease_expires_at} < %s)"
    params: list[tuple[str, Any]] = [("status", Status.PENDING), ("status", Status.RUNNING), ("lease_expires_at", now)]
    if dead_owner:
        sql += " OR ({status} = %s AND {owner} = %s)"
        params += [("status", Status.RUNNING), ("owner", dead_owner)]
    return f"({sql})", params


def _claim_row(
    *,
    key: str,
    payload_hash: str,
    owner: str,
    task_id: str,
    now: datetime,
    lease: datetime,
    max_attempts: int,
    dead_owner: str | None,
) -> bool:
    """Claim a claimable row of ``key`` with one UPDATE, counting the attempt; return whether it did."""
    values = {
        "status": Status.RUNNING,
        "owner": owner,
        "task_id": task_id,
        "lease_expires_at": lease,
        "started_at": now,
        "progress": None,
        "progress_message": "",
    }
    claimable, params = _claimable_sql(now, dead_owner)
    where = "{key} = %s AND {payload_hash} = %s AND {attempts} < %s AND " + claimable
    params = [("key", key), ("payload_hash", payload_hash), ("attempts", max_attempts), *params]
    appended = {"attempt_log": attempt_entry(owner, now)}
    return bool(_update_rows(values, where, params, increment=("attempts",), append=appended))


def _update_rows(
    values: Mapping[str, Any],
    where: str,
    params: Mapping[str, Any] | Sequence[tuple[str, Any]],
    *,
    increment: Sequence[str] = (),
    append: Mapping[str, Any] | None = None,
    connection: BaseDatabaseWrapper | None = None,
) -> int:
    """Run one ``UPDATE`` of the status table and return the number of rows it changed.

    The claim and the success write run for every task; building them with the ORM cost more than
    the statements themselves (about 1.2 ms of 2 ms per task on PostgreSQL), so they are written
    here as SQL. Values are prepared by the model's fields, as the ORM would; ``where`` names
    columns by field name in braces (``{owner} = %s``) and ``params`` pairs each placeholder with
    the field that prepares its value. ``append`` maps JSON list fields to a value appended to each.
    ``connection``: another connection than the alias's own.
    """
    using = router.db_for_write(TaskRecord)
    if connection is not None:
        return _execute_update(connection, values, where, params, increment, append or {})
    with transaction.mark_for_rollback_on_error(using):
        return _execute_update(connections[using], values, where, params, increment, append or {})


@functools.cache
def _fields() -> dict[str, Field[Any, Any]]:
    return {f.name: f for f in TaskRecord._meta.concrete_fields}


@functools.cache
def _update_sql(
    vendor: str, values: tuple[str, ...], where: str, increment: tuple[str, ...], append: tuple[str, ...]
) -> str:
    """Return the text of an ``UPDATE`` of the status table: the same few statements run for every task, built once."""
    quote = connections[router.db_for_write(TaskRecord)].ops.quote_name
    # Every concrete field has a column; the stubs allow None for fields that are not stored.
    columns = {name: quote(f.column) for name, f in _fields().items() if f.column is not None}
    assignments = [f"{columns[name]} = %s" for name in values]
    assignments += [f"{columns[name]} = {columns[name]} + 1" for name in increment]
    assignments += [f"{columns[name]} = {append_sql(vendor, columns[name])}" for name in append]
    # Only quoted column names are formatted in; every value is a parameter.
    table = quote(TaskRecord._meta.db_table)
    return f"UPDATE {table} SET {', '.join(assignments)} WHERE {where.format(**columns)}"  # noqa: S608


def _execute_update(
    connection: BaseDatabaseWrapper,
    values: Mapping[str, Any],
    where: str,
    params: Mapping[str, Any] | Sequence[tuple[str, Any]],
    increment: Sequence[str],
    append: Mapping[str, Any],
) -> int:
    pairs = params.items() if isinstance(params, Mapping) else params
    fields = _fields()
    sql = _update_sql(connection.vendor, tuple(values), where, tuple(increment), tuple(append))
    as_is = connection.vendor == "postgresql"
    arguments = [_prepared(fields[name], value, connection, as_is, save=True) for name, value in values.items()]
    arguments += [json.dumps(value) for value in append.values()]
    arguments += [_prepared(fields[name], value, connection, as_is, save=False) for name, value in pairs]
    with statements.cursor(connection) as cursor:
        cursor.execute(sql, arguments)
        _answered_at[connection] = time.monotonic()
        return cursor.rowcount


def _prepared(field: Field[Any, Any], value: Any, connection: BaseDatabaseWrapper, as_is: bool, *, save: bool) -> Any:
    """Return ``value`` as the driver takes it for ``field``: what the field's own preparation would return.

    On PostgreSQL, strings for text columns, floats, aware datetimes and ``None`` go to psycopg unchanged (the
    fields' preparation returns them as they are), which saves each task ~20 field calls; JSON values (the
    result), integers (Django wraps them in psycopg's sized types) and anything else still go through the field.
    """
    if as_is and not isinstance(field, JSONField):
        kind = _AS_IS.get(type(field))
        if value is None or (kind is not None and type(value) in kind and getattr(value, "tzinfo", True) is not None):
            return value
    return field.get_db_prep_save(value, connection) if save else field.get_db_prep_value(value, connection)


#: Field classes whose preparation on PostgreSQL passes values of these types through unchanged (a naive
#: datetime is not one: the field warns about it and makes it aware).
_AS_IS: dict[type[Field[Any, Any]], tuple[type, ...]] = {
    CharField: (str, Status),
    TextField: (str,),
    FloatField: (float,),
    DateTimeField: (datetime,),
}


_side = threading.local()


def _side_connection() -> BaseDatabaseWrapper:
    """Return this thread's second connection to the status rows' database, in autocommit: seen at once."""
    using = router.db_for_write(TaskRecord)
    connection: BaseDatabaseWrapper | None = getattr(_side, "connection", None)
    if connection is None:
        connection = connections.create_connection(using)
        _side.connection = connection
    connection.close_if_unusable_or_obsolete()
    return connection


def fail_exhausted(*, key: str, max_attempts: int, now: datetime | None = None, dead_owner: str | None = None) -> bool:
    """Fail the row of ``key`` for good if it is claimable but was claimed ``max_attempts`` times already.

    This ends the redelivery loop of a task that kills its worker: each delivery counted at its
    claim, so a delivery that died without a word still used up an attempt.
    """
    now = now or timezone.now()
    record = TaskRecord.objects.filter(key=key).only("attempts").first()
    attempts = record.attempts if record else max_attempts
    values = {
        "status": Status.FAILED,
        "owner": "",
        "lease_expires_at": None,
        "finished_at": now,
        **error_fields(AttemptsExhaustedError(key, attempts, max_attempts)),
        "error_traceback": "",
    }
    claimable, params = _claimable_sql(now, dead_owner)
    where = "{key} = %s AND {attempts} >= %s AND " + claimable
    appended = {"error_log": error_entry(AttemptsExhaustedError(key, attempts, max_attempts))}
    return bool(_update_rows(values, where, [("key", key), ("attempts", max_attempts), *params], append=appended))


def _uuid_or_new(task_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(task_id)
    except (TypeError, ValueError):
        return uuid.uuid4()


def _owned(key: str, owner: str) -> QuerySet[TaskRecord]:
    """Return the row of ``key`` only while ``owner`` holds it: the fence of every finishing write."""
    return TaskRecord.objects.filter(key=key, owner=owner, status=Status.RUNNING)


def error_fields(exc: BaseException) -> dict[str, str]:
    """Return the row's error columns for ``exc``: its class path, message and traceback."""
    return {
        "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "error_message": str(exc)[:ERROR_MESSAGE_LIMIT],
        "error_traceback": "".join(tb.format_exception(exc)),
    }


def succeed(*, key: str, owner: str, result: Any) -> bool:
    """Store ``result`` and mark the row succeeded, if ``owner`` still holds it."""
    values = {
        "status": Status.SUCCEEDED,
        "result": result,
        "lease_expires_at": None,
        "finished_at": timezone.now(),
        "progress": 1.0,
        "error_type": "",
        "error_message": "",
        "error_traceback": "",
    }
    where = "{key} = %s AND {owner} = %s AND {status} = %s"
    return bool(_update_rows(values, where, {"key": key, "owner": owner, "status": Status.RUNNING}))


def fail(*, key: str, owner: str, exc: BaseException) -> bool:
    """Fail the row for good with ``exc``, if ``owner`` still holds it."""
    return bool(
        _owned(key, owner).update(
            status=Status.FAILED,
            lease_expires_at=None,
            finished_at=timezone.now(),
            error_log=AppendJSON("error_log", error_entry(exc)),
            **error_fields(exc),
        )
    )


def release(*, key: str, owner: str, exc: BaseException | None = None) -> bool:
    """Give the row back (pending) so a later delivery can claim it, if ``owner`` still holds it."""
    errors: dict[str, Any] = {}
    if exc is not None:
        errors = {**error_fields(exc), "error_log": AppendJSON("error_log", error_entry(exc))}
    # The message goes back to the queue (or a retry is sent) now: the recovery pass judges the row from here.
    return bool(
        _owned(key, owner).update(
            status=Status.PENDING, owner="", lease_expires_at=None, published_at=timezone.now(), **errors
        )
    )


def retry_due(*, key: str, seconds: float) -> None:
    """Record that the pending row of ``key`` is sent again as a retry due in ``seconds``."""
    due = timezone.now() + timedelta(seconds=seconds)
    TaskRecord.objects.filter(key=key, status=Status.PENDING).update(published_at=due)


def attempt_failed(*, key: str, owner: str, exc: BaseException, max_attempts: int) -> TaskRecord | None:
    """Record a failed attempt: fail the row for good at ``max_attempts``, else release it for a retry.

    Return the row afterwards, or ``None`` if ``owner`` no longer held it.
    """
    now = timezone.now()
    final = Q(attempts__gte=max_attempts)
    updated = _owned(key, owner).update(
        status=Case(When(final, then=Value(Status.FAILED)), default=Value(Status.PENDING), output_field=CharField()),
        owner=Case(When(final, then=F("owner")), default=Value(""), output_field=CharField()),
        finished_at=Case(When(final, then=Value(now)), default=Value(None), output_field=DateTimeField()),
        lease_expires_at=None,
        error_log=AppendJSON("error_log", error_entry(exc)),
        **error_fields(exc),
    )
    return TaskRecord.objects.get(key=key) if updated else None


def report_progress(
    *, key: str, owner: str, fraction: float, message: str, lease_seconds: float, outside_transaction: bool = False
) -> bool:
    """Store progress and extend the lease, if ``owner`` still holds the row.

    ``outside_transaction``: inside an open transaction, write through a connection of this thread's own
    instead, so readers (and the reaper) see it now, not at the commit. The transaction has not touched
    the row (its success write comes last), so the two connections never wait for each other. Not on
    SQLite, where the write joins the transaction.
    """
    values = {
        "progress": fraction,
        "progress_message": message[:255],
        "lease_expires_at": timezone.now() + timedelta(seconds=lease_seconds),
    }
    where = "{key} = %s AND {owner} = %s AND {status} = %s"
    params = {"key": key, "owner": owner, "status": Status.RUNNING}
    current = connections[router.db_for_write(TaskRecord)]
    # SQLite serialises writers: a second connection would wait for this one's transaction to end.
    if not (outside_transaction and current.in_atomic_block and current.vendor != "sqlite"):
        return bool(_update_rows(values, where, params))
    connection = _side_connection()
    try:
        return bool(_update_rows(values, where, params, connection=connection))
    except DatabaseError:
        connection.close()  # reconnect at the next report
        raise


def log_error(*, key: str, owner: str, entry: Mapping[str, str]) -> bool:
    """Append ``entry`` to the ``error_log`` of the row of ``key`` while ``owner`` holds it; the status stays."""
    return bool(_owned(key, owner).update(error_log=AppendJSON("error_log", dict(entry))))


def fail_own_delivery(*, key: str, task_id: str, exc: BaseException) -> bool:
    """Fail the row of ``key`` with ``exc`` if ``task_id`` is the row's own message and no live lease holds it.

    For a refusal of a delivery that no retry changes (its arguments do not match the row's): only the
    message enqueue published for the row (its id) or the delivery that claimed it last (``task_id``)
    fails it, so a stray or forged message under the key leaves the row alone.
    """
    now = timezone.now()
    own = Q(task_id=task_id) | Q(pk=_uuid_or_none(task_id))
    claimable = Q(status=Status.PENDING) | Q(status=Status.RUNNING, lease_expires_at__lt=now)
    return bool(
        TaskRecord.objects.filter(own, claimable, key=key).update(
            status=Status.FAILED,
            owner="",
            lease_expires_at=None,
            finished_at=now,
            error_log=AppendJSON("error_log", error_entry(exc)),
            **error_fields(exc),
        )
    )


def note_refusal(*, key: str, task_id: str, exc: BaseException) -> bool:
    """Write ``exc`` as the error of the row of ``key`` if ``task_id`` is its own message; the status stays."""
    now = timezone.now()
    own = Q(task_id=task_id) | Q(pk=_uuid_or_none(task_id))
    claimable = Q(status=Status.PENDING) | Q(status=Status.RUNNING, lease_expires_at__lt=now)
    return bool(TaskRecord.objects.filter(own, claimable, key=key).update(**error_fields(exc)))


def _uuid_or_none(task_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(task_id)
    except (TypeError, ValueError):
        return None
