"""Settings shared by every environment; the only module that reads the environment."""

from __future__ import annotations

from pathlib import Path

import environ

from {{ cookiecutter.project_slug }} import pools

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
env.read_env(BASE_DIR / ".env", overwrite=False)

# ------------------------------------------------------------------------------
# Paths: everything the embedded stack writes lives under RUN_DIR.
# ------------------------------------------------------------------------------
RUN_DIR = Path(env.str("RUN_DIR", default=str(BASE_DIR / "run")))

# ------------------------------------------------------------------------------
# Core
# ------------------------------------------------------------------------------
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
TIME_ZONE = "{{ cookiecutter.timezone }}"
USE_TZ = True
LANGUAGE_CODE = "en-us"
ROOT_URLCONF = "{{ cookiecutter.project_slug }}.urls"
WSGI_APPLICATION = "{{ cookiecutter.project_slug }}.wsgi.application"
ASGI_APPLICATION = "{{ cookiecutter.project_slug }}.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "{{ cookiecutter.project_slug }}.apps.ProjectConfig",
    "{{ cookiecutter.project_slug }}.demo",
    "{{ cookiecutter.project_slug }}.idempotency",
    "{{ cookiecutter.project_slug }}.claimcheck",
    "{{ cookiecutter.project_slug }}.jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

STATIC_URL = "static/"
STATIC_ROOT = RUN_DIR / "static"
# The ASGI app serves static files itself (asgi.py) unless a proxy or CDN does.
SERVE_STATIC = env.bool("DJANGO_SERVE_STATIC", default=True)

# ------------------------------------------------------------------------------
# Database: SQLite under RUN_DIR unless DATABASE_URL names another (PostgreSQL in production).
# ------------------------------------------------------------------------------
# An empty value counts as unset, so production settings can name it as missing.
DATABASES = {"default": env.db_url_config(env.str("DATABASE_URL", default="") or f"sqlite:///{RUN_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; the timeout rides out short locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# ------------------------------------------------------------------------------
# Storage: local disk under RUN_DIR unless an S3 bucket is configured.
# ------------------------------------------------------------------------------
MEDIA_ROOT = RUN_DIR / "media"
MEDIA_URL = "media/"
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None
AWS_S3_PUBLIC_ENDPOINT_URL = env.str("AWS_S3_PUBLIC_ENDPOINT_URL", default="") or None
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="us-east-1")
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="") or None
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="") or None
if AWS_STORAGE_BUCKET_NAME:
    _s3_options = {
        "bucket_name": AWS_STORAGE_BUCKET_NAME,
        "endpoint_url": AWS_S3_ENDPOINT_URL,
        "region_name": AWS_S3_REGION_NAME,
        "access_key": AWS_ACCESS_KEY_ID,
        "secret_key": AWS_SECRET_ACCESS_KEY,
        # Private objects, read through short-lived signed URLs only.
        "default_acl": None,
        "querystring_auth": True,
        "querystring_expire": 300,
        "file_overwrite": False,
    }
    _s3 = "storages.backends.s3.S3Storage"
    _claimcheck_storage = {"BACKEND": _s3, "OPTIONS": {**_s3_options, "location": "claimcheck"}}
    _default_storage = {"BACKEND": _s3, "OPTIONS": {**_s3_options, "location": "media"}}
else:
    _claimcheck_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": RUN_DIR / "claimcheck"},
    }
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "claimcheck": _claimcheck_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# ------------------------------------------------------------------------------
# E-mail: printed to the console unless an SMTP URL is given.
# ------------------------------------------------------------------------------
_email = env.email_url_config(env.str("EMAIL_URL", default="") or "consolemail://")
MAILERS = {
    "default": {
        "BACKEND": _email["EMAIL_BACKEND"],
        "OPTIONS": {
            key.removeprefix("EMAIL_").removeprefix("HOST_").lower(): value
            for key, value in _email.items()
            if key in ("EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS")
            and value not in ("", None)
        },
    }
}
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="noreply@{{ cookiecutter.domain_name }}")

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
# Queues, the default queue and the transport timeouts are derived from the registry.
globals().update(pools.celery_settings(WORKER_POOLS, CELERY_BROKER_URL, CELERY_RESULT_BACKEND, RUN_DIR))
# The embedded stack's folders must exist before SQLite, the filesystem broker or the file result backend open them.
_embedded_folders = [RUN_DIR] if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" else []
if CELERY_BROKER_URL.startswith("filesystem"):
    _folders = pools.broker_transport_options(CELERY_BROKER_URL, RUN_DIR)
    _embedded_folders += [Path(_folders["data_folder_in"]), Path(_folders["control_folder"])]
if CELERY_RESULT_BACKEND.startswith("file://"):
    _embedded_folders.append(Path(CELERY_RESULT_BACKEND.removeprefix("file://")))
for _folder in _embedded_folders:
    _folder.mkdir(parents=True, exist_ok=True)

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
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
# A task goes to the queue declared with it; a queue outside the registry fails at enqueue.
CELERY_TASK_ROUTES = ("{{ cookiecutter.project_slug }}.pools.route_task",)
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
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {}

