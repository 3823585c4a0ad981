"""The event stream sends one event per status or progress change, pings while idle, and ends at the final state."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord
from {{ cookiecutter.project_slug }}.jobs.models import Job
from {{ cookiecutter.project_slug }}.jobs.views import event_stream

from support.web import parse_events

pytestmark = pytest.mark.django_db(transaction=True)  # the async ORM reads from another thread


@pytest.fixture
def job(django_user_model) -> Job:
    owner = django_user_model.objects.create_user("erin", "erin@example.com", "erin-password")
    job = Job.objects.create(owner=owner, kind="lines", task_key="job:stream-test", filename="c.csv")
    TaskRecord.objects.create(
        key=job.task_key, task_name="demo.customer_report", queue="reports", payload_hash="0" * 64
    )
    return job


def collect(job: Job, changes: list[dict], pause: float) -> list[str]:
    """Read the stream while applying ``changes`` to the status row ``pause`` seconds apart; return its lines."""

    async def run() -> list[str]:
        chunks: list[str] = []

        async def read() -> None:
            async for chunk in event_stream(job):
                chunks.append(chunk)

        reader = asyncio.create_task(read())
        for change in changes:
            await asyncio.sleep(pause)
            await sync_to_async(TaskRecord.objects.filter(key=job.task_key).update)(**change)
        await asyncio.wait_for(reader, timeout=30)
        # The async ORM ran in a worker thread: close its connection, or the test database cannot be dropped.
        await sync_to_async(connections.close_all)()
        return "".join(chunks).split("\n")

    return asyncio.run(run())


def test_one_event_per_change_and_the_stream_ends_at_the_final_state(job, settings):
    settings.JOBS_SSE_POLL_SECONDS = 0.02
    settings.JOBS_SSE_PING_SECONDS = 3600
    changes = [
        {"status": "running", "progress": 0.25, "progress_message": "a quarter"},
        {"status": "running", "progress": 0.25, "progress_message": "a quarter"},  # no change: no event
        {"status": "running", "progress": 0.5, "progress_message": "half"},
        {"status": "running", "progress": 0.5, "progress_message": "half, still"},  # the message alone changed
        {"status": "succeeded", "progress": 1.0, "result": {"stats": {"rows": 3}}},
    ]
    lines = collect(job, changes, pause=0.3)
    assert lines[0].startswith("retry: ")
    states = [data for name, data in parse_events(lines) if name == "status"]
    seen = [(s["status"], s["progress"]["fraction"], s["progress"]["message"]) for s in states]
    assert seen == [
        ("pending", 0.0, ""),
        ("running", 0.25, "a quarter"),
        ("running", 0.5, "half"),
        ("running", 0.5, "half, still"),
        ("succeeded", 1.0, "half, still"),
    ]
    assert states[-1]["final"] is True
    assert states[-1]["result"] == {"rows": 3}
    assert not [name for name, _ in parse_events(lines) if name == ":"]


def test_idle_stream_pings_and_a_failure_ends_it(job, settings):
    settings.JOBS_SSE_POLL_SECONDS = 0.02
    settings.JOBS_SSE_PING_SECONDS = 0.2
    failed = {"status": "failed", "error_type": "app.services.InputError", "error_message": "no 'email' column"}
    events = parse_events(collect(job, [failed], pause=1.0))
    pings = [text for name, text in events if name == ":"]
    assert pings.count("ping") >= 3, events
    states = [data for name, data in events if name == "status"]
    assert [s["status"] for s in states] == ["pending", "failed"]
    # The class path for programs, its short name for people.
    assert states[-1]["error"] == {
        "type": "app.services.InputError",
        "name": "InputError",
        "message": "no 'email' column",
    }


def test_stream_ends_after_its_time_limit_while_the_job_runs(job, settings):
    settings.JOBS_SSE_POLL_SECONDS = 0.02
    settings.JOBS_SSE_MAX_SECONDS = 0.3
    states = [data for name, data in parse_events(collect(job, [], pause=0)) if name == "status"]
    assert [s["status"] for s in states] == ["pending"]  # closed unfinished; EventSource reconnects


def test_open_streams_share_one_status_read_per_tick(django_user_model, settings):
    from {{ cookiecutter.project_slug }}.jobs.hub import hub
    from {{ cookiecutter.project_slug }}.jobs.selectors import STATE_FIELDS

    settings.JOBS_SSE_POLL_SECONDS = 0.05
    settings.JOBS_SSE_PING_SECONDS = 3600
    owner = django_user_model.objects.create_user("many", "many@example.com", "many-password")
    jobs = []
    for i in range(30):
        job = Job.objects.create(owner=owner, kind="lines", task_key=f"job:many-{i}", filename="m.csv")
        TaskRecord.objects.create(key=job.task_key, task_name="demo.r", queue="reports", payload_hash="0" * 64)
        jobs.append(job)

    async def run() -> tuple[int, list[int]]:
        counts = [0] * len(jobs)

        async def read(n: int) -> None:
            async for chunk in event_stream(jobs[n]):
                counts[n] += chunk.startswith("event: status")

        readers = [asyncio.create_task(read(n)) for n in range(len(jobs))]
        await asyncio.sleep(0.3)  # every stream has sent its first event
        statuses = hub(STATE_FIELDS)
        before = statuses.queries
        await asyncio.sleep(0.5)  # about ten ticks
        reads = statuses.queries - before
        await sync_to_async(TaskRecord.objects.filter(key__startswith="job:many-").update)(status="succeeded")
        await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
        await sync_to_async(connections.close_all)()
        return reads, counts

    reads, counts = asyncio.run(run())
    # One batched read per tick for all 30 streams, not one per stream (that would be about 300).
    assert 1 <= reads <= 15, reads
    assert counts == [2] * len(jobs)  # the pending state, then the final one


def test_a_cancelled_job_ends_its_stream(job, settings):
    settings.JOBS_SSE_POLL_SECONDS = 0.02
    settings.JOBS_SSE_PING_SECONDS = 3600
    events = parse_events(collect(job, [{"status": "cancelled"}], pause=0.3))
    states = [data for name, data in events if name == "status"]
    assert [(s["status"], s["final"]) for s in states] == [("pending", False), ("cancelled", True)]
