"""The status table's partial indexes serve the queries of the reaper, the recovery pass and the pruner."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from {{ cookiecutter.project_slug }}.idempotency import maintenance


def plans(run: Callable[[], object]) -> str:
    """Run ``run`` and return the database's plans of the status-table SELECTs it issued."""
    with CaptureQueriesContext(connection) as captured:
        run()
    statements = [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"].startswith("SELECT") and "idempotency_taskrecord" in query["sql"]
    ]
    assert statements, captured.captured_queries
    postgres = connection.vendor == "postgresql"
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            cursor.execute("SET LOCAL enable_seqscan = off")  # the table is empty: a whole scan would cost nothing
        found = []
        for sql in statements:
            cursor.execute(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + sql)
            found.append(" ".join(str(column) for row in cursor.fetchall() for column in row))
    return "\n".join(found)


def definition(index: str) -> str:
    """Return the database's own text of ``index`` (empty if there is none)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [index])
        else:
            cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = %s", [index])
        row = cursor.fetchone()
    return str(row[0]) if row else ""


@pytest.mark.parametrize(
    ("name", "run", "index"),
    [
        ("reaper", lambda: maintenance.reap_expired_leases(), "idempotency_lease_idx"),
        ("recovery pass", lambda: maintenance.republish_owed(), "idempotency_published_idx"),
        ("deferred calls", lambda: maintenance.publish_due(), "idempotency_run_after_idx"),
        ("pruner", lambda: maintenance.prune_finished(older_than=timedelta(days=1)), "idempotency_finished_idx"),
    ],
)
def test_each_maintenance_query_names_the_condition_of_its_partial_index(db, name, run, index):
    assert " WHERE " in definition(index).upper(), f"{index} is not partial"
    assert index in plans(run), name


def test_the_key_has_one_index_the_unique_one(db):
    if connection.vendor != "postgresql":
        # Not a missing server: SQLite has no operator classes, so a unique column never got a second index there.
        pytest.skip("PostgreSQL's LIKE index only; the SQLite run checks the partial indexes above")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'idempotency_taskrecord' AND indexdef LIKE %s",
            ["%(key%"],
        )
        assert [name for (name,) in cursor.fetchall()] == ["idempotency_key_unique"]
