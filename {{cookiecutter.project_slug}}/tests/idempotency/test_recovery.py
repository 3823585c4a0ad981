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
from {{ cookiecutter.project_slug }}.idempotency import maintenance, publishing
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord, WorkerLiveness
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, result_backend_transport_options

from support.servers import Process, find_binary, free_port, port_open, wait_until
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


def wait_final(key: str, timeout: float) -> TaskRecord:
    """Wait until the row of ``key`` succeeded and its effect is recorded exactly once; return the row."""
    wait_until(lambda: row(key).status == Status.SUCCEEDED, timeout, f"{key} to succeed")
    assert Effect.objects.filter(key=key).count() == 1
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

    own_redis.start()
    healed = time.monotonic()
    start_worker("default", *ONE_AT_A_TIME, env={"CELERY_BROKER_URL": own_redis.url}, name="after-redis")
    # Nobody enqueues again: a worker's recovery pass publishes the flagged row.
    done = wait_final("redis-down", 30)
    assert done.attempts == 1
    print(f"enqueue with Redis down took {took:.2f}s; delivered {time.monotonic() - healed:.1f}s after restart")
