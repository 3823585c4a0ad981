"""Reads of the status rows: where a task stands, by key or by id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .exceptions import TaskRecordNotFoundError
from .models import FINISHED, Status, TaskRecord

__all__ = ["TaskError", "TaskResult", "get_result"]


@dataclass(frozen=True, slots=True)
class TaskError:
    """The last error a task raised."""

    type: str
    message: str
    traceback: str


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A snapshot of one task call's status row."""

    id: str
    key: str
    task_name: str
    queue: str
    status: Status
    attempts: int
    #: Fraction done (0.0 to 1.0) as last reported, or ``None``.
    progress: float | None
    progress_message: str
    #: What the task returned (as stored by its ``store_result``), once it succeeded.
    return_value: Any
    #: The last error, also while a retry is pending; ``None`` after success.
    error: TaskError | None
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_record(cls, record: TaskRecord) -> TaskResult:
        """Return the snapshot of ``record``."""
        error = None
        if record.error_type:
            error = TaskError(record.error_type, record.error_message, record.error_traceback)
        return cls(
            id=str(record.pk),
            key=record.key,
            task_name=record.task_name,
            queue=record.queue,
            status=Status(record.status),
            attempts=record.attempts,
            progress=record.progress,
            progress_message=record.progress_message,
            return_value=record.result,
            error=error,
            enqueued_at=record.enqueued_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
        )

    @property
    def is_finished(self) -> bool:
        """Return whether the task succeeded, failed for good or was cancelled."""
        return self.status in FINISHED

    def refresh(self) -> TaskResult:
        """Return a fresh snapshot of the same row."""
        return get_result(id=self.id)


def get_result(*, key: str | None = None, id: str | uuid.UUID | None = None) -> TaskResult:
    """Return the status of the task call with ``key`` or ``id`` (exactly one of them)."""
    if (key is None) == (id is None):
        raise TypeError("get_result() takes exactly one of key= or id=.")
    if key is not None:
        record = TaskRecord.objects.filter(key=key).first()
        if record is None:
            raise TaskRecordNotFoundError(f"No task status row has key {key!r}.")
        return TaskResult.from_record(record)
    try:
        pk = id if isinstance(id, uuid.UUID) else uuid.UUID(str(id))
    except ValueError:
        raise TaskRecordNotFoundError(f"No task status row has id {id!r}: ids are UUIDs.") from None
    record = TaskRecord.objects.filter(pk=pk).first()
    if record is None:
        raise TaskRecordNotFoundError(f"No task status row has id {id!r}.")
    return TaskResult.from_record(record)
