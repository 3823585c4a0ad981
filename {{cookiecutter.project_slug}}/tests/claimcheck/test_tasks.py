"""Claim check through real workers: large arguments and results never cross the broker, blobs are cleaned up."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest
import redis
from celery import states
from celery.result import AsyncResult

from {{ cookiecutter.project_slug }}.claimcheck import blobs, wait_for_result
from {{ cookiecutter.project_slug }}.claimcheck.exceptions import MessageTooLargeError
from {{ cookiecutter.project_slug }}.claimcheck.references import is_envelope
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app

from support.servers import wait_until
from tests.effects.models import Counter
from tests.storage import message_reference, queued_messages
from tests.tasks import claimcheck as tasks

MB = 1_000_000


@pytest.mark.workers
def test_20mb_argument_round_trip_keeps_broker_message_small(claimcheck_backend, start_worker, clean_broker):
    data = tasks.pattern(20 * MB, "twenty")
    result = tasks.digest.delay(data, label="big")

    [message] = queued_messages(clean_broker, "default")
    assert len(message) < 4096, f"broker message is {len(message)} bytes"
    reference = message_reference(message)
    assert reference is not None
    assert reference.key.startswith("args/")
    assert reference.size > 20 * MB
    assert blobs.exists(reference)

    start_worker("default", env=claimcheck_backend.env)
    assert result.get(timeout=120) == {
        "length": 20 * MB,
        "sha256": hashlib.sha256(data.encode()).hexdigest(),
        "label": "big",
    }
    # The argument blob goes once the success is stored.
    wait_until(lambda: not blobs.exists(reference), 30, "the argument blob to be deleted after success")


def test_small_arguments_travel_inline_unless_forced(claimcheck_backend, clean_broker):
    tasks.digest.delay("small")
    tasks.digest.apply_async(("small",), claimcheck=True)
    inline, forced = queued_messages(clean_broker, "default")[::-1]  # LPUSH: newest first
    assert message_reference(inline) is None
    assert b"small" in inline
    reference = message_reference(forced)
    assert reference is not None
    assert json.loads(blobs.read_bytes(reference)) == [["small"], {}]


@pytest.mark.workers
def test_large_result_round_trip(claimcheck_backend, start_worker, clean_broker):
    start_worker("default", env=claimcheck_backend.env)
    result = tasks.make_text.delay(3 * MB, "result")
    raw = result.get(timeout=120)
    assert is_envelope(raw)  # what the result backend holds is a reference, not 3 MB
    stored = redis.Redis.from_url(clean_broker).get(f"celery-task-meta-{result.id}")
    assert stored is not None
    assert len(stored) < 4096
    assert wait_for_result(result, timeout=5) == {"text": tasks.pattern(3 * MB, "result"), "seed": "result"}

    # A small result is returned as it is.
    small = tasks.make_text.delay(100, "small")
    assert small.get(timeout=60) == {"text": tasks.pattern(100, "small"), "seed": "small"}
    assert wait_for_result(small, timeout=5) == small.get()


@pytest.mark.workers
def test_missing_blob_fails_for_good_without_running_or_retrying(claimcheck_backend, start_worker, clean_broker):
    result = tasks.counted_digest.delay(tasks.pattern(MB, "gone"))
    reference = message_reference(queued_messages(clean_broker, "default")[0])
    assert reference is not None
    blobs.delete(reference)

    worker = start_worker("default", env=claimcheck_backend.env)
    wait_until(lambda: result.state == states.FAILURE, 60, "the task to fail")
    error = result.result
    assert type(error).__name__ == "BlobMissingError"
    assert reference.key in str(error)
    assert "missing" in str(error)
    assert "retrying cannot bring it back" in str(error)
    # The body never ran, and autoretry_for=(Exception,) did not turn the missing blob into a retry loop.
    assert not Counter.objects.filter(name=tasks.BODY_RAN).exists()
    assert "Retry in" not in worker.log()
    assert redis.Redis.from_url(clean_broker).llen("default") == 0


def test_message_cap_refuses_oversized_body_naming_size_and_cap(claimcheck_backend, clean_broker, settings):
    # send_task by name bypasses the task class and its offload: the cap still holds.
    with pytest.raises(MessageTooLargeError) as excinfo:
        celery_app.send_task(tasks.digest.name, args=["x" * (2 * MB)])
    message = str(excinfo.value)
    assert f"over the broker cap of {settings.CLAIMCHECK_MESSAGE_MAX_BYTES} bytes" in message
    found = re.search(r"message body is (\d+) bytes", message)
    assert found is not None
    size = int(found.group(1))
    assert 2 * MB < size < 2 * MB + 200  # the argument plus the small envelope around it
    assert tasks.digest.name in message

    # A threshold set above the cap lets a large argument set through the offload: the cap stops it.
    settings.CLAIMCHECK_ARGS_THRESHOLD = 10 * MB
    with pytest.raises(MessageTooLargeError, match="over the broker cap"):
        tasks.digest.delay("y" * (2 * MB))
    assert redis.Redis.from_url(clean_broker).llen("default") == 0

    # Under the cap everything is normal.
    tasks.digest.delay("z" * 1000)
    assert redis.Redis.from_url(clean_broker).llen("default") == 1


def test_direct_call_runs_the_body_without_storing_anything(claimcheck_backend):
    text = tasks.make_text(3 * MB, "direct")
    assert text == {"text": tasks.pattern(3 * MB, "direct"), "seed": "direct"}
    assert list(blobs.iter_blobs()) == []


@pytest.mark.workers
def test_sweep_task_on_a_worker_deletes_orphans(claimcheck_backend, start_worker, clean_broker):
    from {{ cookiecutter.project_slug }}.claimcheck.tasks import sweep_orphans

    orphan = blobs.store_bytes(b"left behind", prefix="args")
    time.sleep(2.1)  # S3 modification times have one-second resolution
    start_worker("default", env={**claimcheck_backend.env, "CLAIMCHECK_ORPHAN_TTL": "1"})
    assert sweep_orphans.delay().get(timeout=60) == {"deleted": 1}
    assert not blobs.exists(orphan)


@pytest.mark.workers
def test_redelivery_after_success_does_not_turn_it_into_a_failure(claimcheck_backend, start_worker, clean_broker):
    data = tasks.pattern(MB, "again")
    result = tasks.digest.delay(data)
    reference = message_reference(queued_messages(clean_broker, "default")[0])
    assert reference is not None
    worker = start_worker("default", env=claimcheck_backend.env)
    expected = {"length": MB, "sha256": hashlib.sha256(data.encode()).hexdigest(), "label": ""}
    assert result.get(timeout=60) == expected
    wait_until(lambda: not blobs.exists(reference), 30, "the argument blob to be deleted after success")

    # The same message again (same id, same reference), as acks_late redelivers it after a crash before the ack.
    tasks.digest.apply_async(kwargs=reference.envelope(), task_id=result.id)
    wait_until(lambda: "not running it again" in worker.log(), 30, "the redelivery to be dropped")
    assert result.state == states.SUCCESS
    assert result.get(timeout=5) == expected


@pytest.mark.workers
def test_chained_task_receives_an_offloaded_result_resolved(claimcheck_backend, start_worker, clean_broker):
    start_worker("default", env=claimcheck_backend.env)
    result = (tasks.make_text.s(3 * MB, "chain") | tasks.text_summary.s()).delay()
    text = tasks.pattern(3 * MB, "chain")
    assert result.get(timeout=120) == {
        "length": 3 * MB,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "seed": "chain",
    }
    assert isinstance(result.parent, AsyncResult)
    assert is_envelope(result.parent.get(timeout=5))  # the 3 MB travelled between the tasks as a reference
