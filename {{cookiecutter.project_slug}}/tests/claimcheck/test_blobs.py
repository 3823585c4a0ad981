"""Claim-check blobs on local disk and on a real S3 API server: store, verified read, delete, refusals, sweep."""

from __future__ import annotations

import hashlib
import io
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core import signing
from django.core.files.storage import storages

from {{ cookiecutter.project_slug }}.claimcheck import blobs
from {{ cookiecutter.project_slug }}.claimcheck.exceptions import BlobCorruptError, BlobMissingError, InvalidReferenceError
from {{ cookiecutter.project_slug }}.claimcheck.references import SALT, Reference
from {{ cookiecutter.project_slug }}.core.errors import PermanentError

from support.servers import free_port
from tests.storage import s3_storage_options


def test_store_and_read_back_every_helper(claimcheck_backend, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    ref = blobs.store_bytes(data, prefix="tests", content_type="application/octet-stream")
    assert ref.key.startswith("tests/")
    assert (ref.size, ref.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert blobs.read_bytes(ref) == data

    # Streaming: chunks arrive one at a time and the whole is verified at the end.
    with blobs.open_blob(ref) as reader:
        sizes = [len(chunk) for chunk in reader.chunks(256 * 1024)]
    assert max(sizes) <= 256 * 1024
    assert sum(sizes) == len(data)

    path = tmp_path / "rows.csv"
    path.write_bytes(b"id,name\n1,a\n2,b\n")
    file_ref = blobs.store_file(path, prefix="tests/csv")
    assert file_ref.content_type == "text/csv"
    assert blobs.read_bytes(file_ref) == path.read_bytes()

    stream_ref = blobs.store_stream(io.BytesIO(b"x" * 1000), prefix="tests")
    assert stream_ref.size == 1000

    value = {"when": datetime(2026, 1, 2, tzinfo=UTC), "rows": list(range(1000))}
    json_ref = blobs.store_json(value, prefix="tests")
    assert json_ref.content_type == "application/json"
    assert blobs.read_json(json_ref) == {"when": "2026-01-02T00:00:00Z", "rows": list(range(1000))}

    # The signed token round-trips to the same reference.
    assert Reference.from_token(ref.sign()) == ref


def test_delete_is_idempotent(claimcheck_backend):
    ref = blobs.store_bytes(b"payload", prefix="tests")
    assert blobs.exists(ref)
    blobs.delete(ref)
    assert not blobs.exists(ref)
    blobs.delete(ref)  # already gone: not an error
    with pytest.raises(BlobMissingError, match=ref.key) as excinfo:
        blobs.read_bytes(ref)
    assert isinstance(excinfo.value, PermanentError)
    assert "missing" in str(excinfo.value)


def test_altered_blob_fails_verification(claimcheck_backend):
    ref = blobs.store_bytes(b"a" * 5000, prefix="tests")
    other = blobs.store_bytes(b"b" * 5000, prefix="tests")
    same_size_other_hash = Reference(key=ref.key, size=ref.size, sha256=other.sha256)
    with pytest.raises(BlobCorruptError, match="sha256"):
        blobs.read_bytes(same_size_other_hash)
    shorter = Reference(key=ref.key, size=4000, sha256=ref.sha256)
    with pytest.raises(BlobCorruptError, match="bytes"):
        blobs.read_bytes(shorter)
    longer = Reference(key=ref.key, size=6000, sha256=ref.sha256)
    with pytest.raises(BlobCorruptError, match="6000"):
        blobs.read_bytes(longer)


@pytest.fixture
def unreachable_storage(settings):
    """Point the claim-check storage at a closed port: any storage call would fail with a connection error."""
    storages_setting = dict(settings.STORAGES)
    options = s3_storage_options(f"http://127.0.0.1:{free_port()}", "nowhere")
    storages_setting["claimcheck"] = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}
    settings.STORAGES = storages_setting
    return storages["claimcheck"]


def _signed(**overrides):
    fields = {
        "key": "args/7f1e6c1a-3f0a-4c1e-9a57-0b8f1d2c3e4f",
        "size": 10,
        "sha256": "0" * 64,
        "content_type": "application/json",
        "storage": "claimcheck",
        "version": 1,
    }
    fields.update(overrides)
    return signing.dumps(fields, salt=SALT, compress=False)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param(lambda: _signed(key="../../etc/passwd"), "'../../etc/passwd' is refused", id="dotdot"),
        pytest.param(
            lambda: _signed(key="args/../../../etc/7f1e6c1a-3f0a-4c1e-9a57-0b8f1d2c3e4f"), "no '..'", id="dotdot-mid"
        ),
        pytest.param(lambda: _signed(key="/etc/7f1e6c1a-3f0a-4c1e-9a57-0b8f1d2c3e4f"), "no leading '/'", id="absolute"),
        pytest.param(lambda: _signed(storage="default"), "storage 'default'", id="other-storage"),
        pytest.param(
            lambda: signing.dumps({"key": "args/x"}, salt="another.salt"), "forged or altered", id="wrong-salt"
        ),
        pytest.param(
            lambda: signing.dumps(Reference.from_token(_signed()).__dict__, key="not-the-project-secret", salt=SALT),
            "forged or altered",
            id="forged",
        ),
        pytest.param(lambda: _signed()[:-3] + "abc", "forged or altered", id="signature-altered"),
        pytest.param(
            lambda: _signed().replace(_signed().split(":")[0], _signed(size=11).split(":")[0]),
            "forged or altered",
            id="payload-altered",
        ),
        pytest.param(lambda: "x" * 5000, "at most 2048", id="too-long"),
        pytest.param(lambda: {"key": "args/x"}, "expected a signed string", id="not-a-string"),
    ],
)
def test_bad_references_refused_before_any_storage_call(unreachable_storage, token, message):
    token = token()
    with pytest.raises(InvalidReferenceError, match=message.replace("(", r"\(").replace(".", r"\.")) as excinfo:
        blobs.read_bytes(Reference.from_token(token))
    assert isinstance(excinfo.value, PermanentError)
    # The same token, well signed, would reach the (unreachable) storage: proof the refusal came first.
    with pytest.raises(Exception, match="Could not connect"):
        blobs.read_bytes(Reference.from_token(_signed()))


