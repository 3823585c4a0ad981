"""Scenario: POST /api/jobs latency for a 1 KB and a 100 MB upload on local disk; the request reads no bytes."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from .harness import Stack, percentile

KB = 1024
MB = 1024 * KB
KIND = "bench_upload"


def _latencies(client: Any, source: Path, size: int, count: int) -> list[float]:
    from {{ cookiecutter.project_slug }}.claimcheck import blobs

    storage = blobs.get_storage()
    upload = {"kind": KIND, "filename": "rows.csv", "content_type": "text/csv", "size": size}
    values = []
    for _ in range(count):
        form = client.post("/api/uploads", json.dumps(upload), content_type="application/json").json()
        # The bytes land where the local upload view puts them; a hard link stands in for writing 100 MB anew.
        path = Path(storage.path(form["fields"]["key"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, path)
        started = time.perf_counter()
        response = client.post(
            "/api/jobs", json.dumps({"kind": KIND, "upload": form["upload"]}), content_type="application/json"
        )
        values.append((time.perf_counter() - started) * 1000)
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/jobs answered {response.status_code}: {response.content[:300]!r}")
    return values


def upload_start(stack: Stack, count: int) -> dict[str, Any]:
    """Measure POST /api/jobs (the completion check, the row, the publish) for a small and a 100 MB upload."""
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
    result: dict[str, Any] = {}
    try:
        for label, size in (("1 KB", KB), ("100 MB", 100 * MB)):
            source = stack.workdir / f"upload-{size}.csv"
            with source.open("wb") as handle:
                for offset in range(0, size, MB):
                    handle.write(os.urandom(min(MB, size - offset)))
            _latencies(client, source, size, 3)  # warm-up: imports, connections, first queries
            values = _latencies(client, source, size, count)
            result[f"POST /api/jobs, {label} upload (local disk)"] = {
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
                "n": len(values),
            }
    finally:
        kinds.unregister(KIND)
    small, large = (result[f"POST /api/jobs, {label} upload (local disk)"]["p50_ms"] for label in ("1 KB", "100 MB"))
    result["p50 ratio 100 MB / 1 KB"] = large / small
    return result
