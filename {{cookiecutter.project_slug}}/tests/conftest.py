"""Fixtures that start real services on loopback and real Celery workers against them."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connection

from {{ cookiecutter.project_slug }}.core.celery_internals import forget_connections
from {{ cookiecutter.project_slug }}.worker import heartbeat
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, kombu_queues

from support.servers import (
    PACKAGE,
    TEST_CONSUMER_TIMEOUT,
    Process,
    RabbitNode,
    ServiceUnavailableError,
    TcpProxy,
    postgres_server,
    rabbitmq_server,
    redis_server,
    s3_server,
    unavailable,
    wait_until,
)
from tests.brokers import empty_queues

#: Fixtures of the claim-check backends (local disk and S3), shared by every test folder.
pytest_plugins = ("tests.storage",)

#: TEST_DATABASE=sqlite runs the suite on SQLite, the embedded default, instead of PostgreSQL.
USE_SQLITE = os.environ.get("TEST_DATABASE", "postgres") == "sqlite"


@contextlib.contextmanager
def _service(env_name: str, starter: Callable[[Path], Any], workdir: Path) -> Iterator[str]:
    url = os.environ.get(env_name)
    if url:
        yield url
        return
    try:
        with starter(workdir) as started:
            yield started
    except ServiceUnavailableError as exc:
        unavailable(f"{exc}; or set {env_name}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the URL of a real Redis server (TEST_REDIS_URL, or one started here)."""
    with _service("TEST_REDIS_URL", redis_server, tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Return the URL of a real PostgreSQL server (TEST_DATABASE_URL, or one started here)."""
    workdir = Path(tempfile.mkdtemp(prefix="pg-"))  # outside pytest's root-only tmp: postgres runs as nobody
    with _service("TEST_DATABASE_URL", postgres_server, workdir) as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the endpoint URL of a real S3 API server (TEST_S3_ENDPOINT_URL, or moto started here)."""
    with _service("TEST_S3_ENDPOINT_URL", s3_server, tmp_path_factory.mktemp("s3")) as url:
        yield url


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request: pytest.FixtureRequest) -> None:
    """Point the test database at real PostgreSQL unless TEST_DATABASE=sqlite."""
    if USE_SQLITE:
        from django.conf import settings

        # A file, not Django's shared in-memory database: threads and worker subprocesses each open
        # their own connection to it, and WAL plus the busy timeout apply as in the embedded stack.
        test_db = Path(tempfile.mkdtemp(prefix="sqlite-")) / "test.sqlite3"
        settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = str(test_db)
        return
    import environ
    from django.conf import settings

    url = request.getfixturevalue("postgres_url")
    config = environ.Env.db_url_config(url)
    settings.DATABASES["default"].update(config)
    settings.DATABASES["default"].pop("OPTIONS", None)
    settings.DATABASES["default"]["OPTIONS"] = {}
    from django.db import connections

    # A connection object made before this fixture ran keeps the SQLite backend (and would create an
    # in-memory test database that worker subprocesses cannot see): drop it so PostgreSQL is used.
    connections.close_all()
    with contextlib.suppress(AttributeError):
        del connections["default"]


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """Return a real RabbitMQ node started here (its own data dir, node name, ports and cookie)."""
    try:
        with rabbitmq_server(tmp_path_factory.mktemp("rabbitmq")) as node:
            yield node
    except ServiceUnavailableError as exc:
        unavailable(str(exc))


#: The brokers a delivery test runs on: ``@pytest.mark.parametrize("broker", BROKERS, indirect=True)``.
BROKERS = ("redis", "rabbitmq")


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """Point this process's Celery app at real Redis (or RabbitMQ, when parametrized) and return the broker URL.

    Results stay in Redis on both, as the README advises: RabbitMQ keeps no results.
    """
    from django.conf import settings

    kind = getattr(request, "param", "redis")
    node: RabbitNode | None = request.getfixturevalue("rabbitmq") if kind == "rabbitmq" else None
    url = node.url if node else redis_url
    previous_management = settings.RABBITMQ_MANAGEMENT_URL
    settings.RABBITMQ_MANAGEMENT_URL = node.management_url if node else ""
    with app_conf_restored("broker_url", "result_backend", "broker_transport_options", "task_queues"):
        _configure_broker(url, redis_url)
        yield url
    settings.RABBITMQ_MANAGEMENT_URL = previous_management


