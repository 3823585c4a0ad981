"""Periodic maintenance of the embedded filesystem broker."""

from __future__ import annotations

from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task
from {{ cookiecutter.project_slug }}.pools import DEFAULT


@shared_task(worker_pool=DEFAULT)
def sweep_broker_files() -> dict[str, object]:
    """Delete filesystem-broker messages that no consumer took (events of a stopped Flower) and their bindings."""
    from pathlib import Path

    from django.conf import settings

    from .brokerfiles import sweep
    from .queues import pools_in_force

    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    swept = sweep(
        Path(options["data_folder_in"]),
        Path(options["control_folder"]),
        {p.queue for p in pools_in_force()},
        settings.BROKER_FILES_MAX_AGE,
    )
    return {"deleted": swept.files, "unbound": sorted(swept.unbound)}
