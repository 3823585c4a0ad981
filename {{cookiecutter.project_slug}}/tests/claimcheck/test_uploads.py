"""Browser uploads with a real HTTP POST: presigned forms on S3 (moto) and the local upload view, then completion."""

from __future__ import annotations

import hashlib
import io
import os
import time
from urllib.parse import urlsplit

import pytest
import urllib3
from django.core import signing
from django.urls import reverse

from {{ cookiecutter.project_slug }}.claimcheck import blobs, uploads
from {{ cookiecutter.project_slug }}.claimcheck.exceptions import UploadRejectedError

KB = 1024

#: Multipart form fields as urllib3 posts them: plain values, and the file as (filename, data, content type).
FormFields = dict[str, str | tuple[str, bytes, str]]


@pytest.fixture
def base_url(claimcheck_backend, request):
    """Return the origin that relative upload and download URLs live under (a real HTTP server for local disk)."""
    if claimcheck_backend.kind == "local":
        return request.getfixturevalue("live_server").url
    return ""


def post_form(
    form: uploads.UploadForm, base: str, data: bytes, content_type: str = "text/csv"
) -> urllib3.BaseHTTPResponse:
    """POST the form's fields and then the file, as multipart/form-data, the way a browser does."""
    fields: FormFields = dict(form.fields)
    fields["file"] = ("rows.csv", data, content_type)
    return urllib3.request("POST", base + form.url, fields=fields, timeout=30, retries=False)


def test_upload_complete_and_download(claimcheck_backend, base_url):
    form = uploads.create_upload(content_type="text/csv", max_size=256 * KB)
    assert form.key.startswith("uploads/")
    data = b"id,email\n" + b"".join(b"%d,user%d@example.com\n" % (i, i) for i in range(5000))
    assert len(data) < 256 * KB

    response = post_form(form, base_url, data)
    assert response.status == 204, response.data

    reference = uploads.complete_upload(form.ticket)
    assert (reference.key, reference.size, reference.content_type) == (form.key, len(data), "text/csv")
    assert reference.sha256 == hashlib.sha256(data).hexdigest()
    assert blobs.read_bytes(reference) == data

    download = urllib3.request("GET", base_url + uploads.download_url(reference), timeout=30, retries=False)
    assert download.status == 200
    assert download.data == data
    assert download.headers["Content-Type"] == "text/csv"


def test_presigned_post_has_exact_key_size_range_type_and_expiry(claimcheck_backend):
    before = time.time()
    form = uploads.create_upload(content_type="application/json", max_size=10 * KB, expires=300)
    assert 299 <= form.expires_at.timestamp() - before <= 301
    if claimcheck_backend.kind == "s3":
        import base64
        import json

        policy = json.loads(base64.b64decode(form.fields["policy"]))
        conditions = policy["conditions"]
        assert {"key": f"claimcheck/{form.key}"} in conditions
        assert ["content-length-range", 1, 10 * KB] in conditions
        assert {"Content-Type": "application/json"} in conditions
        assert form.fields["key"] == f"claimcheck/{form.key}"
    else:
        assert form.fields == {"key": form.key, "Content-Type": "application/json"}
        assert form.url.startswith(reverse("claimcheck:receive-upload") + "?policy=")


def test_completion_refuses_object_over_the_limit(claimcheck_backend, base_url):
    form = uploads.create_upload(content_type="text/csv", max_size=64 * KB)
    oversized = os.urandom(64 * KB + 1)
    response = post_form(form, base_url, oversized)
    if claimcheck_backend.kind == "s3":
        assert response.status == 204  # moto does not enforce content-length-range: completion must
    else:
        assert response.status == 413  # the local view stops reading past the limit
        assert b"over the limit of 65536 bytes" in response.data
        # Something that bypassed the view is still checked at completion.
        blobs.get_storage().save(form.key, io.BytesIO(oversized))
    with pytest.raises(UploadRejectedError, match=r"is 65537 bytes, outside the accepted 1 to 65536 bytes"):
        uploads.complete_upload(form.ticket)
    assert not blobs.get_storage().exists(form.key)  # the refused object is deleted


def test_completion_refuses_missing_object_and_bad_tickets(claimcheck_backend):
    form = uploads.create_upload(content_type="text/csv")
    with pytest.raises(UploadRejectedError, match="the upload did not finish"):
        uploads.complete_upload(form.ticket)
    with pytest.raises(UploadRejectedError, match="forged or altered"):
        uploads.complete_upload(form.ticket[:-2] + "xx")
    with pytest.raises(UploadRejectedError, match="ticket is missing"):
        uploads.complete_upload(None)


