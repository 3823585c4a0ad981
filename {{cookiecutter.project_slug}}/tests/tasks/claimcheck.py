"""Tasks the claim-check tests run on real workers: the task code never mentions the claim check."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db.models import F

from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task
from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask
from {{ cookiecutter.project_slug }}.pools import DEFAULT

from tests.effects.models import Counter

#: Counter bumped each time the body of ``counted_digest`` runs.
BODY_RAN = "claimcheck-body-ran"


def pattern(size: int, seed: str) -> str:
    """Return a deterministic string of ``size`` characters that does not compress to nothing."""
    block = hashlib.sha256(seed.encode()).hexdigest()
    out, length = [], 0
    while length < size:
        block = hashlib.sha256(block.encode()).hexdigest()
        out.append(block * 64)
        length += len(block) * 64
    return "".join(out)[:size]


def _digest(data: str) -> dict[str, Any]:
    return {"length": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}


@shared_task(worker_pool=DEFAULT)
def digest(data: str, *, label: str = "") -> dict[str, Any]:
    """Return the length and sha256 of a string argument, whatever its size."""
    return {**_digest(data), "label": label}


@shared_task(worker_pool=DEFAULT)
def make_text(size: int, seed: str) -> dict[str, Any]:
    """Return a large result: ``size`` characters of a seeded pattern."""
    return {"text": pattern(size, seed), "seed": seed}


@shared_task(worker_pool=DEFAULT, autoretry_for=(Exception,), max_retries=5, default_retry_delay=0)
def counted_digest(data: str) -> dict[str, Any]:
    """Count each run of the body, then digest the argument; any exception would be retried."""
    Counter.objects.get_or_create(name=BODY_RAN)
    Counter.objects.filter(name=BODY_RAN).update(value=F("value") + 1)
    return _digest(data)


#: Counter bumped each time the body of ``idempotent_digest`` runs.
IDEMPOTENT_RAN = "claimcheck-idempotent-ran"


@shared_task(base=IdempotentTask, worker_pool=DEFAULT)
def idempotent_digest(data: str) -> dict[str, Any]:
    """Count each run of the body, then digest the argument, as an idempotent task."""
    Counter.objects.get_or_create(name=IDEMPOTENT_RAN)
    Counter.objects.filter(name=IDEMPOTENT_RAN).update(value=F("value") + 1)
    return _digest(data)


@shared_task(base=IdempotentTask, worker_pool=DEFAULT)
def idempotent_text(size: int, seed: str) -> dict[str, Any]:
    """Return a large result from an idempotent task."""
    return {"text": pattern(size, seed), "seed": seed}


@shared_task(worker_pool=DEFAULT)
def text_summary(value: dict[str, Any]) -> dict[str, Any]:
    """Summarize the result of ``make_text`` (chained after it: receives that result as its argument)."""
    return {**_digest(value["text"]), "seed": value["seed"]}
