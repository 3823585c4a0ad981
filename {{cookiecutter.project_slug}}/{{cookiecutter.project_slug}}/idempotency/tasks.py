"""Periodic upkeep of the status rows: reclaim expired leases, prune finished rows."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task
from {{ cookiecutter.project_slug }}.pools import DEFAULT

from . import maintenance


@shared_task(worker_pool=DEFAULT, ignore_result=True)
def reap_expired_leases() -> dict[str, int]:
    """Publish again the calls whose delivery died holding the lease or the broker refused; publish due deferred ones.

    A backstop on the default queue: every worker runs the whole recovery pass (``maintenance.recover``)
    from its liveness thread, which a busy pool cannot delay.
    """
    report = maintenance.reap_expired_leases()
    due = maintenance.publish_due()  # deferred calls, when no worker's recovery pass has published them yet
    return {"republished": len(report.republished) + len(due), "failed": len(report.failed)}


@shared_task(worker_pool=DEFAULT, ignore_result=True)
def prune_finished() -> int:
    """Delete status rows that finished longer ago than ``IDEMPOTENCY_RETENTION`` seconds."""
    return maintenance.prune_finished(older_than=timedelta(seconds=settings.IDEMPOTENCY_RETENTION))
