"""The claim, the success write and enqueue's insert run as prepared statements on PostgreSQL, wrapped as Django's."""

from __future__ import annotations

import gc
import warnings
import weakref
from datetime import datetime

import pytest
from django.db import ProgrammingError, connection, transaction
from django.db.models import Field
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from {{ cookiecutter.project_slug }}.idempotency import claims, statements
from {{ cookiecutter.project_slug }}.idempotency.claims import Outcome
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord

from tests.idempotency.test_base import claim_args
from tests.tasks import idempotency as tasks


@pytest.fixture(autouse=True)
def nothing_prepared(db: None) -> None:
    """Start with no prepared statement on the connection (psycopg forgets its own on DEALLOCATE ALL)."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's; on SQLite the same calls run Django's cursor")
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")


def prepared() -> list[str]:
    """Return the statements this connection holds prepared on the server."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def test_enqueue_claim_and_success_are_prepared_once_and_still_seen_by_django(db):
    with CaptureQueriesContext(connection) as captured:
        tasks.make_effect.using(key="prepared-1").enqueue("prepared-1")
        assert claims.claim(**claim_args("prepared-1", "w:1:a")).outcome is Outcome.CLAIMED
        assert claims.succeed(key="prepared-1", owner="w:1:a", result={"n": 1})
    seen = [query["sql"] for query in captured.captured_queries]
    # connection.queries and execute wrappers see the statements as they see Django's own.
    assert sum('INSERT INTO "idempotency_taskrecord"' in sql for sql in seen) == 1, seen
    assert sum('UPDATE "idempotency_taskrecord"' in sql for sql in seen) == 2, seen
    held = [s for s in prepared() if "idempotency_taskrecord" in s]
    assert len(held) == 3, held  # the insert, the claim, the success write
    record = TaskRecord.objects.get(key="prepared-1")
    assert (record.status, record.result, record.attempts) == (Status.SUCCEEDED, {"n": 1}, 1)

    # The next task's statements reuse the plans: nothing new is prepared.
    tasks.make_effect.using(key="prepared-2").enqueue("prepared-2")
    assert claims.claim(**claim_args("prepared-2", "w:1:b")).outcome is Outcome.CLAIMED
    # (A result of another type, None, is bound with other types: psycopg prepares that variant once too.)
    assert claims.succeed(key="prepared-2", owner="w:1:b", result={"n": 2})
    assert len([s for s in prepared() if "idempotency_taskrecord" in s]) == 3
    assert TaskRecord.objects.get(key="prepared-2").status == Status.SUCCEEDED


def test_turned_off_nothing_is_prepared(db, settings):
    settings.IDEMPOTENCY_PREPARED_STATEMENTS = False
    tasks.make_effect.using(key="unprepared").enqueue("unprepared")
    assert claims.claim(**claim_args("unprepared", "w:1:a")).outcome is Outcome.CLAIMED
    assert [s for s in prepared() if "idempotency_taskrecord" in s] == []


def test_a_prepared_statement_runs_in_the_callers_transaction_and_fails_as_django_does(db):
    tasks.make_effect.using(key="rolled-back").enqueue("rolled-back")
    with transaction.atomic():
        assert claims.claim(**claim_args("rolled-back", "w:1:a")).outcome is Outcome.CLAIMED
        transaction.set_rollback(True)
    assert TaskRecord.objects.get(key="rolled-back").status == Status.PENDING

    # Django's exception classes, not psycopg's: the base task's handlers catch those.
    with pytest.raises(ProgrammingError, match="no_such_column"), statements.cursor(connection) as cursor:
        cursor.execute("UPDATE idempotency_taskrecord SET no_such_column = %s", [1])


def test_unobserved_statements_share_one_driver_cursor_per_connection_and_refuse_a_broken_transaction(db):
    with statements.cursor(connection) as first:
        first.execute("SELECT 1")
    with statements.cursor(connection) as second:
        second.execute("SELECT 2")
        assert second.fetchone() == (2,)
    assert first is second  # kept for the connection: a task's two statements make no new cursor
    assert isinstance(first, statements._PreparingCursor)

    # As Django's own cursor: once an error marked the atomic block for rollback (the status-row writes run under
    # mark_for_rollback_on_error), nothing more runs in it.
    with transaction.atomic():
        with (
            pytest.raises(ProgrammingError),
            transaction.mark_for_rollback_on_error(),
            statements.cursor(connection) as cursor,
        ):
            cursor.execute("SELECT no_such_column FROM idempotency_taskrecord")
        with pytest.raises(TransactionManagementError), statements.cursor(connection) as cursor:
            cursor.execute("SELECT 1")
        transaction.set_rollback(True)


def test_a_new_driver_connection_gets_a_cursor_of_its_own(transactional_db):
    with statements.cursor(connection) as first:
        first.execute("SELECT 1")
    # The kept cursor belongs to the driver connection that closed; the next statement reconnects.
    connection.close()
    tasks.make_effect.using(key="reconnected").enqueue("reconnected")
    assert claims.claim(**claim_args("reconnected", "w:1:a")).outcome is Outcome.CLAIMED
    with statements.cursor(connection) as third:
        assert third is not first
        assert third.connection is connection.connection


def test_reconnecting_leaves_no_closed_driver_connection_behind(transactional_db):
    with statements.cursor(connection) as cursor:
        cursor.execute("SELECT 1")
    closed = weakref.ref(connection.connection)
    del cursor
    connection.close()  # as close_old_connections does past CONN_MAX_AGE, or after a lost database
    with statements.cursor(connection) as cursor:
        cursor.execute("SELECT 1")
    del cursor
    gc.collect()
    # A long-lived worker reconnects many times: a reference kept to each closed connection would add up.
    assert closed() is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status", Status.RUNNING),
        ("owner", "node@host:12:abc"),
        ("attempts", 3),
        ("progress", 0.5),
        ("progress", None),
        ("lease_expires_at", timezone.now()),
        ("result", None),
        ("result", {"n": 1, "when": "2026-12-03"}),
        ("error_message", ""),
        ("error_traceback", "Traceback ..."),
        ("finished_at", None),
        ("id", "6f1c1d1e-8a57-4a43-9a7e-2a1f6d1b2c3d"),
        ("started_at", datetime(2026, 12, 3, 12, 0)),
    ],
)
def test_values_passed_as_they_are_equal_what_the_field_would_prepare(db, name, value):
    field = TaskRecord._meta.get_field(name)
    assert isinstance(field, Field)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a naive datetime: the field warns, then makes it aware
        for save in (True, False):
            ours = claims._prepared(field, value, connection, True, save=save)
            django = field.get_db_prep_save(value, connection) if save else field.get_db_prep_value(value, connection)
            # psycopg's JSON wrapper has no equality: compare what it wraps.
            assert getattr(ours, "obj", ours) == getattr(django, "obj", django)
            assert type(ours) is type(django)
