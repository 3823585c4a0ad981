"""The embedded filesystem broker does not keep, forever, the events of a Flower that stopped."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu.transport import filesystem

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker import brokerfiles
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, kombu_queues

from tests.config.test_settings import PACKAGE, run_django

TASK_QUEUES = {p.queue for p in pools.POOLS}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Celery]:
    """Return a Celery app on a filesystem broker under ``tmp_path``, with the project's folders and queues."""
    options = broker_transport_options("filesystem://", tmp_path)
    for name in ("data_folder_in", "control_folder"):
        Path(options[name]).mkdir(parents=True)
    app = Celery("brokerfiles", set_as_current=False)
    app.conf.update(broker_url="filesystem://", broker_transport_options=options, task_queues=kombu_queues())
    # The filesystem transport keeps the exchanges it saw declared in one state per process: start from none,
    # so an earlier test's apps (other event exchange options) do not make this broker refuse a redeclare.
    filesystem.Transport.global_state.clear()
    yield app
    filesystem.Transport.global_state.clear()


def files_of(folder: Path, queue: str) -> list[Path]:
    """Return the message files of ``queue`` in ``folder``."""
    return [path for path in folder.iterdir() if brokerfiles.message_queue(path.name) == queue]


def age(paths: list[Path], seconds: float) -> None:
    """Make the files ``paths`` look ``seconds`` old."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def test_events_of_a_stopped_flower_are_deleted_and_its_queue_unbound(broker: Celery, tmp_path: Path):
    messages, control = tmp_path / "broker" / "messages", tmp_path / "broker" / "control"
    with broker.connection_for_write() as connection:
        # A Flower binds its own events queue, takes one event, and stops without unbinding (as it does).
        received: list[dict[str, object]] = []
        receiver = broker.events.Receiver(connection, handlers={"*": received.append})
        dispatcher = broker.events.Dispatcher(connection)
        receiver.queue.bind(connection.default_channel).declare()
        dispatcher.send("worker-heartbeat")
        receiver.capture(limit=1, timeout=5, wakeup=False)
        assert received, "the events queue got no event"
        events_queue = receiver.queue.name
        for _ in range(20):
            dispatcher.send("worker-heartbeat")
        # A task waits in its pool's queue, an old one: it must stay, whoever is listening.
        with broker.producer_or_acquire() as producer:
            producer.publish({"task": "t"}, exchange="default", routing_key="default", declare=kombu_queues()[:1])
        dispatcher.close()
    stale = files_of(messages, events_queue)
    assert len(stale) == 20
    age([*stale, *files_of(messages, "default")], 3600)

    swept = brokerfiles.sweep(messages, control, TASK_QUEUES, max_age=300)

    assert swept.files == 20
    assert swept.unbound == {events_queue}
    assert files_of(messages, events_queue) == []
    assert len(files_of(messages, "default")) == 1
    # Unbound: events sent from now on are not written for the stopped Flower any more.
    with broker.connection_for_write() as connection:
        broker.events.Dispatcher(connection).send("worker-heartbeat")
    assert files_of(messages, events_queue) == []


def test_young_messages_of_a_live_consumer_stay_bound(broker: Celery, tmp_path: Path):
    messages, control = tmp_path / "broker" / "messages", tmp_path / "broker" / "control"
    with broker.connection_for_write() as connection:
        receiver = broker.events.Receiver(connection, handlers={})
        receiver.queue.bind(connection.default_channel).declare()
        broker.events.Dispatcher(connection).send("worker-heartbeat")
    swept = brokerfiles.sweep(messages, control, TASK_QUEUES, max_age=300)
    assert (swept.files, swept.unbound) == (0, set())
    assert len(files_of(messages, receiver.queue.name)) == 1


def test_a_max_age_that_is_not_positive_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="max_age must be a positive number of seconds, got 0"):
        brokerfiles.sweep(tmp_path, tmp_path, TASK_QUEUES, max_age=0)


def test_beat_sweeps_the_filesystem_broker_only(tmp_path):
    show = ["-c", "import django; django.setup(); from django.conf import settings as s; print(s.CELERY_BEAT_SCHEDULE)"]
    local = run_django(show, f"{PACKAGE}.config.settings.local", {"RUN_DIR": str(tmp_path)})
    scheduled = f"'{PACKAGE}.worker.tasks.sweep_broker_files', 'schedule': 300.0"
    assert scheduled in local.stdout, local.stdout + local.stderr
    env = {"RUN_DIR": str(tmp_path), "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    redis = run_django(show, f"{PACKAGE}.config.settings.local", env)
    assert redis.returncode == 0, redis.stderr
    assert "sweep_broker_files" not in redis.stdout


def test_the_periodic_task_sweeps_the_brokers_folders_from_settings(broker: Celery, settings, tmp_path: Path):
    from {{ cookiecutter.project_slug }}.worker.tasks import sweep_broker_files

    settings.CELERY_BROKER_TRANSPORT_OPTIONS = broker.conf.broker_transport_options
    settings.BROKER_FILES_MAX_AGE = 300
    with broker.connection_for_write() as connection:
        receiver = broker.events.Receiver(connection, handlers={})
        receiver.queue.bind(connection.default_channel).declare()
        broker.events.Dispatcher(connection).send("worker-heartbeat")
    age(files_of(tmp_path / "broker" / "messages", receiver.queue.name), 301)
    assert sweep_broker_files.run() == {"deleted": 1, "unbound": [receiver.queue.name]}
