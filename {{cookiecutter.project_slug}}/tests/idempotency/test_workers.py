"""Idempotent tasks through real workers on Redis and PostgreSQL: duplicates, SIGKILL, retries, mismatches."""

from __future__ import annotations

import itertools
import os
import signal
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from celery.result import AsyncResult
from django.conf import settings
from django.db import connection
from django.utils import timezone

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.idempotency import maintenance, publishing
from {{ cookiecutter.project_slug }}.idempotency import tasks as upkeep
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord
from {{ cookiecutter.project_slug }}.idempotency.payload import derive_key, payload_hash
from {{ cookiecutter.project_slug }}.idempotency.selectors import get_result
from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force

from support.servers import TcpProxy, wait_until
from tests.conftest import BROKERS
from tests.effects.models import Effect
from tests.tasks import idempotency as tasks

pytestmark = [pytest.mark.workers, pytest.mark.timeout(180)]

#: One process, one message at a time: each worker holds exactly the message it is running.
ONE_AT_A_TIME = ("-c", "1", "--prefetch-multiplier", "1")
#: Worker settings under which a node's liveness record outlives any test.
NO_LIVENESS_LAPSE = {"IDEMPOTENCY_LIVENESS_TIMEOUT": "3600"}


def start_ready(start_worker, name: str):
    """Start a one-at-a-time worker on the default queue and wait until it says it is ready.

    ``start_worker`` waits for the queue's heartbeat file, which an earlier worker of the same queue
    has already written: the log line is this worker's own.
    """
    proc = start_worker("default", *ONE_AT_A_TIME, name=name)
    wait_until(lambda: f"{name}@" in proc.log() and " ready." in proc.log(), 60, f"worker {name} to be ready")
    return proc


def row(key: str) -> TaskRecord | None:
    """Return the status row of ``key`` as committed now."""
    return TaskRecord.objects.filter(key=key).first()


def wait_for_status(key: str, status: Status, timeout: float) -> TaskRecord:
    """Wait until the row of ``key`` has ``status`` and return it."""
    wait_until(lambda: (r := row(key)) is not None and r.status == status, timeout, f"{key} to be {status}")
    found = row(key)
    assert found is not None
    return found


def test_sigkilled_pool_child_is_taken_over_at_once_not_after_the_lease(start_worker):
    worker = start_ready(start_worker, "oom")
    tasks.make_effect.using(key="oom-victim").enqueue("oom-victim", first_run_seconds=3.0)
    wait_until(lambda: tasks.count("runs:oom-victim") == 1, 30, "the first run to start")
    claimed = row("oom-victim")
    assert claimed is not None
    assert claimed.lease_expires_at is not None
    child = int(claimed.owner.rsplit(":", 2)[1])
    assert child != worker.pid  # the prefork child, not the worker
    os.kill(child, signal.SIGKILL)  # as the OOM killer would

    # The worker requeues the message at once (task_reject_on_worker_lost); the next delivery sees that
    # the lease holder was a process of this worker that is gone, and takes over. No lease expires here.
    done = wait_for_status("oom-victim", Status.SUCCEEDED, 60)
    assert done.finished_at is not None
    assert done.finished_at < claimed.lease_expires_at
    assert done.attempts == 2
    assert Effect.objects.filter(key="oom-victim").count() == 1
    # The requeued delivery takes over, or the worker's liveness thread gave the orphaned row back first.
    assert "no longer exists; taking over" in worker.log() or "its delivery ended without a result" in worker.log()
    assert worker.alive()


