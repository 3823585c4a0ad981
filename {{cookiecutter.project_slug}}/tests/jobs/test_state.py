"""What the jobs API says about a job: cancelling it, after its status row is pruned, and while it waits or runs."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client
from django.utils import timezone

from {{ cookiecutter.project_slug }} import claimcheck
from {{ cookiecutter.project_slug }}.claimcheck import blobs
from {{ cookiecutter.project_slug }}.idempotency import maintenance
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord
from {{ cookiecutter.project_slug }}.jobs.models import Job
from {{ cookiecutter.project_slug }}.jobs.views import event_stream

from support.servers import wait_until
from support.web import multipart, parse_events
from tests.tasks import idempotency as effects

pytestmark = pytest.mark.django_db(transaction=True)  # cancel deletes on commit; the stream reads from a thread


def job_with_row(user, name: str = "a", **row) -> Job:
    job = Job.objects.create(owner=user, kind="lines", task_key=f"job:{name}", filename=f"{name}.csv")
    TaskRecord.objects.create(key=job.task_key, task_name="t", queue="default", payload_hash="0" * 64, **row)
    return job


def cancel(client: Client, job_id: str, **extra):
    return client.post(f"/api/jobs/{job_id}/cancel", "{}", content_type="application/json", **extra)


def test_cancel_answers_the_cancelled_state_and_deletes_the_upload(
    claimcheck_backend, clean_broker, client_alice, alice
):
    upload = claimcheck.store_bytes(b"email,country\n", prefix="uploads", content_type="text/csv")
    job = job_with_row(alice, status=Status.RUNNING, attempts=1, owner="default-0@vm:42:abc", task_id="t-1")
    Job.objects.filter(pk=job.pk).update(input={"upload": upload.sign()})

    response = cancel(client_alice, str(job.id))
    assert response.status_code == 200, response.content
    state = response.json()
    assert (state["status"], state["final"], state["note"]) == ("cancelled", True, "cancelled after 1 attempt")
    assert state["finished"] is not None
    assert TaskRecord.objects.get(key=job.task_key).status == Status.CANCELLED
    assert not blobs.exists(upload), "the cancelled job's upload was kept"
    assert client_alice.get(f"/api/jobs/{job.id}").json()["status"] == "cancelled"

    again = cancel(client_alice, str(job.id))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_final"
    assert "is cancelled already" in again.json()["error"]["message"]


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED])
def test_a_finished_job_is_not_cancelled(client_alice, alice, status):
    job = job_with_row(alice, status=status, finished_at=timezone.now())
    response = cancel(client_alice, str(job.id))
    assert response.status_code == 409
    assert f"is {status.value} already" in response.json()["error"]["message"]
    assert TaskRecord.objects.get(key=job.task_key).status == status


def test_cancel_of_an_unknown_or_foreign_job_is_404_and_needs_post_and_csrf(client_alice, alice, django_user_model):
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "bob-password")
    theirs = job_with_row(bob, "bob")
    for job_id in (str(theirs.id), str(uuid.uuid4()), "not-a-uuid"):
        response = cancel(client_alice, job_id)
        assert response.status_code == 404, job_id
        assert response.json()["error"]["code"] == "unknown_job"
    assert TaskRecord.objects.get(key=theirs.task_key).status == Status.PENDING
    mine = job_with_row(alice, "mine")
    assert client_alice.get(f"/api/jobs/{mine.id}/cancel").status_code == 405
    assert Client().post(f"/api/jobs/{mine.id}/cancel").status_code == 401

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    refused = cancel(strict, str(mine.id))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    strict.get("/")  # the page sets the csrftoken cookie
    accepted = cancel(strict, str(mine.id), headers={"X-CSRFToken": strict.cookies["csrftoken"].value})
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "cancelled"


def test_a_job_keeps_its_final_state_after_its_status_row_is_pruned(client_alice, alice, claimcheck_backend):
    summary = claimcheck.store_bytes(b"1 a\n", prefix="lines", content_type="text/plain")
    finished = timezone.now() - timedelta(days=8)
    done = job_with_row(
        alice, "done", status=Status.SUCCEEDED, attempts=1, progress=1.0, finished_at=finished,
        result={"files": {"numbered.txt": summary.sign()}, "stats": {"lines": 1}},
    )  # fmt: skip
    broke = job_with_row(
        alice, "broke", status=Status.FAILED, attempts=3, finished_at=finished,
        error_type="app.InputError", error_message="no 'email' column",
    )  # fmt: skip
    before = client_alice.get(f"/api/jobs/{done.id}").json()
    assert set(before["links"]) == {"numbered.txt"}

    assert maintenance.prune_finished(older_than=timedelta(days=7)) == 2
    assert not TaskRecord.objects.exists()

    kept = client_alice.get(f"/api/jobs/{done.id}").json()
    assert (kept["status"], kept["final"], kept["result"]) == ("succeeded", True, {"lines": 1})
    assert kept["finished"] == before["finished"]
    assert kept["links"] == {}
    assert kept["expired"] is not None
    assert kept["note"] == "succeeded; results expired"
    failed = client_alice.get(f"/api/jobs/{broke.id}").json()
    assert (failed["status"], failed["final"]) == ("failed", True)
    assert failed["error"]["message"] == "no 'email' column"
    assert failed["attempts"]["made"] == 3
    listed = {j["id"]: j["status"] for j in client_alice.get("/api/jobs").json()["jobs"]}
    assert listed == {str(done.id): "succeeded", str(broke.id): "failed"}

    # The stream of a pruned job sends the kept state once and ends, instead of waiting forever.
    async def read() -> list[str]:
        job = await Job.objects.aget(pk=done.pk)
        chunks = [chunk async for chunk in event_stream(job)]
        await sync_to_async(connections.close_all)()
        return "".join(chunks).split("\n")

    lines = asyncio.run(asyncio.wait_for(read(), timeout=10))
    gc.collect()  # the executor's threads are gone: close their database connections, or teardown cannot drop it
    states = [data for name, data in parse_events(lines) if name == "status"]
    assert [(s["status"], s["final"]) for s in states] == [("succeeded", True)]


def test_the_state_says_what_a_waiting_or_running_job_waits_for(client_alice, alice, test_kinds):
    most = test_kinds[0].task.get_max_attempts()
    enqueued = timezone.now() - timedelta(minutes=3)
    started = timezone.now() - timedelta(minutes=1)
    cases: dict[str, tuple[dict[str, Any], str, str | None]] = {
        "queued": ({"enqueued_at": enqueued}, "queued, waiting for a worker", None),
        "unpublished": (
            {"enqueued_at": enqueued, "error_type": "PublishFailed", "error_message": "broker down"},
            "queued; the broker did not take it yet, it is sent again",
            None,
        ),
        "running": (
            {"status": Status.RUNNING, "attempts": 2, "owner": "default-0@vm:4242:abc", "started_at": started},
            f"running on default-0@vm (attempt 2 of {most})",
            "default-0@vm",
        ),
        "lost": (
            {"attempts": 1, "started_at": started, "error_type": "LeaseExpired", "error_message": "lease expired"},
            f"worker lost: retrying (attempt 2 of {most} next)",
            None,
        ),
        "retrying": (
            {"attempts": 1, "started_at": started, "error_type": "app.TransientError", "error_message": "timeout"},
            f"retrying after an error (attempt 2 of {most} next)",
            None,
        ),
    }
    for name, (row, _, _) in cases.items():
        job_with_row(alice, name, **row)
    states = {j["filename"]: j for j in client_alice.get("/api/jobs").json()["jobs"]}
    for name, (row, note, worker) in cases.items():
        state = states[f"{name}.csv"]
        assert state["note"] == note, name
        assert state["worker"] == worker, name
        assert state["attempts"] == {"made": row.get("attempts", 0), "max": most}, name
        assert state["final"] is False
    assert states["queued.csv"]["waiting"] == {"reason": "queued", "since": enqueued.isoformat()}
    assert states["lost.csv"]["waiting"] == {"reason": "worker_lost", "since": started.isoformat()}
    assert states["lost.csv"]["error"] == {"type": "LeaseExpired", "name": "LeaseExpired", "message": "lease expired"}
    assert states["running.csv"]["waiting"] is None
    assert json.loads(json.dumps(states))  # plain JSON all through


@pytest.mark.workers
@pytest.mark.timeout(120)
def test_a_job_whose_worker_is_lost_says_so_while_it_waits_for_its_retry(client_alice, alice, start_worker):
    job = Job.objects.create(owner=alice, kind="lines", task_key="job:lost", filename="lost.csv")
    effects.make_effect.using(key=job.task_key).enqueue("lost", first_run_seconds=30.0)
    doomed = start_worker("default", "-c", "1", name="doomed")
    wait_until(lambda: effects.count("runs:lost") == 1, 60, "the first run to start")
    running = client_alice.get(f"/api/jobs/{job.id}").json()
    assert running["worker"].startswith("doomed@")
    assert running["note"].startswith(f"running on {running['worker']} (attempt 1 of ")

    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool child die without a word
    doomed.wait(timeout=10)
    lease = TaskRecord.objects.get(key=job.task_key).lease_expires_at
    assert lease is not None
    wait_until(lambda: timezone.now() > lease, 30, "the lease to expire")
    maintenance.reap_expired_leases()  # as beat would
    lost = client_alice.get(f"/api/jobs/{job.id}").json()
    assert (lost["status"], lost["final"], lost["worker"]) == ("pending", False, None)
    assert lost["waiting"]["reason"] == "worker_lost"
    assert lost["note"].startswith("worker lost: retrying (attempt 2 of ")
    assert lost["error"]["name"] == "LeaseExpired"


def _post_upload(client: Client, form: dict[str, Any], data: bytes) -> int:
    """Send ``data`` to an upload form as the browser does; return the HTTP status."""
    body, content_type = multipart(form["fields"], "lines.csv", data, "text/csv")
    url = urlsplit(form["url"])
    if url.hostname == "testserver":  # the local-disk upload view
        return client.post(f"{url.path}?{url.query}", body, content_type=content_type).status_code
    request = urllib.request.Request(form["url"], data=body, headers={"Content-Type": content_type})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _final_state(client: Client, job_id: str) -> dict[str, Any]:
    states: list[dict[str, Any]] = []

    def final() -> bool:
        states.append(client.get(f"/api/jobs/{job_id}").json())
        return bool(states[-1]["final"])

    wait_until(final, 60, f"job {job_id} to finish")
    return states[-1]


@pytest.mark.workers
@pytest.mark.timeout(120)
def test_an_upload_posted_again_after_its_job_started_fails_the_job_naming_the_change(
    claimcheck_backend, client_alice, start_worker
):
    upload = {"kind": "lines", "filename": "lines.csv", "content_type": "text/csv", "size": 100}
    changed = client_alice.post("/api/uploads", upload, content_type="application/json").json()
    assert _post_upload(client_alice, changed, b"a\nb\nc\n") == 204
    started = client_alice.post(
        "/api/jobs", {"kind": "lines", "upload": changed["upload"]}, content_type="application/json"
    )
    assert started.status_code == 202, started.content
    job_id = started.json()["id"]
    # The same upload started again is the same job, as before.
    again = client_alice.post(
        "/api/jobs", {"kind": "lines", "upload": changed["upload"]}, content_type="application/json"
    )
    assert again.json()["id"] == job_id
    # Other bytes of the same size after the job took its reference: S3 takes the form again until it
    # expires; the local view refuses (409), so the file is replaced behind its back.
    status = _post_upload(client_alice, changed, b"x\ny\nz\n")
    if claimcheck_backend.kind == "local":
        assert status == 409
        path = Path(blobs.get_storage().path(changed["fields"]["key"]))
        spare = path.with_name(path.name + ".new")
        spare.write_bytes(b"x\ny\nz\n")
        spare.replace(path)
    else:
        assert status == 204
    kept = client_alice.post("/api/uploads", upload, content_type="application/json").json()
    assert _post_upload(client_alice, kept, b"1\n2\n") == 204
    untouched = client_alice.post(
        "/api/jobs", {"kind": "lines", "upload": kept["upload"]}, content_type="application/json"
    )

    start_worker("default", env=claimcheck_backend.env)
    failed = _final_state(client_alice, job_id)
    assert (failed["status"], failed["attempts"]["made"]) == ("failed", 1), failed  # permanent: not retried
    assert failed["error"]["name"] == "BlobCorruptError"
    assert "changed after its reference was taken" in failed["error"]["message"]
    assert "uploaded again to the same form" in failed["error"]["message"]
    succeeded = _final_state(client_alice, untouched.json()["id"])
    assert (succeeded["status"], succeeded["result"]) == ("succeeded", {"lines": 2}), succeeded
