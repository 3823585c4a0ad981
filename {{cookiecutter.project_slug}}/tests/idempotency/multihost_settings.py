"""Test settings with the registry's own time limits: a lost host's rows must come back by liveness, not a lease."""

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.config.settings import celery as deployed
from {{ cookiecutter.project_slug }}.config.settings.test import *  # noqa: F403
from {{ cookiecutter.project_slug }}.config.settings.test import (
    CELERY_BROKER_URL,
    CELERY_RESULT_BACKEND,
    IDEMPOTENCY_PUBLISH_TIMEOUT,
    RUN_DIR,
)
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, result_backend_transport_options

WORKER_POOLS = pools.POOLS
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL, RUN_DIR, WORKER_POOLS)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = result_backend_transport_options(
    CELERY_RESULT_BACKEND, RUN_DIR, WORKER_POOLS, publish_timeout=IDEMPOTENCY_PUBLISH_TIMEOUT
)
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = pools.soft_shutdown_timeout(WORKER_POOLS)
# A deployed project's liveness and recovery timings, not the test settings' shortened ones.
IDEMPOTENCY_LIVENESS_INTERVAL = deployed.IDEMPOTENCY_LIVENESS_INTERVAL
IDEMPOTENCY_LIVENESS_TIMEOUT = deployed.IDEMPOTENCY_LIVENESS_TIMEOUT
IDEMPOTENCY_REPUBLISH_AFTER = deployed.IDEMPOTENCY_REPUBLISH_AFTER
