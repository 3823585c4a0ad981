"""Broker memory of queued large tasks: payload inline in Redis against a claim-check reference, in one run.

uv run python -m bench.claimcheck_memory                 # 100 tasks of 5 MB each
uv run python -m bench.claimcheck_memory --tasks 20 --megabytes 1
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def _consume(payload: str) -> int:
    return len(payload)


def measure(tasks: int, megabytes: float) -> dict[str, Any]:
    """Queue ``tasks`` messages of ``megabytes`` each, inline and then through the claim check; return Redis memory."""
    import redis
    from django.conf import settings
    from django.test import override_settings

    from {{ cookiecutter.project_slug }}.celery import app
    from {{ cookiecutter.project_slug }}.claimcheck import blobs
    from {{ cookiecutter.project_slug }}.pools import DEFAULT

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    # Random bytes in base64: incompressible, JSON-safe, exactly the requested size.
    payload = base64.b64encode(os.urandom(int(megabytes * 1_000_000 * 3 / 4))).decode()
    name = "bench.claimcheck_memory.consume"
    task = app.task(name=name, worker_pool=DEFAULT)(_consume)  # only published here, never run

    results: dict[str, Any] = {"tasks": tasks, "payload_bytes": len(payload)}
    # Claim check first, on the fresh server: freed memory is not always returned at once, so the larger
    # inline run goes second and each run is measured against the memory right before it.
    client.flushdb()
    baseline = _used_memory(client)
    for _ in range(tasks):
        task.delay(payload)
    claim = _used_memory(client)
    storage_bytes = sum(blobs.get_storage().size(key) for key, _modified in blobs.iter_blobs())
    results["claim_check"] = {
        "queued": client.llen("default"),
        "used_memory_before": baseline,
        "used_memory_queued": claim,
        "added_bytes": claim - baseline,
        "message_bytes": len(client.lindex("default", 0) or b""),
        "storage_bytes": storage_bytes,
    }

    client.flushdb()
    client.memory_purge()
    baseline = _used_memory(client)
    # Inline: the offload threshold and the broker cap lifted, as a project without a claim check would run.
    with override_settings(CLAIMCHECK_ARGS_THRESHOLD=10 * len(payload), CLAIMCHECK_MESSAGE_MAX_BYTES=10 * len(payload)):
        for _ in range(tasks):
            task.delay(payload)
    inline = _used_memory(client)
    results["inline"] = {
        "queued": client.llen("default"),
        "used_memory_before": baseline,
        "used_memory_queued": inline,
        "added_bytes": inline - baseline,
        "message_bytes": len(client.lindex("default", 0) or b""),
    }
    results["claim_check_share_of_inline"] = results["claim_check"]["added_bytes"] / results["inline"]["added_bytes"]
    client.flushdb()
    return results


def main(argv: list[str] | None = None) -> int:
    """Start Redis on loopback, measure, and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--megabytes", type=float, default=5.0)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.services import redis_server

    workdir = Path(tempfile.mkdtemp(prefix="bench-claimcheck-"))
    with redis_server(workdir / "redis") as redis_url:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="{{ cookiecutter.project_slug }}.settings.local",
            CELERY_BROKER_URL=redis_url,
            RUN_DIR=str(workdir / "run"),
        )
        os.environ.pop("AWS_STORAGE_BUCKET_NAME", None)  # local-disk claim check: the broker side is what is measured
        import django

        django.setup()
        results = measure(args.tasks, args.megabytes)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
