"""Settings for benchmarks: production-like delivery settings on the services the harness starts.

``BENCH_CELERY_DEFAULTS=1`` resets the delivery settings to Celery's own defaults, the baseline a
user without this template would run.
"""

import os

from {{ cookiecutter.project_slug }}.config.settings.local import *  # noqa: F403
from {{ cookiecutter.project_slug }}.config.settings.local import CELERY_BROKER_URL

#: The Redis the benchmark tasks count completions in: the broker, or the results' Redis when RabbitMQ brokers.
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", CELERY_BROKER_URL)

DEBUG = False
CELERY_IMPORTS = ("bench.tasks",)
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

if os.environ.get("BENCH_CELERY_DEFAULTS") == "1":
    CELERY_TASK_ACKS_LATE = False
    CELERY_TASK_REJECT_ON_WORKER_LOST = False
    CELERY_WORKER_PREFETCH_MULTIPLIER = 4
    CELERY_TASK_TRACK_STARTED = False
    CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

if os.environ.get("BENCH_REPUBLISH_STRESS") == "1":
    import dataclasses

    # Prefetch 1: the recovery pass waits for nothing a worker's prefetch could hold back (bench/republish.py).
    WORKER_POOLS = tuple(
        dataclasses.replace(p, prefetch_multiplier=1) if p.name == "default" else p
        for p in WORKER_POOLS  # noqa: F405
    )