def test_database_outage_at_the_claim_delivers_again_later_and_loses_nothing(start_worker, worker_env):
    # The worker reaches PostgreSQL through a relay the test can cut, as a database restart would.
    port = connection.settings_dict["PORT"]
    proxy = TcpProxy(int(port))
    try:
        database_url = worker_env["DATABASE_URL"].replace(f":{port}/", f":{proxy.port}/")
        worker = start_worker("default", *ONE_AT_A_TIME, env={"DATABASE_URL": database_url}, name="outage")
        tasks.make_effect.using(key="before-outage").enqueue("before-outage")
        wait_for_status("before-outage", Status.SUCCEEDED, 30)  # the worker holds a connection now

        proxy.cut()
        tasks.make_effect.using(key="during-outage").enqueue("during-outage")
        wait_until(lambda: "the database did not answer the claim" in worker.log(), 30, "the claim to fail")
        waiting = row("during-outage")
        assert waiting is not None
        assert (waiting.status, waiting.attempts) == (Status.PENDING, 0)  # not failed, not claimed
        assert Effect.objects.filter(key="during-outage").count() == 0

        proxy.restore()
        done = wait_for_status("during-outage", Status.SUCCEEDED, 90)
        assert done.attempts == 1
        assert Effect.objects.filter(key="during-outage").count() == 1
        assert worker.alive()
    finally:
        proxy.close()


def test_calls_enqueued_while_the_broker_is_down_are_kept_and_published_later(broker_relay, start_worker):
    broker_relay.cut()  # the web process cannot reach Redis; PostgreSQL is fine
    for key in ("broker-down-a", "broker-down-b"):
        tasks.make_effect.using(key=key).enqueue(key)  # committed; the publish fails after the commit
        flagged = row(key)
        assert flagged is not None
        assert (flagged.status, flagged.error_type) == (Status.PENDING, publishing.PUBLISH_FAILED)
        assert "The broker did not take the message" in flagged.error_message
    # A reaper pass while the broker is still down publishes nothing and keeps both flags.
    assert maintenance.reap_expired_leases().republished == ()
    assert set(TaskRecord.objects.filter(error_type=publishing.PUBLISH_FAILED).values_list("key", flat=True)) == {
        "broker-down-a",
        "broker-down-b",
    }

    broker_relay.restore()
    start_ready(start_worker, "after-outage")
    # The caller repeats one call: the same row, published now, not a second one.
    tasks.make_effect.using(key="broker-down-a").enqueue("broker-down-a")
    published = row("broker-down-a")
    assert published is not None
    assert published.error_type == ""
    # A recovery pass publishes the other, and only that one (here, or the worker's own pass got there first).
    assert set(maintenance.reap_expired_leases().republished) <= {"broker-down-b"}
    for key in ("broker-down-a", "broker-down-b"):
        done = wait_for_status(key, Status.SUCCEEDED, 60)
        assert done.attempts == 1
        assert Effect.objects.filter(key=key).count() == 1
    assert TaskRecord.objects.filter(key__startswith="broker-down").count() == 2


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_same_message_to_two_workers_at_once_has_one_effect(start_worker):
    first = start_ready(start_worker, "dup-a")
    second = start_ready(start_worker, "dup-b")
    task_id = str(uuid.uuid4())
    # As a broker redelivery would: the same message (same id, same arguments) twice, bypassing enqueue.
    for _ in range(2):
        tasks.make_effect.apply_async(("twice",), {"seconds": 2.0}, task_id=task_id, ignore_result=False)

    wait_until(
        lambda: f"[{task_id}] received" in first.log() and f"[{task_id}] received" in second.log(),
        30,
        "both workers to receive the message",
    )
    key = derive_key(tasks.make_effect.name, payload_hash(tasks.make_effect.name, ["twice"], {"seconds": 2.0}))
    done = wait_for_status(key, Status.SUCCEEDED, 60)
    wait_until(lambda: "not running it twice" in first.log() + second.log(), 30, "the duplicate to be skipped")

    assert Effect.objects.filter(key="twice").count() == 1
    assert tasks.count("runs:twice") == 1
    assert done.attempts == 1
    assert AsyncResult(task_id).get(timeout=30) == {"effect": "twice", "run": 1}

    # A third delivery after success returns the stored result and runs nothing.
    again = tasks.make_effect.apply_async(("twice",), {"seconds": 2.0}, ignore_result=False)
    assert again.get(timeout=30) == {"effect": "twice", "run": 1}
    assert tasks.count("runs:twice") == 1


