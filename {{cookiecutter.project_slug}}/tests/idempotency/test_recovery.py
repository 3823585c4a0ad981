"""Faults the status row recovers from by itself: broker and database loss, unpublished rows, dead worker nodes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from {{ cookiecutter.project_slug }}.core.celery_internals import forget_connections
from {{ cookiecutter.project_slug }}.idempotency import publishing
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord, WorkerLiveness
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, result_backend_transport_options

from support.servers import Process, find_binary, free_port, port_open, wait_until
from tests.conftest import BROKERS
from tests.effects.models import Effect
from tests.tasks import idempotency as tasks

pytestmark = [pytest.mark.workers, pytest.mark.timeout(180)]

ONE_AT_A_TIME = ("-c", "1", "--prefetch-multiplier", "1")
#: A row whose owner node stopped proving it is alive is reclaimed within this many seconds (test settings).
LIVENESS_BOUND = settings.IDEMPOTENCY_LIVENESS_TIMEOUT + 2 * settings.IDEMPOTENCY_LIVENESS_INTERVAL + 5


class RestartableRedis:
    """A redis-server of this test alone, on a fixed port, that the test can kill -9 and start again."""

    def __init__(self, workdir: Path) -> None:
        binary = find_binary("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Process | None = None

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = Process([*argv, "--dir", str(self.workdir)], self.workdir / "redis.log").start()
        wait_until(lambda: port_open(self.port), 20, "redis-server to listen")

    def kill(self) -> None:
        """Kill -9: every message in it (queued or unacknowledged) is lost, as after a crash without persistence."""
        assert self.proc is not None
        self.proc.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        wait_until(lambda: not port_open(self.port), 10, "redis-server to stop listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture
def own_redis(transactional_db: None, tmp_path: Path) -> Iterator[RestartableRedis]:
    """Point this process's Celery app at a Redis the test can kill; workers get it with ``worker_env_for``."""
    server = RestartableRedis(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    previous = (celery_app.conf.broker_url, celery_app.conf.result_backend, celery_app.conf.broker_transport_options)
    celery_app.conf["broker_url"] = celery_app.conf["result_backend"] = server.url
    celery_app.conf.broker_transport_options = broker_transport_options(
        server.url, settings.RUN_DIR, settings.WORKER_POOLS
    )
    celery_app.conf.result_backend_transport_options = result_backend_transport_options(
        server.url, settings.RUN_DIR, settings.WORKER_POOLS
    )
    forget_connections(celery_app)
    yield server
    celery_app.conf["broker_url"], celery_app.conf["result_backend"] = previous[:2]
    celery_app.conf.broker_transport_options = previous[2]
    forget_connections(celery_app)
    server.stop()


def row(key: str) -> TaskRecord:
    return TaskRecord.objects.get(key=key)


def wait_final(key: str, timeout: float, effect: str | None = None) -> TaskRecord:
    """Wait until the row of ``key`` succeeded and its effect (by default named ``key``) is recorded once."""
    wait_until(lambda: row(key).status == Status.SUCCEEDED, timeout, f"{key} to succeed")
    assert Effect.objects.filter(key=effect or key).count() == 1
    return row(key)


def test_enqueue_while_redis_is_down_answers_at_once_flags_the_row_and_delivers_later(own_redis, start_worker):
    own_redis.kill()
    started = time.monotonic()
    tasks.make_effect.using(key="redis-down").enqueue("redis-down")
    took = time.monotonic() - started
    # The publish is bounded by IDEMPOTENCY_PUBLISH_TIMEOUT, not by the broker's or result backend's reconnect loop.
    assert took < settings.IDEMPOTENCY_PUBLISH_TIMEOUT * 2 + 1, took
    flagged = row("redis-down")
    assert (flagged.status, flagged.error_type) == (Status.PENDING, publishing.PUBLISH_FAILED)
    # A batch goes out over one connection: bounded too, and every row of it flagged.
    started = time.monotonic()
    batch = tasks.make_effect.enqueue_many([(("batch-a",), {}), (("batch-b",), {})])
    assert time.monotonic() - started < settings.IDEMPOTENCY_PUBLISH_TIMEOUT * 4 + 1
    assert {row(h.key).error_type for h in batch} == {publishing.PUBLISH_FAILED}

    own_redis.start()
    healed = time.monotonic()
    start_worker("default", *ONE_AT_A_TIME, env={"CELERY_BROKER_URL": own_redis.url}, name="after-redis")
    # Nobody enqueues again: a worker's recovery pass publishes the flagged row.
    done = wait_final("redis-down", 30)
    assert done.attempts == 1
    for handle, name in zip(batch, ("batch-a", "batch-b"), strict=True):
        assert wait_final(handle.key, 30, effect=name).attempts == 1
    print(f"enqueue with Redis down took {took:.2f}s; delivered {time.monotonic() - healed:.1f}s after restart")


def reports_worker(start_worker, name: str, broker_url: str | None = None, env: dict[str, str] | None = None):
    """Start a worker of the reports pool (prefetch 1: it holds no message it is not running)."""
    extra = {"CELERY_BROKER_URL": broker_url} if broker_url else {}
    return start_worker("reports", env={**extra, **(env or {})}, name=name)


def test_redis_killed_mid_task_and_restarted_the_row_is_delivered_again(own_redis, start_worker):
    worker = reports_worker(start_worker, "redis-crash", own_redis.url)
    tasks.long_report.using(key="crash-report").enqueue("crash-report", seconds=3.0)
    wait_until(lambda: tasks.count("runs:crash-report") == 1, 30, "the report to start")
    own_redis.kill()  # the queue, the unacked message and the result backend are gone
    time.sleep(2)
    own_redis.start()
    healed = time.monotonic()
    # Nobody enqueues again: the worker's recovery pass sees a pending (or orphaned) row and an empty queue.
    bound = settings.IDEMPOTENCY_REPUBLISH_AFTER * 2 + LIVENESS_BOUND + 10
    done = wait_final("crash-report", bound)
    took = time.monotonic() - healed
    assert took < bound
    assert done.attempts >= 1
    assert worker.alive()
    print(f"Redis kill -9 mid-report: final {took:.1f}s after the restart, attempts {done.attempts}")


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_committed_row_never_published_is_delivered_by_the_recovery_pass(transactional_db, start_worker):
    # As if the web process died between the commit and the publish: the row exists, no message does. On RabbitMQ
    # the pass sees the empty queue by a passive declare (a plain one of a quorum queue would close the channel).
    call = tasks.long_report.prepare_call(("never-sent",), {})
    call.record().save()
    worker = reports_worker(start_worker, "unpublished")
    started = time.monotonic()
    done = wait_final(call.key, 30, effect="never-sent")
    took = time.monotonic() - started
    assert done.attempts == 1
    assert "no sign of its message" in worker.log()
    print(f"committed but never published: final {took:.1f}s after the worker started")


def test_worker_node_sigkilled_mid_task_is_reclaimed_by_another_worker_before_the_lease(start_worker):
    heir = start_worker("default", name="heir-node")  # any worker's recovery pass reclaims it
    doomed = reports_worker(start_worker, "doomed-node")
    tasks.long_report.using(key="orphan-report").enqueue("orphan-report", seconds=4.0)
    wait_until(lambda: tasks.count("runs:orphan-report") == 1, 30, "the report to start")
    time.sleep(1)
    held = row("orphan-report")
    assert (held.status, held.owner.split("@")[0]) == (Status.RUNNING, "doomed-node")
    assert held.lease_expires_at is not None
    os.killpg(doomed.pid, signal.SIGKILL)  # the node and its pool child vanish, as with a lost host
    doomed.wait(timeout=10)
    killed = time.monotonic()
    wait_until(lambda: row("orphan-report").owner != held.owner, LIVENESS_BOUND, "the row to be reclaimed")
    reclaimed_after = time.monotonic() - killed
    # Reclaimed from the liveness record, not after the lease (which the progress reports kept extending).
    assert timezone.now() < held.lease_expires_at
    survivor = reports_worker(start_worker, "survivor-node")
    done = wait_final("orphan-report", 60)
    assert done.attempts == 2
    assert "stopped proving it is alive" in heir.log() + survivor.log()
    # A SIGKILL leaves the node's record behind, no longer renewed.
    assert WorkerLiveness.objects.get(node__startswith="doomed-node@").alive_until < timezone.now()
    print(f"worker node SIGKILLed: its row reclaimed {reclaimed_after:.1f}s after the kill")


def test_a_live_worker_running_a_long_task_is_never_robbed(start_worker):
    runner = reports_worker(start_worker, "long-runner")
    start_worker("default", name="watcher")  # a second node running recovery passes all along
    long = settings.IDEMPOTENCY_LIVENESS_TIMEOUT * 2 + 1  # longer than a liveness lapse would allow
    tasks.long_report.using(key="long-report").enqueue("long-report", seconds=long)
    done = wait_final("long-report", long + 30)
    assert (done.attempts, tasks.count("runs:long-report")) == (1, 1)
    assert WorkerLiveness.objects.filter(node__startswith="long-runner@").exists()
    runner.stop()  # a clean stop removes the node's liveness record
    assert not WorkerLiveness.objects.filter(node__startswith="long-runner@").exists()


def test_postgresql_lost_mid_task_the_row_is_delivered_again_once_it_is_back(start_worker, worker_env):
    from django.db import connection

    from support.servers import TcpProxy

    port = connection.settings_dict["PORT"]
    proxy = TcpProxy(int(port))
    try:
        database_url = worker_env["DATABASE_URL"].replace(f":{port}/", f":{proxy.port}/")
        worker = reports_worker(start_worker, "db-outage", env={"DATABASE_URL": database_url})
        tasks.long_report.using(key="db-report").enqueue("db-report", seconds=3.0)
        wait_until(lambda: tasks.count("runs:db-report") == 1, 30, "the report to start")
        time.sleep(1)
        proxy.cut()  # the task's next progress report and its bookkeeping fail; the message is acked
        time.sleep(4)
        proxy.restore()
        healed = time.monotonic()
        done = wait_final("db-report", 30)
        took = time.monotonic() - healed
        # The worker's own pass gives the orphaned row back within an interval; the lease would take 12 s more.
        assert took < 3.0 + 5, took
        assert done.attempts == 2
        assert tasks.count("runs:db-report") == 2
        assert worker.alive()
        print(f"PostgreSQL lost mid-report: final {took:.1f}s (+3 s run) after it was back")
    finally:
        proxy.close()


def test_republish_rule_leaves_a_queued_backlog_alone_and_publishes_what_the_queue_has_passed(clean_broker, db):
    from datetime import timedelta

    import redis

    from {{ cookiecutter.project_slug }}.idempotency import maintenance

    now = timezone.now()
    grace = timedelta(seconds=settings.IDEMPOTENCY_REPUBLISH_AFTER)  # the reports pool prefetches 1

    def pending(name: str, sent_ago: float) -> TaskRecord:
        record = tasks.long_report.prepare_call((name,), {}, key=name).record()
        record.published_at = now - timedelta(seconds=sent_ago)
        record.save()
        return record

    backlog = [pending(f"queued-{n}", sent_ago=grace.total_seconds() * 3) for n in range(5)]
    client = redis.Redis.from_url(clean_broker)
    client.lpush("reports", *[b"a message" for _ in backlog])  # their messages are still in the queue
    assert maintenance.republish_owed(now=now) == ()
    # A row sent two graces after them has been claimed: the queue has passed them, so their messages are gone.
    later = pending("claimed-later", sent_ago=grace.total_seconds())
    TaskRecord.objects.filter(pk=later.pk).update(status=Status.RUNNING, started_at=now)
    assert set(maintenance.republish_owed(now=now)) == {r.key for r in backlog}
    assert all(row(r.key).published_at == now for r in backlog)
    # Republished now: not again until another grace has passed.
    assert maintenance.republish_owed(now=now + grace / 2) == ()
    # A young row in an empty queue waits for its grace; after it, it is published.
    client.delete("reports")
    young = pending("young", sent_ago=0)
    assert young.key not in maintenance.republish_owed(now=now)
    assert young.key in maintenance.republish_owed(now=now + grace * 2)


def test_rows_pending_before_the_upgrade_get_a_publish_time_so_the_recovery_pass_judges_them(transactional_db):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("idempotency", "0001_initial")], [("idempotency", "0002_liveness")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps.get_model("idempotency", "TaskRecord")
        pending = old.objects.create(key="old-pending", task_name="t", queue="default", payload_hash="h")
        old.objects.create(key="old-done", task_name="t", queue="default", payload_hash="h", status="succeeded")
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
    # Read as of 0002: later migrations add columns this state does not have yet.
    upgraded = MigrationExecutor(connection).loader.project_state(after).apps.get_model("idempotency", "TaskRecord")
    try:
        assert upgraded.objects.get(key="old-pending").published_at == pending.enqueued_at
        assert upgraded.objects.get(key="old-done").published_at is None
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
