"""The queue panel counts what the broker itself holds: waiting, unacknowledged, dead-lettered, and owed in all."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.jobs.queues import queue_depths
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, by_queue, kombu_queues, pools_in_force

from support.servers import wait_until
from tests.conftest import BROKERS, _forget_connections


def publish(counts: dict[str, int]) -> None:
    """Send ``counts[queue]`` messages to each queue, for tasks no worker here consumes."""
    for queue, count in counts.items():
        for n in range(count):
            celery_app.send_task("queue-depth-probe", args=(n,), queue=queue)


def test_depths_on_redis_are_the_queue_lists(clean_broker):
    zero = dict.fromkeys(pools.queue_names(pools_in_force()), 0)
    none = dict.fromkeys(zero)
    assert queue_depths() == {
        "transport": "redis",
        "queues": zero,
        "unacked": zero,
        "dead": none,
        "owed": zero,
        "error": None,
    }
    publish({"images": 3, "reports": 1})
    depths = queue_depths()
    assert depths["queues"] == {"default": 0, "images": 3, "emails": 0, "reports": 1}
    client = redis.Redis.from_url(clean_broker)
    assert client.llen("images") == 3


def test_the_admin_shows_each_pool_s_queue_and_refuses_a_requeue_where_there_are_no_dead_letters(
    clean_broker, admin_client, client
):
    publish({"images": 2})
    page = admin_client.get("/admin/jobs/job/queues/")
    assert page.status_code == 200
    rows = {row["queue"]: row for row in page.context["rows"]}
    assert set(rows) == set(pools.queue_names(pools_in_force()))
    assert (rows["images"]["queues"], rows["images"]["dead"]) == (2, None)  # Redis has no dead-letter queues
    assert b'data-queue="images"' in page.content
    assert b"Requeue" not in page.content
    assert b"Broker queues" in admin_client.get("/admin/jobs/job/").content  # the link from the jobs list
    answer = admin_client.post("/admin/jobs/job/queues/default/requeue-dead/", follow=True)
    assert "Dead-letter queues exist on RabbitMQ only" in answer.content.decode()
    assert client.get("/admin/jobs/job/queues/").status_code == 302  # to the admin's login


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_owed_counts_the_messages_a_worker_reserved_not_only_the_waiting_ones(clean_broker):
    publish({"images": 3, "reports": 1})
    with celery_app.connection_for_read() as connection:
        # As a worker's prefetch does: take one message without acknowledging it.
        (queue,) = kombu_queues([by_queue("images")], clean_broker)
        held = queue.bind(connection.default_channel).get(no_ack=False)
        assert held is not None

        def counted() -> bool:
            depths = queue_depths()
            return (depths["queues"]["images"], depths["unacked"]["images"]) == (2, 1)

        # RabbitMQ's management API samples its counts: wait for them.
        wait_until(counted, 15, "the reserved message to be counted")
        depths = queue_depths()
        assert depths["owed"] == {"default": 0, "images": 3, "emails": 0, "reports": 1}
        assert depths["error"] is None
        held.requeue()


def test_the_owed_endpoint_answers_only_the_autoscaler_s_token(clean_broker, client, settings):
    settings.QUEUE_METRICS_TOKEN = ""
    assert client.get("/api/queues/owed").status_code == 404  # not configured: not there
    settings.QUEUE_METRICS_TOKEN = "s3cret-token"
    assert client.get("/api/queues/owed", headers={"Authorization": "Bearer wrong"}).status_code == 404
    publish({"emails": 2})
    response = client.get("/api/queues/owed", headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 200
    # KEDA's valueLocation owed.<pool> reads exactly this.
    assert response.json() == {"owed": {"default": 0, "images": 0, "emails": 2, "reports": 0}, "error": None}


@pytest.fixture
def filesystem_broker(tmp_path: Path):
    """Point this process's Celery app at a filesystem broker in ``tmp_path``."""
    conf = celery_app.conf
    previous = (conf.broker_url, conf.broker_transport_options)
    options = broker_transport_options("filesystem://", tmp_path, pools_in_force())
    for key in ("data_folder_in", "control_folder"):
        Path(options[key]).mkdir(parents=True, exist_ok=True)
    conf["broker_url"], conf["broker_transport_options"] = "filesystem://", options
    _forget_connections()
    yield Path(options["data_folder_in"])
    conf["broker_url"], conf["broker_transport_options"] = previous
    _forget_connections()


def test_depths_on_the_filesystem_broker_are_its_message_files(filesystem_broker):
    assert queue_depths()["queues"] == dict.fromkeys(pools.queue_names(pools_in_force()), 0)
    publish({"emails": 2, "default": 1})
    depths = queue_depths()
    assert depths["transport"] == "filesystem"
    assert depths["queues"] == {"default": 1, "images": 0, "emails": 2, "reports": 0}
    assert len(list(filesystem_broker.glob("*.emails.msg"))) == 2


def test_unreachable_broker_is_reported_not_shown_as_empty(settings):
    conf = celery_app.conf
    previous = (conf.broker_url, conf.broker_transport_options)
    # A loopback port nothing listens on; one attempt, no retries.
    conf["broker_url"] = "redis://127.0.0.1:9/0"
    conf["broker_transport_options"] = {"max_retries": 0}
    _forget_connections()
    try:
        depths = queue_depths()
    finally:
        conf["broker_url"], conf["broker_transport_options"] = previous
        _forget_connections()
    assert depths["error"]
    assert set(depths["queues"].values()) == set(depths["owed"].values()) == {None}
