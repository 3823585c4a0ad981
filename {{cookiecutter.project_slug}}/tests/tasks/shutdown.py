"""Test-only tasks for the shutdown and redelivery tests: each leaves markers a test can count."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import signals
from django.db import IntegrityError, transaction
from django.db.models import F

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task
from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask
from {{ cookiecutter.project_slug }}.worker import heartbeat  # noqa: F401  (its worker_ready receiver comes first)

from tests.effects.models import Counter, Effect


def bump(name: str) -> None:
    """Add one to the counter ``name``, creating it at zero first."""
    Counter.objects.get_or_create(name=name)
    Counter.objects.filter(name=name).update(value=F("value") + 1)


def count(name: str) -> int:
    """Return the value of the counter ``name`` (0 when it does not exist)."""
    row = Counter.objects.filter(name=name).first()
    return row.value if row else 0


def record_effect(key: str, task_id: str, seconds: float = 0.0, again: float = 0.0) -> str:
    """Mark the start (and the process), work ``seconds``, then record the effect once; a repeat does nothing.

    A second or later delivery works ``again`` seconds instead. Returns ``done`` for the first completion,
    ``repeat`` when an earlier delivery already completed it. A second completion racing the first (two
    deliveries running at once) is counted as ``duplicate:<key>``.
    """
    bump(f"started:{key}")
    Counter.objects.update_or_create(name=f"pid:{key}", defaults={"value": os.getpid()})
    if Effect.objects.filter(key=key).exists():
        bump(f"repeat:{key}")
        return "repeat"
    if count(f"started:{key}") > 1:
        seconds = again  # a redelivery: quick, so a loaded machine does not push it past the soft time limit
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # short sleeps: a signal lands between them
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    try:
        with transaction.atomic():
            Effect.objects.create(key=key, task_id=task_id, worker=str(os.getpid()))
    except IntegrityError:
        bump(f"duplicate:{key}")
        return "duplicate"
    return "done"


def _make(pool: pools.Pool) -> Any:
    @shared_task(bind=True, name=f"tests.tasks_shutdown.effect_{pool.name}", worker_pool=pool)
    def effect(self: Any, key: str, seconds: float = 0.0, again: float = 0.0) -> str:
        return record_effect(key, self.request.id, seconds, again)

    return effect


effect_default = _make(pools.DEFAULT)
effect_images = _make(pools.IMAGES)
effect_emails = _make(pools.EMAILS)
effect_reports = _make(pools.REPORTS)
#: The effect task of each pool, by pool name.
EFFECT_TASKS = {"default": effect_default, "images": effect_images, "emails": effect_emails, "reports": effect_reports}


def _make_once(pool: pools.Pool) -> Any:
    # Idempotent with the project's defaults: on a pool that runs atomic effects, the body's write commits with
    # the success write. The body has no guard of its own, so a second committed run would count 2.
    @shared_task(base=IdempotentTask, name=f"tests.tasks_shutdown.once_{pool.name}", worker_pool=pool)
    def once(key: str, seconds: float = 0.0) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # short sleeps, so a signal lands between them
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        bump(f"once:{key}")
        return "done"

    return once


#: The idempotent task of each pool whose deployed limits run atomic effects (not reports), by pool name.
ONCE_TASKS = {pool.name: _make_once(pool) for pool in (pools.DEFAULT, pools.IMAGES, pools.EMAILS)}


#: Deliveries the poison task may claim before its status row fails for good (the pool's cap is longer).
POISON_MAX_ATTEMPTS = 2


# Its start marker must outlive the kill: it opts out of the transaction around body and success write.
@shared_task(base=IdempotentTask, worker_pool=pools.DEFAULT, max_attempts=POISON_MAX_ATTEMPTS, atomic_effects=False)
def poison(name: str) -> str:
    """Kill the process running this task with SIGKILL, as a task that runs out of memory would, every time."""
    bump(f"started:{name}")
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


@signals.worker_init.connect
def _widen_ready(**kwargs: Any) -> None:
    # The heartbeat test widens the moment between worker_ready and the consumer's loop, where a SIGTERM once
    # found a half-started consumer. The heartbeat module (imported above) connected its receiver first.
    seconds = float(os.environ.get("TEST_SLOW_WORKER_READY", "0"))
    if seconds:
        signals.worker_ready.connect(lambda **_: time.sleep(seconds), weak=False)


@shared_task(worker_pool=pools.DEFAULT)
def poison_plain(name: str) -> str:
    """Kill the process running this task every time, until the counter ``cure:<name>`` is set; no status row."""
    bump(f"started:{name}")
    if not count(f"cure:{name}"):
        os.kill(os.getpid(), signal.SIGKILL)
    return "cured"
