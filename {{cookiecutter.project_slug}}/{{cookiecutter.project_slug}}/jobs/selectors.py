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

from . import kinds
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
    "attempts",
    "owner",
    "enqueued_at",
    "started_at",
    "finished_at",
)

#: Short names of the errors that say the worker holding the job was lost (the row went back to pending).
WORKER_LOST = frozenset({"LeaseExpired", "WorkerLost", "WorkerLostError"})
#: The error type of a row whose message the broker did not take (``idempotency.publishing``).
NOT_PUBLISHED = "PublishFailed"
#: What a job whose status row is gone and whose outcome was not kept says (rows pruned before outcomes were kept).
UNKNOWN = "unknown"


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


def shape(
    job: Job, row: dict[str, Any] | None, request: HttpRequest | None = None, *, links: bool = True
) -> dict[str, Any]:
    """Return the API's JSON for ``job`` and its status row; without the row, the outcome the job kept."""
    if row is None:
        return kept_outcome(job)
    status = str(row.get("status") or Status.PENDING)
    result = row.get("result") if status == Status.SUCCEEDED else None
    error = None
    if row.get("error_type") and status != Status.SUCCEEDED:
        # "type" is the class path (for programs and logs); "name" is what a person reads next to the message.
        error_type = str(row["error_type"])
        error = {"type": error_type, "name": error_type.rpartition(".")[2], "message": row.get("error_message", "")}
    progress = row.get("progress")
    attempts = {"made": int(row.get("attempts") or 0), "max": max_attempts(job)}
    # The owner is "node:pid:token"; the node name is what Flower and the logs call the worker.
    worker = (str(row.get("owner") or "").rsplit(":", 2)[0] or None) if status == Status.RUNNING else None
    waiting = waiting_for(row, status, error)
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
        "attempts": attempts,
        "worker": worker,
        "waiting": waiting,
        "note": note(status, attempts, worker, waiting),
        "created": job.created.isoformat(),
        "enqueued": _iso(row.get("enqueued_at")),
        "started": _iso(row.get("started_at")),
        "finished": _iso(row.get("finished_at")),
        "error": error,
        "result": (result or {}).get("stats") if isinstance(result, dict) else None,
        "links": result_links(result, request) if links else {},
        "expired": None,
        "urls": job_urls(job),
    }


def kept_outcome(job: Job) -> dict[str, Any]:
    """Return the final state ``job`` kept when its status row was pruned: links gone, ``expired`` set."""
    if job.outcome is None:
        # Only rows pruned before jobs kept their outcome: say so rather than pretend the job never started.
        kept: dict[str, Any] = {
            "id": str(job.id),
            "kind": job.kind,
            "filename": job.filename,
            "status": UNKNOWN,
            "progress": {"fraction": 0.0, "message": ""},
            "attempts": {"made": 0, "max": None},
            "worker": None,
            "waiting": None,
            "note": "the status row of this job no longer exists: its outcome is unknown",
            "created": job.created.isoformat(),
            "enqueued": None,
            "started": None,
            "finished": None,
            "error": None,
            "result": None,
        }
    else:
        kept = dict(job.outcome)
        kept["note"] = f"{kept.get('note') or kept.get('status')}; results expired"
    expired = job.results_expired_at
    return {**kept, "final": True, "links": {}, "expired": _iso(expired), "urls": job_urls(job)}


def max_attempts(job: Job) -> int | None:
    """Return how many deliveries may claim the job's row, or ``None`` if its kind is no longer registered."""
    try:
        task = kinds.get(job.kind).idempotent_task
    except KeyError:
        return None
    return task.get_max_attempts()


def waiting_for(row: dict[str, Any], status: str, error: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return why and since when a pending job waits, or ``None`` when it does not wait."""
    if status != Status.PENDING:
        return None
    name = error["name"] if error else ""
    if row.get("attempts"):
        # Back in the queue after an attempt: since that attempt started (the row records no release time).
        reason = "worker_lost" if name in WORKER_LOST else "retrying"
        return {"reason": reason, "since": _iso(row.get("started_at"))}
    reason = "not_published" if name == NOT_PUBLISHED else "queued"
    return {"reason": reason, "since": _iso(row.get("enqueued_at"))}


def note(status: str, attempts: dict[str, Any], worker: str | None, waiting: dict[str, Any] | None) -> str:
    """Return one line a person reads beside the status: what the job waits for, where it runs, which attempt."""
    made, most = attempts["made"], attempts["max"]

    def attempt(number: int) -> str:
        return f"attempt {number} of {most}" if most else f"attempt {number}"

    if waiting is not None:
        return {
            "queued": "queued, waiting for a worker",
            "not_published": "queued; the broker did not take it yet, it is sent again",
            "worker_lost": f"worker lost: retrying ({attempt(made + 1)} next)",
            "retrying": f"retrying after an error ({attempt(made + 1)} next)",
        }[waiting["reason"]]
    if status == Status.RUNNING:
        return f"running on {worker or 'a worker'} ({attempt(made)})"
    tried = f"{made} attempt{'s' if made != 1 else ''}"
    if status == Status.FAILED:
        return f"failed after {tried}"
    if status == Status.CANCELLED:
        return f"cancelled after {tried}" if made else "cancelled before it started"
    return status


def job_urls(job: Job) -> dict[str, str]:
    """Return the API URLs of ``job``: its status, its event stream and its cancel call."""
    return {
        "status": reverse("jobs:job", args=[job.id]),
        "events": reverse("jobs:events", args=[job.id]),
        "cancel": reverse("jobs:cancel", args=[job.id]),
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
