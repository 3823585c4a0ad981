"""Errors the jobs API answers with a 4xx JSON body (``{{ cookiecutter.project_slug }}.core.http``'s envelope)."""

from __future__ import annotations

from {{ cookiecutter.project_slug }}.core.http import ApiError, ConflictError, NotFoundError


class JobsError(ApiError):
    """Base class of the jobs API's own errors. Do not raise directly."""


class UnknownJobError(JobsError, NotFoundError):
    """No job with this id belongs to the user (another user's job looks the same)."""

    code = "unknown_job"


class UploadRefusedError(JobsError):
    """The uploaded object is missing, too large or of another content type than declared."""

    code = "upload_rejected"


class JobFinishedError(JobsError, ConflictError):
    """The job reached a final state already: it cannot be cancelled."""

    code = "job_final"