def test_sigkilled_worker_task_runs_again_after_the_lease_with_one_effect(start_worker):
    # The lease is the last resort: with liveness records that never lapse, only the lease frees the row.
    # (test_recovery.py shows the liveness path reclaiming it within seconds.)
    doomed = start_worker("default", *ONE_AT_A_TIME, env=NO_LIVENESS_LAPSE, name="doomed")
    handle = tasks.make_effect.using(key="survivor").enqueue("survivor", first_run_seconds=3.0)
    wait_until(lambda: tasks.count("runs:survivor") == 1, 30, "the first run to start")
    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool child die without a word
    doomed.wait(timeout=10)

    claimed = row("survivor")
    assert claimed is not None
    assert (claimed.status, claimed.attempts) == (Status.RUNNING, 1)
    assert claimed.lease_expires_at is not None
    assert claimed.started_at is not None
    lease_left = (claimed.lease_expires_at - claimed.started_at).total_seconds()
    assert lease_left == pytest.approx(tasks.make_effect.get_lease_seconds(), abs=1)

    heir = start_worker("default", *ONE_AT_A_TIME, env=NO_LIVENESS_LAPSE, name="heir")
    # While the lease lasts nobody runs it again (the broker's visibility timeout is longer than any lease).
    while timezone.now() < claimed.lease_expires_at - timedelta(seconds=0.5):
        assert tasks.count("runs:survivor") == 1
        time.sleep(0.1)
    # Then the reaper (run here as beat would) publishes it again, unless the broker's redelivery came first.
    time.sleep(0.6)
    upkeep.reap_expired_leases.delay()
    done = wait_for_status("survivor", Status.SUCCEEDED, 60)

    assert done.attempts == 2
    assert tasks.count("runs:survivor") == 2
    assert Effect.objects.filter(key="survivor").count() == 1
    assert done.result == {"effect": "survivor", "run": 2}
    assert get_result(id=handle.id).return_value == {"effect": "survivor", "run": 2}
    assert f"make_effect[{handle.id}] received" in heir.log()
    if settings.CELERY_TASK_ACKS_LATE:
        # The killed delivery's message comes back once the visibility timeout passes: it changes nothing.
        redelivered_by = claimed.started_at + timedelta(seconds=pools.visibility_timeout(pools_in_force()) + 5)
        while timezone.now() < redelivered_by:
            time.sleep(0.2)
        assert tasks.count("runs:survivor") == 2
        assert Effect.objects.filter(key="survivor").count() == 1
        survivor = row("survivor")
        assert survivor is not None
        assert survivor.attempts == 2


def test_failing_task_counts_attempts_backs_off_and_fails_for_good(start_worker):
    start_worker("default")
    handle = tasks.always_fails.enqueue("boom")
    done = wait_for_status(handle.key, Status.FAILED, 90)

    assert done.attempts == tasks.always_fails.max_attempts == 3
    assert tasks.count("runs:boom") == 3
    assert done.error_type == "tests.tasks.idempotency.TransientError"
    assert "attempt 3 of boom failed" in done.error_message
    assert "raise TransientError" in done.error_traceback
    runs = [Effect.objects.get(key=f"boom:attempt-{n}").created for n in (1, 2, 3)]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(runs)]
    # Backoff 1 s then 2 s, each with jitter between half and all of it.
    assert gaps[0] >= 0.5, gaps
    assert gaps[1] >= 1.0, gaps
    # The row is the record: nothing of an enqueued call is written to Celery's result backend.
    assert AsyncResult(handle.id).state == "PENDING"
    time.sleep(2.5)  # longer than the next backoff would be: no fourth attempt comes
    assert tasks.count("runs:boom") == 3

    permanent = tasks.fails_permanently.enqueue("perm")
    failed = wait_for_status(permanent.key, Status.FAILED, 60)
    assert failed.attempts == 1
    assert tasks.count("runs:perm") == 1
    assert failed.error_type == "tests.tasks.idempotency.BrokenInputError"


