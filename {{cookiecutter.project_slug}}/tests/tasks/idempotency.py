"""Test-only tasks on the idempotent base class: each counts its runs and leaves effects a test can check."""

from __future__ import annotations

import os
import time
from typing import Any

from celery.utils.log import get_task_logger
from django.db.models import F

from {{ cookiecutter.project_slug }}.core.celery_internals import request_claim, shared_task
from {{ cookiecutter.project_slug }}.core.errors import PermanentError
from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask
from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord
from {{ cookiecutter.project_slug }}.pools import DEFAULT, REPORTS

from tests.effects.models import Counter, Effect


def bump(name: str) -> int:
    """Add one to the counter ``name`` and return the new value."""
    Counter.objects.get_or_create(name=name)
    Counter.objects.filter(name=name).update(value=F("value") + 1)
    return Counter.objects.get(name=name).value


def count(name: str) -> int:
    """Return the value of the counter ``name`` (0 when it does not exist)."""
    row = Counter.objects.filter(name=name).first()
    return row.value if row else 0


logger = get_task_logger(__name__)
#: Logged by ``atomic_effect`` once its effect row is written (not committed): the test's cue to strike.
EFFECT_WRITTEN = "effect %s written, attempt %d"


def _pause(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # short sleeps, so a signal lands between them
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


# The tasks below are watched while they run (their run counters, one effect per attempt): their writes
# must commit as they happen, so they opt out of the transaction around body and success write.
@shared_task(base=IdempotentTask, bind=True, worker_pool=DEFAULT, atomic_effects=False)
def make_effect(self: Any, name: str, seconds: float = 0.0, first_run_seconds: float = 0.0) -> dict[str, Any]:
    """Count the run, work a while (longer on the first run), then record the effect ``name`` once."""
    run = bump(f"runs:{name}")
    _pause(seconds + (first_run_seconds if run == 1 else 0.0))
    Effect.objects.create(key=name, task_id=self.request.id, worker=f"{self.request.hostname}:{os.getpid()}")
    return {"effect": name, "run": run}


class TransientError(Exception):
    """A failure that a retry might fix."""


class BrokenInputError(PermanentError):
    """A failure no retry can fix."""


@shared_task(base=IdempotentTask, bind=True, worker_pool=DEFAULT, max_attempts=3, retry_backoff=1, atomic_effects=False)
def always_fails(self: Any, name: str) -> None:
    """Record when each attempt ran, then fail with a retryable error."""
    attempt = bump(f"runs:{name}")
    Effect.objects.create(key=f"{name}:attempt-{attempt}", task_id=self.request.id)
    raise TransientError(f"attempt {attempt} of {name} failed")


@shared_task(base=IdempotentTask, worker_pool=DEFAULT, atomic_effects=False)
def fails_permanently(name: str) -> None:
    """Fail with a permanent error: no retry."""
    bump(f"runs:{name}")
    raise BrokenInputError(f"{name}: the input cannot be processed")


@shared_task(base=IdempotentTask, bind=True, worker_pool=DEFAULT, atomic_effects=False)
def reports_progress(self: Any, name: str, steps: int = 4, step_seconds: float = 0.0) -> int:
    """Report progress at each step, then return the number of steps."""
    bump(f"runs:{name}")
    for step in range(1, steps + 1):
        _pause(step_seconds)
        self.set_progress(step / steps, f"step {step} of {steps}")
    return steps


@shared_task(worker_pool=DEFAULT, ignore_result=True)
def noop_plain(n: int) -> int:
    """A plain task: ``enqueue`` refuses it."""
    return n


@shared_task(base=IdempotentTask, bind=True, worker_pool=REPORTS, atomic_effects=False)
def long_report(self: Any, name: str, seconds: float = 0.0) -> dict[str, Any]:
    """A report on the reports pool: count the run, report progress every 0.2 s for ``seconds``, record the effect."""
    run = bump(f"runs:{name}")
    Counter.objects.update_or_create(name=f"pid:{name}", defaults={"value": os.getpid()})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _pause(0.2)
        self.set_progress(min(1.0, 1 - (deadline - time.monotonic()) / seconds) if seconds else 1.0)
    Effect.objects.create(key=name, task_id=self.request.id, worker=f"{self.request.hostname}:{os.getpid()}")
    return {"effect": name, "run": run}


@shared_task(base=IdempotentTask, bind=True, worker_pool=DEFAULT)
def atomic_effect(self: Any, name: str, pause_after_write: float = 0.0, progress: bool = False) -> dict[str, Any]:
    """Record the effect ``name``, log it, report progress if asked, then wait (first attempt only) before returning.

    Runs in the pool's default mode (one transaction with the success write): the effect commits with it.
    """
    Effect.objects.create(key=name, task_id=self.request.id, worker=f"{self.request.hostname}:{os.getpid()}")
    claim = request_claim(self.request)
    attempt = TaskRecord.objects.get(key=claim[0]).attempts if claim else 0
    logger.warning(EFFECT_WRITTEN, name, attempt)
    if progress:
        self.set_progress(0.5, f"{name} written")
    if attempt == 1:
        _pause(pause_after_write)
    return {"effect": name, "attempt": attempt}


@shared_task(base=IdempotentTask, bind=True, worker_pool=DEFAULT, retry_backoff=0.2)
def atomic_fails_once(self: Any, name: str) -> int:
    """Record the effect of this attempt, then fail the first attempt with a retryable error."""
    claim = request_claim(self.request)
    attempt = TaskRecord.objects.get(key=claim[0]).attempts if claim else 0
    Effect.objects.create(key=f"{name}:attempt-{attempt}", task_id=self.request.id)
    if attempt == 1:
        raise TransientError(f"attempt {attempt} of {name} failed")
    return attempt


@shared_task(base=IdempotentTask, worker_pool=DEFAULT)
def echo(value: Any) -> Any:
    """Return the argument: what the row stored is what the body received."""
    return value


@shared_task(base=IdempotentTask, worker_pool=DEFAULT)
def unstorable_result(kind: str) -> dict[str, Any]:
    """Return a result JSON carries but the database's JSON refuses: NaN, an infinity or a NUL character."""
    values: dict[str, Any] = {"nan": float("nan"), "inf": float("inf"), "nul": "a\x00b"}
    return {"mean": values[kind]}
