"""Three RabbitMQ nodes on one machine: stop the quorum queue's leader under load; nothing is lost, no effect doubled.

Marked ``cluster``: ``make test-cluster`` runs it alone; ``make test`` runs it with the rest.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection

from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, kombu_queues

from support.servers import RabbitNode, ServiceUnavailableError, rabbitmq_cluster, unavailable, wait_until
from tests.conftest import _forget_connections, app_conf_restored
from tests.effects.models import Counter, Effect
from tests.tasks.shutdown import EFFECT_TASKS, ONCE_TASKS

pytestmark = [pytest.mark.workers, pytest.mark.cluster, pytest.mark.timeout(600)]

#: Calls of each task, the plain and the idempotent one, published during the test, a pair every
#: :data:`PUBLISH_EVERY` seconds.
LOAD = 300
PUBLISH_EVERY = 0.05


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[list[RabbitNode]]:
    """Point this process's Celery app at a three-node cluster (every node's URL, failover in order)."""
    try:
        with rabbitmq_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
            url = ";".join(node.url for node in nodes)
            with app_conf_restored("broker_url", "result_backend", "broker_transport_options", "task_queues") as conf:
                conf["broker_url"], conf["result_backend"] = url, redis_url
                conf["broker_transport_options"] = broker_transport_options(url, settings.RUN_DIR)
                conf["task_queues"] = kombu_queues(settings.WORKER_POOLS, url)
                _forget_connections()
                yield nodes
    except ServiceUnavailableError as exc:
        unavailable(str(exc))


def leader(node: RabbitNode, queue: str) -> str:
    """Return the node name leading ``queue``'s quorum, as ``node`` sees it."""
    for line in node.ctl("list_queues", "name", "leader", "--no-table-headers", "-q").splitlines():
        name, _, lead = line.partition("\t")
        if name == queue:
            return lead.strip()
    raise AssertionError(f"no queue {queue!r} on {node.nodename}")


def longest_gap(stamps: list[float]) -> float:
    """Return the longest time between two consecutive moments of ``stamps``."""
    ordered = sorted(stamps)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def test_stopping_the_leader_under_load_loses_nothing_and_doubles_nothing(cluster, start_worker, transactional_db):
    first = cluster[0]
    url = celery_app.conf.broker_url
    worker = start_worker("default", env={"CELERY_BROKER_URL": url})
    # The worker declared the queue through the first node: its leader is there, its members on all three.
    assert leader(first, "default") == first.nodename
    published: list[float] = []
    failures: list[str] = []

    def publish() -> None:
        try:
            for n in range(LOAD):
                try:
                    EFFECT_TASKS["default"].apply_async((f"cluster-{n}", 0.0), retry=True)
                    # The row first, then the publish on commit: a publish that fails is flagged for the recovery pass.
                    ONCE_TASKS["default"].enqueue(f"cluster-once-{n}")
                    published.append(time.monotonic())
                except Exception as exc:  # a publish that failed even after kombu's retries is a lost task
                    failures.append(f"cluster-{n}: {exc!r}")
                time.sleep(PUBLISH_EVERY)
        finally:
            connection.close()  # this thread's own; left open, it outlives the test database

    publisher = threading.Thread(target=publish, name="publisher")
    publisher.start()
    wait_until(lambda: Effect.objects.filter(key__startswith="cluster-").count() >= LOAD // 4, 60, "load to flow")
    stopped, sent_before = time.monotonic(), len(published)
    first.stop()  # the leader and the node both clients are connected to
    wait_until(lambda: leader(cluster[1], "default") != first.nodename, 60, "a new leader to be elected")
    first.start()
    first.wait_ready()
    back, sent_while_down = time.monotonic(), len(published) - sent_before
    publisher.join(timeout=120)

    wait_until(lambda: Effect.objects.filter(key__startswith="cluster-").count() == LOAD, 120, "every task to run")
    once_rows = TaskRecord.objects.filter(task_name=ONCE_TASKS["default"].name)
    wait_until(lambda: once_rows.filter(status=Status.SUCCEEDED).count() == LOAD, 120, "every idempotent call to end")
    # A plain task runs at least once: a publish whose confirm died with the node is sent again through the next
    # one and may queue a second copy, which two pool processes can run at the same moment (its guard's race).
    repeats = Counter.objects.filter(name__regex=r"^(repeat|duplicate):cluster-").count()
    once = dict(Counter.objects.filter(name__startswith="once:cluster-once-").values_list("name", "value"))
    done = [e.created.timestamp() for e in Effect.objects.filter(key__startswith="cluster-")]
    publish_pause, consume_pause = longest_gap(published), longest_gap(done)
    print(
        f"\ncluster: {LOAD} tasks ({sent_before} sent before the stop, {sent_while_down} while the node was "
        f"down), leader {first.nodename} stopped and restarted in {back - stopped:.1f}s; "
        f"longest pause: publishing {publish_pause:.1f}s, consuming {consume_pause:.1f}s; "
        f"{len(failures)} failed publishes; plain tasks run again: {repeats}; idempotent effects: "
        f"{sum(once.values())} for {len(once)} calls"
    )
    assert failures == []
    assert len(once) == LOAD
    assert {name: runs for name, runs in once.items() if runs != 1} == {}
    assert worker.alive()