def test_same_key_different_arguments_at_the_worker_is_refused_without_running(start_worker):
    start_worker("default")
    tasks.make_effect.using(key="shared-key").enqueue("original")
    wait_for_status("shared-key", Status.SUCCEEDED, 60)
    # A message under the same key with other arguments (a client bug, or a forged message).
    stray = tasks.make_effect.apply_async(
        ("intruder",), headers={publishing.KEY_HEADER: "shared-key"}, ignore_result=False
    )
    with pytest.raises(Exception, match="'shared-key'") as excinfo:
        stray.get(timeout=30)
    assert type(excinfo.value).__name__ == "PayloadMismatchError"
    assert tasks.count("runs:intruder") == 0
    assert not Effect.objects.filter(key="intruder").exists()
    kept = row("shared-key")
    assert kept is not None
    assert (kept.status, kept.args, kept.result) == (Status.SUCCEEDED, ["original"], {"effect": "original", "run": 1})


def test_progress_is_recorded_and_the_result_read_by_key(start_worker):
    start_worker("default")
    handle = tasks.reports_progress.enqueue("steps", steps=4, step_seconds=0.3)
    seen: set[float] = set()

    def finished() -> bool:
        state = handle.refresh()
        if state.progress is not None:
            seen.add(state.progress)
        return state.is_finished

    wait_until(finished, 60, "the progress task to finish", interval=0.05)
    final = get_result(key=handle.key)
    assert final.status == Status.SUCCEEDED
    assert final.return_value == 4
    assert final.progress == 1.0
    assert final.progress_message == "step 4 of 4"
    assert seen & {0.25, 0.5, 0.75}, seen  # some intermediate progress was visible while it ran


# ------------------------------------------------------------------------------
# The status row as the system of record
# ------------------------------------------------------------------------------


def test_a_kill_between_the_body_write_and_the_success_write_leaves_the_effect_once(start_worker):
    worker = start_ready(start_worker, "atomic")
    tasks.atomic_effect.using(key="atomic-kill").enqueue("atomic-kill", pause_after_write=30, progress=True)
    written = tasks.EFFECT_WRITTEN % ("atomic-kill", 1)
    wait_until(lambda: written in worker.log(), 30, "the body to write its effect")
    # The progress written inside the body's transaction is seen at once (a connection of its own) ...
    wait_until(lambda: (r := row("atomic-kill")) is not None and r.progress == 0.5, 10, "the progress to show")
    # ... the effect only with the success write, which has not happened.
    assert not Effect.objects.filter(key="atomic-kill").exists()
    claimed = row("atomic-kill")
    assert claimed is not None
    os.kill(int(claimed.owner.rsplit(":", 2)[1]), signal.SIGKILL)  # the pool child, mid-transaction

    done = wait_for_status("atomic-kill", Status.SUCCEEDED, 60)
    assert done.attempts == 2
    assert done.result == {"effect": "atomic-kill", "attempt": 2}
    assert Effect.objects.filter(key="atomic-kill").count() == 1
    assert worker.alive()


def test_a_lost_owner_fence_rolls_the_body_writes_back(start_worker):
    worker = start_ready(start_worker, "fence")
    tasks.atomic_effect.using(key="atomic-fence").enqueue("atomic-fence", pause_after_write=2)
    wait_until(lambda: tasks.EFFECT_WRITTEN % ("atomic-fence", 1) in worker.log(), 30, "the effect to be written")
    # Another delivery takes the row over, as after an expired lease.
    TaskRecord.objects.filter(key="atomic-fence").update(owner="elsewhere:1:thief")
    wait_until(lambda: "its outcome is discarded" in worker.log(), 30, "the success write to be refused")
    assert not Effect.objects.filter(key="atomic-fence").exists()
    stolen = row("atomic-fence")
    assert stolen is not None
    assert (stolen.status, stolen.owner) == (Status.RUNNING, "elsewhere:1:thief")


def test_a_failed_attempt_of_an_atomic_body_leaves_none_of_its_writes(start_worker):
    start_worker("default")
    handle = tasks.atomic_fails_once.enqueue("atomic-retry")
    done = wait_for_status(handle.key, Status.SUCCEEDED, 30)
    assert (done.attempts, done.result) == (2, 2)
    # The failed first attempt's write went with its transaction; the retry's committed with the success.
    assert list(Effect.objects.filter(key__startswith="atomic-retry:").values_list("key", flat=True)) == [
        "atomic-retry:attempt-2"
    ]


