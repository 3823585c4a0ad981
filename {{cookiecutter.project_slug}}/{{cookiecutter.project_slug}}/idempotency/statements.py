"""The status table's per-task statements, prepared once per connection on PostgreSQL (server-side binding)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["cursor"]

#: psycopg's ``prepare_threshold`` set here: so many runs before a statement is prepared unasked (never, in effect).
_ONLY_WHEN_ASKED = 2**31


class _PreparingCursor(psycopg.Cursor[Any]):
    """A psycopg cursor that binds parameters on the server and prepares every statement on its first run.

    Django's cursors bind on the client (psycopg's ``ClientCursor``): each claim and success write is quoted
    into a new text that PostgreSQL parses and plans again. Prepared, a task's statement is one ``Bind`` and
    ``Execute`` of a plan the connection already holds.
    """

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        return super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)


#: The attribute of a Django connection that keeps its preparing cursor, on its current driver connection: a
#: task's statements reuse it. On the connection itself, so a reconnect replaces it and drops the closed one.
_KEPT_CURSOR = "_idempotency_prepared_cursor"


@contextlib.contextmanager
def cursor(connection: BaseDatabaseWrapper) -> Iterator[Any]:
    """Yield a cursor of ``connection`` for one of the hot statements: prepared on PostgreSQL, else Django's own.

    The cursor fails as Django's do (Django's database exceptions, a broken transaction refused), runs in the
    connection's transaction, and is wrapped as Django wraps its own (``connection.queries``, execute wrappers)
    whenever something is listening. ``IDEMPOTENCY_PREPARED_STATEMENTS = False`` turns preparing off
    (a pooler that cannot keep prepared statements: PgBouncer before 1.21 in transaction mode, or without
    ``max_prepared_statements``).
    """
    if connection.vendor != "postgresql" or not settings.IDEMPOTENCY_PREPARED_STATEMENTS:
        with connection.cursor() as django_cursor:
            yield django_cursor
        return
    # What BaseDatabaseWrapper.cursor() does before it creates a cursor of its own kind.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        connection.validate_thread_sharing()
        raw_connection = connection.connection
        if raw_connection.prepare_threshold is None:
            # Django opens connections with psycopg's preparing off, which ignores prepare=True too. Its own
            # cursors bind on the client and never prepare: a threshold changes nothing for them.
            raw_connection.prepare_threshold = _ONLY_WHEN_ASKED
        if connection.queries_logged or connection.execute_wrappers:
            # django-stubs types the argument as Django's wrapper; Django passes the driver's cursor, as here.
            raw: Any = _PreparingCursor(raw_connection)
            wrapped = connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
        else:
            # Nobody listens: Django's wrapper would only add its checks, made here, around the same execute.
            kept: _PreparingCursor | None = getattr(connection, _KEPT_CURSOR, None)
            if kept is None or kept.closed or kept.connection is not raw_connection:
                # First statement, or Django reconnected: the old cursor (and its closed connection) goes.
                kept = _PreparingCursor(raw_connection)
                setattr(connection, _KEPT_CURSOR, kept)
            connection.validate_no_broken_transaction()
            yield kept
            return
    with wrapped:
        yield wrapped
