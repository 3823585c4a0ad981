"""Errors of idempotent task execution."""

from __future__ import annotations

from {{ cookiecutter.project_slug }}.core.errors import PermanentError, ProjectError

# Each error keeps its constructor arguments as ``args`` (and builds its message in ``__str__``), so
# Celery can rebuild it from the result backend's JSON and pickle it between processes.


class IdempotencyError(ProjectError):
    """Base class of the idempotency app's errors. Do not raise directly."""


class ArgumentNotSerializableError(IdempotencyError, TypeError):
    """A task argument that Celery's JSON serializer cannot carry."""

    def __init__(self, task_name: str, argument: str, value_type: str, value_repr: str, accepted: str) -> None:
        super().__init__(task_name, argument, value_type, value_repr, accepted)
        self.task_name, self.argument, self.value_type = task_name, argument, value_type

    def __str__(self) -> str:
        task_name, argument, value_type, value_repr, accepted = self.args
        carried = f"{task_name}: {argument} is a {value_type} ({value_repr})"
        return f"{carried}, which JSON cannot carry; accepted: {accepted}"


class ArgumentNotStorableError(ArgumentNotSerializableError):
    """A task argument that JSON carries but the database's JSON refuses (NaN, infinities, NUL in strings)."""

    def __str__(self) -> str:
        task_name, argument, value_type, value_repr, reason = self.args
        return f"{task_name}: {argument} is a {value_type} ({value_repr}), {reason}"


class InvalidKeyError(IdempotencyError, ValueError):
    """An idempotency key that is empty, too long or not a string."""


class PayloadMismatchError(IdempotencyError, PermanentError):
    """The same idempotency key was used with different arguments (or another task)."""

    def __init__(self, key: str, task_name: str, expected_hash: str, got_hash: str) -> None:
        super().__init__(key, task_name, expected_hash, got_hash)
        self.key = key

    def __str__(self) -> str:
        key, task_name, expected_hash, got_hash = self.args
        return (
            f"Idempotency key {key!r} was first used for a different payload (sha256 {expected_hash[:12]}...) "
            f"than this {task_name} call (sha256 {got_hash[:12]}...); use a new key for new arguments."
        )


class AttemptsExhaustedError(IdempotencyError, PermanentError):
    """A delivery found its row already claimed the maximum number of times."""

    def __init__(self, key: str, attempts: int, max_attempts: int) -> None:
        super().__init__(key, attempts, max_attempts)
        self.key, self.attempts, self.max_attempts = key, attempts, max_attempts

    def __str__(self) -> str:
        key, attempts, max_attempts = self.args
        return (
            f"Task {key!r} was claimed {attempts} times without finishing (max_attempts={max_attempts}); "
            "a delivery may have killed its worker. Failed for good; retry it from the admin once fixed."
        )


class TaskAlreadyFailedError(IdempotencyError, PermanentError):
    """A delivery arrived for a row that has already failed for good."""

    def __init__(self, key: str, error_type: str, error_message: str) -> None:
        super().__init__(key, error_type, error_message)
        self.key = key

    def __str__(self) -> str:
        key, error_type, error_message = self.args
        return f"Task {key!r} already failed for good ({error_type}: {error_message}); not run again."


class ResultNotSerializableError(IdempotencyError, PermanentError):
    """A task returned a value its status row and Celery's JSON serializer cannot store."""


class ArgumentsDoNotFitError(IdempotencyError, PermanentError):
    """A delivery's arguments do not fit the task's signature: no retry can make them fit."""

    def __init__(self, task_name: str, problem: str) -> None:
        super().__init__(task_name, problem)

    def __str__(self) -> str:
        task_name, problem = self.args
        return f"{task_name}: the message's arguments do not fit the task's signature ({problem})."


class MessageRefusedError(IdempotencyError):
    """A worker dropped a row's message before running anything: a task it does not know, content it refuses."""

    def __init__(self, key: str, task_name: str, hostname: str, problem: str) -> None:
        super().__init__(key, task_name, hostname, problem)

    def __str__(self) -> str:
        key, task_name, hostname, problem = self.args
        why = f" ({problem})" if problem else ""
        return (
            f"Worker {hostname} dropped the message of {key!r} for task {task_name!r} without running it{why}; "
            "the row stays pending until its call is published again to a worker that knows the task."
        )


class LeaseLostError(IdempotencyError):
    """This delivery no longer owns its row: the lease expired and another delivery claimed it."""

    def __init__(self, key: str, owner: str) -> None:
        super().__init__(key, owner)
        self.key, self.owner = key, owner

    def __str__(self) -> str:
        key, owner = self.args
        return f"Task {key!r}: delivery {owner!r} lost its lease to another delivery; stopping."


class TaskRecordNotFoundError(IdempotencyError, LookupError):
    """No status row has the given key or id."""


class TaskAlreadyFinishedError(IdempotencyError):
    """A cancel arrived for a row that is final already (succeeded, failed or cancelled)."""

    def __init__(self, key: str, status: str) -> None:
        super().__init__(key, status)
        self.key, self.status = key, status

    def __str__(self) -> str:
        key, status = self.args
        return f"Task {key!r} is {status} already: a final task cannot be cancelled."


class DeliveryLostError(IdempotencyError):
    """An attempt ended without a result: its process or worker died, or its lease ran out (logged on the row)."""


class TaskCancelledError(IdempotencyError):
    """The call was cancelled on request (``idempotency.cancel``): as ``django.tasks`` sees a cancelled row."""
