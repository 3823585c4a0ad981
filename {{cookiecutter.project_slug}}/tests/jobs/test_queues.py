"""The queue-depth panel counts what waits in the broker itself: Redis lists, or the filesystem broker's files."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.jobs.queues import queue_depths
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, pools_in_force

from tests.conftest import _forget_connections


def publish(counts: dict[str, int]) -> None:
    """Send ``counts[queue]`` messages to each queue, for tasks no worker here consumes."""
    for queue, count in counts.items():
        for n in range(count):
            celery_app.send_task("queue-depth-probe", args=(n,), queue=queue)


def test_depths_on_redis_are_the_queue_lists(clean_broker):
    assert queue_depths() == {
        "transport": "redis",
        "queues": dict.fromkeys(pools.queue_names(pools_in_force()), 0),
        "error": None,
    }
    publish({"images": 3, "reports": 1})
    depths = queue_depths()
    assert depths["queues"] == {"default": 0, "images": 3, "emails": 0, "reports": 1}
    client = redis.Redis.from_url(clean_broker)
    assert client.llen("images") == 3


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
    assert set(depths["queues"].values()) == {None}