@contextlib.contextmanager
def app_conf_restored(*keys: str) -> Iterator[Any]:
    """Yield the Celery app's conf; on exit put ``keys`` back as they were and drop the connections made meanwhile."""
    conf = celery_app.conf
    previous = {key: conf[key] for key in keys}
    try:
        yield conf
    finally:
        for key, value in previous.items():
            conf[key] = value
        _forget_connections()


def _configure_broker(url: str, result_backend: str) -> None:
    from django.conf import settings

    conf = celery_app.conf
    # Item assignment is what attribute assignment does on Celery's settings, which celery-types makes read-only.
    conf["broker_url"], conf["result_backend"] = url, result_backend
    conf["broker_transport_options"] = broker_transport_options(url, settings.RUN_DIR, settings.WORKER_POOLS)
    conf["task_queues"] = kombu_queues(settings.WORKER_POOLS, url)
    _forget_connections()


def _forget_connections() -> None:
    """Drop the app's cached connection pools, result backend and queues so the next use reads the new URLs."""
    forget_connections(celery_app)
    for cached in ("queues", "router", "default_queue"):
        vars(celery_app.amqp).pop(cached, None)


@pytest.fixture
def clean_broker(broker: str, redis_url: str) -> str:
    """Return the broker URL with every queue emptied (and the results in Redis)."""
    empty_queues(broker, redis_url)
    return broker


@pytest.fixture
def broker_relay(clean_broker: str) -> Iterator[TcpProxy]:
    """Point this process's Celery app (not the workers) at Redis through a relay the test can cut."""
    port = urlsplit(clean_broker).port
    assert port is not None
    relay = TcpProxy(port)
    previous = celery_app.conf.broker_url
    celery_app.conf["broker_url"] = clean_broker.replace(f":{port}/", f":{relay.port}/")
    _forget_connections()
    yield relay
    celery_app.conf["broker_url"] = previous
    _forget_connections()
    relay.close()


@pytest.fixture
def worker_env(clean_broker: str, transactional_db: None, tmp_path: Path) -> dict[str, str]:
    """Return the environment of a worker subprocess: same database, broker and run directory as the test."""
    from django.conf import settings

    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env.update(
        DJANGO_SETTINGS_MODULE=f"{PACKAGE}.config.settings.test",
        CELERY_BROKER_URL=clean_broker,
        CELERY_RESULT_BACKEND=celery_app.conf.result_backend,
        RABBITMQ_CONSUMER_TIMEOUT=str(TEST_CONSUMER_TIMEOUT),
        RABBITMQ_MANAGEMENT_URL=settings.RABBITMQ_MANAGEMENT_URL,
        RUN_DIR=str(tmp_path / "run"),
        PYTHONUNBUFFERED="1",
        # As in the Procfile, compose and Kubernetes: SIGTERM starts the soft shutdown (README.md).
        REMAP_SIGTERM="SIGQUIT",
    )
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Return a function that starts ``celery -A <project> worker -Q <queue>`` and waits until it consumes."""
    started: list[Process] = []

    def start(queue: str, *extra: str, env: dict[str, str] | None = None, name: str | None = None) -> Process:
        worker_environment = {**worker_env, **(env or {})}
        node = name or f"{queue}-{len(started)}"
        argv = [sys.executable, "-m", "celery", "-A", PACKAGE, "worker", "-Q", queue, "-n", f"{node}@%h", *extra]
        argv += ["-l", "INFO", "--without-mingle", "--without-gossip"]
        proc = Process(argv, tmp_path / "logs" / f"{node}.log", env=worker_environment).start()
        started.append(proc)
        beat = heartbeat.heartbeat_path(queue, proc.pid, Path(worker_environment["RUN_DIR"]) / "heartbeat")
        wait_until(lambda: beat.exists() or not proc.alive(), 60, f"worker {node} to start")
        if not proc.alive():
            pytest.fail(f"worker {node} exited at start:\n{proc.log()[-4000:]}")
        return proc

    yield start
    for proc in started:
        proc.stop()
