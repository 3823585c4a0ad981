"""The claim, the success write and enqueue's insert run as prepared statements on PostgreSQL, wrapped as Django's."""

from __future__ import annotations

import pytest
from django.db import ProgrammingError, connection, transaction
from django.test.utils import CaptureQueriesContext

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
