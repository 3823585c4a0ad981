"""`manage.py stacksummary` prints the stack's addresses and the demo password once everything answers, then stays."""

from __future__ import annotations

import http.server
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from {{ cookiecutter.project_slug }}.core import rundirs
from {{ cookiecutter.project_slug }}.worker import heartbeat
from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force

from support.servers import Process, free_port, wait_until

PACKAGE = "{{ cookiecutter.project_slug }}"


class _Health(http.server.BaseHTTPRequestHandler):
    """Answer 200 on web's /healthz and Flower's /healthcheck, 404 elsewhere."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path in ("/healthz", "/healthcheck") else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_port() -> Iterator[int]:
    """Serve web's and Flower's health pages on a free loopback port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def summary(*args: str) -> str:
    """Run ``manage.py stacksummary --exit`` with ``args`` and return what it printed."""
    out = io.StringIO()
    call_command("stacksummary", "--exit", *args, stdout=out)
    return out.getvalue()


def test_the_summary_waits_for_web_flower_and_every_worker_then_prints_the_password_once(
    settings, tmp_path, monkeypatch, health_port
):
    settings.RUN_DIR = tmp_path
    settings.WORKER_HEARTBEAT_DIR = str(tmp_path / "heartbeat")
    monkeypatch.setenv("WEB_PORT", str(health_port))
    monkeypatch.setenv("FLOWER_PORT", str(health_port))
    rundirs.hand_over(rundirs.DEMO_PASSWORD_FILE, "demo\nthe-password\n")

    def workers_start() -> None:
        (tmp_path / "heartbeat").mkdir()
        for pool in pools_in_force():
            heartbeat.heartbeat_path(pool.name, os.getpid()).write_text(f"{os.getpid()} 0\n")

    threading.Timer(1.0, workers_start).start()
    printed = summary("--timeout", "30")
    assert f"The stack answers (web, Flower, {len(pools_in_force())} workers)" in printed, printed
    assert f"web:     http://127.0.0.1:{health_port}/\n" in printed
    assert f"admin:   http://127.0.0.1:{health_port}/admin/" in printed
    assert f"flower:  http://127.0.0.1:{health_port}/  (user " in printed
    assert "user:    demo  password: the-password  (shown this once" in printed
    assert "stop:    Ctrl+C" in printed
    # Deleted as the summary started: the password is printed once and left nowhere.
    assert not (tmp_path / rundirs.DEMO_PASSWORD_FILE).exists()
    again = summary("--timeout", "0")
    assert "the-password" not in again
    assert "demouser --reset" in again


def test_the_summary_names_what_does_not_answer_by_its_timeout(settings, tmp_path, monkeypatch):
    settings.RUN_DIR = tmp_path
    settings.WORKER_HEARTBEAT_DIR = str(tmp_path / "heartbeat")
    monkeypatch.setenv("WEB_PORT", str(free_port()))
    monkeypatch.setenv("FLOWER_PORT", str(free_port()))
    printed = summary("--timeout", "0")
    names = ", ".join(["web", "flower", *(f"worker {p.name}" for p in pools_in_force())])
    assert f"Not answering after 0 s: {names}" in printed, printed


def test_a_negative_timeout_is_refused_with_its_value():
    with pytest.raises(CommandError, match=r"--timeout must be 0 or more seconds, got -1\.0"):
        summary("--timeout", "-1")


def test_the_summary_stays_after_printing_so_honcho_keeps_the_stack_and_stops_on_sigterm(tmp_path):
    # honcho stops every process as soon as one exits, even with 0: the Procfile's summary must stay.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE=f"{PACKAGE}.config.settings.local",
        RUN_DIR=str(tmp_path / "run"),
        WEB_PORT=str(free_port()),
        FLOWER_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    process = Process([sys.executable, "manage.py", "stacksummary", "--timeout", "0"], tmp_path / "log", env=env)
    process.start()
    try:
        wait_until(lambda: "stop:    Ctrl+C" in process.log() or not process.alive(), 60, "the summary")
        assert process.alive(), process.log()
        process.signal(signal.SIGTERM)
        assert process.wait(timeout=10) == -signal.SIGTERM
    finally:
        process.stop()
    assert "Traceback" not in Path(tmp_path / "log").read_text()
