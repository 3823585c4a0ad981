"""Reads of jobs and their status rows, shaped as the API's JSON."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse

from {{ cookiecutter.project_slug }} import claimcheck
from {{ cookiecutter.project_slug }}.idempotency.models import FINISHED, Status, TaskRecord

from .errors import UnknownJobError
from .models import Job

#: Status row columns the API shows; the stream reads only these on every poll.
STATE_FIELDS = (
    "status",
    "progress",
    "progress_message",
    "result",
    "error_type",
    "error_message",
    "enqueued_at",
    "started_at",
    "finished_at",
)


def jobs_of(user: Any, limit: int = 50) -> QuerySet[Job]:
    """Return the user's latest jobs, newest first."""
    return Job.objects.filter(owner=user).order_by("-created")[:limit]


def job_for(user: Any, job_id: uuid.UUID) -> Job:
    """Return the user's job ``job_id``; another user's job is as unknown as a missing one."""
    job = Job.objects.filter(id=job_id, owner=user).first()
    if job is None:
        raise UnknownJobError(f"No job {str(job_id)!r} among your jobs.")
    return job


async def ajob_for(user: Any, job_id: uuid.UUID) -> Job:
    """Return the user's job ``job_id`` (async)."""
    job = await Job.objects.filter(id=job_id, owner=user).afirst()
    if job is None:
        raise UnknownJobError(f"No job {str(job_id)!r} among your jobs.")
    return job


def job_state(job: Job, request: HttpRequest | None = None) -> dict[str, Any]:
    """Return the job's status, progress, timestamps, error and result links as JSON data."""
    row = TaskRecord.objects.filter(key=job.task_key).values(*STATE_FIELDS).first()
    return shape(job, row, request)


def shape(job: Job, row: dict[str, Any] | None, request: HttpRequest | None = None) -> dict[str, Any]:
    """Return the API's JSON for ``job`` and its status row (``None`` before the row is committed)."""
    row = row or {"status": Status.PENDING, "enqueued_at": job.created}
    status = str(row.get("status") or Status.PENDING)
    result = row.get("result") if status == Status.SUCCEEDED else None
    error = None
    if row.get("error_type") and status != Status.SUCCEEDED:
        # "type" is the class path (for programs and logs); "name" is what a person reads next to the message.
        error_type = str(row["error_type"])
        error = {"type": error_type, "name": error_type.rpartition(".")[2], "message": row.get("error_message", "")}
    progress = row.get("progress")
    return {
        "id": str(job.id),
        "kind": job.kind,
        "filename": job.filename,
        "status": status,
        "final": status in FINISHED,
        "progress": {
            "fraction": 1.0 if status == Status.SUCCEEDED else round(progress or 0.0, 4),
            "message": row.get("progress_message") or "",
        },
        "created": job.created.isoformat(),
        "enqueued": _iso(row.get("enqueued_at")),
        "started": _iso(row.get("started_at")),
        "finished": _iso(row.get("finished_at")),
        "error": error,
        "result": (result or {}).get("stats") if isinstance(result, dict) else None,
        "links": result_links(result, request),
        "urls": job_urls(job),
    }


def job_urls(job: Job) -> dict[str, str]:
    """Return the API URLs of ``job``: its status and its event stream."""
    return {
        "status": reverse("jobs:job", args=[job.id]),
        "events": reverse("jobs:events", args=[job.id]),
    }


def result_links(result: Any, request: HttpRequest | None = None) -> dict[str, str]:
    """Return short-lived download URLs of the files a finished job stored, by file name."""
    if not isinstance(result, dict) or not isinstance(result.get("files"), dict):
        return {}
    expires = settings.JOBS_DOWNLOAD_URL_SECONDS
    return {
        name: claimcheck.download_url(claimcheck.Reference.from_token(token), expires=expires, request=request)
        for name, token in result["files"].items()
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
