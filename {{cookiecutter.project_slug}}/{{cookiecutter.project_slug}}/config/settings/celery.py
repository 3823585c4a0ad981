"""Celery, the worker pools and idempotent tasks: every ``CELERY_*`` setting, derived from the registry."""

from __future__ import annotations

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options, kombu_queues

from . import environment
from .environment import RUN_DIR, env

# ------------------------------------------------------------------------------
# Celery: broker on the local filesystem unless CELERY_BROKER_URL is set (Redis in production).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ------------------------------------------------------------------------------
WORKER_POOLS = pools.POOLS
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or "filesystem://"
CELERY_RESULT_BACKEND = env.str(
    "CELERY_RESULT_BACKEND",
    default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else f"file://{RUN_DIR / 'results'}",
)
# Queues, the default queue, the transport timeouts and the soft shutdown are derived from the registry.
CELERY_TASK_QUEUES = kombu_queues(WORKER_POOLS)
CELERY_TASK_DEFAULT_QUEUE = WORKER_POOLS[0].queue
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL, RUN_DIR, WORKER_POOLS)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = broker_transport_options(CELERY_RESULT_BACKEND, RUN_DIR, WORKER_POOLS)
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = pools.soft_shutdown_timeout(WORKER_POOLS)

# ------------------------------------------------------------------------------
# Delivery and shutdown: at-least-once delivery and deploys that lose nothing. The numbers (time limits,
# leases, visibility timeout, soft shutdown, grace periods) come from pools.py; `manage.py check`
# fails when they disagree. README.md, "What happens when you deploy", tells the whole story.
# https://docs.celeryq.dev/en/stable/userguide/workers.html#soft-shutdown
# ------------------------------------------------------------------------------
# Acknowledge after the task body: a worker that dies mid-task leaves the message to be redelivered.
CELERY_TASK_ACKS_LATE = True
# Without this a prefork child killed by SIGKILL or the OOM killer is acknowledged and its task lost;
# with it the task is requeued, and the status row's attempt cap ends a task that kills its worker.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# After losing the broker, stop the tasks whose messages will be redelivered anyway: no parallel duplicate.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# An idle worker stops at once; held ETA messages are requeued when the broker connection closes.
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = False
# Prefetch is per pool in the registry (1 for long pools). With late acks a running task's message counts
# against the prefetch, so a prefetch-1 pool holds no message it is not running: worker_disable_prefetch
# would add nothing. CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT and the transport options come from pools.py.

# JSON only: a broker that accepts pickle lets anyone who can publish run code on workers.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TIMEZONE = environment.TIME_ZONE
CELERY_ENABLE_UTC = True
# A task goes to the queue declared with it; a queue outside the registry fails at enqueue.
CELERY_TASK_ROUTES = ("{{ cookiecutter.project_slug }}.worker.queues.route_task",)
CELERY_TASK_CREATE_MISSING_QUEUES = False
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes the database connection around every task unless this is set; the
# idempotency app closes it as Django does per request instead (CONN_MAX_AGE, broken connections).
# Reconnecting for every task cost more than the status row's two statements.
CELERY_DB_REUSE_MAX = 2**31
CELERY_BEAT_SCHEDULE_FILENAME = str(RUN_DIR / "celerybeat-schedule")

# ------------------------------------------------------------------------------
# Idempotent tasks ({{ cookiecutter.project_slug }}/idempotency/): one status row per key.
# ------------------------------------------------------------------------------
# How often, in seconds, the reaper publishes again tasks whose delivery died holding the lease.
IDEMPOTENCY_REAPER_INTERVAL = env.int("IDEMPOTENCY_REAPER_INTERVAL", default=60)
# Seconds a succeeded or failed row is kept (and so deduplicates its key) before it is pruned.
IDEMPOTENCY_RETENTION = env.int("IDEMPOTENCY_RETENTION", default=7 * 24 * 3600)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "idempotency-reap-expired-leases": {
        "task": "{{ cookiecutter.project_slug }}.idempotency.tasks.reap_expired_leases",
        "schedule": float(IDEMPOTENCY_REAPER_INTERVAL),
    },
    "idempotency-prune-finished": {"task": "{{ cookiecutter.project_slug }}.idempotency.tasks.prune_finished", "schedule": 3600.0},
    # Blobs older than CLAIMCHECK_ORPHAN_TTL (settings/storages.py).
    "claimcheck-sweep-orphans": {"task": "{{ cookiecutter.project_slug }}.claimcheck.tasks.sweep_orphans", "schedule": 3600.0},
}


# ------------------------------------------------------------------------------
# Flower: refuses to start without these (the post-generation hook writes them to .env).
# ------------------------------------------------------------------------------
FLOWER_USER = env.str("FLOWER_USER", default="")
FLOWER_PASSWORD = env.str("FLOWER_PASSWORD", default="")


# Each worker touches a file here while it consumes; `python -m {{ cookiecutter.project_slug }}.worker.heartbeat --check <pool>` reads it.
WORKER_HEARTBEAT_DIR = env.str("WORKER_HEARTBEAT_DIR", default=str(RUN_DIR / "heartbeat"))
