"""Browser uploads with a real HTTP POST: presigned forms on S3 (moto) and the local upload view, then completion."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3
from django.core import signing
from django.core.files.storage import FileSystemStorage
from django.urls import reverse

from {{ cookiecutter.project_slug }}.claimcheck import base as claimcheck_base
from {{ cookiecutter.project_slug }}.claimcheck import blobs, uploads
from {{ cookiecutter.project_slug }}.claimcheck.exceptions import BlobCorruptError, InvalidReferenceError, UploadRejectedError
from {{ cookiecutter.project_slug }}.claimcheck.references import SALT, Reference

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
    # Pinned, not hashed: the worker that reads it checks the pin (and the size) instead.
    assert (reference.sha256, reference.pin) == (None, blobs.stat_object(form.key).pin)
    assert blobs.read_bytes(reference) == data
    assert hashlib.sha256(blobs.read_bytes(reference)).hexdigest() == hashlib.sha256(data).hexdigest()

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


def test_completion_reads_none_of_the_uploaded_bytes(claimcheck_backend, base_url, monkeypatch, request):
    form = uploads.create_upload(content_type="text/csv", max_size=256 * KB)
    data = os.urandom(200 * KB)
    assert post_form(form, base_url, data).status == 204
    storage = blobs.get_storage()
    calls: list[str] = []
    if blobs.is_s3(storage):
        # Every request the storage's client sends, by S3 operation: a GetObject would be a download.
        events = storage.connection.meta.client.meta.events

        def count(model, **kwargs):
            calls.append(model.name)

        events.register("before-call.s3", count, unique_id="count-calls")
        request.addfinalizer(lambda: events.unregister("before-call.s3", unique_id="count-calls"))
    else:
        assert isinstance(storage, FileSystemStorage)
        real_open = storage.open

        def counting_open(name: str, mode: str = "rb") -> Any:
            calls.append(f"open {name}")
            return real_open(name, mode)

        monkeypatch.setattr(storage, "open", counting_open)
    reference = uploads.complete_upload(form.ticket)
    assert reference.size == len(data)
    assert calls == (["HeadObject"] if claimcheck_backend.kind == "s3" else [])
    # The reader is what opens the object, once.
    assert blobs.read_bytes(reference) == data
    assert calls[-1] == ("GetObject" if claimcheck_backend.kind == "s3" else f"open {form.key}")


def test_an_object_uploaded_again_after_completion_is_refused_when_read(claimcheck_backend, base_url):
    form = uploads.create_upload(content_type="text/csv", max_size=KB)
    assert post_form(form, base_url, b"id\n1\n").status == 204
    reference = uploads.complete_upload(form.ticket)
    replace_upload(claimcheck_backend, form, base_url, b"id\n2\n")  # same size, other bytes
    with pytest.raises(BlobCorruptError, match=r"changed after its reference was taken.*uploaded again"):
        blobs.read_bytes(reference)
    # Refused when opened, before a byte is handed out (the local download view streams what open_blob gives).
    with pytest.raises(BlobCorruptError, match="changed after its reference was taken"):
        blobs.open_blob(reference)


def replace_upload(backend, form: uploads.UploadForm, base: str, data: bytes) -> None:
    """Put other bytes at an upload's key after its completion: a second POST of the form, as a client can."""
    response = post_form(form, base, data)
    if backend.kind == "s3":
        assert response.status == 204  # S3 takes a form until it expires
        return
    assert response.status == 409  # the local view writes a key once: replace the file behind its back
    path = Path(blobs.get_storage().path(form.key))
    spare = path.with_name(path.name + ".new")
    spare.write_bytes(data)
    spare.replace(path)


def test_pinned_and_hashed_references_round_trip_and_refuse_a_mix():
    pinned = Reference(key=f"uploads/{uuid.uuid4()}", size=3, pin="etag:0123abc", content_type="text/csv")
    assert Reference.from_token(pinned.sign()) == pinned
    hashed = Reference(key=f"args/{uuid.uuid4()}", size=3, sha256="0" * 64)
    assert "pin" not in signing.loads(hashed.sign(), salt=SALT)  # the same token as before pins existed
    with pytest.raises(InvalidReferenceError, match="exactly one"):
        Reference(key=pinned.key, size=3, sha256="0" * 64, pin="etag:0123abc")
    with pytest.raises(InvalidReferenceError, match="exactly one"):
        Reference(key=pinned.key, size=3)
    with pytest.raises(InvalidReferenceError, match="pin 'md5:x' is refused"):
        Reference(key=pinned.key, size=3, pin="md5:x")
    # A forged pin (another object's ETag) cannot be signed without the project secret.
    forged = signing.dumps({**signing.loads(pinned.sign(), salt=SALT), "pin": "etag:other"}, key="guess", salt=SALT)
    with pytest.raises(InvalidReferenceError, match="forged or altered"):
        Reference.from_token(forged)
    # An argument set is identified by its sha256: a pinned reference is not accepted as one.
    with pytest.raises(InvalidReferenceError, match="carries a pin"):
        claimcheck_base.payload_identity((), pinned.envelope())
