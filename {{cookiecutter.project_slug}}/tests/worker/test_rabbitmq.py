"""RabbitMQ as the broker: quorum queues, the delivery limit into a dead-letter queue, native delayed delivery."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from django.conf import settings
from kombu.transport.native_delayed_delivery import MAX_LEVEL, level_name

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.jobs.queues import queue_depths
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app

from support.servers import wait_until
from tests.brokers import empty_queues
from tests.tasks.shutdown import EFFECT_TASKS, bump, count, poison_plain

pytestmark = [pytest.mark.workers, pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)]

REGISTRY = settings.WORKER_POOLS


def test_a_plain_task_that_kills_its_worker_is_dead_lettered_after_max_attempts_and_requeued(
    start_worker, clean_broker, admin_client, client
):
    pool = pools.by_queue("default", REGISTRY)
    worker = start_worker("default")
    poison_plain.delay("plain-poison")

    # No status row counts these deliveries: the quorum queue's delivery limit ends the loop.
    wait_until(lambda: queue_depths()["dead"]["default"] == 1, 60, "the message to be dead-lettered")
    assert count("started:plain-poison") == pool.max_attempts
    time.sleep(1)
    assert count("started:plain-poison") == pool.max_attempts  # nothing delivers it again
    depths = queue_depths()
    assert (depths["queues"]["default"], depths["dead"]["default"]) == (0, 1)
    assert "Dead-letter queue default.dead declared for the default pool" in worker.log()

    # The admin's queues page shows it too, with a Requeue button for staff.
    page = admin_client.get("/admin/jobs/job/queues/")
    assert {row["queue"]: row["dead"] for row in page.context["rows"]}["default"] == 1
    assert b"Requeue 1" in page.content

    bump("cure:plain-poison")
    # The queues panel's Requeue button: staff only.
    assert client.post("/api/queues/default/requeue-dead", {}, content_type="application/json").status_code == 401
    response = admin_client.post("/api/queues/default/requeue-dead", {}, content_type="application/json")
    assert response.json() == {"queue": "default", "requeued": 1}
    unknown = admin_client.post("/api/queues/nope/requeue-dead", {}, content_type="application/json")
    assert unknown.status_code == 404
    assert "known queues: default, images, emails, reports" in unknown.json()["error"]["message"]
    wait_until(lambda: count("started:plain-poison") == pool.max_attempts + 1, 30, "the requeued message to run")
    wait_until(lambda: queue_depths()["dead"]["default"] == 0, 10, "the dead-letter queue to be empty")
    assert worker.alive()
    # The admin's button does what the panel's does; with nothing left, it says so.
    done = admin_client.post("/admin/jobs/job/queues/default/requeue-dead/", follow=True)
    assert "Requeued 0 dead-lettered message(s) to default." in done.content.decode()


def test_countdown_waits_in_the_broker_not_in_the_worker(start_worker, clean_broker):
    worker = start_worker("default")
    sent = time.monotonic()
    result = EFFECT_TASKS["default"].apply_async(("delayed", 0.0), countdown=4)
    time.sleep(1.5)
    # Native delayed delivery: the message waits in RabbitMQ's delay queue for 4 s (binary 100: level 2),
    # not reserved by the worker, which has not even received it.
    with celery_app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        waiting = channel.queue_declare(queue="celery_delayed_2", passive=True).message_count
    assert waiting == 1
    assert f"[{result.id}] received" not in worker.log()
    assert count("started:delayed") == 0
    wait_until(lambda: count("started:delayed") == 1, 30, "the delayed task to run")
    took = time.monotonic() - sent
    assert 3.5 < took < 20, took
    assert "Global QoS is disabled" in worker.log()


def test_broker_restart_mid_task_delivers_the_row_again_with_one_effect(start_worker, clean_broker, rabbitmq):
    from {{ cookiecutter.project_slug }}.core.celery_internals import forget_connections
    from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord

    from tests.effects.models import Effect
    from tests.tasks import idempotency as tasks

    worker = start_worker("reports", name="rabbit-restart")
    tasks.long_report.using(key="rabbit-restart").enqueue("rabbit-restart", seconds=3.0)
    wait_until(lambda: tasks.count("runs:rabbit-restart") == 1, 30, "the report to start")
    stopped = time.monotonic()
    rabbitmq.stop()  # the worker's connection drops with the report running and its message unacknowledged
    rabbitmq.start()
    rabbitmq.wait_ready()
    forget_connections(celery_app)
    healed = time.monotonic()

    def succeeded() -> bool:
        found = TaskRecord.objects.filter(key="rabbit-restart").first()
        return found is not None and found.status == Status.SUCCEEDED

    wait_until(succeeded, 90, "the report to be delivered again and succeed")
    # Run twice (the first run was cancelled when the connection dropped), its effect recorded once.
    assert Effect.objects.filter(key="rabbit-restart").count() == 1
    assert tasks.count("runs:rabbit-restart") == 2
    assert worker.alive()
    print(
        f"\nRabbitMQ restart mid-report: broker down {healed - stopped:.1f}s, "
        f"report done {time.monotonic() - healed:.1f}s after it was back"
    )


def test_emptying_the_broker_waits_for_a_stopped_workers_messages_to_come_back(start_worker, clean_broker, redis_url):
    """Between tests the queues are emptied only once no consumer holds messages: none comes back afterwards.

    A worker frozen with SIGSTOP keeps its connection, and its prefetched messages, for as long as it likes: the
    purge must not report the queue empty meanwhile. Once it is killed, its messages return ready and go with it.
    """
    worker = start_worker("emails")
    for number in range(40):  # within the threads pool's prefetch: all held unacknowledged by the worker
        EFFECT_TASKS["emails"].delay(f"held-{number}", 5.0)
    with celery_app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        wait_until(lambda: channel.queue_declare(queue="emails", passive=True).message_count == 0, 30, "the prefetch")
        os.killpg(worker.pid, signal.SIGSTOP)
        with pytest.raises(TimeoutError, match="the consumers of queue emails to go"):
            empty_queues(clean_broker, redis_url, consumers_gone_within=2)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

        empty_queues(clean_broker, redis_url)
        time.sleep(2)  # a message given back after the purge would be ready by now
        left = channel.queue_declare(queue="emails", passive=True)
        assert (left.message_count, left.consumer_count) == (0, 0)


def test_emptying_the_broker_drops_a_retry_counting_down(start_worker, clean_broker, redis_url):
    """A message with a countdown waits in the queues of native delayed delivery: emptying the broker drops it too.

    Left there, it ran in a later test: an idempotent retry of one test landed in the rolling restart of the next.
    """
    start_worker("emails").stop(timeout=30)  # a worker declares the delayed delivery queues as it starts
    EFFECT_TASKS["emails"].apply_async(("later", 0.0), countdown=600)
    with celery_app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        wait_until(lambda: delayed(channel) == 1, 10, "the message to wait out its countdown")
        empty_queues(clean_broker, redis_url)
        assert delayed(channel) == 0


def delayed(channel: Any) -> int:
    """Return how many messages wait in the queues of native delayed delivery."""
    levels = range(MAX_LEVEL + 1)
    return sum(channel.queue_declare(queue=level_name(level), passive=True).message_count for level in levels)
