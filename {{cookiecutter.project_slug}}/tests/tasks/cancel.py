"""Test-only task for cancelling on a threads pool: it works without reporting progress, then records its effect."""

from __future__ import annotations

from typing import Any

from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task
from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask
from {{ cookiecutter.project_slug }}.pools import EMAILS

from tests.effects.models import Effect
from tests.tasks.idempotency import _pause, bump


@shared_task(base=IdempotentTask, bind=True, worker_pool=EMAILS, atomic_effects=False)
def quiet_effect_on_threads(self: Any, name: str, seconds: float) -> str:
    """Count the run, work ``seconds`` without a progress report, then record the effect ``name``."""
    bump(f"runs:{name}")
    _pause(seconds)
    Effect.objects.create(key=name, task_id=self.request.id)
    return name
