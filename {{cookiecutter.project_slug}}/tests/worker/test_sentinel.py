"""Redis through Sentinel: broker and result backend by a ``sentinel://`` URL, and a failover the worker survives."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, result_backend_transport_options

from support.servers import SentinelGroup, ServiceUnavailableError, redis_sentinel_group, unavailable, wait_until
from tests.conftest import _forget_connections, app_conf_restored
from tests.tasks.shutdown import EFFECT_TASKS

pytestmark = [pytest.mark.workers, pytest.mark.timeout(180)]


@pytest.fixture
def sentinel(transactional_db: None, tmp_path: Path) -> Iterator[SentinelGroup]:
    """Point this process's Celery app at a Sentinel-watched Redis for broker and results."""
    try:
        with redis_sentinel_group(tmp_path / "sentinel") as group:
            keys = ("broker_url", "result_backend", "broker_transport_options", "result_backend_transport_options")
            with app_conf_restored(*keys) as conf:
                conf["broker_url"] = conf["result_backend"] = group.url
                conf["broker_transport_options"] = broker_transport_options(group.url, settings.RUN_DIR)
                conf["result_backend_transport_options"] = result_backend_transport_options(group.url, settings.RUN_DIR)
                _forget_connections()
                yield group
    except ServiceUnavailableError as exc:
        unavailable(str(exc))


def test_broker_and_results_by_sentinel_url_survive_a_failover(sentinel, start_worker):
    assert broker_transport_options(sentinel.url, settings.RUN_DIR)["master_name"] == "mymaster"
    worker = start_worker("default", env={"CELERY_BROKER_URL": sentinel.url, "CELERY_RESULT_BACKEND": sentinel.url})
    assert EFFECT_TASKS["default"].delay("before-failover").get(timeout=30) == "done"

    time.sleep(1)  # the worker has acknowledged the first task and idles on the queue
    sentinel.master.signal(signal.SIGKILL)  # the master dies; the Sentinel promotes the replica
    wait_until(lambda: sentinel.current_master_port() == sentinel.replica_port, 30, "the Sentinel to fail over")
    _forget_connections()

    # Client and worker ask the Sentinel for the master again: the same URL reaches the promoted replica.
    assert EFFECT_TASKS["default"].delay("after-failover").get(timeout=60) == "done"
    assert worker.alive()
