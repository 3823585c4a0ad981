"""One small real task per worker pool, run once per key; and the demo flows behind the jobs page."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from typing import Any

from celery import shared_task
from django.core.mail import send_mail
from django.tasks import task

from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask, set_progress
from {{ cookiecutter.project_slug }}.pools import DEFAULT, EMAILS, IMAGES, REPORTS


def _worker() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


@shared_task(base=IdempotentTask, worker_pool=DEFAULT)
def add(x: int, y: int) -> dict[str, Any]:
    """Add two numbers on the default pool."""
    return {"sum": x + y, **_worker()}


@shared_task(base=IdempotentTask, worker_pool=IMAGES)
def render_swatch(width: int, height: int) -> dict[str, Any]:
    """Draw a gradient image and return its PNG digest, on the CPU-bound images pool."""
    from PIL import Image

    image = Image.linear_gradient("L").resize((width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"sha256": hashlib.sha256(buffer.getvalue()).hexdigest(), "bytes": buffer.tell(), **_worker()}


@shared_task(base=IdempotentTask, worker_pool=EMAILS)
def send_greeting(to: str) -> dict[str, Any]:
    """Send a short e-mail through Django's e-mail backend, on the I/O-bound emails pool."""
    sent = send_mail("Hello", "The emails pool is working.", None, [to])
    return {"sent": sent, **_worker()}


@shared_task(base=IdempotentTask, worker_pool=REPORTS)
def count_primes(limit: int) -> dict[str, Any]:
    """Count primes below ``limit`` slowly, on the long-running reports pool."""
    started = time.monotonic()
    sieve = bytearray([1]) * max(limit, 2)
    sieve[0:2] = b"\x00\x00"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytearray(len(range(n * n, limit, n)))
    return {"primes": sum(sieve), "seconds": round(time.monotonic() - started, 3), **_worker()}


# ------------------------------------------------------------------------------
# The demo flows behind the jobs page: a report per uploaded CSV, thumbnails per image, an e-mail
# when a report is ready. The work is in demo/services.py; these tasks only wire it to the pools.
# ------------------------------------------------------------------------------


class UploadTask(IdempotentTask):
    """A task that reads an uploaded blob (argument ``upload``) and deletes it once its success is committed."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        from . import services

        # Runs after the row is marked succeeded, and again on a redelivery that returned the stored
        # result: deleting a blob that is already gone is not an error.
        services.delete_upload(kwargs["upload"])


class ReportTask(UploadTask):
    """The customer report: also e-mails the owner, once, when the report is ready."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        from . import services

        super().on_success(retval, task_id, args, kwargs)
        if kwargs.get("notify"):
            services.notify_report_ready(
                kwargs["upload"], kwargs["notify"], kwargs.get("filename", ""), retval["stats"], notify_report_ready
            )


def report_arguments(job: Any, upload: str) -> dict[str, str]:
    """Return the report task's arguments for a job: its upload, and whom to tell when it is ready."""
    return {"upload": upload, "notify": job.owner.email or "", "filename": job.filename}


@shared_task(base=ReportTask, worker_pool=REPORTS)
def customer_report(*, upload: str, notify: str = "", filename: str = "") -> dict[str, Any]:
    """Count customers per country in an uploaded CSV, duplicates removed, on the reports pool."""
    from . import services

    return services.customer_report(upload, progress=set_progress)


@shared_task(base=UploadTask, worker_pool=IMAGES)
def thumbnails(*, upload: str) -> dict[str, Any]:
    """Make thumbnails of an uploaded image on the CPU-bound images pool."""
    from . import services

    return services.thumbnails(upload, progress=set_progress)


# Written with Django's own task API (django.tasks): the same row, pool and retries as the Celery tasks above.
@task(queue_name=EMAILS.queue)
def notify_report_ready(to: str, filename: str, stats: dict[str, Any]) -> dict[str, Any]:
    """E-mail the owner that a report is ready; SMTP errors are retried with backoff (the pool's max_attempts)."""
    from . import services

    return {"sent": services.send_report_ready(to, filename=filename, stats=stats)}
