"""Settings for the test suite: short time limits so delivery tests finish in seconds."""

from {{ cookiecutter.project_slug }} import pools

from .base import *  # noqa: F403
from .base import CELERY_BROKER_URL, CELERY_RESULT_BACKEND, RUN_DIR, env

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="test-only-insecure-key")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
# A test that starts its own SMTP server on loopback points worker processes at it (never EMAIL_URL).
if _smtp := env.str("TEST_SMTP_URL", default=""):
    _smtp_config = env.email_url_config(_smtp)
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": _smtp_config["EMAIL_HOST"], "port": _smtp_config["EMAIL_PORT"], "timeout": 10},
        }
    }
# Streams ping and poll often, so SSE tests see pings and changes within a second.
JOBS_SSE_PING_SECONDS = env.float("JOBS_SSE_PING_SECONDS", default=1.0)
JOBS_SSE_POLL_SECONDS = 0.1
WORKER_POOLS = pools.scaled(
    pools.POOLS,
    {"default": (4, 6), "images": (4, 6), "emails": (4, 6), "reports": (8, 10)},
)

globals().update(pools.celery_settings(WORKER_POOLS, CELERY_BROKER_URL, CELERY_RESULT_BACKEND, RUN_DIR))

# Test-only apps and tasks: tests/effects counts side effects; tests/tasks_*.py hold tasks that
# worker subprocesses started with these settings import.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.effects"]  # noqa: F405
CELERY_IMPORTS = tuple(f"tests.{path.stem}" for path in sorted((BASE_DIR / "tests").glob("tasks_*.py")))  # noqa: F405
