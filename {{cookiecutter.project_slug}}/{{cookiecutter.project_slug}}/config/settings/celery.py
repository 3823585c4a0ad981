"""Celery, the worker pools and idempotent tasks: every ``CELERY_*`` setting, derived from the registry."""

from __future__ import annotations

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker.queues import (
    AMQP_SCHEMES,
    DEFAULT_SENTINEL_MASTER,
    REDIS_SCHEMES,
    broker_transport_options,
    is_amqp,
    is_redis,
    kombu_queues,
    result_backend_transport_options,
)

from . import environment
from .environment import RUN_DIR, env, env_bool, env_float, env_int, env_url

# ------------------------------------------------------------------------------
# Celery: broker on the local filesystem unless CELERY_BROKER_URL is set (Redis or RabbitMQ in production).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ------------------------------------------------------------------------------
WORKER_POOLS = pools.POOLS
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL",
    "filesystem://",
    (*REDIS_SCHEMES, *AMQP_SCHEMES, "filesystem"),
    "a redis://, rediss://, sentinel://, amqp:// or amqps:// URL (filesystem:// outside production)",
)
CELERY_RESULT_BACKEND = env_url(
    "CELERY_RESULT_BACKEND",
    CELERY_BROKER_URL if is_redis(CELERY_BROKER_URL) else f"file://{RUN_DIR / 'results'}",
    (*REDIS_SCHEMES, "file"),
    "a redis://, rediss:// or sentinel:// URL (file:// outside production)",
)
# With sentinel:// URLs: the name of the master the Sentinels watch (`sentinel monitor <name> ...`).
REDIS_SENTINEL_MASTER = env.str("REDIS_SENTINEL_MASTER", default=DEFAULT_SENTINEL_MASTER)
# Queues, the default queue, the transport timeouts and the soft shutdown are derived from the registry.
CELERY_TASK_QUEUES = kombu_queues(WORKER_POOLS, CELERY_BROKER_URL)
CELERY_TASK_DEFAULT_QUEUE = WORKER_POOLS[0].queue
# RabbitMQ: what the server's rabbitmq.conf says `consumer_timeout` is, in seconds (RabbitMQ's default: 30
# minutes). RabbitMQ 3.10 takes it from the server only; `manage.py check` compares it with the pools' leases.
RABBITMQ_CONSUMER_TIMEOUT = env_int(
    "RABBITMQ_CONSUMER_TIMEOUT", default=pools.RABBITMQ_DEFAULT_CONSUMER_TIMEOUT, minimum=1
)
# The management API answers the unacknowledged counts AMQP cannot; default: the broker's host and user, port 15672.
RABBITMQ_MANAGEMENT_URL = env_url("RABBITMQ_MANAGEMENT_URL", "", ("http", "https"), "an http:// or https:// URL")
if is_amqp(CELERY_BROKER_URL):
    # Quorum queues have no global QoS (Celery switches to per-consumer prefetch when it sees one), no
    # priorities, and native delayed delivery keeps countdown/ETA/retry messages in the broker, not in a
    # worker's memory. Both are Celery's defaults; set here so that nobody turns them off by accident.
    CELERY_WORKER_DETECT_QUORUM_QUEUES = True
    CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE = "quorum"
