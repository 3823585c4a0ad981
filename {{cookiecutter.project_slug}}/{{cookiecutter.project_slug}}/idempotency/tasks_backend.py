"""Django's task API (``django.tasks``) on the worker pools, each task run by the idempotent base task."""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import celery
from django.tasks import TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, Task, TaskError
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.claimcheck.base import resolve_arguments, resolve_result
from {{ cookiecutter.project_slug }}.claimcheck.exceptions import ClaimCheckError
from {{ cookiecutter.project_slug }}.core.celery_internals import request_claim
from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force

from . import publishing
from .base import IdempotentTask
from .exceptions import (
    ArgumentNotSerializableError,
    ArgumentNotStorableError,
    ResultNotSerializableError,
    TaskCancelledError,
)
from .models import Status, TaskRecord
from .payload import validate_key

if TYPE_CHECKING:
    _TaskBase = Task[Any, Any]
    _TaskResult = TaskResult[Any, Any]
else:
    _TaskBase = Task
    _TaskResult = TaskResult

__all__ = ["PoolTask", "PoolTaskBackend", "TaskRunner", "task_result"]

logger = logging.getLogger(__name__)

#: How each status of the row reads in ``django.tasks``: a row waiting for its retry is READY again.
STATUSES = {
    Status.PENDING: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    # django.tasks has no cancelled state: a cancelled call failed, with a TaskCancelledError as its last error.
    Status.CANCELLED: TaskResultStatus.FAILED,
}
#: What a ``django.tasks`` argument may be: Django's rule, it must come back equal from a JSON round trip.
ACCEPTED = "str, int, float, bool, None, list, tuple and dict with str keys (values that survive a JSON round trip)"
#: Set on the Celery request (to the row's key) once the function started in this delivery: task_finished is its own.
_STARTED = "django_task_key"
#: Log lines of the worker-side signals.
SIGNAL_FAILED = "a %s receiver of %s failed"
FINISHED_UNREAD = "key %r: the row could not be read to send task_finished"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolTask(_TaskBase):
    """A ``django.tasks`` task of :class:`PoolTaskBackend`: a call is a status row, run by a Celery task.

    Beside Django's options, ``@task`` forwards ``max_attempts`` and ``atomic_effects`` (see
    ``IdempotentTask``); ``using(key=...)`` binds a call to an explicit idempotency key.
    """

    #: Idempotency key of the calls of this (``using``) variant; ``None``: every enqueue is a new call.
    key: str | None = None
    #: Deliveries that may claim a row before it fails for good; ``None``: the pool's ``max_attempts``.
    max_attempts: int | None = None
    #: Whether body and success write share one transaction; ``None``: as the pool decides.
    atomic_effects: bool | None = None

    def __post_init__(self) -> None:
        # Explicit base: a slotted dataclass is a new class, which zero-argument super() does not know.
        Task.__post_init__(self)
        _register(self)

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        key: str | None = None,
    ) -> PoolTask:
        """Return a copy with other defaults; ``key`` makes its calls share one row per key (idempotency)."""
        changed: Task[Any, Any] = Task.using(
            self, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
        )
        assert isinstance(changed, PoolTask)  # dataclasses.replace keeps the class
        return replace(changed, key=validate_key(key)) if key is not None else changed

    @property
    def celery_task(self) -> TaskRunner:
        """Return the Celery task that runs this task's calls (named by its module path)."""
        runner = celery.current_app.tasks[self.module_path]
        assert isinstance(runner, TaskRunner)  # registered by this task's own __post_init__
        return runner


def _register(task: PoolTask) -> None:
    """Declare the Celery task of ``task`` once, under its module path, for every Celery app (as ``shared_task``)."""
    name = task.module_path
    if name in _registered:
        return
    _registered.add(name)

    def run(self: TaskRunner, *args: Any, **kwargs: Any) -> Any:
        return self.run_django_task(args, kwargs)

    run.__doc__ = task.func.__doc__
    options: dict[str, Any] = {"name": name, "base": TaskRunner, "bind": True}
    options["worker_pool"] = pools.by_queue(task.queue_name)
    if task.max_attempts is not None:
        options["max_attempts"] = task.max_attempts
    if task.atomic_effects is not None:
        options["atomic_effects"] = task.atomic_effects
    celery.shared_task(**options)(run)


_registered: set[str] = set()


