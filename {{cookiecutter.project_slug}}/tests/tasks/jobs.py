"""Tasks behind the test-only job kinds: the jobs API is tested without the demo app."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from {{ cookiecutter.project_slug }} import claimcheck
from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask, set_progress
from {{ cookiecutter.project_slug }}.pools import DEFAULT


@shared_task(base=IdempotentTask, worker_pool=DEFAULT)
def count_lines(*, upload: str) -> dict[str, Any]:
    """Count the lines of an uploaded text file and store them numbered as a result file."""
    reference = claimcheck.Reference.from_token(upload)
    lines = claimcheck.read_bytes(reference).splitlines()
    set_progress(0.5, f"{len(lines)} lines read")
    numbered = b"".join(b"%d %s\n" % (number, line) for number, line in enumerate(lines, start=1))
    stored = claimcheck.store_bytes(numbered, prefix="lines", content_type="text/plain")
    return {"files": {"numbered.txt": stored.sign()}, "stats": {"lines": len(lines)}}


@shared_task(base=IdempotentTask, worker_pool=DEFAULT)
def measure_picture(*, upload: str) -> dict[str, Any]:
    """Return the size of an uploaded picture without reading it."""
    return {"stats": {"bytes": claimcheck.Reference.from_token(upload).size}}
