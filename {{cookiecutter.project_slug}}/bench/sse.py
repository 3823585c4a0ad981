"""Scenario 4: many concurrent SSE streams on one ASGI process: memory per stream and event delay."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from support.servers import PACKAGE, Process, free_port, port_open, wait_until

from .harness import Stack, percentile

if TYPE_CHECKING:
    from django.contrib.auth.models import User

OWNER = "bench-sse-worker"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _session_cookie() -> tuple[str, User]:
    """Return a session cookie of a fresh user, made the way Django's login() makes one, and the user."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}", password=uuid.uuid4().hex)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}", user


def _make_jobs(count: int, user: User) -> list[tuple[str, str]]:
    """Create ``count`` running jobs of ``user``; return (job id, status-row key) pairs."""
    from django.utils import timezone

    from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord
    from {{ cookiecutter.project_slug }}.jobs.models import Job

    pairs = []
    for i in range(count):
        key = f"bench-sse-{uuid.uuid4().hex}"
        TaskRecord.objects.create(
            key=key,
            task_name="bench.sse",
            queue="reports",
            status=Status.RUNNING,
            payload_hash="0" * 64,
            owner=OWNER,
            started_at=timezone.now(),
            lease_expires_at=timezone.now() + timedelta(hours=1),
        )
        job = Job.objects.create(owner=user, kind="report", filename=f"bench-{i}.csv", task_key=key)
        pairs.append((str(job.id), key))
    return pairs


class Stream:
    """One SSE client connection that timestamps every event it reads."""

    def __init__(self, port: int, cookie: str, job_id: str) -> None:
        self.port, self.cookie, self.job_id = port, cookie, job_id
        self.events: list[tuple[float, str]] = []
        self.first = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        request = (
            f"GET /api/jobs/{self.job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Cookie: {self.cookie}\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.writer.write(request.encode())
        await self.writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream for job {self.job_id} answered {status!r}")
        while line := await reader.readline():
            if line.startswith(b"data:"):
                self.events.append((time.monotonic(), line.decode()))
                self.first.set()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _measure(
    port: int, pid: int, cookie: str, jobs: list[tuple[str, str]], samples: int, batch: int
) -> dict[str, Any]:
    from asgiref.sync import sync_to_async

    from {{ cookiecutter.project_slug }}.idempotency import claims

    baseline_kib = _rss_kib(pid)
    streams = [Stream(port, cookie, job_id) for job_id, _ in jobs]
    tasks = [asyncio.create_task(s.run()) for s in streams]
    opened = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(s.first.wait() for s in streams)), timeout=300)
    all_open_seconds = time.monotonic() - opened
    await asyncio.sleep(2)  # let the server settle with every stream open
    open_kib = _rss_kib(pid)

    # Change ``batch`` jobs at a time (each its own stream), as a busy worker pool would, and time each
    # change to its event: every sample still measures one status write to one client.
    delays: list[float] = []
    step = max(1, len(jobs) // samples)
    chosen = [(streams[i], key) for i, (_, key) in enumerate(jobs)][::step][:samples]
    for first in range(0, len(chosen), batch):
        changes = []
        for n, (stream, key) in enumerate(chosen[first : first + batch], start=first):
            fraction = round(0.01 + n / (samples * 2), 4)
            seen = len(stream.events)
            changed = time.monotonic()
            await sync_to_async(claims.report_progress)(
                key=key, owner=OWNER, fraction=fraction, message="bench", lease_seconds=3600
            )
            changes.append((stream, f'"fraction":{fraction}', seen, changed))
        deadline = time.monotonic() + 30
        while changes:
            for change in list(changes):
                stream, needle, seen, changed = change
                fresh = [t for t, data in stream.events[seen:] if needle in data]
                if fresh:
                    delays.append(fresh[0] - changed)
                    changes.remove(change)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event for {len(changes)} changed jobs within 30 s")
            await asyncio.sleep(0.002)
    for stream in streams:
        stream.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": len(streams),
        "seconds to open all and get first events": all_open_seconds,
        "server RSS before (MiB)": baseline_kib / 1024,
        "server RSS with all open (MiB)": open_kib / 1024,
        "memory per stream (KiB)": (open_kib - baseline_kib) / len(streams),
        "event delay p50 (ms)": percentile(delays, 50) * 1000,
        "event delay p99 (ms)": percentile(delays, 99) * 1000,
        "delay samples": len(delays),
        "jobs changed at once": batch,
    }


def sse(stack: Stack, count: int, samples: int = 200, batch: int = 20) -> dict[str, Any]:
    """Open ``count`` SSE streams on one uvicorn process and measure memory and event delay."""
    from django.conf import settings

    cookie, user = _session_cookie()
    jobs = _make_jobs(count, user)
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"{PACKAGE}.config.asgi:application", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--no-access-log", "--log-level", "warning", "--backlog", "4096"]
    server = Process(argv, stack.workdir / "logs" / "uvicorn.log", env=stack.env).start()
    try:
        wait_until(lambda: port_open(port) or not server.alive(), 60, "uvicorn to listen")
        result = asyncio.run(_measure(port, server.pid, cookie, jobs, min(samples, count), batch))
        result["server poll interval (ms), JOBS_SSE_POLL_SECONDS"] = settings.JOBS_SSE_POLL_SECONDS * 1000
        return {"SSE streams on one uvicorn process": result}
    finally:
        server.stop()
