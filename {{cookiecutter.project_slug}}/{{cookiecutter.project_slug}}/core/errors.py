"""Exceptions shared across the project's apps."""


class ProjectError(Exception):
    """Base class of the project's own errors. Do not raise directly."""


class PermanentError(ProjectError):
    """An error that retrying cannot fix: the task fails for good, without another attempt."""