# Seconds a publish may wait for the broker before the row is flagged and the request answers anyway;
# it also bounds each connection attempt (kombu retries connecting for broker_connection_timeout seconds).
IDEMPOTENCY_PUBLISH_TIMEOUT = env_float("IDEMPOTENCY_PUBLISH_TIMEOUT", default=2.0)
# The claim, the success write and enqueue's insert are prepared once per connection on PostgreSQL. Off for a
# pooler that cannot keep prepared statements (PgBouncer in transaction mode before 1.21, or without
# max_prepared_statements).
IDEMPOTENCY_PREPARED_STATEMENTS = env_bool("IDEMPOTENCY_PREPARED_STATEMENTS", default=True)
CELERY_BROKER_CONNECTION_TIMEOUT = IDEMPOTENCY_PUBLISH_TIMEOUT
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
# The shortest pool's: a worker started for one pool (-Q <pool>) applies its pool's own ({{ cookiecutter.project_slug }}.worker.app).
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
# A stopping worker waits for its timer thread's sleep (1 s by default) to end: an idle worker exits sooner.
CELERY_WORKER_TIMER_PRECISION = 0.1
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
# A task's print() and the console e-mail backend write to stdout, which Celery logs: as INFO, not WARNING.
CELERY_WORKER_REDIRECT_STDOUTS_LEVEL = "INFO"
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
IDEMPOTENCY_REAPER_INTERVAL = env_int("IDEMPOTENCY_REAPER_INTERVAL", default=60, minimum=1)
# Every worker renews "alive until now + IDEMPOTENCY_LIVENESS_TIMEOUT" in the database every
# IDEMPOTENCY_LIVENESS_INTERVAL seconds and then runs the recovery pass (idempotency/maintenance.py): a
# running row of a node that stopped renewing is reclaimed within timeout + interval, whatever the pool.
IDEMPOTENCY_LIVENESS_INTERVAL = env_float("IDEMPOTENCY_LIVENESS_INTERVAL", default=5.0)
IDEMPOTENCY_LIVENESS_TIMEOUT = env_float("IDEMPOTENCY_LIVENESS_TIMEOUT", default=20.0)
# A pending row is published again once its message has had this many seconds (plus what its pool's
# prefetch can hold back) and either its queue is empty or a call sent that much later was claimed.
IDEMPOTENCY_REPUBLISH_AFTER = env_float("IDEMPOTENCY_REPUBLISH_AFTER", default=30.0)
# Django's task API (django.tasks) runs on the pools: one queue per pool, each call a status row
# (idempotency/tasks_backend.py; README.md, "django.tasks").
TASKS = {
    "default": {
        "BACKEND": "{{ cookiecutter.project_slug }}.idempotency.tasks_backend.PoolTaskBackend",
        "QUEUES": list(pools.queue_names(WORKER_POOLS)),
    }
}
# Seconds a succeeded or failed row is kept (and so deduplicates its key) before it is pruned.
IDEMPOTENCY_RETENTION = env_int("IDEMPOTENCY_RETENTION", default=7 * 24 * 3600, minimum=1)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "idempotency-reap-expired-leases": {
        "task": "{{ cookiecutter.project_slug }}.idempotency.tasks.reap_expired_leases",
        "schedule": float(IDEMPOTENCY_REAPER_INTERVAL),
    },
    "idempotency-prune-finished": {"task": "{{ cookiecutter.project_slug }}.idempotency.tasks.prune_finished", "schedule": 3600.0},
    # Blobs older than CLAIMCHECK_ORPHAN_TTL (settings/storages.py).
    "claimcheck-sweep-orphans": {"task": "{{ cookiecutter.project_slug }}.claimcheck.tasks.sweep_orphans", "schedule": 3600.0},
}
# The filesystem broker keeps every message for every queue ever bound, consumed or not (a stopped Flower's
# events): beat deletes the messages of non-task queues older than this many seconds, and unbinds those queues.
BROKER_FILES_MAX_AGE = env.int("BROKER_FILES_MAX_AGE", default=300)
if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BEAT_SCHEDULE["broker-sweep-files"] = {
        "task": "{{ cookiecutter.project_slug }}.worker.tasks.sweep_broker_files",
        "schedule": float(BROKER_FILES_MAX_AGE),
    }


# ------------------------------------------------------------------------------
# Flower: refuses to start without these (the post-generation hook writes them to .env).
# ------------------------------------------------------------------------------
FLOWER_USER = env.str("FLOWER_USER", default="")
FLOWER_PASSWORD = env.str("FLOWER_PASSWORD", default="")


# Each worker touches a file here while it consumes; `python -m {{ cookiecutter.project_slug }}.worker.heartbeat --check <pool>` reads it.
WORKER_HEARTBEAT_DIR = env.str("WORKER_HEARTBEAT_DIR", default=str(RUN_DIR / "heartbeat"))