def test_create_upload_refuses_bad_requests(claimcheck_backend, settings):
    with pytest.raises(UploadRejectedError, match=r"'text/html' is not accepted.*accepted: text/csv"):
        uploads.create_upload(content_type="text/html")
    with pytest.raises(UploadRejectedError, match="size limit"):
        uploads.create_upload(content_type="text/csv", max_size=settings.CLAIMCHECK_UPLOAD_MAX_BYTES + 1)


@pytest.mark.parametrize("claimcheck_backend", ["s3"], indirect=True)  # local disk has no public endpoint
def test_s3_form_signed_for_public_endpoint(claimcheck_backend, settings):
    # The web app talks to S3 on 127.0.0.1; browsers reach it as localhost (think minio:9000 vs localhost:9000).
    public = claimcheck_backend.endpoint.replace("127.0.0.1", "localhost")
    settings.AWS_S3_PUBLIC_ENDPOINT_URL = public
    form = uploads.create_upload(content_type="text/csv")
    assert urlsplit(form.url).hostname == "localhost"
    response = post_form(form, "", b"a,b\n1,2\n")
    assert response.status == 204, response.data
    reference = uploads.complete_upload(form.ticket)
    url = uploads.download_url(reference)
    assert urlsplit(url).hostname == "localhost"
    assert urllib3.request("GET", url, timeout=30, retries=False).data == b"a,b\n1,2\n"


@pytest.mark.parametrize("claimcheck_backend", ["local"], indirect=True)
def test_local_upload_view_refuses_what_the_policy_does_not_allow(claimcheck_backend, live_server):
    form = uploads.create_upload(content_type="text/csv", max_size=KB)
    good = dict(form.fields)

    def post(url: str, fields: dict[str, str]) -> urllib3.BaseHTTPResponse:
        body: FormFields = {**fields, "file": ("x.csv", b"a,b\n", "text/csv")}
        return urllib3.request("POST", live_server.url + url, fields=body, timeout=30, retries=False)

    tampered = form.url[:-3] + "abc"
    assert post(tampered, good).status == 403
    other_key = {**good, "key": blobs.new_key("uploads")}
    response = post(form.url, other_key)
    assert (response.status, b"the policy allows only" in response.data) == (403, True)
    assert post(form.url, {**good, "key": "../../etc/passwd"}).status == 403
    assert post(form.url, {**good, "Content-Type": "text/html"}).status == 403
    expired = uploads.create_upload(content_type="text/csv", max_size=KB, expires=-1)
    response = post(expired.url, dict(expired.fields))
    assert (response.status, b"expired" in response.data) == (403, True)
    assert not blobs.get_storage().exists(form.key)

    assert post(form.url, good).status == 204
    assert post(form.url, good).status == 409  # one exact key, written once


@pytest.mark.parametrize("claimcheck_backend", ["local"], indirect=True)
def test_local_download_link_is_signed_and_short_lived(claimcheck_backend, client):
    reference = blobs.store_bytes(b"report", prefix="results", content_type="text/csv")
    url = uploads.download_url(reference)
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"report"
    assert client.get(url[:-4] + "abc/").status_code == 403
    expired = uploads.download_url(reference, expires=-1)
    assert client.get(expired).status_code == 403
    blobs.delete(reference)
    assert client.get(url).status_code == 404


def test_completion_checks_the_uploaded_object(claimcheck_backend):
    form = uploads.create_upload(content_type="text/csv", max_size=1000)
    with pytest.raises(UploadRejectedError, match="did not finish"):
        uploads.complete_upload(form.ticket)
    blobs.get_storage().save(form.key, io.BytesIO(b"a,b\n"))
    if claimcheck_backend.kind == "s3":
        # Saved through the storage API the object has no text/csv type: completion refuses and deletes it.
        with pytest.raises(UploadRejectedError, match="content type"):
            uploads.complete_upload(form.ticket)
        return
    reference = uploads.complete_upload(form.ticket)
    assert (reference.key, reference.size, reference.content_type) == (form.key, 4, "text/csv")
    assert blobs.read_bytes(reference) == b"a,b\n"


def test_tokens_are_not_interchangeable(claimcheck_backend):
    form = uploads.create_upload(content_type="text/csv")
    with pytest.raises(signing.BadSignature):
        signing.loads(form.ticket, salt=uploads.POLICY_SALT)
