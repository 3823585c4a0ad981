"""The jobs API end to end over HTTP: uvicorn, real workers on Redis, uploads to storage, SSE, downloads, e-mail."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from {{ cookiecutter.project_slug }}.claimcheck import blobs

from support.customers import customer_csv
from support.images import large_blank_png
from support.smtp import SMTPRecorder
from support.web import Browser, parse_events, start_web

pytestmark = pytest.mark.workers

PASSWORD = "carol-password"


@pytest.fixture
def smtp():
    with SMTPRecorder(fail_first=1) as server:
        yield server


@pytest.fixture
def stack_env(worker_env: dict[str, str], smtp: SMTPRecorder, request: pytest.FixtureRequest) -> dict[str, str]:
    """Return the environment of the web and worker processes: same database, broker, storage and SMTP."""
    storage = {}
    if "claimcheck_backend" in request.fixturenames:  # local disk, or a fresh bucket on the S3 API server
        storage = request.getfixturevalue("claimcheck_backend").env
    return {**worker_env, **storage, "TEST_SMTP_URL": smtp.url}


@pytest.fixture
def web_process(stack_env, tmp_path: Path):
    proc, base = start_web(stack_env, tmp_path / "logs")
    yield proc, base
    proc.stop()


@pytest.fixture
def web(web_process) -> str:
    return web_process[1]


@pytest.fixture
def browser(web, django_user_model) -> Browser:
    django_user_model.objects.create_user("carol", "carol@example.com", PASSWORD)
    client = Browser(web)
    client.sign_in("carol", PASSWORD)
    return client


def upload(browser: Browser, kind: str, name: str, data: bytes, content_type: str) -> str:
    """Upload ``data`` through the presigned form and return the job-start token."""
    from support.web import multipart

    answer = browser.post_json(
        "/api/uploads", {"kind": kind, "filename": name, "content_type": content_type, "size": len(data)}
    )
    assert answer.status == 201, answer.body
    form = answer.json()
    body, form_type = multipart(form["fields"], name, data, content_type)
    stored = browser.request("POST", form["url"], body, {"Content-Type": form_type})
    assert stored.status in (200, 201, 204), stored.body
    return form["upload"]


def start(browser: Browser, kind: str, token: str) -> tuple[str, dict]:
    """Start a job and return its Location and body, checking the 202 contract."""
    answer = browser.post_json("/api/jobs", {"kind": kind, "upload": token})
    assert answer.status == 202, answer.body
    body = answer.json()
    assert answer.headers["location"] == body["urls"]["status"] == f"/api/jobs/{body['id']}"
    assert body["status"] == "pending"
    return answer.headers["location"], body


def test_report_job_from_upload_to_download_and_email(claimcheck_backend, start_worker, stack_env, browser, smtp):
    start_worker("emails", env=stack_env)
    # About 3 MB: twenty progress reports on the way, and well inside the 8 s soft limit the test settings give the
    # reports pool even on a loaded machine (200,000 rows once took over 8 s there: a retry restarted the bar).
    customers = customer_csv(100_000)
    token = upload(browser, "report", "customers.csv", customers.data, "text/csv")

    location, body = start(browser, "report", token)
    again = browser.post_json("/api/jobs", {"kind": "report", "upload": token})
    assert again.status == 202
    assert again.json()["id"] == body["id"]  # a repeated start request is the same job

    # The stream opens while the job waits for a worker, so it sees the whole run however fast the report is.
    lines: list[str] = []

    def read() -> None:
        for line in browser.events(body["urls"]["events"]):
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _wait(lambda: any(line.startswith("event: status") for line in lines), 30, "the stream's first status")
    start_worker("reports", env=stack_env)
    reader.join(timeout=120)
    assert not reader.is_alive(), "the stream did not end"
    events = parse_events(lines)
    states = [data for name, data in events if name == "status"]
    assert states, events
    assert states[0]["status"] == "pending"
    assert states[-1]["status"] == "succeeded"
    assert states[-1]["final"] is True
    assert states[-1]["progress"]["fraction"] == 1.0
    fractions = [s["progress"]["fraction"] for s in states]
    assert fractions == sorted(fractions), (fractions, _attempt_errors(body["id"]))  # one attempt, no restart
    assert any(0 < f < 1 for f in fractions), states  # the bar moved before the end

    state = browser.request("GET", location).json()
    assert state["status"] == "succeeded"
    assert state["result"]["rows"] == customers.rows
    assert state["result"]["customers"] == customers.customers
    assert state["result"]["duplicates"] == customers.duplicates
    assert state["started"]
    assert state["finished"]
    assert state["error"] is None

    download = browser.request("GET", state["links"]["summary.csv"])
    assert download.status == 200
    summary = {row["country"]: int(row["customers"]) for row in csv.DictReader(io.StringIO(download.body.decode()))}
    assert summary == dict(customers.countries)
    assert sum(summary.values()) == customers.customers

    # The raw upload is deleted once the report succeeded; the summary stays.
    def stored(prefix: str) -> list[str]:
        return [key for key, _ in blobs.iter_blobs() if key.startswith(prefix)]

    _wait(lambda: not stored("uploads/"), 30, "the raw upload to be deleted")
    assert len(stored("reports/")) == 1

    # The "report ready" e-mail: the first SMTP attempt is refused (451), the retry delivers it.
    _wait(lambda: smtp.messages, 60, "the report-ready e-mail")
    message = smtp.messages[0]
    assert message["To"] == "carol@example.com"
    assert message["Subject"] == "Report ready: customers.csv"
    assert f"Customers: {customers.customers}" in message.get_payload()
    assert smtp.attempts == 2
    time.sleep(1)
    assert len(smtp.messages) == 1


def test_stream_pings_while_pending_then_thumbnails_finish(start_worker, stack_env, browser, tmp_path):
    image = Image.radial_gradient("L").resize((800, 400)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    token = upload(browser, "thumbnails", "photo.jpg", buffer.getvalue(), "image/jpeg")
    _, body = start(browser, "thumbnails", token)

    # No images worker yet: the job waits, and the idle stream sends pings (1 s apart in test settings).
    lines, started = [], time.monotonic()
    for line in browser.events(body["urls"]["events"]):
        lines.append(line)
        if time.monotonic() - started > 3.5:
            break
    events = parse_events(lines)
    assert [name for name, _ in events].count(":") >= 2, lines
    states = [data for name, data in events if name == "status"]
    assert [s["status"] for s in states] == ["pending"]

    queues = browser.request("GET", "/api/queues").json()
    assert queues["queues"]["images"] == 1
    assert queues["error"] is None

    start_worker("images", env=stack_env)
    final = [data for name, data in parse_events(list(browser.events(body["urls"]["events"]))) if name == "status"][-1]
    assert final["status"] == "succeeded", final
    assert sorted(final["links"]) == ["thumb-128.png", "thumb-256.png", "thumb-64.png"]
    thumb = browser.request("GET", final["links"]["thumb-64.png"])
    assert thumb.status == 200
    with Image.open(io.BytesIO(thumb.body)) as small:
        assert small.size == (64, 32)
    assert browser.request("GET", "/api/queues").json()["queues"]["images"] == 0


def test_report_of_a_bad_csv_fails_for_good_with_a_clear_error(start_worker, stack_env, browser):
    start_worker("reports", env=stack_env)
    token = upload(browser, "report", "people.csv", b"name,city\nAda,London\n", "text/csv")
    location, body = start(browser, "report", token)
    states = [data for name, data in parse_events(list(browser.events(body["urls"]["events"]))) if name == "status"]
    final = states[-1]
    assert final["status"] == "failed"
    assert "no 'email' column" in final["error"]["message"]
    assert final["links"] == {}
    assert browser.request("GET", location).json()["error"]["type"].endswith("DemoInputError")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_of_too_many_pixels_fails_for_good_naming_its_size(start_worker, stack_env, browser):
    start_worker("images", env=stack_env)
    token = upload(browser, "thumbnails", "huge.png", large_blank_png(12_000, 12_000), "image/png")
    location, body = start(browser, "thumbnails", token)
    states = [data for name, data in parse_events(list(browser.events(body["urls"]["events"]))) if name == "status"]
    final = states[-1]
    assert final["status"] == "failed", final
    assert "12000 x 12000 pixels" in final["error"]["message"]
    assert browser.request("GET", location).json()["error"]["type"].endswith("DemoInputError")


def test_the_walkthrough_script_of_the_readme_runs_a_report_to_the_end(
    start_worker, stack_env, web, django_user_model, tmp_path
):
    start_worker("reports", env=stack_env)
    django_user_model.objects.create_user("demo", "demo@example.com", PASSWORD)
    customers = customer_csv(2000, seed=5)
    path = tmp_path / "customers.csv"
    path.write_bytes(customers.data)
    script = Path(__file__).resolve().parents[2] / "scripts" / "jobs_walkthrough.py"
    done = subprocess.run(
        [sys.executable, str(script), str(path), "--base", web],
        env={"PATH": os.environ.get("PATH", ""), "PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout)  # the output README.md shows; pytest prints it with -rP
    lines = done.stdout.splitlines()
    assert lines[0] == "[sign in] signed in as demo"
    assert lines[1].startswith("[upload] POST /api/uploads -> 201")
    assert lines[2].startswith("[upload] POST ")
    assert lines[2].endswith(f"{len(customers.data)} bytes of customers.csv stored")
    assert re.fullmatch(r"\[start\] POST /api/jobs -> 202 Accepted, Location: /api/jobs/[0-9a-f-]{36}", lines[3]), lines
    assert any(line.startswith("[status] GET /api/jobs/") for line in lines)
    assert any(line.startswith("[stream] event status: succeeded, 100 %") for line in lines), lines
    assert any(line.startswith("[done] download summary.csv: ") for line in lines), lines
    assert lines[-1].startswith("[done] job ")
    assert f'"customers": {customers.customers}' in lines[-1]


def test_one_web_process_holds_many_streams_without_a_thread_each(web_process, browser, django_user_model):
    from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord
    from {{ cookiecutter.project_slug }}.jobs.models import Job

    proc, _ = web_process
    owner = django_user_model.objects.get(username="carol")
    job = Job.objects.create(owner=owner, kind="report", task_key="job:many-streams", filename="many.csv")
    TaskRecord.objects.create(key=job.task_key, task_name="demo.report", queue="reports", payload_hash="0" * 64)
    streams = 40
    pings = [0] * streams
    threads_seen: list[int] = []

    def follow(n: int) -> None:
        for line in browser.events(f"/api/jobs/{job.id}/events", timeout=30):
            if line == ": ping":
                pings[n] += 1
                if pings[n] == 2:
                    return

    def web_threads() -> int:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))

    readers = [threading.Thread(target=follow, args=(n,)) for n in range(streams)]
    for reader in readers:
        reader.start()
    while any(reader.is_alive() for reader in readers):
        threads_seen.append(web_threads())
        time.sleep(0.2)
    for reader in readers:
        reader.join(timeout=60)
    assert pings == [2] * streams  # every stream stayed open and pinged twice
    # Streams wait on the event loop: a few shared threads serve all of them, not one thread each.
    assert max(threads_seen) < streams / 2, threads_seen


def _attempt_errors(job_id: str) -> list[dict]:
    """Return the error of every failed attempt of a job's status row (why a report started again)."""
    from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord
    from {{ cookiecutter.project_slug }}.jobs.models import Job

    return TaskRecord.objects.get(key=Job.objects.get(pk=job_id).task_key).error_log


def _wait(predicate, timeout: float, what: str) -> None:
    from support.servers import wait_until

    wait_until(lambda: bool(predicate()), timeout, what, interval=0.1)


def test_customer_csv_generator_counts():
    made = customer_csv(1000, seed=3)
    rows = list(csv.DictReader(io.StringIO(made.data.decode())))
    seen: dict[str, str] = {}
    for row in rows:
        seen.setdefault(row["email"].strip().lower(), row["country"])
    assert made.customers == len(seen)
    assert made.duplicates == len(rows) - len(seen) > 100
    assert made.countries == Counter(seen.values())
