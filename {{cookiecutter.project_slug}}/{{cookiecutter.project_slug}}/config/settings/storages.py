"""Storage: local disk or S3 (django-storages), and the claim check that keeps large payloads off the broker."""

from __future__ import annotations

from typing import Any

from .environment import RUN_DIR, env, env_int, env_url

# ------------------------------------------------------------------------------
# Storage: local disk under RUN_DIR unless an S3 bucket is configured.
# ------------------------------------------------------------------------------
MEDIA_ROOT = RUN_DIR / "media"
MEDIA_URL = "media/"
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env_url("AWS_S3_ENDPOINT_URL", "", ("http", "https"), "an http:// or https:// URL") or None
AWS_S3_PUBLIC_ENDPOINT_URL = (
    env_url("AWS_S3_PUBLIC_ENDPOINT_URL", "", ("http", "https"), "an http:// or https:// URL") or None
)
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
STORAGES: dict[str, dict[str, Any]] = {
    "default": _default_storage,
    "claimcheck": _claimcheck_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# ------------------------------------------------------------------------------
# Claim check: large task arguments and results are stored in STORAGES["claimcheck"] and travel as
# signed references ({{ cookiecutter.project_slug }}/claimcheck/); the broker only ever sees small messages.
# ------------------------------------------------------------------------------
CLAIMCHECK_STORAGE = "claimcheck"
# Serialized argument sets above this are offloaded at enqueue (the SQS Extended Client's default).
CLAIMCHECK_ARGS_THRESHOLD = env_int("CLAIMCHECK_ARGS_THRESHOLD", default=256 * 1024, minimum=1)
# Serialized results above this are stored and returned as a reference.
CLAIMCHECK_RESULT_LIMIT = env_int("CLAIMCHECK_RESULT_LIMIT", default=1024 * 1024, minimum=1)
# Hard cap on any task message body published; above the threshold, so only a bypass of the claim check hits it.
CLAIMCHECK_MESSAGE_MAX_BYTES = env_int("CLAIMCHECK_MESSAGE_MAX_BYTES", default=1024 * 1024, minimum=1)
# Browser uploads: size ceiling, accepted types, and how long a presigned form stays valid (5-15 min advised).
CLAIMCHECK_UPLOAD_MAX_BYTES = env_int("CLAIMCHECK_UPLOAD_MAX_BYTES", default=100 * 1024 * 1024, minimum=1)
CLAIMCHECK_UPLOAD_CONTENT_TYPES = env.list(
    "CLAIMCHECK_UPLOAD_CONTENT_TYPES", default=["text/csv", "application/json", "application/octet-stream"]
)
CLAIMCHECK_UPLOAD_EXPIRES = 10 * 60
CLAIMCHECK_DOWNLOAD_EXPIRES = 5 * 60
# Blobs older than this are orphans: longer than any task waits in a queue and than results are kept
# (CELERY_RESULT_EXPIRES, IDEMPOTENCY_RETENTION: a finished row may still point at its result blob).
CLAIMCHECK_ORPHAN_TTL = env_int("CLAIMCHECK_ORPHAN_TTL", default=8 * 24 * 3600, minimum=1)
