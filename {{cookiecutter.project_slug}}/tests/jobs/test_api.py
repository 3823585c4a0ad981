"""The jobs API refuses bad requests with a JSON 4xx that names the problem, and keeps users' jobs apart."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from {{ cookiecutter.project_slug }}.jobs.models import Job

from support.web import multipart

pytestmark = pytest.mark.django_db


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content[:200]
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    return body["error"]


def post_json(client: Client, url: str, data, **extra):
    body = data if isinstance(data, (bytes, str)) else json.dumps(data)
    return client.post(url, body, content_type=extra.pop("content_type", "application/json"), **extra)


UPLOAD = {"kind": "lines", "filename": "customers.csv", "content_type": "text/csv", "size": 1000}

#: A job id no test creates; fixed, so every pytest-xdist worker collects the same test ids.
NO_SUCH_JOB = "00000000-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/jobs"),
        ("post", "/api/jobs"),
        ("post", "/api/uploads"),
        ("get", f"/api/jobs/{NO_SUCH_JOB}"),
        ("get", f"/api/jobs/{NO_SUCH_JOB}/events"),
        ("get", "/api/queues"),
    ],
)
def test_api_without_session_answers_401_json(method, url):
    response = getattr(Client(), method)(url)
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_signed_in"


def test_page_without_session_redirects_to_login():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "needle"),
    [
        ("kind=lines", "application/x-www-form-urlencoded", 415, "unsupported_media_type", "application/json"),
        ('{"kind": "lines",', "application/json", 400, "malformed_json", "not valid JSON"),
        ("[1, 2]", "application/json", 400, "malformed_json", "JSON object, not list"),
        (b"\xff\xfe", "application/json", 400, "malformed_json", "not valid JSON"),
        ({**UPLOAD, "colour": "red"}, "application/json", 400, "invalid_fields", "Unknown field(s): colour"),
        ({"kind": "lines"}, "application/json", 400, "invalid_fields", "Missing field(s): filename, content_type"),
        ({**UPLOAD, "size": "1000"}, "application/json", 400, "invalid_fields", "'size' must be an integer"),
        ({**UPLOAD, "size": True}, "application/json", 400, "invalid_fields", "'size' must be an integer"),
        ({**UPLOAD, "kind": "video"}, "application/json", 400, "invalid_fields", "is 'video'; accepted values: "),
        ({**UPLOAD, "content_type": "application/pdf"}, "application/json", 400, "invalid_fields", "text/csv"),
        ({**UPLOAD, "filename": "../etc/passwd"}, "application/json", 400, "invalid_fields", "plain file name"),
        # json.dumps sends the lone surrogate as the escape \ud800, which json.loads accepts.
        ({**UPLOAD, "filename": "\ud800.csv"}, "application/json", 400, "invalid_fields", "Field 'filename'"),
        (
            {**UPLOAD, "filename": "a\r\nBcc: x@example.com.csv"},
            "application/json",
            400,
            "invalid_fields",
            "line breaks",
        ),
        ({**UPLOAD, "filename": "a\u2028b.csv"}, "application/json", 400, "invalid_fields", "Field 'filename'"),
        ("[" * 16000, "application/json", 400, "malformed_json", "nests JSON deeper"),
        ({**UPLOAD, "size": 0}, "application/json", 400, "invalid_fields", "at least one byte"),
        ({**UPLOAD, "size": 10**12}, "application/json", 413, "too_large", "at most"),
    ],
)
def test_bad_upload_requests_name_the_problem(client_alice, body, content_type, status, code, needle):
    response = post_json(client_alice, "/api/uploads", body, content_type=content_type)
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == code
    assert needle in error["message"]


def test_oversize_request_body_is_refused(client_alice, settings):
    huge = json.dumps({**UPLOAD, "filename": "x" * (settings.JOBS_MAX_REQUEST_BYTES + 1)})
    response = post_json(client_alice, "/api/uploads", huge)
    assert response.status_code == 413
    assert str(settings.JOBS_MAX_REQUEST_BYTES) in error_of(response)["message"]


def test_upload_form_is_a_presigned_post_with_a_token(client_alice):
    response = post_json(client_alice, "/api/uploads", UPLOAD)
    assert response.status_code == 201, response.content
    form = response.json()
    assert set(form) == {"url", "fields", "upload", "max_size", "expires_at"}
    assert form["fields"]["Content-Type"] == "text/csv"
    assert form["fields"]["key"].startswith("uploads/")


def test_start_refuses_forged_foreign_and_mismatched_uploads(client_alice, django_user_model):
    response = post_json(client_alice, "/api/jobs", {"kind": "lines", "upload": "forged"})
    assert response.status_code == 400
    assert "not a valid upload token" in error_of(response)["message"]

    bob = Client()
    bob.force_login(django_user_model.objects.create_user("bob", "bob@example.com", "bob-password"))
    token = post_json(bob, "/api/uploads", UPLOAD).json()["upload"]
    response = post_json(client_alice, "/api/jobs", {"kind": "lines", "upload": token})
    assert response.status_code == 400
    assert "another user's upload" in error_of(response)["message"]

    response = post_json(bob, "/api/jobs", {"kind": "picture", "upload": token})
    assert response.status_code == 400
    assert "made for a 'lines' job" in error_of(response)["message"]

    # Nothing was uploaded to the form: the completion check refuses, nothing starts.
    response = post_json(bob, "/api/jobs", {"kind": "lines", "upload": token})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "upload_rejected"
    assert "no object was uploaded" in error["message"]
    assert not Job.objects.exists()


def test_unknown_and_foreign_job_ids_answer_404(client_alice, alice):
    bob = get_user_model().objects.create_user("bob", "bob@example.com", "bob-password")
    theirs = Job.objects.create(owner=bob, kind="lines", task_key="job:bob-1")
    mine = Job.objects.create(owner=alice, kind="lines", task_key="job:alice-1", filename="a.csv")

    for job_id in (str(theirs.id), str(uuid.uuid4()), "not-a-uuid"):
        for suffix in ("", "/events"):
            response = client_alice.get(f"/api/jobs/{job_id}{suffix}")
            assert response.status_code == 404, (job_id, suffix)
            error = error_of(response)
            assert error["code"] == "unknown_job"
            assert job_id in error["message"]

    response = client_alice.get(f"/api/jobs/{mine.id}")
    assert response.status_code == 200
    state = response.json()
    assert state["id"] == str(mine.id)
    # The row is written in the job's own transaction: a job without one lost it, and says so.
    assert state["status"] == "unknown"
    assert state["final"] is True
    assert "no longer exists" in state["note"]
    assert state["urls"]["events"] == f"/api/jobs/{mine.id}/events"
    listed = client_alice.get("/api/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [str(mine.id)]


def test_wrong_method_answers_405_json(client_alice):
    response = client_alice.delete("/api/jobs")
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert error_of(response)["code"] == "method_not_allowed"


def test_csrf_failure_is_json_and_the_token_header_passes(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = post_json(client, "/api/uploads", UPLOAD)
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "csrf_failed"
    assert "X-CSRFToken" in error["message"]

    client.get("/")  # the page sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    response = post_json(client, "/api/uploads", UPLOAD, headers={"X-CSRFToken": token})
    assert response.status_code == 201, response.content


def test_admin_lists_jobs_with_a_link_to_their_status_row(admin_client, alice):
    from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

    job = Job.objects.create(owner=alice, kind="lines", task_key="job:admin-1", filename="admin.csv")
    row = TaskRecord.objects.create(
        key=job.task_key, task_name="demo.report", queue="reports", payload_hash="0" * 64, status="running"
    )
    response = admin_client.get("/admin/jobs/job/")
    assert response.status_code == 200
    assert b"admin.csv" in response.content
    assert f'href="/admin/idempotency/taskrecord/{row.pk}/change/">running</a>'.encode() in response.content
    assert admin_client.get("/admin/jobs/job/add/").status_code == 403


def test_csrf_failure_of_any_json_call_is_json(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = post_json(client, "/api/uploads", UPLOAD)
    assert response.status_code == 403
    assert error_of(response)["code"] == "csrf_failed"
    form = client.post("/accounts/logout/")
    assert form.status_code == 403
    assert form["Content-Type"].startswith("text/html")  # pages keep Django's own CSRF page


def test_a_file_larger_than_declared_is_refused_and_starts_nothing(claimcheck_backend, client_alice):
    form = post_json(client_alice, "/api/uploads", {**UPLOAD, "size": 100}).json()
    body, content_type = multipart(form["fields"], "customers.csv", b"email,country\n" + b"x" * 300, "text/csv")
    url = urlsplit(form["url"])
    if url.hostname == "testserver":  # the local-disk upload view stops reading past the limit
        stored = client_alice.post(f"{url.path}?{url.query}", body, content_type=content_type)
        assert stored.status_code == 413
        assert "over the limit of 100 bytes" in stored.json()["error"]["message"]
    else:  # the S3 API server in tests accepts it: the completion check is what refuses
        request = urllib.request.Request(form["url"], data=body, headers={"Content-Type": content_type})  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status in (200, 201, 204)
    response = post_json(client_alice, "/api/jobs", {"kind": "lines", "upload": form["upload"]})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "upload_rejected"
    refused = "no object was uploaded" if claimcheck_backend.kind == "local" else "outside the accepted 1 to 100 bytes"
    assert refused in error["message"]
    assert not Job.objects.exists()


def test_the_page_offers_the_registered_kinds(client_alice, test_kinds):
    page = client_alice.get("/").content.decode()
    for kind in test_kinds:
        assert kind.label in page
    accept = re.search(r'<input type="file" id="file" name="file" accept="([^"]*)"', page)
    assert accept is not None, page
    for kind in test_kinds:
        assert set(kind.content_types) | set(kind.extensions) <= set(accept.group(1).split(","))


def test_with_no_kind_registered_the_page_says_so_and_the_api_refuses_naming_none(client_alice, monkeypatch):
    from {{ cookiecutter.project_slug }}.jobs import kinds

    monkeypatch.setattr(kinds, "_kinds", {})
    page = client_alice.get("/").content.decode()
    assert 'id="no-kinds"' in page
    assert 'id="upload-form"' not in page
    response = post_json(client_alice, "/api/uploads", UPLOAD)
    assert response.status_code == 400
    assert "accepted values: none (nothing is registered)" in error_of(response)["message"]


def test_a_kind_is_refused_at_registration_when_its_task_or_types_cannot_work(test_kinds):
    from {{ cookiecutter.project_slug }}.jobs import kinds

    from tests.tasks import pools as plain_tasks

    plain: Any = plain_tasks.on_default  # a plain Celery task, which has no idempotency key to run under
    with pytest.raises(kinds.KindRegistrationError, match="is not an IdempotentTask"):
        kinds.JobKind(name="plain", label="Plain", task=plain, content_types=("text/csv",))
    one_string: Any = "text/csv"  # a common slip: a string where a tuple belongs
    with pytest.raises(kinds.KindRegistrationError, match="content_types must be a tuple of strings"):
        kinds.JobKind(name="typo", label="Typo", task=test_kinds[0].task, content_types=one_string)