def test_reference_refuses_traversal_when_built_in_code():
    with pytest.raises(InvalidReferenceError, match="refused"):
        Reference(key="args/../secrets", size=1, sha256="0" * 64)
    with pytest.raises(InvalidReferenceError, match="prefix"):
        blobs.store_bytes(b"x", prefix="../up")


def test_sweep_removes_only_blobs_older_than_the_ttl(claimcheck_backend):
    old = blobs.store_bytes(b"old", prefix="args")
    time.sleep(2.1)  # S3 modification times have one-second resolution
    fresh = blobs.store_bytes(b"fresh", prefix="results")
    modified = dict(blobs.iter_blobs())
    assert modified[old.key] < modified[fresh.key]
    # Pretend "now" is one second past the fresh blob's time, with a TTL of 1.5 s: only the old one is an orphan.
    deleted = blobs.sweep_orphans(older_than=timedelta(seconds=1.5), now=modified[fresh.key] + timedelta(seconds=1))
    assert deleted == [old.key]
    assert not blobs.exists(old)
    assert blobs.read_bytes(fresh) == b"fresh"
    # With the real TTL (two days by default) nothing just written is swept.
    assert blobs.sweep_orphans() == []
    assert blobs.exists(fresh)


def test_sweep_is_a_scheduled_task(settings):
    from {{ cookiecutter.project_slug }}.claimcheck import tasks
    from {{ cookiecutter.project_slug }}.worker.app import app

    entry = settings.CELERY_BEAT_SCHEDULE["claimcheck-sweep-orphans"]
    assert entry["task"] == tasks.sweep_orphans.name
    assert entry["task"] in app.tasks


def test_system_checks_refuse_settings_that_disagree(settings):
    from django.core.checks import registry

    from {{ cookiecutter.project_slug }}.claimcheck.checks import check_claimcheck_settings

    assert check_claimcheck_settings in registry.registry.get_checks()
    assert check_claimcheck_settings() == []
    settings.CLAIMCHECK_MESSAGE_MAX_BYTES = settings.CLAIMCHECK_ARGS_THRESHOLD
    settings.CLAIMCHECK_ORPHAN_TTL = 60
    messages = {m.id: m.msg for m in check_claimcheck_settings()}
    assert set(messages) == {"claimcheck.E001", "claimcheck.W001"}
    assert "IDEMPOTENCY_RETENTION" in messages["claimcheck.W001"]
    assert "must be larger than CLAIMCHECK_ARGS_THRESHOLD" in messages["claimcheck.E001"]
