"""django.tasks tasks through real workers on Redis and PostgreSQL: results, SIGKILL, duplicates, defer, priority."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from typing import Any

import pytest
from django.tasks import TaskResultStatus
from django.utils import timezone

from {{ cookiecutter.project_slug }}.idempotency import publishing
from {{ cookiecutter.project_slug }}.idempotency.exceptions import DeliveryLostError, ResultNotSerializableError
from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord
from {{ cookiecutter.project_slug }}.idempotency.selectors import get_result

from support.servers import wait_until
from tests.effects.models import Effect
from tests.idempotency.test_tasks_backend import queued
from tests.tasks import django_tasks as tasks
from tests.tasks.idempotency import TransientError, count

pytestmark = [pytest.mark.workers, pytest.mark.timeout(180)]

#: One process, one message at a time: each worker holds exactly the message it is running.
ONE_AT_A_TIME = ("-c", "1", "--prefetch-multiplier", "1")


def finished(task: Any, result_id: str, timeout: float = 60) -> Any:
    """Wait until the call ``result_id`` of ``task`` is finished and return its result."""
    wait_until(lambda: task.get_result(result_id).is_finished, timeout, f"{result_id} to finish")
    return task.get_result(result_id)


def start_ready(start_worker: Any, name: str, queue: str = "default", **options: Any) -> Any:
    """Start a one-at-a-time worker and wait until its own log says it is ready."""
    proc = start_worker(queue, *ONE_AT_A_TIME, name=name, **options)
    wait_until(lambda: f"{name}@" in proc.log() and " ready." in proc.log(), 60, f"worker {name} to be ready")
    return proc


def test_calls_run_on_their_pool_and_their_results_read_from_this_process(start_worker):
    start_worker("default")
    result = tasks.make_effect.enqueue("signals-run", seconds=0.2)
    coroutine = tasks.async_effect.enqueue("coroutine", seconds=0.1)
    steps = tasks.with_progress.enqueue("progress", steps=4, step_seconds=0.3)
    done = finished(tasks.make_effect, result.id)

    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == {"effect": "signals-run", "run": 1}
    assert done.errors == []
    [worker] = done.worker_ids
    assert worker.startswith("default-0@")
    assert done.attempts == 1
    assert done.enqueued_at <= done.started_at == done.last_attempted_at <= done.finished_at
    assert Effect.objects.filter(key="signals-run").count() == 1
    # The worker sent task_started and task_finished, each once, with the state it saw.
    assert Effect.objects.get(key="task_started:signals-run").worker == "RUNNING"
    # task_finished is sent once the row is final: on a busy machine it lands a moment after the result reads so.
    noted = Effect.objects.filter(key="task_finished:signals-run")
    wait_until(noted.exists, 10, "the worker's task_finished to be noted")
    assert noted.get().worker == "SUCCESSFUL"
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL

    # An async def task runs on the worker too.
    ran = finished(tasks.async_effect, coroutine.id)
    assert ran.status == TaskResultStatus.SUCCESSFUL
    assert ran.return_value == {"effect": "coroutine", "run": 1, "coroutine": True}
    assert Effect.objects.filter(key="coroutine").count() == 1

    # Progress lands on the row the jobs page reads, while the call runs.
    wait_until(lambda: (get_result(id=steps.id).progress or 0) >= 0.5, 30, "progress to be reported")
    assert finished(tasks.with_progress, steps.id).return_value == 4
    row = get_result(id=steps.id)
    assert (row.progress, row.progress_message) == (1.0, "step 4 of 4")


def test_sigkill_in_the_middle_of_a_call_runs_it_again_with_one_effect(start_worker):
    worker = start_ready(start_worker, "kill")
    result = tasks.make_effect.enqueue("killed", first_run_seconds=3.0)
    wait_until(lambda: count("runs:killed") == 1, 30, "the first run to start")
    running = tasks.make_effect.get_result(result.id)
    assert running.status == TaskResultStatus.RUNNING
    owner = TaskRecord.objects.get(pk=result.id).owner
    child = int(owner.rsplit(":", 2)[1])
    assert child != worker.pid
    os.kill(child, signal.SIGKILL)  # as the OOM killer would

    done = finished(tasks.make_effect, result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == {"effect": "killed", "run": 2}
    assert done.attempts == 2
    assert len(done.worker_ids) == 2
    [lost] = done.errors
    assert lost.exception_class is DeliveryLostError
    assert str(child) in lost.traceback
    assert Effect.objects.filter(key="killed").count() == 1


def test_the_same_message_delivered_twice_runs_the_function_once(start_worker):
    # Two processes: the second delivery runs beside the first, as on another worker.
    worker = start_worker("default", "-c", "2", "--prefetch-multiplier", "1", name="dup")
    result = tasks.make_effect.enqueue("twice", seconds=2.0)
    # As a broker redelivery would: the row's own message a second time, while the first runs.
    wait_until(lambda: count("runs:twice") == 1, 30, "the first delivery to run")
    publishing.publish(TaskRecord.objects.get(pk=result.id))
    wait_until(lambda: "not running it twice" in worker.log(), 30, "the duplicate to be skipped")

    done = finished(tasks.make_effect, result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert count("runs:twice") == 1
    assert Effect.objects.filter(key="twice").count() == 1
    assert done.attempts == 1
    # A delivery after the success returns the stored result and runs nothing.
    publishing.publish(TaskRecord.objects.get(pk=result.id))
    wait_until(lambda: "already succeeded" in worker.log(), 30, "the late duplicate to return")
    assert count("runs:twice") == 1


def test_a_deferred_call_survives_a_worker_restart_and_starts_soon_after_run_after(start_worker, clean_broker):
    before = start_ready(start_worker, "before")
    run_after = timezone.now() + timedelta(seconds=5)
    result = tasks.make_effect.using(run_after=run_after).enqueue("deferred")
    time.sleep(1)
    assert queued(clean_broker) == []  # no message: nothing held in a worker's memory
    before.stop()  # a deploy: the worker that was up when the call was made is gone
    assert tasks.make_effect.get_result(result.id).status == TaskResultStatus.READY
    assert count("runs:deferred") == 0

    start_ready(start_worker, "after")
    ready = timezone.now()
    done = finished(tasks.make_effect, result.id, timeout=60)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.started_at is not None
    assert done.started_at >= run_after
    # Published by the first recovery pass once due and a worker is up (a pass every IDEMPOTENCY_LIVENESS_INTERVAL,
    # 0.5 s here; on a loaded machine the new worker may be ready only after run_after).
    late = (done.started_at - max(run_after, ready)).total_seconds()
    assert late < 2, f"started {late:.2f} s after it was due and a worker was up"
    assert Effect.objects.filter(key="deferred").count() == 1


def test_a_high_priority_call_overtakes_a_queue_of_low_ones(start_worker, clean_broker):
    low = [tasks.in_order.using(priority=-80).enqueue(f"prio:low-{n}") for n in range(3)]
    default = [tasks.in_order.enqueue(f"prio:default-{n}") for n in range(2)]
    high = tasks.in_order.using(priority=80).enqueue("prio:high")
    assert len(queued(clean_broker)) == 6

    start_ready(start_worker, "prio")
    for handle in [*low, *default, high]:
        assert finished(tasks.in_order, handle.id).status == TaskResultStatus.SUCCESSFUL
    order = {e.key.removeprefix("prio:"): int(e.task_id) for e in Effect.objects.filter(key__startswith="prio:")}
    assert order["high"] == 1
    assert {order["default-0"], order["default-1"]} == {2, 3}
    assert {order[f"low-{n}"] for n in range(3)} == {4, 5, 6}


def test_failed_attempts_are_retried_each_one_error_capped_per_task_and_the_context_counts(start_worker):
    start_worker("default")
    result = tasks.flaky.enqueue("flaky", failures=2)
    exhausted = tasks.flaky.enqueue("hopeless", failures=10)
    unstorable = tasks.returns_a_set.enqueue("signals-set")

    done = finished(tasks.flaky, result.id, timeout=90)
    assert done.status == TaskResultStatus.SUCCESSFUL
    # The TaskContext gave the attempt number: two failed, the third returned it.
    assert done.return_value == {"attempt": 3, "id": result.id}
    assert done.attempts == 3
    assert [e.exception_class for e in done.errors] == [TransientError, TransientError]
    assert "attempt 1 of flaky failed" in done.errors[0].traceback
    assert "attempt 2 of flaky failed" in done.errors[1].traceback

    failed = finished(tasks.flaky, exhausted.id, timeout=90)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.attempts == 3  # max_attempts=3, forwarded by @task to the backend's task class
    assert len(failed.errors) == 3
    assert count("runs:hopeless") == 3
    with pytest.raises(ValueError, match="failed"):
        _ = failed.return_value

    refused = finished(tasks.returns_a_set, unstorable.id)
    assert refused.status == TaskResultStatus.FAILED
    [error] = refused.errors
    assert error.exception_class is ResultNotSerializableError
    assert "returned a set" in error.traceback
    assert refused.attempts == 1  # permanent: no retry
    # Failed for good: the worker announced it once, as failed.
    assert Effect.objects.get(key="task_finished:signals-set").worker == "FAILED"


def test_a_call_on_another_queue_runs_on_that_pool(start_worker):
    start_worker("emails")
    result = tasks.on_emails.enqueue("threads")
    done = finished(tasks.on_emails, result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.worker_ids[0].startswith("emails-0@")
    moved = tasks.in_order.using(queue_name="emails").enqueue("moved:emails")
    assert finished(tasks.in_order, moved.id).worker_ids[0].startswith("emails-0@")
