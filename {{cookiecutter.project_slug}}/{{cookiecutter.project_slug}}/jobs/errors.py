"""Errors the jobs API answers with a 4xx JSON body that says what was wrong."""

from __future__ import annotations

from {{ cookiecutter.project_slug }}.errors import ProjectError


class JobsError(ProjectError):
    """Base class of the jobs API's errors. Do not raise directly."""

    #: HTTP status the API answers with.
    status = 400
    #: Short machine-readable name of the problem, in the JSON body.
    code = "bad_request"


class NotSignedInError(JobsError):
    """The request carries no signed-in session."""

    status = 401
    code = "not_signed_in"


class UnknownJobError(JobsError):
    """No job with this id belongs to the user (another user's job looks the same)."""

    status = 404
    code = "unknown_job"


class UnsupportedMediaTypeError(JobsError):
    """The request body is not JSON."""

    status = 415
    code = "unsupported_media_type"


class MalformedJSONError(JobsError):
    """The request body does not parse as a JSON object."""

    code = "malformed_json"


class InvalidFieldsError(JobsError):
    """Fields are missing, unknown or have a value the API does not accept."""

    code = "invalid_fields"


class PayloadTooLargeError(JobsError):
    """A request body or an uploaded file is larger than the limit."""

    status = 413
    code = "too_large"


class UploadRejectedError(JobsError):
    """The uploaded object is missing, too large or of another content type than declared."""

    code = "upload_rejected"
