"""The kinds of job users can start, registered by the apps that own them (the demo registers its own)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from {{ cookiecutter.project_slug }}.core.errors import ProjectError

if TYPE_CHECKING:
    from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask
    from {{ cookiecutter.project_slug }}.idempotency.tasks_backend import PoolTask

    from .models import Job

__all__ = ["JobKind", "KindRegistrationError", "all_kinds", "get", "names", "register", "unregister"]

#: Builds the task's keyword arguments from the job and the signed reference of its upload.
Arguments = Callable[["Job", str], Mapping[str, Any]]


class KindRegistrationError(ProjectError, ValueError):
    """A job kind that cannot be registered: a bad name, or a name already taken by another kind."""


def _upload_only(job: Job, upload: str) -> Mapping[str, Any]:
    return {"upload": upload}


@dataclass(frozen=True, slots=True)
class JobKind:
    """A kind of job: the uploads it accepts and the idempotent task that does the work.

    The task is an ``IdempotentTask`` (Celery API) or a ``django.tasks`` task of the pool backend.

    The task runs under the job's own idempotency key, with the keyword arguments ``arguments``
    builds (by default only ``upload``, the signed claim-check reference of the file).
    """

    #: The ``kind`` field of the API (lowercase letters, digits and ``_``).
    name: str
    #: What the jobs page calls it.
    label: str
    #: The idempotent task that does the work.
    task: IdempotentTask | PoolTask
    #: Content types of the files this kind accepts.
    content_types: tuple[str, ...]
    #: File name endings the page also maps to this kind (when a browser sends no content type).
    extensions: tuple[str, ...] = ()
    #: Largest upload in bytes; ``None`` means ``settings.CLAIMCHECK_UPLOAD_MAX_BYTES``, and never above it.
    max_upload_bytes: int | None = None
    arguments: Arguments = field(default=_upload_only)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
            raise KindRegistrationError(f"Job kind name {self.name!r} must be lowercase letters, digits and '_'.")
        from {{ cookiecutter.project_slug }}.idempotency.base import IdempotentTask
        from {{ cookiecutter.project_slug }}.idempotency.tasks_backend import PoolTask

        if not isinstance(self.task, IdempotentTask | PoolTask):
            # The job runs under its own idempotency key (task.using(key=...).enqueue): a plain task has none.
            raise KindRegistrationError(
                f"Job kind {self.name!r}: task {getattr(self.task, 'name', self.task)!r} is not an IdempotentTask; "
                "declare it with @shared_task(base=IdempotentTask, worker_pool=...) or django.tasks' @task."
            )
        if isinstance(self.content_types, str) or not all(isinstance(t, str) for t in self.content_types):
            raise KindRegistrationError(
                f"Job kind {self.name!r}: content_types must be a tuple of strings, not {self.content_types!r}."
            )
        if not self.content_types:
            raise KindRegistrationError(f"Job kind {self.name!r} accepts no content type; name at least one.")
        if self.max_upload_bytes is not None and self.max_upload_bytes < 1:
            raise KindRegistrationError(f"Job kind {self.name!r}: max_upload_bytes must be at least 1.")

    @property
    def idempotent_task(self) -> IdempotentTask:
        """Return the Celery task that runs this kind's calls (a ``django.tasks`` task's own)."""
        from {{ cookiecutter.project_slug }}.idempotency.tasks_backend import PoolTask

        return self.task.celery_task if isinstance(self.task, PoolTask) else self.task

    @property
    def upload_limit(self) -> int:
        """Return the largest upload this kind accepts, in bytes."""
        ceiling = int(settings.CLAIMCHECK_UPLOAD_MAX_BYTES)
        return ceiling if self.max_upload_bytes is None else min(ceiling, self.max_upload_bytes)

    def describe(self) -> dict[str, Any]:
        """Return what the jobs page needs to know about this kind, as JSON data."""
        return {
            "name": self.name,
            "label": self.label,
            "content_types": list(self.content_types),
            "extensions": list(self.extensions),
            "max_bytes": self.upload_limit,
        }


_kinds: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Register ``kind`` (from an app's ``ready()``); registering the same kind again is harmless."""
    existing = _kinds.get(kind.name)
    if existing is not None and existing != kind:
        raise KindRegistrationError(f"Job kind {kind.name!r} is already registered for {existing.task.name}.")
    _kinds[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove the kind ``name`` if it is registered (for tests)."""
    _kinds.pop(name, None)


def get(name: str) -> JobKind:
    """Return the registered kind ``name``; ``KeyError`` if there is none."""
    return _kinds[name]


def names() -> tuple[str, ...]:
    """Return the names of the registered kinds, in registration order."""
    return tuple(_kinds)


def all_kinds() -> tuple[JobKind, ...]:
    """Return the registered kinds, in registration order."""
    return tuple(_kinds.values())
