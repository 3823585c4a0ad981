"""Scenario: POST /api/jobs latency for a 1 KB and a 100 MB upload on local disk and on S3: it reads no bytes."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from support.servers import s3_server

from .harness import Stack, percentile

KB = 1024
MB = 1024 * KB
KIND = "bench_upload"
SIZES = (("1 KB", KB), ("100 MB", 100 * MB))
#: POST /api/jobs per size on S3: each measurement copies the object anew inside moto, 0.1-0.3 s for 100 MB.
S3_COUNT = 20
S3_CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}

#: Puts the uploaded bytes (the file ``source``) at the bucket or storage key the upload form named.
Place = Callable[[Path, str], None]


def _latency(client: Any, source: Path, size: int, place: Place) -> float:
    """Ask for an upload form, put the bytes where it says, and return the milliseconds POST /api/jobs took."""
    upload = {"kind": KIND, "filename": "rows.csv", "content_type": "text/csv", "size": size}
    form = client.post("/api/uploads", json.dumps(upload), content_type="application/json").json()
    place(source, form["fields"]["key"])
    started = time.perf_counter()
    response = client.post(
        "/api/jobs", json.dumps({"kind": KIND, "upload": form["upload"]}), content_type="application/json"
    )
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 202:
        raise RuntimeError(f"POST /api/jobs answered {response.status_code}: {response.content[:300]!r}")
    return elapsed


def _place_on_disk(source: Path, key: str) -> None:
    """Hard-link ``source`` where the local upload view writes ``key``: no 100 MB written anew per measurement."""
    from {{ cookiecutter.project_slug }}.claimcheck import blobs

    path = Path(blobs.get_storage().path(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, path)


@contextlib.contextmanager
def _on_s3(stack: Stack) -> Iterator[Place]:
    """Point the claim-check storage at a bucket of moto's S3 server; yield what puts an upload's bytes there.

    Each file is put once; each measurement copies it server-side to the key its form names, as the
    browser's presigned POST would have written it.
    """
    import boto3
    from django.conf import settings
    from django.test import override_settings

    from {{ cookiecutter.project_slug }}.claimcheck import blobs

    with s3_server(stack.workdir / "s3") as endpoint:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        client = boto3.client("s3", endpoint_url=endpoint, **S3_CREDENTIALS)
        client.create_bucket(Bucket=bucket)
        options = {
            "bucket_name": bucket,
            "endpoint_url": endpoint,
            "region_name": S3_CREDENTIALS["region_name"],
            "access_key": S3_CREDENTIALS["aws_access_key_id"],
            "secret_key": S3_CREDENTIALS["aws_secret_access_key"],
            "default_acl": None,
            "file_overwrite": False,
            "location": "claimcheck",
        }
        claimcheck = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}
        storages = {**settings.STORAGES, "claimcheck": claimcheck}
        sources: dict[Path, str] = {}
        copies: list[str] = []

        def place(source: Path, key: str) -> None:
            if source not in sources:
                sources[source] = f"bench-source/{source.name}"
                client.upload_file(str(source), bucket, sources[source], ExtraArgs={"ContentType": "text/csv"})
            # The previous copy's request is over (no worker reads it here): moto keeps objects in memory.
            while copies:
                client.delete_object(Bucket=bucket, Key=copies.pop())
            client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": sources[source]})
            copies.append(key)
            # moto works out a copy's metadata on its first read; S3 has it when the browser's POST returns.
            client.head_object(Bucket=bucket, Key=key)
            # moto spools a large object to a temporary file: its write-back to this disk is not S3's latency.
            os.sync()

        with override_settings(STORAGES=storages, AWS_S3_PUBLIC_ENDPOINT_URL=None):
            if not blobs.is_s3(blobs.get_storage()):
                raise RuntimeError(f"the claim-check storage is {blobs.get_storage()!r}, not the S3 bucket")
            yield place


def _measure(client: Any, sources: dict[int, Path], count: int, place: Place, where: str) -> dict[str, Any]:
    """Return p50/p99 of POST /api/jobs per upload size, ``place`` putting each upload's bytes.

    The sizes alternate, so a drift of the machine during the run weighs on both alike.
    """
    values: dict[int, list[float]] = {size: [] for _, size in SIZES}
    for round_ in range(3 + count):
        for _, size in SIZES:
            elapsed = _latency(client, sources[size], size, place)
            if round_ >= 3:  # the first rounds warm up: imports, connections, first queries
                values[size].append(elapsed)
    result: dict[str, Any] = {
        f"POST /api/jobs, {label} upload ({where})": {
            "p50_ms": percentile(values[size], 50),
            "p99_ms": percentile(values[size], 99),
            "n": len(values[size]),
        }
        for label, size in SIZES
    }
    small, large = (percentile(values[size], 50) for _, size in SIZES)
    result[f"p50 ratio 100 MB / 1 KB ({where})"] = large / small
    return result


def upload_start(stack: Stack, count: int) -> dict[str, Any]:
    """Measure POST /api/jobs (the completion check, the row, the publish) for a small and a 100 MB upload.

    On local disk and on S3 (moto's server on loopback): the request reads the object's size and pin
    (a stat, a HEAD), never its bytes, so the latency should not grow with the upload.
    """
    from django.contrib.auth import get_user_model
    from django.test import Client

    from {{ cookiecutter.project_slug }}.jobs import kinds

    from . import tasks as bench_tasks

    kinds.register(
        kinds.JobKind(name=KIND, label="Bench upload", task=bench_tasks.read_upload, content_types=("text/csv",))
    )
    user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}")
    client = Client(HTTP_HOST="localhost")  # ALLOWED_HOSTS of the bench settings
    client.force_login(user)
    sources: dict[int, Path] = {}
    for _, size in SIZES:
        sources[size] = stack.workdir / f"upload-{size}.csv"
        with sources[size].open("wb") as handle:
            for offset in range(0, size, MB):
                handle.write(os.urandom(min(MB, size - offset)))
    try:
        result = _measure(client, sources, count, _place_on_disk, "local disk")
        with _on_s3(stack) as place:
            result.update(_measure(client, sources, min(count, S3_COUNT), place, "S3"))
    finally:
        kinds.unregister(KIND)
        for path in sources.values():
            path.unlink(missing_ok=True)
    return result
