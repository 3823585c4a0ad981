"""Fixtures that point the claim-check storage at local disk or at a real S3 API server, for tests and workers."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
import redis

from {{ cookiecutter.project_slug }}.claimcheck.references import ENVELOPE_KEY, Reference

__all__ = ["ClaimCheckBackend", "claimcheck_backend", "queued_messages", "s3_bucket"]

ACCESS_KEY = "claimcheck-test"
SECRET_KEY = "claimcheck-test-secret"
REGION = "us-east-1"


@dataclass
class ClaimCheckBackend:
    """Which storage the claim check uses in this test, and the environment a worker needs to use the same."""

    kind: str
    env: dict[str, str] = field(default_factory=dict)
    endpoint: str | None = None
    bucket: str | None = None


def s3_storage_options(endpoint: str, bucket: str) -> dict[str, Any]:
    """Return S3Storage options matching what settings/base.py builds from the AWS_* environment."""
    return {
        "bucket_name": bucket,
        "endpoint_url": endpoint,
        "region_name": REGION,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "default_acl": None,
        "querystring_auth": True,
        "querystring_expire": 300,
        "file_overwrite": False,
        "location": "claimcheck",
    }


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> tuple[str, str]:
    """Create a fresh bucket on the S3 API server; yield (endpoint, bucket)."""
    bucket = f"claimcheck-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=bucket)
    return s3_endpoint, bucket


@pytest.fixture(params=["local", "s3"])
def claimcheck_backend(request: pytest.FixtureRequest, settings: Any, tmp_path: Path) -> ClaimCheckBackend:
    """Point STORAGES["claimcheck"] at local disk (the worker's RUN_DIR) or at a fresh S3 bucket."""
    storages = dict(settings.STORAGES)
    if request.param == "local":
        # worker_env gives workers RUN_DIR=tmp_path/run, and base.py puts the local store under it.
        location = tmp_path / "run" / "claimcheck"
        location.mkdir(parents=True, exist_ok=True)
        storages["claimcheck"] = {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": location},
        }
        settings.STORAGES = storages
        return ClaimCheckBackend("local")
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    storages["claimcheck"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": s3_storage_options(endpoint, bucket),
    }
    settings.STORAGES = storages
    settings.AWS_S3_PUBLIC_ENDPOINT_URL = None
    env = {
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_REGION_NAME": REGION,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    return ClaimCheckBackend("s3", env=env, endpoint=endpoint, bucket=bucket)


def queued_messages(broker_url: str, queue: str) -> list[bytes]:
    """Return the raw messages waiting in a Redis queue, exactly as the broker holds them."""
    # The client does not decode responses, so every message is bytes (redis-py types either setting's reply).
    return cast("list[bytes]", redis.Redis.from_url(broker_url).lrange(queue, 0, -1))


def message_reference(raw: bytes) -> Reference | None:
    """Return the claim-check reference carried in a raw Redis message's body, if any."""
    import base64

    message = json.loads(raw)
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    if not args and set(kwargs) == {ENVELOPE_KEY}:
        return Reference.from_token(kwargs[ENVELOPE_KEY])
    return None
