"""Production settings refuse to start without their variables; the deploy checks and migrations are clean."""

from __future__ import annotations

import os
import secrets
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
