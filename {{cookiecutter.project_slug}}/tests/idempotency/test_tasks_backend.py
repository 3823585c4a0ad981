"""The django.tasks backend without workers: validation, rows, messages, deferral, results mapped from the row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.tasks import TaskResultStatus, default_task_backend, task, task_backends
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone

from {{ cookiecutter.project_slug }}.idempotency import claims, maintenance
from {{ cookiecutter.project_slug }}.idempotency.cancel import cancel
from {{ cookiecutter.project_slug }}.idempotency.exceptions import (
    ArgumentNotSerializableError,
    ArgumentNotStorableError,
    DeliveryLostError,
    InvalidKeyError,
    PayloadMismatchError,
    TaskCancelledError,
)
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord
from {{ cookiecutter.project_slug }}.idempotency.tasks_backend import PoolTaskBackend, task_result
from {{ cookiecutter.project_slug }}.worker.queues import broker_priority

from tests.tasks import django_tasks as tasks
from tests.tasks import idempotency as celery_tasks
from tests.tasks.idempotency import TransientError

pytestmark = pytest.mark.timeout(120)


def queued(broker_url: str, queue: str = "default") -> list[dict[str, Any]]:
    """Return the messages waiting in ``queue`` over all of kombu's Redis priority lists, first served first."""
    client = redis.Redis.from_url(broker_url)
    messages: list[dict[str, Any]] = []
    for step in (0, 3, 6, 9):
        name = queue if step == 0 else f"{queue}\x06\x16{step}"
        messages += [json.loads(m) for m in reversed(client.lrange(name, 0, -1))]
    return messages


@pytest.fixture
def enqueued() -> Iterator[list[Any]]:
    """Collect the results ``task_enqueued`` announces in this process."""
    seen: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((sender, task_result))

    task_enqueued.connect(receiver, dispatch_uid="test-enqueued")
    yield seen
    task_enqueued.disconnect(dispatch_uid="test-enqueued")


def test_the_backend_is_the_default_and_its_queues_are_the_registry():
    backend = tasks.make_effect.get_backend()
    assert isinstance(backend, PoolTaskBackend)
    assert backend is task_backends["default"]
    assert backend.queues == {"default", "images", "emails", "reports"}
    assert (backend.supports_defer, backend.supports_async_task, backend.supports_get_result) == (True, True, True)
    assert backend.supports_priority


def test_queues_outside_the_registry_are_refused_naming_them():
    with pytest.raises(InvalidTaskBackend, match=r"'gpu'.*known queues: default, images, emails, reports"):
        PoolTaskBackend("other", {"BACKEND": "x", "QUEUES": ["default", "gpu"]})


def module_level(name: str) -> str:
    return name


def context_free(name: str) -> str:
    return name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue_name": "gpu"}, r"queue_name 'gpu' is not a worker pool; known: default, images, emails, reports"),
        ({"priority": 101}, r"priority 101 must be a whole number from -100 to 100"),
        ({"priority": 1.5}, r"priority 1.5 must be a whole number"),
        ({"max_attempts": 0}, r"max_attempts 0 must be at least 1"),
        ({"atomic_effects": "yes"}, r"atomic_effects 'yes' must be True or False"),
        ({"takes_context": True}, r"first argument of 'context'"),
    ],
)
def test_what_the_backend_cannot_run_is_refused_at_declaration_naming_the_value(options, message):
    with pytest.raises(InvalidTask, match=message):
        task(**options)(context_free)


def test_a_nested_function_and_a_naive_run_after_are_refused():
    def nested() -> None: ...

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)
    naive = datetime(2030, 1, 1, 12, 0)
    with pytest.raises(InvalidTask, match=r"run_after datetime.datetime\(2030, 1, 1, 12, 0\) must be an aware"):
        tasks.make_effect.using(run_after=naive)
    with pytest.raises(InvalidTask, match="priority -101"):
        tasks.make_effect.using(priority=-101)
    with pytest.raises(InvalidKeyError):
        tasks.make_effect.using(key="")


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "named"),
    [
        ((timezone.now(),), {}, ArgumentNotSerializableError, "args[0] is a datetime"),
        (("x",), {"seconds": {1: "a"}}, ArgumentNotStorableError, "kwargs['seconds'] is a dict"),
        (("x",), {"seconds": float("nan")}, ArgumentNotStorableError, "kwargs['seconds'] is a float (nan)"),
        (({"a", "b"},), {}, ArgumentNotSerializableError, "args[0] is a set"),
    ],
)
def test_arguments_that_do_not_survive_a_json_round_trip_are_refused_naming_them(
    db, broker, django_capture_on_commit_callbacks, args, kwargs, error, named
):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(error) as excinfo:
        tasks.make_effect.enqueue(*args, **kwargs)
    assert named in str(excinfo.value)
    assert "tests.tasks.django_tasks.make_effect" in str(excinfo.value)
    assert not callbacks
    assert not TaskRecord.objects.exists()


