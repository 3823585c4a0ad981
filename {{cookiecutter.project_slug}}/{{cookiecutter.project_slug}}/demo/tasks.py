"""One small real task per worker pool, each routed where it is declared and run once per key."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from typing import Any

from celery import shared_task
from django.core.mail import send_mail

from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask
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