# ------------------------------------------------------------------------------
# Idempotent tasks ({{ cookiecutter.project_slug }}/idempotency/): one status row per key.
# ------------------------------------------------------------------------------
# How often, in seconds, the reaper publishes again tasks whose delivery died holding the lease.
IDEMPOTENCY_REAPER_INTERVAL = env.int("IDEMPOTENCY_REAPER_INTERVAL", default=60)
# Seconds a succeeded or failed row is kept (and so deduplicates its key) before it is pruned.
IDEMPOTENCY_RETENTION = env.int("IDEMPOTENCY_RETENTION", default=7 * 24 * 3600)
CELERY_BEAT_SCHEDULE["idempotency-reap-expired-leases"] = {
    "task": "{{ cookiecutter.project_slug }}.idempotency.tasks.reap_expired_leases",
    "schedule": float(IDEMPOTENCY_REAPER_INTERVAL),
}
CELERY_BEAT_SCHEDULE["idempotency-prune-finished"] = {
    "task": "{{ cookiecutter.project_slug }}.idempotency.tasks.prune_finished",
    "schedule": 3600.0,
}

# ------------------------------------------------------------------------------
# Claim check: large task arguments and results are stored in STORAGES["claimcheck"] and travel as
# signed references ({{ cookiecutter.project_slug }}/claimcheck/); the broker only ever sees small messages.
# ------------------------------------------------------------------------------
CLAIMCHECK_STORAGE = "claimcheck"
# Serialized argument sets above this are offloaded at enqueue (the SQS Extended Client's default).
CLAIMCHECK_ARGS_THRESHOLD = env.int("CLAIMCHECK_ARGS_THRESHOLD", default=256 * 1024)
# Serialized results above this are stored and returned as a reference.
CLAIMCHECK_RESULT_LIMIT = env.int("CLAIMCHECK_RESULT_LIMIT", default=1024 * 1024)
# Hard cap on any task message body published; above the threshold, so only a bypass of the claim check hits it.
CLAIMCHECK_MESSAGE_MAX_BYTES = env.int("CLAIMCHECK_MESSAGE_MAX_BYTES", default=1024 * 1024)
# Browser uploads: size ceiling, accepted types, and how long a presigned form stays valid (5-15 min advised).
CLAIMCHECK_UPLOAD_MAX_BYTES = env.int("CLAIMCHECK_UPLOAD_MAX_BYTES", default=100 * 1024 * 1024)
CLAIMCHECK_UPLOAD_CONTENT_TYPES = env.list(
    "CLAIMCHECK_UPLOAD_CONTENT_TYPES", default=["text/csv", "application/json", "application/octet-stream"]
)
CLAIMCHECK_UPLOAD_EXPIRES = 10 * 60
CLAIMCHECK_DOWNLOAD_EXPIRES = 5 * 60
# Blobs older than this are orphans: longer than any task waits in a queue and than results are kept
# (CELERY_RESULT_EXPIRES, IDEMPOTENCY_RETENTION: a finished row may still point at its result blob).
CLAIMCHECK_ORPHAN_TTL = env.int("CLAIMCHECK_ORPHAN_TTL", default=8 * 24 * 3600)
CELERY_BEAT_SCHEDULE["claimcheck-sweep-orphans"] = {
    "task": "{{ cookiecutter.project_slug }}.claimcheck.tasks.sweep_orphans",
    "schedule": 3600.0,
}

# ------------------------------------------------------------------------------
# Long-running jobs ({{ cookiecutter.project_slug }}/jobs/): 202 Accepted, then poll or stream over SSE.
# ------------------------------------------------------------------------------
# Idle SSE streams send a ": ping" comment this often, so proxies and load balancers keep them open.
JOBS_SSE_PING_SECONDS = env.float("JOBS_SSE_PING_SECONDS", default=15.0)
# How often an open stream reads its job's status row (one indexed query).
JOBS_SSE_POLL_SECONDS = env.float("JOBS_SSE_POLL_SECONDS", default=0.5)
# A stream ends after this long; the browser's EventSource reconnects and gets the current state first.
JOBS_SSE_MAX_SECONDS = env.float("JOBS_SSE_MAX_SECONDS", default=600.0)
# JSON request bodies of the API are small; anything larger is refused with 413.
JOBS_MAX_REQUEST_BYTES = 16 * 1024
JOBS_MAX_UPLOAD_BYTES = {
    "report": CLAIMCHECK_UPLOAD_MAX_BYTES,
    "thumbnails": min(CLAIMCHECK_UPLOAD_MAX_BYTES, 20 * 1024**2),
}
JOBS_DOWNLOAD_URL_SECONDS = CLAIMCHECK_DOWNLOAD_EXPIRES
# The images flow uploads pictures through the same presigned forms.
CLAIMCHECK_UPLOAD_CONTENT_TYPES += [
    t for t in ("image/png", "image/jpeg", "image/webp", "image/gif") if t not in CLAIMCHECK_UPLOAD_CONTENT_TYPES
]
LOGIN_REDIRECT_URL = "jobs:index"
LOGOUT_REDIRECT_URL = "login"
# The API answers a failed CSRF check with a JSON error; pages keep Django's.
CSRF_FAILURE_VIEW = "{{ cookiecutter.project_slug }}.jobs.views.csrf_failure"

# ------------------------------------------------------------------------------
# Flower: refuses to start without these (the post-generation hook writes them to .env).
# ------------------------------------------------------------------------------
FLOWER_USER = env.str("FLOWER_USER", default="")
FLOWER_PASSWORD = env.str("FLOWER_PASSWORD", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

WORKER_HEARTBEAT_DIR = env.str("WORKER_HEARTBEAT_DIR", default=str(RUN_DIR / "heartbeat"))