def test_arguments_that_do_not_fit_the_function_are_refused(db):
    with pytest.raises(TypeError, match=r"make_effect\(\): missing a required argument: 'name'"):
        tasks.make_effect.enqueue()
    # The context is the backend's to give, not the caller's.
    with pytest.raises(TypeError, match="flaky"):
        tasks.flaky.enqueue("x")
    assert not TaskRecord.objects.exists()


def test_enqueue_writes_the_row_and_publishes_on_commit_with_the_priority(transactional_db, clean_broker, enqueued):
    result = tasks.make_effect.using(priority=80).enqueue("written", seconds=0.5)

    assert result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs) == (["written"], {"seconds": 0.5})
    assert result.enqueued_at is not None
    assert (result.started_at, result.finished_at, result.last_attempted_at) == (None, None, None)
    assert (result.errors, result.worker_ids, result.attempts) == ([], [], 0)
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value
    record = TaskRecord.objects.get(pk=result.id)
    assert (record.task_name, record.queue, record.priority) == ("tests.tasks.django_tasks.make_effect", "default", 80)
    [message] = queued(clean_broker)
    assert message["headers"]["id"] == result.id
    assert message["properties"]["priority"] == broker_priority(80) == 0
    assert [(sender, r.id) for sender, r in enqueued] == [(PoolTaskBackend, result.id)]

    # Every enqueue is a new call (Django's contract), unless the caller names a key.
    again = tasks.make_effect.enqueue("written", seconds=0.5)
    assert again.id != result.id
    keyed = tasks.make_effect.using(key="report-42").enqueue("written")
    assert tasks.make_effect.using(key="report-42").enqueue("written").id == keyed.id
    with pytest.raises(PayloadMismatchError, match="report-42"):
        tasks.make_effect.using(key="report-42").enqueue("other")
    assert len(queued(clean_broker)) == 3
    assert len(enqueued) == 3  # the same key again created nothing: nothing announced


def test_priorities_map_onto_the_four_redis_steps_in_order():
    assert [broker_priority(p) for p in (100, 1, 0, -1, -50, -51, -100)] == [0, 0, 3, 6, 6, 9, 9]
    assert broker_priority(None) is None  # a Celery call keeps kombu's default, the first step


def test_a_rolled_back_enqueue_leaves_no_row_and_no_message(transactional_db, clean_broker):
    from django.db import transaction

    def view() -> None:
        with transaction.atomic():
            tasks.make_effect.enqueue("rolled-back")
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        view()
    assert not TaskRecord.objects.exists()
    assert queued(clean_broker) == []


def test_a_deferred_call_waits_as_a_row_and_is_published_once_due(transactional_db, clean_broker):
    when = timezone.now() + timedelta(hours=2)
    result = tasks.make_effect.using(run_after=when).enqueue("later")

    assert result.status == TaskResultStatus.READY
    assert result.task.run_after == when
    record = TaskRecord.objects.get(pk=result.id)
    assert (record.run_after, record.published_at) == (when, None)
    assert queued(clean_broker) == []  # nothing in the broker, nothing in a worker's memory
    assert maintenance.recover() == maintenance.ReapReport()  # not due: the recovery pass leaves it
    assert queued(clean_broker) == []

    # Due: the first pass publishes it, once, however many passes run.
    assert maintenance.recover(now=when + timedelta(seconds=1)).republished == (record.key,)
    assert maintenance.publish_due(now=when + timedelta(seconds=2)) == ()
    [message] = queued(clean_broker)
    assert message["headers"]["id"] == result.id
    assert tasks.make_effect.get_result(result.id).status == TaskResultStatus.READY


def test_a_run_after_in_the_past_is_published_at_once(transactional_db, clean_broker):
    result = tasks.make_effect.using(run_after=timezone.now() - timedelta(minutes=1)).enqueue("overdue")
    assert [m["headers"]["id"] for m in queued(clean_broker)] == [result.id]


def test_unknown_ids_raise_and_never_read_as_pending(db):
    with pytest.raises(TaskResultDoesNotExist, match="ids are UUIDs"):
        tasks.make_effect.get_result("not-a-uuid")
    missing = str(uuid.uuid4())
    with pytest.raises(TaskResultDoesNotExist, match=missing):
        tasks.make_effect.get_result(missing)
    with pytest.raises(TaskResultDoesNotExist, match=missing):
        default_task_backend.get_result(missing)


def test_a_celery_api_row_is_not_a_django_tasks_result(transactional_db, clean_broker):
    handle = celery_tasks.make_effect.enqueue("celery-side")
    with pytest.raises(TaskResultDoesNotExist, match=r"not of a django\.tasks task"):
        default_task_backend.get_result(handle.id)


def test_results_of_another_task_are_refused(transactional_db, clean_broker):
    from django.tasks.exceptions import TaskResultMismatch

    result = tasks.make_effect.enqueue("mine")
    with pytest.raises(TaskResultMismatch):
        tasks.in_order.get_result(result.id)


