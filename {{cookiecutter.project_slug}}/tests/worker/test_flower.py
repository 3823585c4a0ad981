"""Flower runs only with basic auth, answers 401 without it, lists the pool workers and serves /metrics."""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.servers import PACKAGE, Process, free_port, port_open, wait_until

FLOWER_USER = "ops"
FLOWER_PASSWORD = "flower-test-password"  # a throwaway credential for a Flower bound to loopback


PROCFILE_CONF = (f"--conf={PACKAGE}/worker/flowerconfig.py",)


def flower_argv(port: int, options: tuple[str, ...] = PROCFILE_CONF) -> list[str]:
    """Return the command that starts Flower with ``options`` (by default the way the Procfile does) on ``port``."""
    return [sys.executable, "-m", "celery", "-A", PACKAGE, "flower", *options, "--address=127.0.0.1", f"--port={port}"]


def get(url: str, credentials: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` with optional basic-auth credentials; return status, headers (lowercased names) and body."""
    request = urllib.request.Request(url)  # noqa: S310 - a loopback http URL built by the test
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@pytest.fixture
def flower(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., tuple[Process, int]]]:
    """Return a function that starts real Flower against the test broker and waits until it listens."""
    started: list[Process] = []

    def start(options: tuple[str, ...] = PROCFILE_CONF, **env: str) -> tuple[Process, int]:
        port = free_port()
        environment = {**worker_env, "FLOWER_USER": FLOWER_USER, "FLOWER_PASSWORD": FLOWER_PASSWORD, **env}
        proc = Process(flower_argv(port, options), tmp_path / "logs" / f"flower-{port}.log", env=environment).start()
        started.append(proc)
        wait_until(lambda: port_open(port) or not proc.alive(), 60, "Flower to listen")
        return proc, port

    yield start
    for proc in started:
        proc.stop()


@pytest.mark.workers
def test_flower_requires_credentials_and_lists_pool_workers(flower, start_worker):
    start_worker("emails", name="emails")
    start_worker("reports", name="reports")
    proc, port = flower()
    assert proc.alive(), proc.log()
    base = f"http://127.0.0.1:{port}"
    good = (FLOWER_USER, FLOWER_PASSWORD)

    for path in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks", "/api/queues/length"):
        status, headers, _ = get(base + path)
        assert status == 401, (path, status)
        if not path.startswith("/api/"):  # the UI asks the browser for credentials; the API just refuses
            assert headers.get("www-authenticate", "").startswith("Basic"), path
        status, _, _ = get(base + path, (FLOWER_USER, "wrong-password"))
        assert status == 401, (path, status)

    status, _, body = get(base + "/workers", good)
    assert status == 200
    assert b"Flower" in body

    def listed() -> set[str]:
        status, _, body = get(base + "/api/workers?refresh=1", good)
        assert status == 200
        return {name.split("@")[0] for name in json.loads(body)}

    wait_until(lambda: {"emails", "reports"} <= listed(), 60, "Flower to list the emails and reports workers")
    workers = json.loads(get(base + "/api/workers", good)[2])
    queues = {name.split("@")[0]: [q["name"] for q in info.get("active_queues", [])] for name, info in workers.items()}
    assert queues["emails"] == ["emails"]
    assert queues["reports"] == ["reports"]

    # Prometheus scrapes /metrics without credentials; it exposes counters, not task arguments.
    status, headers, body = get(base + "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert b"# HELP flower_events_total" in body


@pytest.mark.parametrize("options", [PROCFILE_CONF, ()], ids=["conf", "no-conf"])
def test_flower_refuses_to_start_without_credentials(flower, options):
    for env in ({"FLOWER_USER": "", "FLOWER_PASSWORD": ""}, {"FLOWER_PASSWORD": ""}):
        proc, port = flower(options, **env)
        code = proc.wait(timeout=60)
        assert code != 0
        assert "Flower needs FLOWER_USER and FLOWER_PASSWORD" in proc.log()
        assert not port_open(port)


def test_flower_refuses_basic_auth_without_a_password(flower):
    proc, port = flower(("--basic-auth=ops:",), FLOWER_USER="", FLOWER_PASSWORD="")
    assert proc.wait(timeout=60) != 0
    assert "--basic-auth (or FLOWER_BASIC_AUTH) needs user:password" in proc.log()
    assert not port_open(port)


@pytest.mark.parametrize(
    ("options", "env", "credentials"),
    [
        ((), {}, (FLOWER_USER, FLOWER_PASSWORD)),
        (("--basic-auth=cli:cli-password",), {"FLOWER_USER": "", "FLOWER_PASSWORD": ""}, ("cli", "cli-password")),
        ((*PROCFILE_CONF, "--basic-auth=cli:cli-password"), {"FLOWER_USER": ""}, ("cli", "cli-password")),
    ],
    ids=["settings-without-conf", "command-line", "command-line-and-conf"],
)
def test_flower_started_any_way_asks_for_credentials(flower, options, env, credentials):
    proc, port = flower(options, **env)
    assert proc.alive(), proc.log()
    base = f"http://127.0.0.1:{port}"
    for path in ("/", "/api/workers"):
        assert get(base + path)[0] == 401, path
        assert get(base + path, (credentials[0], "wrong-password"))[0] == 401, path
    status, _, body = get(base + "/workers", credentials)
    assert status == 200
    assert b"Flower" in body


def test_flower_ignores_request_to_open_the_api(flower):
    proc, port = flower(FLOWER_UNAUTHENTICATED_API="true")
    assert proc.alive(), proc.log()
    status, _, _ = get(f"http://127.0.0.1:{port}/api/workers")
    assert status == 401
