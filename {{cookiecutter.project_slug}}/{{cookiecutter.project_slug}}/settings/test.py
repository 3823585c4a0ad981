"""Settings for the test suite: short time limits so delivery tests finish in seconds."""

from {{ cookiecutter.project_slug }} import pools

from .base import *  # noqa: F403
from .base import CELERY_BROKER_URL, CELERY_RESULT_BACKEND, RUN_DIR, env

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="test-only-insecure-key")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
WORKER_POOLS = pools.scaled(
    pools.POOLS,
    {"default": (4, 6), "images": (4, 6), "emails": (4, 6), "reports": (8, 10)},
)

globals().update(pools.celery_settings(WORKER_POOLS, CELERY_BROKER_URL, CELERY_RESULT_BACKEND, RUN_DIR))

# Test-only apps and tasks: tests/effects counts side effects; tests/tasks_*.py hold tasks that
# worker subprocesses started with these settings import.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.effects"]  # noqa: F405
CELERY_IMPORTS = tuple(f"tests.{path.stem}" for path in sorted((BASE_DIR / "tests").glob("tasks_*.py")))  # noqa: F405
