"""Celery's own prefork pool under a name the registry does not replace, for comparisons with worker/prefork.py."""

from celery.concurrency import prefork


class TaskPool(prefork.TaskPool):
    """Celery's prefork pool as it ships (started with ``-P custom`` and ``CELERY_CUSTOM_WORKER_POOL``)."""
