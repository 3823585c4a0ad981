"""Test-only ``django.tasks`` tasks on the pool backend: each counts its runs and leaves effects a test can check."""

from __future__ import annotations

import os
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.tasks import TaskContext, task
from django.tasks.signals import task_finished, task_started

from {{ cookiecutter.project_slug }}.idempotency.base import set_progress

from tests.effects.models import Effect
from tests.tasks.idempotency import TransientError, bump


def _pause(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # short sleeps, so a signal lands between them
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


# Watched while they run (run counters, effects): their writes commit as they happen (atomic_effects=False).
# django-stubs' @task overloads do not list the options Django 6.1 forwards to the backend's task class.
@task(atomic_effects=False)  # type: ignore[call-overload]
def make_effect(name: str, seconds: float = 0.0, first_run_seconds: float = 0.0) -> dict[str, Any]:
    """Count the run, work a while (longer on the first run), then record the effect ``name`` once."""
    run = bump(f"runs:{name}")
    _pause(seconds + (first_run_seconds if run == 1 else 0.0))
    Effect.objects.create(key=name, worker=str(os.getpid()))
    return {"effect": name, "run": run}


@task(takes_context=True, max_attempts=3, atomic_effects=False)  # type: ignore[call-overload]
def flaky(context: TaskContext, name: str, failures: int) -> dict[str, Any]:
    """Fail the first ``failures`` attempts with a retryable error, then return the attempt number."""
    bump(f"runs:{name}")
    if context.attempt <= failures:
        raise TransientError(f"attempt {context.attempt} of {name} failed")
    return {"attempt": context.attempt, "id": context.task_result.id}


@task(atomic_effects=False)  # type: ignore[call-overload]
async def async_effect(name: str, seconds: float = 0.0) -> dict[str, Any]:
    """An ``async def`` task: record the effect from the event loop the worker runs it in."""
    import asyncio

    await asyncio.sleep(seconds)
    run = await sync_to_async(bump)(f"runs:{name}")
    await Effect.objects.acreate(key=name, worker=str(os.getpid()))
    return {"effect": name, "run": run, "coroutine": True}


@task(atomic_effects=False)  # type: ignore[call-overload]
def in_order(name: str) -> int:
    """Record the order in which the calls of a test start (the counter ``order:<test>``)."""
    test = name.split(":", 1)[0]
    position = bump(f"order:{test}")
    Effect.objects.create(key=name, task_id=str(position))
    return position


@task(atomic_effects=False)  # type: ignore[call-overload]
def with_progress(name: str, steps: int = 4, step_seconds: float = 0.0) -> int:
    """Report progress at each step (the jobs page's bars read it), then return the number of steps."""
    for step in range(1, steps + 1):
        _pause(step_seconds)
        set_progress(step / steps, f"step {step} of {steps}")
    return steps


@task
def returns_a_set(name: str) -> Any:
    """Return what django.tasks cannot store."""
    return {name}


@task(queue_name="emails")
def on_emails(name: str) -> str:
    """Run on the emails pool (threads)."""
    return f"{name} on {os.getpid()}"


def _note(signal_name: str) -> Any:
    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        # Worker-side signals of calls whose first argument asks for it leave an effect row per signal.
        if task_result.args and str(task_result.args[0]).startswith("signals"):
            Effect.objects.create(
                key=f"{signal_name}:{task_result.args[0]}", task_id=task_result.id, worker=str(task_result.status)
            )

    return receiver


_started, _finished = _note("task_started"), _note("task_finished")
task_started.connect(_started, dispatch_uid="tests-django-tasks-started")
task_finished.connect(_finished, dispatch_uid="tests-django-tasks-finished")
