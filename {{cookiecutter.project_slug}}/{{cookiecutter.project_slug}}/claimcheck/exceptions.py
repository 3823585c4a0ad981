"""Errors raised by the claim-check storage."""

from {{ cookiecutter.project_slug }}.core.errors import PermanentError, ProjectError


class ClaimCheckError(ProjectError):
    """Base class of claim-check errors. Do not raise directly."""


class InvalidReferenceError(ClaimCheckError, PermanentError):
    """A reference is forged, altered, malformed or names a path outside the claim-check keys."""


class BlobMissingError(ClaimCheckError, PermanentError):
    """The blob a reference points at does not exist (deleted, swept, or never stored)."""


class BlobCorruptError(ClaimCheckError, PermanentError):
    """The blob's size or sha256 differs from the one its reference recorded."""


class MessageTooLargeError(ClaimCheckError):
    """A task message body is larger than the hard broker cap."""


class UploadRejectedError(ClaimCheckError):
    """A browser upload or its completion does not satisfy the signed upload policy."""
