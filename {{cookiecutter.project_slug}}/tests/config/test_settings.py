"""Production settings refuse to start without their variables; the deploy checks and migrations are clean."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
PACKAGE = "{{ cookiecutter.project_slug }}"
#: Variables settings/base.py reads; the subprocesses start without any of them unless a test sets it.
READ_BY_SETTINGS = (
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_DEBUG",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "AWS_STORAGE_BUCKET_NAME",
    "FLOWER_USER",
    "FLOWER_PASSWORD",
    "EMAIL_URL",
    "DJANGO_SECURE_HSTS_SECONDS",
    "DJANGO_SECURE_SSL_REDIRECT",
    "DATABASE_CONN_MAX_AGE",
    "DATABASE_CONNECT_TIMEOUT",
    "IDEMPOTENCY_REAPER_INTERVAL",
    "CLAIMCHECK_ARGS_THRESHOLD",
    "CLAIMCHECK_UPLOAD_MAX_BYTES",
    "JOBS_SSE_POLL_SECONDS",
    "AWS_S3_ENDPOINT_URL",
    "RABBITMQ_CONSUMER_TIMEOUT",
    "RABBITMQ_MANAGEMENT_URL",
    "REDIS_SENTINEL_MASTER",
    "QUEUE_METRICS_TOKEN",
)


def production_env(run_dir: Path) -> dict[str, str]:
    """Return a complete production environment; nothing in it is contacted at start-up."""
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "app.example.com",
        "DATABASE_URL": "postgres://app:secret@127.0.0.1:5432/app",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "AWS_STORAGE_BUCKET_NAME": "claimcheck",
        "FLOWER_USER": "flower",
        "FLOWER_PASSWORD": secrets.token_urlsafe(16),
        "EMAIL_URL": "smtp+tls://mailer:secret@smtp.example.com:587",
        "RUN_DIR": str(run_dir),
    }


def run_django(args: list[str], settings: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python args`` in the project with ``settings`` and only ``env`` on top of a clean environment."""
    base = {k: v for k, v in os.environ.items() if k not in READ_BY_SETTINGS and not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_DIR,
        env={**base, **env, "DJANGO_SETTINGS_MODULE": settings},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SETUP = ["-c", "import django; django.setup(); print('started')"]


def test_production_starts_with_a_complete_environment(tmp_path):
    done = run_django(SETUP, f"{PACKAGE}.config.settings.production", production_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "started" in done.stdout


@pytest.mark.parametrize(
    "name",
    [
        "DJANGO_SECRET_KEY",
        "DJANGO_ALLOWED_HOSTS",
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "AWS_STORAGE_BUCKET_NAME",
        "FLOWER_USER",
        "FLOWER_PASSWORD",
        "EMAIL_URL",
    ],
)
def test_production_refuses_to_start_without(name, tmp_path):
    env = production_env(tmp_path)
    # Empty, not unset: settings read the project's .env for unset variables, and the bake wrote some there.
    env[name] = ""
    done = run_django(SETUP, f"{PACKAGE}.config.settings.production", env)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert name in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]


def test_production_refuses_sqlite_and_a_weak_secret_key(tmp_path):
    env = {**production_env(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    done = run_django(SETUP, f"{PACKAGE}.config.settings.production", env)
    assert done.returncode != 0
    assert "DATABASE_URL" in done.stderr.strip().splitlines()[-1]
    env = {**production_env(tmp_path), "DJANGO_SECRET_KEY": "short"}
    done = run_django(SETUP, f"{PACKAGE}.config.settings.production", env)
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DATABASE_URL", "garbage", "postgres://"),
        ("DATABASE_URL", "mysql://app@127.0.0.1/app", "postgres://"),
        ("DATABASE_URL", "postgres://app:secret@127.0.0.1:notaport/app", "postgres://"),
        ("DJANGO_SECURE_HSTS_SECONDS", "abc", "whole number"),
        ("DATABASE_CONN_MAX_AGE", "abc", "whole number"),
        ("IDEMPOTENCY_REAPER_INTERVAL", "abc", "whole number"),
        ("IDEMPOTENCY_REAPER_INTERVAL", "0", "at least 1"),
        ("CLAIMCHECK_UPLOAD_MAX_BYTES", "abc", "whole number"),
        ("CLAIMCHECK_ARGS_THRESHOLD", "-1", "at least 1"),
        ("DATABASE_CONNECT_TIMEOUT", "0", "at least 1"),
        ("JOBS_SSE_POLL_SECONDS", "nan", "number above 0"),
        ("DJANGO_SECURE_SSL_REDIRECT", "flase", "true/false"),
        ("EMAIL_URL", "garbage", "smtp+tls://"),
        ("EMAIL_URL", "consolemail://", "smtp+tls://"),
        ("DJANGO_ALLOWED_HOSTS", " , ", "host names"),
        ("DJANGO_ALLOWED_HOSTS", "https://app.example.com", "host names"),
        ("CELERY_BROKER_URL", "ftp://x", "redis://"),
        ("CELERY_BROKER_URL", "filesystem://", "redis://"),
        ("CELERY_RESULT_BACKEND", "garbage", "redis://"),
        ("CELERY_BROKER_URL", "amqp://app:secret@rabbitmq:5672//", "with a RabbitMQ broker"),
        ("RABBITMQ_CONSUMER_TIMEOUT", "30m", "whole number"),
        ("AWS_S3_ENDPOINT_URL", "s3.example.com", "https://"),
    ],
)
def test_production_refuses_a_bad_value_by_name(name, value, expected, tmp_path):
    env = {**production_env(tmp_path), name: value}
    if value.startswith("amqp"):
        # RabbitMQ keeps no results: without CELERY_RESULT_BACKEND they would go to a file in one pod.
        name = "CELERY_RESULT_BACKEND"
    done = run_django(["manage.py", "check", "--deploy"], f"{PACKAGE}.config.settings.production", env)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured"), done.stderr[-2000:]
    assert name in last, last
    assert expected in last, last
    assert "secret" not in last  # a password in a URL stays out of the logs


#: Connects to the database of the settings and prints how it ended and how long it took.
CONNECT = [
    "-c",
    "import time, django; django.setup(); from django.db import connection; started = time.monotonic()\n"
    "try:\n    connection.ensure_connection()\nexcept Exception as exc:\n    print(type(exc).__name__)\n"
    "print(f'{time.monotonic() - started:.1f}')",
]


def test_a_database_that_does_not_answer_fails_the_connection_after_the_timeout(tmp_path):
    # A server that takes the TCP connection and never says a word: libpq alone would wait for it forever.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgres://app:secret@127.0.0.1:{silent.getsockname()[1]}/app"
        env = {"RUN_DIR": str(tmp_path), "DATABASE_URL": url, "DATABASE_CONNECT_TIMEOUT": "2"}
        done = run_django(CONNECT, f"{PACKAGE}.config.settings.local", env)
    assert done.returncode == 0, done.stderr[-2000:]
    error, seconds = done.stdout.split()
    assert error == "OperationalError"
    assert 1.5 <= float(seconds) < 60, seconds  # the subprocess itself gives up at 120 s


@pytest.mark.parametrize(("timeout", "clean"), [("2376", True), ("1800", False)])
def test_check_deploy_on_rabbitmq_compares_the_server_consumer_timeout(tmp_path, timeout, clean):
    env = {
        **production_env(tmp_path),
        "CELERY_BROKER_URL": "amqp://app:secret@rabbitmq:5672//",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/0",
        "RABBITMQ_CONSUMER_TIMEOUT": timeout,
    }
    done = run_django(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], f"{PACKAGE}.config.settings.production", env
    )
    if clean:
        assert done.returncode == 0, done.stdout + done.stderr
        return
    assert done.returncode != 0
    assert "delivery.E008" in done.stderr
    assert "consumer_timeout (1800s, RABBITMQ_CONSUMER_TIMEOUT) must be at least 2376s" in done.stderr
    assert "consumer_timeout = 2376000" in done.stderr  # the hint gives the rabbitmq.conf line


def test_local_settings_refuse_a_bad_value_by_name(tmp_path):
    done = run_django(SETUP, f"{PACKAGE}.config.settings.local", {"RUN_DIR": str(tmp_path), "DATABASE_URL": "garbage"})
    assert done.returncode != 0
    assert "DATABASE_URL" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    done = run_django(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        f"{PACKAGE}.config.settings.production",
        production_env(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_no_model_change_lacks_a_migration(tmp_path):
    done = run_django(
        ["manage.py", "makemigrations", "--check", "--dry-run"],
        f"{PACKAGE}.config.settings.test",
        {"RUN_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_local_settings_use_the_embedded_services(tmp_path):
    done = run_django(["manage.py", "stackinfo"], f"{PACKAGE}.config.settings.local", {"RUN_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert f"sqlite3 {tmp_path / 'db.sqlite3'}" in done.stdout
    assert "filesystem://" in done.stdout
    assert "FileSystemStorage" in done.stdout
