"""The idempotent base task offloads and resolves through the claim check, and deletes blobs once it succeeded."""

from __future__ import annotations

import hashlib

import pytest

from {{ cookiecutter.project_slug }}.claimcheck import blobs, resolve_result
from {{ cookiecutter.project_slug }}.claimcheck.references import is_envelope
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord

from support.servers import wait_until
from tests.effects.models import Counter
from tests.storage import message_reference, queued_messages
from tests.tasks import claimcheck as tasks

MB = 1_000_000


def argument_blobs() -> list[str]:
    return [key for key, _modified in blobs.iter_blobs() if key.startswith("args/")]


@pytest.mark.workers
def test_idempotent_task_large_argument_once_and_blob_deleted(claimcheck_backend, start_worker, clean_broker):
    data = tasks.pattern(5 * MB, "idempotent")
    handle = tasks.idempotent_digest.enqueue(data)

    [message] = queued_messages(clean_broker, "default")
    assert len(message) < 4096
    reference = message_reference(message)
    assert reference is not None
    row = TaskRecord.objects.get(pk=handle.id)
    assert row.args == []
    assert is_envelope(row.kwargs)  # the row stores the reference, not 5 MB
    assert argument_blobs() == [reference.key]

    # The same call again is the same row: deduplicated on the blob's sha256, its own blob discarded.
    again = tasks.idempotent_digest.enqueue(data)
    assert (again.id, again.key) == (handle.id, handle.key)
    assert argument_blobs() == [reference.key]
    assert len(queued_messages(clean_broker, "default")) == 1

    start_worker("default", env=claimcheck_backend.env)
    wait_until(lambda: handle.refresh().is_finished, 120, "the idempotent task to finish")
    final = handle.refresh()
    assert final.status == Status.SUCCEEDED, final.error
    assert final.return_value == {"length": 5 * MB, "sha256": hashlib.sha256(data.encode()).hexdigest()}
    assert Counter.objects.get(name=tasks.IDEMPOTENT_RAN).value == 1
    wait_until(lambda: not argument_blobs(), 30, "the argument blob to be deleted after success")

    # After success, the same call returns the finished row and leaves no blob behind.
    assert tasks.idempotent_digest.enqueue(data).status == Status.SUCCEEDED
    assert argument_blobs() == []


@pytest.mark.workers
def test_idempotent_task_large_result_is_stored_as_a_reference(claimcheck_backend, start_worker, clean_broker):
    start_worker("default", env=claimcheck_backend.env)
    handle = tasks.idempotent_text.enqueue(2 * MB, "big")
    wait_until(lambda: handle.refresh().is_finished, 120, "the idempotent task to finish")
    final = handle.refresh()
    assert final.status == Status.SUCCEEDED, final.error
    assert is_envelope(final.return_value)  # the row holds a reference, not 2 MB
    assert resolve_result(final.return_value) == {"text": tasks.pattern(2 * MB, "big"), "seed": "big"}
