"""One plain task per pool, for the routing tests (they pass with or without the demo app)."""

from __future__ import annotations

import os
from typing import Any

from django.core.mail import send_mail

from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task
from {{ cookiecutter.project_slug }}.pools import DEFAULT, EMAILS, IMAGES, REPORTS


@shared_task(worker_pool=DEFAULT)
def on_default(x: int, y: int) -> dict[str, Any]:
    """Add two numbers on the default pool."""
    return {"sum": x + y, "pid": os.getpid()}


@shared_task(worker_pool=IMAGES)
def on_images(width: int, height: int) -> dict[str, Any]:
    """Return the pixel count, on the images pool."""
    return {"pixels": width * height, "pid": os.getpid()}


@shared_task(worker_pool=EMAILS)
def on_emails(to: str) -> dict[str, Any]:
    """Send a short e-mail through Django's backend, on the emails pool."""
    return {"sent": send_mail("Hello", "The emails pool is working.", None, [to]), "pid": os.getpid()}


@shared_task(worker_pool=REPORTS)
def on_reports(limit: int) -> dict[str, Any]:
    """Sum the numbers below ``limit``, on the reports pool."""
    return {"total": sum(range(limit)), "pid": os.getpid()}
