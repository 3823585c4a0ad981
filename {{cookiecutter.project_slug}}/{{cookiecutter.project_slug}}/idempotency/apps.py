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
    """Close database connections that are broken or past CONN_MAX_AGE, outside eagerly run tasks."""
    from django.db import close_old_connections as close

    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    close()