def test_a_long_pool_or_an_opted_out_task_commits_the_body_writes_as_they_happen():
    assert not pools.REPORTS.runs_atomic_effects
    assert pools.DEFAULT.runs_atomic_effects
    assert pools.DEFAULT.time_limit <= pools.ATOMIC_EFFECTS_MAX_TIME_LIMIT < pools.REPORTS.time_limit
    assert tasks.atomic_effect.runs_atomically() == (connection.vendor != "sqlite")
    assert not tasks.make_effect.runs_atomically()


def test_numbers_the_database_normalises_do_not_make_their_own_row_unclaimable(start_worker):
    start_worker("default")
    value = {"big": 1e16, "huge": 1.2345678901234567e30, "zero": -0.0, "small": 1.5e-07}
    handle = tasks.echo.enqueue(value)
    done = wait_for_status(handle.key, Status.SUCCEEDED, 30)
    assert done.result == {"big": 10**16, "huge": 1234567890123456700000000000000, "zero": 0.0, "small": 1.5e-07}
    assert done.attempts == 1


@pytest.mark.parametrize(("kind", "named"), [("nan", "float (nan)"), ("inf", "float (inf)"), ("nul", "NUL character")])
def test_a_result_the_database_refuses_fails_the_row_naming_it(start_worker, kind, named):
    start_worker("default")
    handle = tasks.unstorable_result.enqueue(kind)
    failed = wait_for_status(handle.key, Status.FAILED, 30)
    assert failed.error_type.endswith("ResultNotSerializableError")
    assert "['mean']" in failed.error_message
    assert named in failed.error_message
    assert failed.attempts == 1


def test_a_mismatching_message_fails_its_own_row_but_not_another_row(start_worker):
    worker = start_worker("default")
    # Two rows whose messages carry other arguments than the rows: one under the row's own id, one stray.
    own = pending_row_for("mismatch-own", "declared")
    other = pending_row_for("mismatch-other", "declared")
    headers = {publishing.KEY_HEADER: "mismatch-own"}
    tasks.make_effect.apply_async(("forged",), task_id=str(own.pk), headers=headers)
    tasks.make_effect.apply_async(("stray",), headers={publishing.KEY_HEADER: "mismatch-other"})

    failed = wait_for_status("mismatch-own", Status.FAILED, 30)
    assert failed.error_type.endswith("PayloadMismatchError")
    assert "'mismatch-own'" in failed.error_message
    wait_until(lambda: worker.log().count("PayloadMismatchError") >= 2, 30, "both deliveries to be refused")
    untouched = row("mismatch-other")
    assert untouched is not None
    assert (untouched.status, untouched.error_type) == (Status.PENDING, "")
    assert tasks.count("runs:forged") == tasks.count("runs:stray") == 0
    assert other.pk != own.pk


def test_arguments_that_no_longer_fit_the_task_fail_the_row_at_once(start_worker):
    start_worker("default")
    # A row written before the task's signature changed (a deploy): its arguments fit no longer.
    args = ["old", 1.0, 2.0, "removed parameter"]
    stale = TaskRecord.objects.create(
        key="stale-signature",
        task_name=tasks.make_effect.name,
        queue="default",
        payload_hash=payload_hash(tasks.make_effect.name, args, {}),
        args=args,
    )
    publishing.publish(stale)
    failed = wait_for_status("stale-signature", Status.FAILED, 30)
    assert failed.error_type.endswith("ArgumentsDoNotFitError")
    assert "do not fit the task's signature" in failed.error_message
    assert failed.attempts == 1  # not retried: no retry makes them fit
    assert tasks.count("runs:old") == 0


def test_retries_work_with_the_result_backend_unreachable(start_worker):
    # The result backend is a Redis nobody listens on: the status row alone carries the retries.
    worker = start_worker("default", env={"CELERY_RESULT_BACKEND": "redis://127.0.0.1:9/0"})
    handle = tasks.always_fails.enqueue("no-backend")
    done = wait_for_status(handle.key, Status.FAILED, 60)
    assert done.attempts == 3
    assert tasks.count("runs:no-backend") == 3
    assert "Connection refused" not in worker.log()
    assert worker.alive()