class TaskRunner(IdempotentTask):
    """The Celery task of one ``django.tasks`` task: claim its row, run the function once, store the outcome.

    It is an ``IdempotentTask`` like any other: the recovery pass, the reaper, the admin and the jobs
    API find it by its name, the task's module path.
    """

    def django_task(self) -> PoolTask:
        """Return the ``django.tasks`` task this Celery task runs."""
        found = import_string(self.name)
        if not isinstance(found, PoolTask):
            raise TypeError(f"{self.name} is a {type(found).__name__}, not a task of {_class_path(PoolTaskBackend)}.")
        return found

    def get_pool(self) -> pools.Pool:
        """Return the pool of the queue this delivery came from (``using(queue_name=...)``), else the declared one."""
        info = getattr(self.request, "delivery_info", None) or {}
        registry = pools_in_force()
        if info.get("routing_key") in pools.queue_names(registry):
            return pools.by_queue(info["routing_key"], registry)
        return super().get_pool()

    def check_arguments(self, args: Any, kwargs: Any) -> None:
        """Raise ``TypeError`` naming the task if the arguments do not fit its function (its context excluded)."""
        func = self.django_task().func
        parameters = list(inspect.signature(func).parameters.values())
        if self.django_task().takes_context:
            parameters = parameters[1:]
        try:
            inspect.Signature(parameters).bind(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None

    def run_django_task(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Send ``task_started``, call the function (with its context), and return its value as JSON data."""
        django_task = self.django_task()
        claim = request_claim(self.request)
        if claim is None:  # called directly, outside a worker
            return normalize_json(django_task.call(*args, **kwargs))
        record = TaskRecord.objects.get(key=claim[0])
        result = task_result(record, django_task)
        setattr(self.request, _STARTED, claim[0])  # the request takes any attribute; task_finished reads it
        _send(task_started, result)
        if django_task.takes_context:
            value = django_task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = django_task.call(*args, **kwargs)
        try:
            return normalize_json(value)
        except (TypeError, ValueError) as exc:
            raise ResultNotSerializableError(
                f"{self.name} returned a {type(value).__name__} that django.tasks cannot store ({exc}); "
                "return JSON data."
            ) from None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the delivery as ``IdempotentTask`` does; send ``task_finished`` once its row is final."""
        if self.request.called_directly:
            return super().__call__(*args, **kwargs)
        try:
            value = super().__call__(*args, **kwargs)
        except BaseException:
            self._announce_finished()  # inside the handler: the receivers see the exception (sys.exc_info)
            raise
        self._announce_finished()
        return value

    def _announce_finished(self) -> None:
        key = getattr(self.request, _STARTED, None)
        if key is None:
            return  # the function did not run in this delivery (a duplicate, a refusal)
        setattr(self.request, _STARTED, None)
        try:
            record = TaskRecord.objects.filter(key=key).first()
        except Exception:  # the outcome is stored (or owed) either way: an unread row must not mask it
            logger.warning(FINISHED_UNREAD, key, exc_info=True)
            return
        # A failed attempt waiting for its retry is not finished; a lost lease is the new holder's to announce.
        if record is not None and record.status in (Status.SUCCEEDED, Status.FAILED):
            _send(task_finished, task_result(record, self.django_task()))


def _send(signal: Any, result: _TaskResult) -> None:
    """Send a worker-side signal; a failing receiver is logged, and changes neither the row nor the delivery."""
    for receiver, response in signal.send_robust(sender=PoolTaskBackend, task_result=result):
        if isinstance(response, Exception):
            logger.error(
                SIGNAL_FAILED, getattr(receiver, "__name__", receiver), result.task.module_path, exc_info=response
            )


class PoolTaskBackend(BaseTaskBackend):
    """The ``django.tasks`` backend of the worker pools: a call is a status row, run on its pool's workers.

    ``QUEUES`` are the pool registry's queue names (``settings.WORKER_POOLS``); a call's row is the
    ``TaskResult``'s system of record, readable from any process.
    """

    task_class = PoolTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        known = pools.queue_names(pools_in_force())
        if "QUEUES" not in params:
            self.queues = set(known)
        unknown = sorted(self.queues - set(known))
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['QUEUES'] names {', '.join(map(repr, unknown))}, not in the worker-pool "
                f"registry; known queues: {', '.join(known)}."
            )

    def validate_task(self, task: Task[..., Any]) -> None:
        """Raise ``InvalidTask`` naming the value this backend cannot run: queue, priority, ``run_after``, kind."""
        where = getattr(task.func, "__qualname__", repr(task.func))
        if not isinstance(task, PoolTask):
            raise InvalidTask(f"Task {where} is a {type(task).__name__}; {type(self).__name__} runs PoolTask tasks.")
        if task.queue_name not in self.queues:
            known = ", ".join(q for q in pools.queue_names(pools_in_force()) if q in self.queues)
            raise InvalidTask(f"Task {where}: queue_name {task.queue_name!r} is not a worker pool; known: {known}.")
        if not isinstance(task.priority, int) or not TASK_MIN_PRIORITY <= task.priority <= TASK_MAX_PRIORITY:
            raise InvalidTask(
                f"Task {where}: priority {task.priority!r} must be a whole number from {TASK_MIN_PRIORITY} "
                f"to {TASK_MAX_PRIORITY}."
            )
        if task.run_after is not None and (
            not isinstance(task.run_after, datetime) or not timezone.is_aware(task.run_after)
        ):
            raise InvalidTask(f"Task {where}: run_after {task.run_after!r} must be an aware datetime.")
        for name, value in (("max_attempts", task.max_attempts), ("atomic_effects", task.atomic_effects)):
            wanted = bool if name == "atomic_effects" else int
            if value is not None and (type(value) is not wanted or (wanted is int and value < 1)):
                raise InvalidTask(
                    f"Task {where}: {name} {value!r} must be {'True or False' if wanted is bool else 'at least 1'}."
                )
        super().validate_task(task)

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> _TaskResult:
        """Write the call's row and publish it once the transaction commits (a deferred call: once due)."""
        self.validate_task(task)
        assert isinstance(task, PoolTask)  # validate_task refuses any other
        args, kwargs = json_round_trip(task, tuple(args), dict(kwargs))
        key = task.key if task.key is not None else f"{task.name}:{uuid.uuid4().hex}"
        call = task.celery_task.prepare_call(args, kwargs, key=key)
        call = replace(call, queue=task.queue_name, priority=task.priority, run_after=task.run_after)
        record, created = publishing.enqueue_record(call)
        result = task_result(record, task)
        if created:
            task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> _TaskResult:
        """Return the ``TaskResult`` of the row ``result_id``, from any process; ``TaskResultDoesNotExist`` if none."""
        try:
            pk = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(f"No task result has id {result_id!r}: ids are UUIDs.") from None
        record = TaskRecord.objects.filter(pk=pk).first()
        if record is None:
            raise TaskResultDoesNotExist(f"No task result has id {result_id!r}.")
        return task_result(record)


def json_round_trip(task: PoolTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Return the arguments as JSON data; raise naming the first that does not come back equal from JSON."""
    named = [(f"args[{n}]", v) for n, v in enumerate(args)] + [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
    for argument, value in named:
        try:
            plain = normalize_json(value)
        except (TypeError, ValueError):
            raise ArgumentNotSerializableError(
                task.module_path, argument, type(value).__name__, f"{value!r:.80}", ACCEPTED
            ) from None
        back = json.loads(json.dumps(plain))
        if back != plain:
            raise ArgumentNotStorableError(
                task.module_path,
                argument,
                type(value).__name__,
                f"{value!r:.80}",
                f"which does not survive a JSON round trip (it comes back as {back!r:.80})",
            )
    return [normalize_json(value) for value in args], {name: normalize_json(v) for name, v in kwargs.items()}


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def task_result(record: TaskRecord, task: PoolTask | None = None) -> _TaskResult:
    """Return the ``django.tasks`` result of ``record``: status, times, arguments, errors, workers, value."""
    if task is None:
        try:
            found = import_string(record.task_name)
        except ImportError:
            found = None
        if not isinstance(found, PoolTask):
            raise TaskResultDoesNotExist(
                f"Task result {record.pk} is a call of {record.task_name!r}, not of a django.tasks task of this "
                "backend; read it with idempotency.selectors.get_result."
            )
        task = found
    # The task as this call was made: its queue, priority and run_after are the row's.
    task = replace(
        task, queue_name=record.queue, priority=record.priority or 0, run_after=record.run_after, key=record.key
    )
    errors = [TaskError(exception_class_path=e["type"], traceback=e["traceback"]) for e in record.error_log]
    if record.status == Status.CANCELLED:
        when = record.finished_at.isoformat() if record.finished_at else "?"
        errors.append(
            TaskError(exception_class_path=_class_path(TaskCancelledError), traceback=f"Cancelled at {when}.")
        )
    attempts = list(record.attempt_log)
    status = STATUSES[Status(record.status)]
    try:
        args, kwargs = resolve_arguments(record.args, record.kwargs)
    except ClaimCheckError:
        # An offloaded argument set is deleted once the call succeeded: its reference is what is left.
        args, kwargs = tuple(record.args), dict(record.kwargs)
    result: _TaskResult = TaskResult(
        task=task,
        id=str(record.pk),
        status=status,
        enqueued_at=record.enqueued_at,
        started_at=_time(attempts[0]["started_at"]) if attempts else record.started_at,
        finished_at=record.finished_at if status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED) else None,
        last_attempted_at=record.started_at,
        args=list(args),
        kwargs=kwargs,
        backend=task.backend,
        errors=errors,
        worker_ids=[a["worker"] for a in attempts],
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", resolve_result(record.result))
    return result
