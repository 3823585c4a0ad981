"""Cancelling a call: a final ``cancelled`` row, never run if pending, stopped if running, a late message ignored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from {{ cookiecutter.project_slug }}.claimcheck import base as claimcheck_base
from {{ cookiecutter.project_slug }}.claimcheck import blobs
from {{ cookiecutter.project_slug }}.idempotency import cancel as cancelling
from {{ cookiecutter.project_slug }}.idempotency import claims, maintenance
from {{ cookiecutter.project_slug }}.idempotency.cancel import cancel
from {{ cookiecutter.project_slug }}.idempotency.claims import Outcome
from {{ cookiecutter.project_slug }}.idempotency.exceptions import TaskAlreadyFinishedError, TaskRecordNotFoundError
from {{ cookiecutter.project_slug }}.idempotency.models import FINISHED, Status, TaskRecord

from support.servers import wait_until
from tests.effects.models import Effect
from tests.tasks import cancel as cancel_tasks
from tests.tasks import idempotency as tasks

pytestmark = pytest.mark.timeout(120)

#: One process, one message at a time: each worker holds exactly the message it is running.
ONE_AT_A_TIME = ("-c", "1", "--prefetch-multiplier", "1")


def row(key: str) -> TaskRecord:
    return TaskRecord.objects.get(key=key)


def wait_for_status(key: str, status: Status, timeout: float) -> TaskRecord:
    wait_until(lambda: row(key).status == status, timeout, f"{key} to be {status}")
    return row(key)


def test_cancel_ends_a_pending_row_for_good_and_deletes_its_argument_blob(
    transactional_db, clean_broker, settings, tmp_path
):
    settings.STORAGES = {
        **settings.STORAGES,
        "claimcheck": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": tmp_path}},
    }
    settings.CLAIMCHECK_ARGS_THRESHOLD = 64  # the call below is offloaded to a blob
    handle = tasks.make_effect.using(key="to-cancel").enqueue("x" * 200)
    reference = claimcheck_base.arguments_reference(row("to-cancel").args, row("to-cancel").kwargs)
    assert reference is not None
    assert blobs.get_storage().exists(reference.key)

    cancelled = cancel(handle.key)
    assert cancelled.status == Status.CANCELLED
    assert cancelled.is_finished
    assert Status.CANCELLED in FINISHED
    assert cancelled.finished_at is not None
    assert not blobs.get_storage().exists(reference.key), "a cancelled call's argument blob was kept"

    # Every claim refuses it, and says why: the delivery neither runs nor loops.
    found = claims.claim(
        key="to-cancel",
        task_name=tasks.make_effect.name,
        queue="default",
        payload_hash=row("to-cancel").payload_hash,
        args=row("to-cancel").args,
        kwargs=row("to-cancel").kwargs,
        owner="late:1:token",
        task_id="late",
        lease_seconds=60,
        max_attempts=3,
    )
    assert found.outcome is Outcome.CANCELLED
    assert row("to-cancel").attempts == 0

    with pytest.raises(TaskAlreadyFinishedError, match="'to-cancel' is cancelled already"):
        cancel("to-cancel")
    with pytest.raises(TaskRecordNotFoundError, match="'nope'"):
        cancel("nope")


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED])
def test_a_finished_row_is_not_cancelled(db, status):
    TaskRecord.objects.create(key="done", task_name="t", queue="default", payload_hash="0" * 64, status=status)
    with pytest.raises(TaskAlreadyFinishedError, match=f"is {status.value} already"):
        cancel("done")
    assert row("done").status == status


def test_pruner_deletes_cancelled_rows_and_announces_each_batch_first(db):
    old = timezone.now() - timedelta(days=8)
    for number, status in enumerate([Status.CANCELLED, Status.SUCCEEDED, Status.FAILED, Status.PENDING]):
        TaskRecord.objects.create(
            key=f"old-{status}", task_name="t", queue="default", payload_hash="0" * 64, status=status,
            finished_at=old + timedelta(seconds=number) if status != Status.PENDING else None,
        )  # fmt: skip
    announced: list[list[str]] = []

    def listener(sender: Any, records: list[TaskRecord], **kwargs: Any) -> None:
        # Sent before the delete, in its transaction: the rows are still there to read.
        assert TaskRecord.objects.filter(pk__in=[r.pk for r in records]).count() == len(records)
        announced.append([r.key for r in records])

    maintenance.rows_pruning.connect(listener)
    try:
        assert maintenance.prune_finished(older_than=timedelta(days=7), batch_size=2) == 3
    finally:
        maintenance.rows_pruning.disconnect(listener)
    assert announced == [["old-cancelled", "old-succeeded"], ["old-failed"]]
    assert list(TaskRecord.objects.values_list("key", flat=True)) == ["old-pending"]


def test_admin_cancels_the_selected_rows_that_are_not_final(transactional_db, admin_client):
    for key, status in (("waiting", Status.PENDING), ("done", Status.SUCCEEDED)):
        TaskRecord.objects.create(key=key, task_name="t", queue="default", payload_hash="0" * 64, status=status)
    response = admin_client.post(
        reverse("admin:idempotency_taskrecord_changelist"),
        {"action": "cancel_selected", "_selected_action": [str(r.pk) for r in TaskRecord.objects.all()]},
        follow=True,
    )
    page = response.content.decode()
    assert "Cancelled 1 task(s)." in page
    assert "Skipped 1 task(s) that were final already." in page
    assert (row("waiting").status, row("done").status) == (Status.CANCELLED, Status.SUCCEEDED)


@pytest.mark.workers
def test_a_cancelled_pending_call_never_runs_and_its_message_is_dropped_quietly(start_worker):
    tasks.make_effect.using(key="never").enqueue("never")
    cancel("never")
    worker = start_worker("default", *ONE_AT_A_TIME)
    tasks.make_effect.using(key="after").enqueue("after")  # consumed after the cancelled one
    wait_for_status("after", Status.SUCCEEDED, 60)
    assert tasks.count("runs:never") == 0
    assert not Effect.objects.filter(key="never").exists()
    assert row("never").status == Status.CANCELLED
    assert "'never' was cancelled: not running it" in worker.log()
    assert "Traceback" not in worker.log()


@pytest.mark.workers
def test_a_running_call_stops_at_its_next_progress_report(start_worker, monkeypatch):
    # Without the pool's terminate, the owner fence alone must stop it: the row is no longer RUNNING.
    monkeypatch.setattr(cancelling, "_terminate_soon", lambda task_id, key: None)
    worker = start_worker("default", *ONE_AT_A_TIME)
    tasks.reports_progress.using(key="steps").enqueue("steps", steps=40, step_seconds=0.1)
    wait_until(lambda: (row("steps").progress or 0) > 0, 60, "the first progress report")
    cancel("steps")
    wait_until(lambda: "'steps': the row is no longer this delivery's" in worker.log(), 30, "the task to stop")
    stopped = row("steps")
    assert stopped.status == Status.CANCELLED
    assert stopped.progress is not None
    assert stopped.progress < 1.0
    assert tasks.count("runs:steps") == 1
    tasks.make_effect.using(key="next").enqueue("next")
    wait_for_status("next", Status.SUCCEEDED, 60)  # the worker carries on
    assert row("steps").status == Status.CANCELLED


@pytest.mark.workers
@pytest.mark.parametrize(
    ("queue", "task"),
    [("default", tasks.make_effect), ("emails", cancel_tasks.quiet_effect_on_threads)],
    ids=["prefork", "threads"],
)
def test_a_running_call_that_reports_no_progress_is_terminated_by_its_pool(start_worker, queue, task):
    worker = start_worker(queue, *ONE_AT_A_TIME)
    task.using(key="quiet").enqueue("quiet", seconds=3.0)
    wait_until(lambda: tasks.count("runs:quiet") == 1, 60, "the task to start")
    started = row("quiet")
    assert started.status == Status.RUNNING
    cancel("quiet")
    wait_until(lambda: f"Terminating {started.task_id}" in worker.log(), 30, "the pool to terminate the task")
    # The body would have recorded its effect 3 s after it started; a later task on the same worker shows it did not.
    task.using(key="later").enqueue("later", seconds=3.5)
    wait_for_status("later", Status.SUCCEEDED, 60)
    assert not Effect.objects.filter(key="quiet").exists(), "the cancelled body ran to its effect"
    assert tasks.count("runs:quiet") == 1  # the message did not come back to run it again
    assert row("quiet").status == Status.CANCELLED
    assert worker.alive()
