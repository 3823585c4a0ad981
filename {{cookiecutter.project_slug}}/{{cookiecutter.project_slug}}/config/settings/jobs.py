"""The long-running jobs API and page: 202 Accepted, then poll or stream over server-sent events."""

from __future__ import annotations

from .environment import env, env_float
from .storages import CLAIMCHECK_DOWNLOAD_EXPIRES

# ------------------------------------------------------------------------------
# Long-running jobs ({{ cookiecutter.project_slug }}/jobs/): 202 Accepted, then poll or stream over SSE.
# ------------------------------------------------------------------------------
# Idle SSE streams send a ": ping" comment this often, so proxies and load balancers keep them open.
JOBS_SSE_PING_SECONDS = env_float("JOBS_SSE_PING_SECONDS", default=15.0)
# How often an open stream reads its job's status row (one indexed query).
JOBS_SSE_POLL_SECONDS = env_float("JOBS_SSE_POLL_SECONDS", default=0.5)
# A stream ends after this long; the browser's EventSource reconnects and gets the current state first.
JOBS_SSE_MAX_SECONDS = env_float("JOBS_SSE_MAX_SECONDS", default=600.0)
# JSON request bodies of the API are small; anything larger is refused with 413.
JOBS_MAX_REQUEST_BYTES = 16 * 1024
JOBS_DOWNLOAD_URL_SECONDS = CLAIMCHECK_DOWNLOAD_EXPIRES
LOGIN_REDIRECT_URL = "jobs:index"
LOGOUT_REDIRECT_URL = "login"
# The API answers a failed CSRF check with a JSON error; pages keep Django's.
CSRF_FAILURE_VIEW = "{{ cookiecutter.project_slug }}.core.http.csrf_failure"
# The autoscaler (KEDA's metrics-api scaler) reads /api/queues/owed with this bearer token; unset, the endpoint
# answers 404. Generate one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`.
QUEUE_METRICS_TOKEN = env.str("QUEUE_METRICS_TOKEN", default="")