def attempt(key: str, number: int) -> str:
    """Claim the row of ``key`` as attempt ``number`` would, by the real claim statement; return the owner."""
    record = TaskRecord.objects.get(key=key)
    owner = f"default-{number}@host:{1000 + number}:token{number}"
    got = claims.claim(
        key=key,
        task_name=record.task_name,
        queue=record.queue,
        payload_hash=record.payload_hash,
        args=record.args,
        kwargs=record.kwargs,
        owner=owner,
        task_id=str(record.pk),
        lease_seconds=60,
        max_attempts=3,
    )
    assert got.outcome is claims.Outcome.CLAIMED
    return owner


def test_the_result_follows_the_row_through_attempts_errors_and_success(transactional_db, clean_broker):
    result = tasks.make_effect.enqueue("lifecycle")
    key = TaskRecord.objects.get(pk=result.id).key

    first = attempt(key, 1)
    result.refresh()
    assert result.status == TaskResultStatus.RUNNING
    assert result.worker_ids == ["default-1@host:1001"]
    assert result.started_at == result.last_attempted_at
    assert result.finished_at is None
    try:
        raise TransientError("the first attempt failed")
    except TransientError as exc:
        claims.attempt_failed(key=key, owner=first, exc=exc, max_attempts=3)
    result.refresh()
    # Waiting for its retry, the call is ready to run again; the failed attempt is one error.
    assert result.status == TaskResultStatus.READY
    [error] = result.errors
    assert error.exception_class is TransientError
    assert "the first attempt failed" in error.traceback
    first_start = result.started_at

    second = attempt(key, 2)
    assert claims.succeed(key=key, owner=second, result={"done": True})
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"done": True}
    assert result.worker_ids == ["default-1@host:1001", "default-2@host:1002"]
    assert result.attempts == 2
    assert len(result.errors) == 1
    assert result.started_at == first_start
    assert result.last_attempted_at is not None
    assert first_start is not None
    assert result.last_attempted_at > first_start
    assert result.finished_at is not None
    assert result.finished_at >= result.last_attempted_at
    assert result.enqueued_at is not None
    assert result.enqueued_at <= first_start


def test_a_lost_attempt_and_an_exhausted_row_read_as_errors(transactional_db, clean_broker):
    result = tasks.make_effect.enqueue("lost")
    key = TaskRecord.objects.get(pk=result.id).key
    attempt(key, 1)
    TaskRecord.objects.filter(key=key).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert maintenance.reap_expired_leases().republished == (key,)
    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert [e.exception_class for e in result.errors] == [DeliveryLostError]
    assert "Lease of default-1@host:1001" in result.errors[0].traceback


def test_a_cancelled_call_reads_as_failed_with_a_cancellation_error(transactional_db, clean_broker):
    result = tasks.make_effect.enqueue("cancelled")
    cancel(TaskRecord.objects.get(pk=result.id).key)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.finished_at is not None
    [error] = result.errors
    assert error.exception_class is TaskCancelledError
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


def test_statuses_of_every_row_state(db):
    for status, expected in [
        (Status.PENDING, "READY"),
        (Status.RUNNING, "RUNNING"),
        (Status.SUCCEEDED, "SUCCESSFUL"),
        (Status.FAILED, "FAILED"),
        (Status.CANCELLED, "FAILED"),
    ]:
        record = TaskRecord.objects.create(
            key=f"state-{status}", task_name="tests.tasks.django_tasks.make_effect", queue="default", status=status
        )
        assert task_result(record).status == expected


def test_aenqueue_and_aget_result(transactional_db, clean_broker):
    async def from_a_coroutine() -> tuple[Any, Any]:
        result = await tasks.async_effect.aenqueue("from-a-coroutine")
        fetched = await tasks.async_effect.aget_result(result.id)
        await fetched.arefresh()
        return result, fetched

    result, fetched = async_to_sync(from_a_coroutine)()
    assert (fetched.id, fetched.status, fetched.args) == (result.id, TaskResultStatus.READY, ["from-a-coroutine"])
    assert [m["headers"]["id"] for m in queued(clean_broker)] == [result.id]


def test_the_admin_shows_a_django_tasks_call_with_its_attempts(transactional_db, clean_broker, admin_client):
    from django.urls import reverse

    result = tasks.make_effect.using(priority=-10).enqueue("admin-view")
    attempt(TaskRecord.objects.get(pk=result.id).key, 1)
    page = admin_client.get(reverse("admin:idempotency_taskrecord_change", args=[result.id])).content.decode()
    assert "tests.tasks.django_tasks.make_effect" in page
    assert "default-1@host:1001" in page  # the attempt log: django.tasks' worker_ids
    assert "-10" in page


def test_beat_reaper_publishes_due_deferred_calls_when_no_worker_pass_did(transactional_db, clean_broker):
    from {{ cookiecutter.project_slug }}.idempotency import tasks as upkeep

    result = tasks.make_effect.using(run_after=timezone.now() + timedelta(minutes=5)).enqueue("reaped")
    assert upkeep.reap_expired_leases() == {"republished": 0, "failed": 0}
    TaskRecord.objects.filter(pk=result.id).update(run_after=timezone.now() - timedelta(seconds=1))
    assert upkeep.reap_expired_leases() == {"republished": 1, "failed": 0}
    assert [m["headers"]["id"] for m in queued(clean_broker)] == [result.id]