def test_a_message_the_worker_drops_before_running_leaves_the_reason_on_its_row(start_worker):
    worker = start_worker("default")
    unknown = pending_row_for("refused-unknown", "u")
    pickled = pending_row_for("refused-pickle", "p")
    stray = pending_row_for("refused-stray", "s")
    tasks.make_effect.app.send_task(
        "tests.tasks.idempotency.not_deployed_here",
        args=["u"],
        task_id=str(unknown.pk),
        queue="default",
        headers={publishing.KEY_HEADER: "refused-unknown"},
    )
    # The workers accept JSON only: a pickled body is dropped unread.
    headers = {publishing.KEY_HEADER: "refused-pickle"}
    tasks.make_effect.apply_async(("p",), task_id=str(pickled.pk), headers=headers, serializer="pickle")
    # A body that is not JSON at all: Celery cannot decode it.
    broken = pending_row_for("refused-broken", "b")
    queue = tasks.make_effect.app.amqp.queues["default"]
    with tasks.make_effect.app.producer_or_acquire() as producer:
        producer.publish(
            b"{not json",
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": tasks.make_effect.name, "id": str(broken.pk), publishing.KEY_HEADER: "refused-broken"},
        )
    # Under another row's key but not its message: that row is left alone.
    tasks.make_effect.app.send_task(
        "tests.tasks.idempotency.not_deployed_here", queue="default", headers={publishing.KEY_HEADER: "refused-stray"}
    )

    def noted(key: str) -> TaskRecord:
        wait_until(lambda: (r := row(key)) is not None and r.error_type != "", 30, f"the refusal of {key}")
        found = row(key)
        assert found is not None
        return found

    expected = {
        "refused-unknown": "'tests.tasks.idempotency.not_deployed_here'",
        "refused-pickle": "pickle",
        "refused-broken": "DecodeError",
    }
    for key, problem in expected.items():
        refused = noted(key)
        assert refused.status == Status.PENDING
        assert refused.error_type.endswith("MessageRefusedError")
        assert problem in refused.error_message
        assert "default-0@" in refused.error_message
    wait_until(lambda: worker.log().count("not_deployed_here") >= 4, 30, "the stray message to be dropped")
    untouched = row("refused-stray")
    assert untouched is not None
    assert (untouched.status, untouched.error_type) == (Status.PENDING, "")
    assert stray.pk == untouched.pk


def test_a_task_cancelled_on_broker_loss_runs_again_while_the_result_backend_is_down_too(start_worker, clean_broker):
    # Broker and result backend are one Redis, reached through a relay the test cuts, as a Redis restart would.
    port = urlsplit(clean_broker).port
    assert port is not None
    relay = TcpProxy(port)
    try:
        url = clean_broker.replace(f":{port}/", f":{relay.port}/")
        env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}
        worker = start_worker("default", *ONE_AT_A_TIME, env=env, name="redis-lost")
        wait_until(lambda: " ready." in worker.log(), 60, "the worker to be ready")
        tasks.atomic_effect.using(key="redis-lost").enqueue("redis-lost", pause_after_write=3)
        wait_until(lambda: tasks.EFFECT_WRITTEN % ("redis-lost", 1) in worker.log(), 30, "the body to run")
        relay.cut()
        # The worker cancels the task whose message Redis will deliver again; Celery then writes a RETRY
        # state to the (unreachable) backend, unless the task ignores it.
        wait_until(lambda: "Terminating it instead" in worker.log(), 30, "the worker to cancel the task")
        time.sleep(2)
        relay.restore()
        done = wait_for_status("redis-lost", Status.SUCCEEDED, 90)
        assert Effect.objects.filter(key="redis-lost").count() == 1
        assert done.attempts == 2
        assert worker.alive()
    finally:
        relay.close()


def pending_row_for(key: str, argument: str) -> TaskRecord:
    """Create the pending row of ``make_effect(argument)`` under ``key``, as ``enqueue`` would, unpublished."""
    return TaskRecord.objects.create(
        key=key,
        task_name=tasks.make_effect.name,
        queue="default",
        payload_hash=payload_hash(tasks.make_effect.name, [argument], {}),
        args=[argument],
    )
