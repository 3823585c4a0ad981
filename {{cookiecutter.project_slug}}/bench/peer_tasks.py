"""The bench's no-op task on django-tasks-db and on procrastinate, importable only under bench.peer_settings."""

from __future__ import annotations

from django.tasks import task
from procrastinate.contrib.django import app

from .tasks import DONE_KEY, _redis


@task(backend="db")
def noop_db(i: int) -> None:
    """Count one completion, as a django.tasks task on django-tasks-db's database backend."""
    _redis().incr(DONE_KEY)


@app.task(name="bench.noop", queue="default")
def noop_procrastinate(i: int) -> None:
    """Count one completion, as a procrastinate task."""
    _redis().incr(DONE_KEY)
