"""App configuration of idempotent task execution."""

from typing import Any

from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    """Status rows that let a task have its effect once, whatever happens to its messages."""

    name = "{{ cookiecutter.project_slug }}.idempotency"
    label = "idempotency"
    verbose_name = "Idempotent tasks"

    def ready(self) -> None:
        from celery.signals import task_postrun, task_prerun, task_rejected, task_unknown

        from .refusals import note_refused_message

        # Every idempotent task writes its row twice: keep the worker's database connection between
        # tasks (settings.CELERY_DB_REUSE_MAX stops Celery closing it around each task) and close it
        # the way Django does around each request: when broken, or older than CONN_MAX_AGE.
        task_prerun.connect(close_old_connections, weak=False, dispatch_uid="idempotency-close-old-connections")
        task_postrun.connect(close_old_connections, weak=False, dispatch_uid="idempotency-close-old-connections-post")
        # A message dropped before any task runs leaves its reason on its row, not only in the worker's log.
        task_unknown.connect(note_refused_message, weak=False, dispatch_uid="idempotency-unknown-task")
        task_rejected.connect(note_refused_message, weak=False, dispatch_uid="idempotency-rejected-message")


def close_old_connections(sender: Any = None, **kwargs: Any) -> None:
    """Close database connections that are broken or past CONN_MAX_AGE, outside eagerly run tasks.

    Django's ``CONN_HEALTH_CHECKS`` then costs a ``SELECT 1`` at the first query of every task; a connection
    whose last status-row statement answered moments ago skips it. If it died since, the claim fails with
    ``OperationalError`` and the delivery comes again later, as it would for a database lost after the check.
    """
    from django.db import connections

    from .claims import answered_recently

    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    for connection in connections.all(initialized_only=True):
        recent = answered_recently(connection)
        connection.close_if_unusable_or_obsolete()  # errors since the last statement, or too old: closed
        if recent and connection.connection is not None and not connection.errors_occurred:
            connection.health_check_done = True  # type: ignore[attr-defined]  # Django's, unstubbed
