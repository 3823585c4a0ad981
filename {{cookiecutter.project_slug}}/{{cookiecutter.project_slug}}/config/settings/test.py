"""Settings for the test suite: short time limits so delivery tests finish in seconds."""

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, result_backend_transport_options

from .base import *  # noqa: F403
from .base import (
    BASE_DIR,
    CELERY_BROKER_URL,
    CELERY_RESULT_BACKEND,
    IDEMPOTENCY_PUBLISH_TIMEOUT,
    INSTALLED_APPS,
    REDIS_SENTINEL_MASTER,
    RUN_DIR,
    env,
)
from .environment import env_float

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
JOBS_SSE_PING_SECONDS = env_float("JOBS_SSE_PING_SECONDS", default=1.0)
JOBS_SSE_POLL_SECONDS = 0.1
WORKER_POOLS = pools.scaled(
    pools.POOLS,
    {"default": (4, 6), "images": (4, 6), "emails": (4, 6), "reports": (8, 10)},
)
# The timings derived from the registry, derived again from the shortened limits (queue names are unchanged).
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(
    CELERY_BROKER_URL, RUN_DIR, WORKER_POOLS, sentinel_master=REDIS_SENTINEL_MASTER
)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = result_backend_transport_options(
    CELERY_RESULT_BACKEND,
    RUN_DIR,
    WORKER_POOLS,
    publish_timeout=IDEMPOTENCY_PUBLISH_TIMEOUT,
    sentinel_master=REDIS_SENTINEL_MASTER,
)
# Liveness and recovery in seconds, so dead-node and lost-message tests finish quickly.
IDEMPOTENCY_LIVENESS_INTERVAL = env_float("IDEMPOTENCY_LIVENESS_INTERVAL", default=0.5)
IDEMPOTENCY_LIVENESS_TIMEOUT = env_float("IDEMPOTENCY_LIVENESS_TIMEOUT", default=3.0)
IDEMPOTENCY_REPUBLISH_AFTER = env_float("IDEMPOTENCY_REPUBLISH_AFTER", default=2.0)
# The shortest pool's: a worker started for one pool (-Q <pool>) applies its pool's own ({{ cookiecutter.project_slug }}.worker.app).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = pools.soft_shutdown_timeout(WORKER_POOLS)

# Test-only apps and tasks: tests/effects counts side effects; the modules of tests/tasks/ hold the tasks
# that worker subprocesses started with these settings import.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.effects"]
_TEST_TASKS = sorted((BASE_DIR / "tests" / "tasks").glob("[!_]*.py"))
CELERY_IMPORTS = tuple(f"tests.tasks.{path.stem}" for path in _TEST_TASKS)
