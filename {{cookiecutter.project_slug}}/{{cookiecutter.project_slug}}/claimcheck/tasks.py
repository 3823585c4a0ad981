"""Periodic maintenance of the claim-check storage."""

from __future__ import annotations

from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task
from {{ cookiecutter.project_slug }}.pools import DEFAULT


@shared_task(worker_pool=DEFAULT)
def sweep_orphans() -> dict[str, int]:
    """Delete claim-check blobs older than settings.CLAIMCHECK_ORPHAN_TTL."""
    from .blobs import sweep_orphans as sweep

    return {"deleted": len(sweep())}
