"""Writes of the jobs app: hand out upload forms, start jobs once per upload, cancel them, keep their outcome."""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from {{ cookiecutter.project_slug }} import claimcheck
from {{ cookiecutter.project_slug }}.claimcheck.exceptions import ClaimCheckError
from {{ cookiecutter.project_slug }}.core.http import InvalidFieldsError, PayloadTooLargeError, choice
from {{ cookiecutter.project_slug }}.idempotency.cancel import cancel
from {{ cookiecutter.project_slug }}.idempotency.exceptions import TaskAlreadyFinishedError, TaskRecordNotFoundError
from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

from . import kinds, selectors
from .errors import JobFinishedError, UnknownJobError, UploadRefusedError
from .models import Job

#: Salt of the jobs app's upload tokens: they bind a claim-check upload ticket to a user, a kind and a file name.
UPLOAD_SALT = "{{ cookiecutter.project_slug }}.jobs.upload"


def _allowed(char: str) -> bool:
    # The name travels into e-mail headers, log lines and PostgreSQL: control characters (CR and LF among
    # them), line and paragraph separators and lone surrogates (not encodable as UTF-8) break all three.
    return char not in "/\\" and unicodedata.category(char) not in ("Cc", "Cs", "Zl", "Zp")


def kind_named(name: str) -> kinds.JobKind:
    """Return the registered job kind ``name``, or raise naming the field and the registered kinds."""
    return kinds.get(choice("kind", name, kinds.names()))


def upload_create(
    *, owner: Any, kind: str, filename: str, content_type: str, size: int, request: HttpRequest | None = None
) -> dict[str, Any]:
    """Return a presigned form that uploads one file for ``kind`` straight to storage, and its upload token."""
    job_kind = kind_named(kind)
    accepted = job_kind.content_types
    if content_type not in accepted:
        raise InvalidFieldsError(
            f"Field 'content_type' is {content_type!r}; a {kind} job accepts: {', '.join(accepted)}."
        )
    filename = filename.strip()
    if not filename or len(filename) > 255 or not all(map(_allowed, filename)):
        raise InvalidFieldsError(
            f"Field 'filename' {filename[:80]!r} must be a plain file name of 1 to 255 characters, "
            "without '/', '\\', control characters, line breaks or unpaired surrogates."
        )
    limit = job_kind.upload_limit
    if size < 1:
        raise InvalidFieldsError(f"Field 'size' is {size}; a file must have at least one byte.")
    if size > limit:
        raise PayloadTooLargeError(f"The file has {size} bytes; a {kind} job accepts at most {limit}.")
    try:
        # The declared size is the ceiling: a client cannot declare a small file and send a large one.
        form = claimcheck.create_upload(content_type=content_type, max_size=size, accepted=accepted, request=request)
    except ClaimCheckError as exc:
        raise InvalidFieldsError(str(exc)) from None
    token = signing.dumps(
        {"ticket": form.ticket, "owner": owner.pk, "kind": kind, "filename": filename}, salt=UPLOAD_SALT
    )
    return {
        "url": form.url,
        "fields": form.fields,
        "upload": token,
        "max_size": form.max_size,
        "expires_at": form.expires_at.isoformat(),
    }


def _load_upload(token: str, *, owner: Any, kind: str) -> dict[str, Any]:
    try:
        upload = signing.loads(token, salt=UPLOAD_SALT, max_age=settings.CLAIMCHECK_ORPHAN_TTL)
    except signing.BadSignature:
        raise InvalidFieldsError(
            "Field 'upload' is not a valid upload token: use the one POST /api/uploads returned."
        ) from None
    if upload["owner"] != owner.pk:
        raise InvalidFieldsError("Field 'upload' names another user's upload.")
    if upload["kind"] != kind:
        raise InvalidFieldsError(f"Field 'kind' is {kind!r} but the upload was made for a {upload['kind']!r} job.")
    return upload


def job_start(*, owner: Any, kind: str, upload: str) -> Job:
    """Start the job of a finished upload; starting it again returns the same job."""
    job_kind = kind_named(kind)
    ticket = _load_upload(upload, owner=owner, kind=kind)
    existing = Job.objects.filter(task_key=_task_key(ticket["ticket"])).first()
    if existing is not None:
        if existing.owner_id != owner.pk:
            raise UnknownJobError("No such upload among yours.")
        return existing
    try:
        # Checks the stored object: present, within the size limit, of the declared content type.
        reference = claimcheck.complete_upload(ticket["ticket"])
    except ClaimCheckError as exc:
        raise UploadRefusedError(f"The upload is refused: {exc}.") from None
    key = _task_key(ticket["ticket"])
    token = reference.sign()
    with transaction.atomic():
        job, created = Job.objects.get_or_create(
            task_key=key,
            defaults={"owner": owner, "kind": kind, "filename": ticket["filename"], "input": {"upload": token}},
        )
        if created:
            # The row is written now, the message published once this commits.
            job_kind.task.using(key=job.task_key).enqueue(**job_kind.arguments(job, token))
    return job


def _task_key(ticket: str) -> str:
    # One upload ticket starts one job, however often the client repeats the request.
    return "job:" + hashlib.sha256(ticket.encode()).hexdigest()


def job_cancel(job: Job) -> None:
    """Cancel ``job``: it never runs if it waits, it stops if it runs; its uploaded file is deleted."""
    try:
        cancel(job.task_key)
    except TaskAlreadyFinishedError as exc:
        message = f"Job {job.id} is {exc.status} already: only a pending or running job can be cancelled."
        raise JobFinishedError(message) from None
    except TaskRecordNotFoundError:
        message = f"Job {job.id} finished long ago (its status row was pruned): nothing to cancel."
        raise JobFinishedError(message) from None
    upload = job.input.get("upload")
    if isinstance(upload, str):
        # As the kinds' tasks do once they succeeded: the input is nobody's any more.
        reference = claimcheck.Reference.from_token(upload)
        transaction.on_commit(lambda: claimcheck.delete(reference), robust=True)


def keep_outcomes(sender: Any, records: list[TaskRecord], **kwargs: Any) -> None:
    """Copy the final state of the jobs whose status rows are about to be pruned onto the jobs themselves."""
    by_key = {record.key: record for record in records}
    now = timezone.now()
    jobs = list(Job.objects.filter(task_key__in=by_key))
    for job in jobs:
        row = {field: getattr(by_key[job.task_key], field) for field in selectors.STATE_FIELDS}
        # Download links are presigned for minutes and the files go with the row's retention: keep no links.
        state = selectors.shape(job, row, links=False)
        job.outcome = {name: state[name] for name in OUTCOME_FIELDS}
        job.results_expired_at = now
    Job.objects.bulk_update(jobs, ["outcome", "results_expired_at"])


#: What a job keeps of its final state once its status row is pruned.
OUTCOME_FIELDS = (
    "id",
    "kind",
    "filename",
    "status",
    "progress",
    "attempts",
    "worker",
    "waiting",
    "note",
    "created",
    "enqueued",
    "started",
    "finished",
    "error",
    "result",
)
