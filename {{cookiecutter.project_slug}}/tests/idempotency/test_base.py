"""The status row without workers: payload hashes, enqueue, the claim race, fencing, reaper, pruner, admin."""

from __future__ import annotations

import base64
import json
import pickle
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from celery.app.task import Context
from celery.backends.redis import RedisBackend
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from kombu.utils import json as kombu_json

from {{ cookiecutter.project_slug }}.core.errors import PermanentError
from {{ cookiecutter.project_slug }}.idempotency import claims, maintenance, publishing, selectors
from {{ cookiecutter.project_slug }}.idempotency.claims import Outcome
from {{ cookiecutter.project_slug }}.idempotency.exceptions import (
    ArgumentNotSerializableError,
    ArgumentNotStorableError,
    AttemptsExhaustedError,
    InvalidKeyError,
    LeaseLostError,
    PayloadMismatchError,
    TaskAlreadyFailedError,
    TaskRecordNotFoundError,
)
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord, WorkerLiveness
from {{ cookiecutter.project_slug }}.idempotency.payload import canonical_json, derive_key, normalised, payload_hash

from tests.tasks import idempotency as tasks

pytestmark = pytest.mark.timeout(120)


def queued(broker_url: str, queue: str = "default") -> list[dict[str, Any]]:
    """Return the task messages waiting in ``queue``, oldest first."""
    raw = redis.Redis.from_url(broker_url).lrange(queue, 0, -1)
    return [json.loads(m) for m in reversed(raw)]


def claim_args(key: str, owner: str, **overrides: Any) -> dict[str, Any]:
    """Return the keyword arguments of a claim on the ``make_effect`` row ``key`` by ``owner``."""
    args: list[Any] = [key]
    kwargs: dict[str, Any] = {}
    values = {
        "key": key,
        "task_name": tasks.make_effect.name,
        "queue": "default",
        "payload_hash": payload_hash(tasks.make_effect.name, args, kwargs),
        "args": args,
        "kwargs": kwargs,
        "owner": owner,
        "task_id": str(uuid.uuid4()),
        "lease_seconds": 60,
        "max_attempts": 3,
    }
    return {**values, **overrides}


def pending_row(key: str, **fields: Any) -> TaskRecord:
    """Create the pending row of ``make_effect(key)`` as ``enqueue`` would, without publishing it."""
    args: list[Any] = [key]
    values = {
        "key": key,
        "task_name": tasks.make_effect.name,
        "queue": "default",
        "payload_hash": payload_hash(tasks.make_effect.name, args, {}),
        "args": args,
        "kwargs": {},
    }
    return TaskRecord.objects.create(**{**values, **fields})


# ------------------------------------------------------------------------------
# Payload hashes and keys
# ------------------------------------------------------------------------------


def test_payload_hash_survives_the_trip_through_the_broker():
    args = (1, "é", (2, 3), {"b": 1, "a": [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)]})
    kwargs = {"when": date(2026, 1, 2), "amount": Decimal("1.10"), "ref": uuid.UUID(int=7), "raw": b"\x00\xff"}
    # What a worker receives is what kombu's json serializer decodes from the message.
    received = kombu_json.loads(kombu_json.dumps([list(args), kwargs]))
    assert isinstance(received[1]["amount"], Decimal)
    assert payload_hash("t", args, kwargs) == payload_hash("t", received[0], received[1])
    reordered = {"raw": b"\x00\xff", "ref": uuid.UUID(int=7), "amount": Decimal("1.10"), "when": date(2026, 1, 2)}
    assert payload_hash("t", args, kwargs) == payload_hash("t", args, reordered)
    assert payload_hash("t", args, kwargs) != payload_hash("u", args, kwargs)
    assert payload_hash("t", (1,), {}) != payload_hash("t", (), {"x": 1})
    assert canonical_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'


#: Values the database stores in another form than Python's (jsonb: numbers as numeric), with tuples and
#: int keys, which JSON itself changes.
NORMALISED_BY_THE_DATABASE = [
    1e16,
    -1.5e22,
    1.2345678901234567e30,
    1.7976931348623157e308,
    -0.0,
    1.5e-07,
    5e-324,
    0.1,
    100.0,
    {"nested": [1e16, (2.5e20, -0.0)]},
    {3: "int key", 4: 1e16},
]


@pytest.mark.parametrize("value", NORMALISED_BY_THE_DATABASE, ids=repr)
def test_normalised_values_are_what_the_database_gives_back(db, value):
    # Stored raw, the database returns the normalised form (PostgreSQL; SQLite keeps the text it was given);
    # stored normalised, it returns exactly that: the form is a fixed point, and its hash with it.
    form = canonical_json(normalised(value))
    raw = TaskRecord.objects.create(key="raw", task_name="t", queue="default", payload_hash="x", result=value)
    fixed = TaskRecord.objects.create(
        key="fixed", task_name="t", queue="default", payload_hash="x", result=normalised(value)
    )
    raw.refresh_from_db()
    fixed.refresh_from_db()
    assert canonical_json(fixed.result) == form
    assert canonical_json(normalised(normalised(value))) == form
    if connection.vendor == "postgresql":
        assert canonical_json(raw.result) == form


def test_arguments_the_database_normalises_hash_as_the_row_stores_and_the_message_carries(
    transactional_db, clean_broker
):
    handle = tasks.make_effect.using(key="big-numbers").enqueue("n", seconds=1e16, first_run_seconds=-0.0)
    stored = TaskRecord.objects.get(key="big-numbers")
    (message,) = queued(clean_broker)
    # What a worker decodes: the body as kombu's json serializer reads it.
    body_args, body_kwargs, _embed = kombu_json.loads(base64.b64decode(message["body"]))
    assert payload_hash(tasks.make_effect.name, stored.args, stored.kwargs) == stored.payload_hash
    assert payload_hash(tasks.make_effect.name, body_args, body_kwargs) == stored.payload_hash
    assert body_kwargs == {"seconds": 10**16, "first_run_seconds": 0.0}
    assert canonical_json(stored.kwargs) == canonical_json(body_kwargs)
    assert handle.key == "big-numbers"


@pytest.mark.parametrize(
    ("args", "kwargs", "named", "problem"),
    [
        ((float("nan"),), {}, "positional argument 0 is a float (nan)", "no NaN or infinity"),
        (("ok",), {"seconds": [1, float("inf")]}, "keyword argument 'seconds'[1] is a float (inf)", "NaN or infinity"),
        (("a\x00b",), {}, "positional argument 0 is a str ('a\\x00b')", "NUL character"),
        (({"k\x00": 1},), {}, "positional argument 0 (a key of the dict, 'k\\x00')", "NUL character"),
        (({"deep": ["\ud800"]},), {}, "positional argument 0['deep'][0]", "lone UTF-16 surrogate"),
        ((b"\x00",), {}, "positional argument 0['__value__'] is a str", "NUL character"),
    ],
)
def test_arguments_the_database_refuses_fail_at_enqueue_naming_them(
    db, broker, django_capture_on_commit_callbacks, args, kwargs, named, problem
):
    redis.Redis.from_url(broker).flushdb()
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(ArgumentNotStorableError) as excinfo:
        tasks.make_effect.enqueue(*args, **kwargs)
    message = str(excinfo.value)
    assert named in message
    assert problem in message
    assert tasks.make_effect.name in message
    assert callbacks == []
    assert not TaskRecord.objects.exists()
    assert queued(broker) == []


def test_the_result_backend_is_written_only_for_a_caller_that_asked_for_a_result():
    # A backend nobody listens on: any write raises, so a write that is skipped is seen not to happen.
    unreachable = RedisBackend(app=tasks.make_effect.app, url="redis://127.0.0.1:9/0")
    tasks.make_effect.backend = unreachable
    try:
        backend = tasks.make_effect.backend
        enqueued = Context({"id": "a", "ignore_result": None})  # enqueue's messages name no choice
        exc = RuntimeError("cancelled")
        # What Celery writes for a task cancelled on connection loss, a retry, a failure, a revoke.
        assert backend.mark_as_retry("a", exc, request=enqueued) is None
        backend.mark_as_failure("a", exc, request=enqueued)
        backend.mark_as_revoked("a", "revoked", request=enqueued)
        backend.mark_as_done("a", 1, enqueued)  # positionally, as celery.app.trace calls it
        backend.store_result("a", 1, "SUCCESS", request=enqueued)
        asked = Context({"id": "b", "ignore_result": False})  # apply_async(..., ignore_result=False)
        with pytest.raises(redis.exceptions.ConnectionError):
            backend.mark_as_retry("b", exc, request=asked)
    finally:
        tasks.make_effect.backend = None
    assert tasks.make_effect.ignore_result


def test_derived_key_names_the_task_and_hash():
    digest = payload_hash(tasks.make_effect.name, ("x",), {})
    assert derive_key(tasks.make_effect.name, digest) == f"{tasks.make_effect.name}:{digest}"


@pytest.mark.parametrize(
    ("args", "kwargs", "named", "type_name"),
    [
        ((object(),), {}, "positional argument 0", "object"),
        (("ok", {1, 2}), {}, "positional argument 1", "set"),
        (("ok",), {"seconds": {1, 2}}, "keyword argument 'seconds'", "set"),
        (([1, {"deep": [0, frozenset()]}],), {}, "positional argument 0[1]['deep'][1]", "frozenset"),
        (({(1, 2): "tuple key"},), {}, "positional argument 0 (a key of the dict, (1, 2))", "tuple"),
        (({1: "a", "b": 2},), {}, "positional argument 0 (its keys mix types", "dict"),
    ],
)
def test_non_json_argument_fails_at_enqueue_naming_it(
    db, broker, django_capture_on_commit_callbacks, args, kwargs, named, type_name
):
    redis.Redis.from_url(broker).flushdb()
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(ArgumentNotSerializableError) as excinfo:
        tasks.make_effect.enqueue(*args, **kwargs)
    message = str(excinfo.value)
    assert named in message
    assert f"is a {type_name} " in message
    assert tasks.make_effect.name in message
    assert excinfo.value.value_type == type_name
    assert isinstance(excinfo.value, TypeError)
    assert callbacks == []
    assert not TaskRecord.objects.exists()
    assert queued(broker) == []


@pytest.mark.parametrize(
    "error",
    [
        PayloadMismatchError("k", "t", "a" * 64, "b" * 64),
        AttemptsExhaustedError("k", 3, 3),
        TaskAlreadyFailedError("k", "ValueError", "bad"),
        LeaseLostError("k", "worker:1:abc"),
        ArgumentNotSerializableError("t", "positional argument 0", "set", "{1}", "str"),
    ],
    ids=type,
)
def test_errors_survive_pickle_and_the_result_backend(error):
    from celery import current_app
    from celery.backends.base import BaseBackend

    backend = BaseBackend(current_app, serializer="json")
    # Prefork children hand exceptions to the worker by pickle; the result backend stores them as JSON.
    pickled = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
    for copy in (pickled, backend.exception_to_python(backend.prepare_exception(error, "json"))):
        assert type(copy) is type(error)
        assert str(copy) == str(error)


@pytest.mark.parametrize(("key", "problem"), [("", "1 to 255"), ("k" * 256, "has 256"), (42, "not int")])
def test_bad_keys_are_refused(db, key, problem):
    with pytest.raises(InvalidKeyError, match=problem):
        tasks.make_effect.using(key=key)


def test_enqueue_checks_the_signature(db):
    with pytest.raises(TypeError):
        tasks.make_effect.enqueue("a", "b", "c", "d")
    assert not hasattr(tasks.noop_plain, "enqueue")  # only the idempotent base task writes status rows
    assert not TaskRecord.objects.exists()


# ------------------------------------------------------------------------------
# Enqueue: the pending row first, the message after commit, one row per key
# ------------------------------------------------------------------------------


def test_enqueue_publishes_after_commit_and_once_per_key(transactional_db, clean_broker):
    with transaction.atomic():
        handle = tasks.make_effect.enqueue("a", seconds=0.5)
        assert queued(clean_broker) == []  # nothing a worker could see before the row is committed
    assert handle.status == Status.PENDING
    assert handle.key == derive_key(
        tasks.make_effect.name, payload_hash(tasks.make_effect.name, ["a"], {"seconds": 0.5})
    )
    messages = queued(clean_broker)
    assert len(messages) == 1
    assert messages[0]["headers"]["id"] == handle.id
    assert messages[0]["headers"]["idempotency_key"] == handle.key

    again = tasks.make_effect.enqueue("a", seconds=0.5)
    assert again.id == handle.id
    keyed = tasks.make_effect.using(key="order-42").enqueue("b")
    keyed_again = tasks.make_effect.using(key="order-42").enqueue("b")
    assert keyed_again.id == keyed.id
    assert keyed.key == "order-42"
    assert len(queued(clean_broker)) == 2
    assert TaskRecord.objects.count() == 2


def test_enqueue_many_writes_in_batches_and_publishes_each_new_call_once(transactional_db, clean_broker):
    before = tasks.make_effect.enqueue("many-0")  # an earlier call: its row is reused, not published again
    calls: list[tuple[tuple[str], dict[str, Any]]] = [((f"many-{i}",), {}) for i in range(7)]
    calls.append((("many-3",), {}))  # one call twice in the batch
    with transaction.atomic():
        handles = tasks.make_effect.enqueue_many(calls, batch_size=3)
        assert len(queued(clean_broker)) == 1  # only the earlier call's: the batch publishes on commit
    name = tasks.make_effect.name
    assert [h.key for h in handles] == [derive_key(name, payload_hash(name, list(a), k)) for a, k in calls]
    assert handles[0].id == before.id
    assert handles[3].id == handles[7].id
    assert TaskRecord.objects.count() == 7
    messages = queued(clean_broker)
    assert len(messages) == 7  # the earlier call's and six new ones, each once
    assert sorted(m["headers"]["idempotency_key"] for m in messages) == sorted({h.key for h in handles})


def pending_rows(broker_url: str, count: int, prefix: str) -> list[TaskRecord]:
    """Return ``count`` committed pending rows of ``make_effect`` whose messages are no longer in the queue."""
    tasks.make_effect.enqueue_many([((f"{prefix}-{i}",), {}) for i in range(count)])
    redis.Redis.from_url(broker_url).delete("default")
    return list(TaskRecord.objects.order_by("key"))


def test_publish_all_flags_only_the_message_the_broker_refuses_and_sends_the_rest_of_its_batch(
    transactional_db, clean_broker, settings
):
    records = pending_rows(clean_broker, publishing.PUBLISH_BATCH + 10, "batched")  # two batches
    refused = records[7]
    refused.args = ["x" * settings.CLAIMCHECK_MESSAGE_MAX_BYTES]  # a body over the broker cap, in the first batch
    assert publishing.publish_all(records) == len(records) - 1
    sent = queued(clean_broker)
    assert sorted(m["headers"]["idempotency_key"] for m in sent) == sorted(r.key for r in records if r is not refused)
    flagged = TaskRecord.objects.filter(error_type=publishing.PUBLISH_FAILED)
    assert list(flagged.values_list("key", flat=True)) == [refused.key]


def test_a_batch_redis_refuses_as_a_whole_is_published_one_by_one_and_flagged_not_lost(transactional_db, clean_broker):
    records = pending_rows(clean_broker, 5, "refused")
    client = redis.Redis.from_url(clean_broker)
    # Redis refuses every write (LPUSH) of the pipeline once it is over its memory limit: the batch fails as sent.
    client.config_set("maxmemory", 1)
    try:
        assert publishing.publish_all(records) == 0
    finally:
        client.config_set("maxmemory", 0)
    flagged = TaskRecord.objects.filter(status=Status.PENDING, error_type=publishing.PUBLISH_FAILED)
    assert flagged.count() == len(records)
    assert "maxmemory" in flagged.first().error_message  # type: ignore[union-attr]
    assert publishing.publish_all(records) == len(records)  # and published once Redis takes writes again
    assert len(queued(clean_broker)) == len(records)


def test_enqueue_many_refuses_the_whole_batch_on_one_bad_call(transactional_db, clean_broker):
    calls = [(("fine",), {}), (("also fine",), {"seconds": {1, 2}})]
    with pytest.raises(ArgumentNotSerializableError, match="keyword argument 'seconds'"):
        tasks.make_effect.enqueue_many(calls)
    with pytest.raises(TypeError):
        tasks.make_effect.enqueue_many([(("a", "b", "c", "d"), {})])
    loose: list[Any] = [(("fine",), {}), "loose"]  # not a pair, on purpose
    with pytest.raises(TypeError, match=r"\(args, kwargs\) pairs; call 1 is 'loose'"):
        tasks.make_effect.enqueue_many(loose)
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1; got 0"):
        tasks.make_effect.enqueue_many([(("fine",), {})], batch_size=0)
    assert not TaskRecord.objects.exists()
    assert queued(clean_broker) == []


def test_rolled_back_enqueue_leaves_no_row_and_no_message(transactional_db, clean_broker):
    def enqueue_in_failing_transaction() -> None:
        with transaction.atomic():
            tasks.make_effect.enqueue("rolled-back")
            raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        enqueue_in_failing_transaction()
    assert not TaskRecord.objects.exists()
    assert queued(clean_broker) == []


def test_same_key_other_arguments_is_a_permanent_error_naming_the_key(transactional_db, clean_broker):
    tasks.make_effect.using(key="invoice-7").enqueue("first")
    with pytest.raises(PayloadMismatchError, match="'invoice-7'") as excinfo:
        tasks.make_effect.using(key="invoice-7").enqueue("second")
    assert isinstance(excinfo.value, PermanentError)
    assert len(queued(clean_broker)) == 1
    assert TaskRecord.objects.get().args == ["first"]


# ------------------------------------------------------------------------------
# Claim: one statement decides
# ------------------------------------------------------------------------------


def _race(key: str, claimers: int = 2, **overrides: Any) -> list[Outcome]:
    """Let ``claimers`` threads, each with its own database connection, claim ``key`` at the same moment."""
    barrier = threading.Barrier(claimers)
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=20)
            outcomes.append(claims.claim(**claim_args(key, f"racer-{n}", **overrides)).outcome)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return outcomes


def test_two_connections_race_for_one_pending_row_and_one_wins(transactional_db):
    for round_ in range(10):
        key = f"race-{round_}"
        pending_row(key)
        outcomes = _race(key)
        assert sorted(o.value for o in outcomes) == ["busy", "claimed"], outcomes
        row = TaskRecord.objects.get(key=key)
        assert row.status == Status.RUNNING
        assert row.attempts == 1
        assert row.owner.startswith("racer-")


def test_two_connections_race_to_create_a_missing_row_and_one_wins(transactional_db):
    for round_ in range(10):
        key = f"create-race-{round_}"
        outcomes = _race(key, expect_row=False)
        assert sorted(o.value for o in outcomes) == ["busy", "claimed"], outcomes
        assert TaskRecord.objects.get(key=key).attempts == 1


def test_a_claim_waits_for_an_open_claim_transaction_and_then_loses(transactional_db):
    pending_row("held")
    claimed = threading.Event()
    outcomes: dict[str, Outcome] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                outcomes["first"] = claims.claim(**claim_args("held", "first")).outcome
                claimed.set()
                threading.Event().wait(0.5)  # the second claim now waits on this row (or on the database lock)
        finally:
            claimed.set()
            connection.close()

    def second() -> None:
        try:
            claimed.wait(timeout=20)
            outcomes["second"] = claims.claim(**claim_args("held", "second")).outcome
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == {"first": Outcome.CLAIMED, "second": Outcome.BUSY}
    assert TaskRecord.objects.get(key="held").owner == "first"


def test_claim_outcomes_for_each_state(db):
    pending_row("done", status=Status.SUCCEEDED, result={"answer": 42}, attempts=1)
    claim = claims.claim(**claim_args("done", "late"))
    assert claim.outcome is Outcome.SUCCEEDED
    assert claim.record is not None
    assert claim.record.result == {"answer": 42}

    pending_row("gone", status=Status.FAILED, attempts=3, error_type="ValueError")
    assert claims.claim(**claim_args("gone", "late")).outcome is Outcome.FAILED

    pending_row("other", payload_hash="0" * 64)
    assert claims.claim(**claim_args("other", "late")).outcome is Outcome.MISMATCH
    assert TaskRecord.objects.get(key="other").status == Status.PENDING  # the mismatch touched nothing

    live = timezone.now() + timedelta(seconds=30)
    pending_row("live", status=Status.RUNNING, owner="someone", lease_expires_at=live, attempts=1)
    assert claims.claim(**claim_args("live", "late")).outcome is Outcome.BUSY
    assert TaskRecord.objects.get(key="live").owner == "someone"


def test_an_expired_lease_is_reclaimed_and_the_attempt_counted(db):
    expired = timezone.now() - timedelta(seconds=1)
    pending_row("expired", status=Status.RUNNING, owner="dead", lease_expires_at=expired, attempts=1)
    assert claims.claim(**claim_args("expired", "heir")).outcome is Outcome.CLAIMED
    row = TaskRecord.objects.get(key="expired")
    assert (row.owner, row.attempts, row.status) == ("heir", 2, Status.RUNNING)
    assert row.lease_expires_at is not None
    assert row.lease_expires_at > timezone.now() + timedelta(seconds=50)


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING])
def test_attempts_exhausted_at_claim_fails_the_row_for_good(db, status):
    expired = timezone.now() - timedelta(seconds=1)
    pending_row("poison", status=status, owner="dead", lease_expires_at=expired, attempts=3)
    claim = claims.claim(**claim_args("poison", "next", max_attempts=3))
    assert claim.outcome is Outcome.EXHAUSTED
    row = TaskRecord.objects.get(key="poison")
    assert row.status == Status.FAILED
    assert row.attempts == 3
    assert row.error_type == "{{ cookiecutter.project_slug }}.idempotency.exceptions.AttemptsExhaustedError"
    assert "claimed 3 times" in row.error_message
    assert row.finished_at is not None


def test_the_finishing_write_is_fenced_by_owner(db):
    pending_row("fenced")
    assert claims.claim(**claim_args("fenced", "slow", lease_seconds=0)).outcome is Outcome.CLAIMED
    assert claims.claim(**claim_args("fenced", "fast")).outcome is Outcome.CLAIMED  # slow's lease expired
    # While the winner runs, the late delivery can neither finish, fail, release nor extend the row...
    assert not claims.succeed(key="fenced", owner="slow", result={"by": "slow"})
    assert not claims.fail(key="fenced", owner="slow", exc=RuntimeError("late"))
    assert not claims.release(key="fenced", owner="slow")
    assert claims.attempt_failed(key="fenced", owner="slow", exc=RuntimeError("late"), max_attempts=3) is None
    assert not claims.report_progress(key="fenced", owner="slow", fraction=0.5, message="", lease_seconds=60)
    row = TaskRecord.objects.get(key="fenced")
    assert (row.status, row.owner, row.result, row.error_type) == (Status.RUNNING, "fast", None, "")
    # ...nor overwrite the winner's outcome afterwards.
    assert claims.succeed(key="fenced", owner="fast", result={"by": "fast"})
    assert not claims.succeed(key="fenced", owner="slow", result={"by": "slow"})
    row = TaskRecord.objects.get(key="fenced")
    assert (row.status, row.result, row.attempts) == (Status.SUCCEEDED, {"by": "fast"}, 2)


def test_a_failed_attempt_releases_the_row_until_the_cap(db):
    pending_row("flaky")
    for attempt in (1, 2, 3):
        assert claims.claim(**claim_args("flaky", f"try-{attempt}")).outcome is Outcome.CLAIMED
        row = claims.attempt_failed(
            key="flaky", owner=f"try-{attempt}", exc=ValueError(f"no {attempt}"), max_attempts=3
        )
        assert row is not None
        assert row.attempts == attempt
        assert row.error_type == "ValueError"
        assert f"no {attempt}" in row.error_message
        assert row.status == (Status.FAILED if attempt == 3 else Status.PENDING)
    assert row is not None
    assert row.finished_at is not None
    assert claims.claim(**claim_args("flaky", "try-4")).outcome is Outcome.FAILED


def test_progress_extends_the_lease(db):
    pending_row("long")
    claims.claim(**claim_args("long", "worker", lease_seconds=5))
    before = TaskRecord.objects.get(key="long").lease_expires_at
    assert claims.report_progress(key="long", owner="worker", fraction=0.25, message="a quarter", lease_seconds=600)
    row = TaskRecord.objects.get(key="long")
    assert (row.progress, row.progress_message) == (0.25, "a quarter")
    assert before is not None
    assert row.lease_expires_at is not None
    assert row.lease_expires_at > before + timedelta(seconds=500)


# ------------------------------------------------------------------------------
# Reaper, pruner, status API, admin
# ------------------------------------------------------------------------------


def test_reaper_republishes_expired_leases_and_fails_exhausted_ones(transactional_db, clean_broker):
    expired = timezone.now() - timedelta(seconds=1)
    live = timezone.now() + timedelta(seconds=60)
    dead = pending_row("dead", status=Status.RUNNING, owner="gone", lease_expires_at=expired, attempts=1, task_id="t-1")
    pending_row("spent", status=Status.RUNNING, owner="gone", lease_expires_at=expired, attempts=5)
    pending_row("alive", status=Status.RUNNING, owner="here", lease_expires_at=live, attempts=1)

    report = maintenance.reap_expired_leases()

    assert report.republished == ("dead",)
    assert report.failed == ("spent",)
    row = TaskRecord.objects.get(key="dead")
    assert (row.status, row.owner, row.error_type) == (Status.PENDING, "", "LeaseExpired")
    assert TaskRecord.objects.get(key="spent").status == Status.FAILED
    assert TaskRecord.objects.get(key="alive").status == Status.RUNNING
    [message] = queued(clean_broker)
    assert message["headers"]["id"] == dead.task_id
    assert message["headers"]["idempotency_key"] == "dead"
    assert message["headers"]["task"] == tasks.make_effect.name


def test_rows_of_nodes_that_stopped_proving_they_are_alive_are_reclaimed_and_no_others(transactional_db, clean_broker):
    now = timezone.now()
    long_ago, recently, soon = now - timedelta(minutes=10), now - timedelta(seconds=1), now + timedelta(seconds=60)
    WorkerLiveness.objects.create(node="dead@a", pid=1, started_at=long_ago, alive_until=recently)
    WorkerLiveness.objects.create(node="alive@b", pid=2, started_at=long_ago, alive_until=soon)
    WorkerLiveness.objects.create(node="restarted@c", pid=3, started_at=recently, alive_until=soon)
    lease = {"status": Status.RUNNING, "lease_expires_at": soon, "attempts": 1}
    pending_row("of-dead", owner="dead@a:1:x", started_at=long_ago, **lease)
    pending_row("of-alive", owner="alive@b:2:x", started_at=long_ago, **lease)
    pending_row("before-restart", owner="restarted@c:9:x", started_at=long_ago, **lease)
    pending_row("after-restart", owner="restarted@c:3:x", started_at=now, **lease)
    pending_row("never-proven", owner="silent@d:4:x", started_at=long_ago, **lease)
    pending_row("just-claimed", owner="new@e:5:x", started_at=now, **lease)  # its liveness is coming

    report = maintenance.reclaim_dead_nodes(now=now)

    assert sorted(report.republished) == ["before-restart", "never-proven", "of-dead"]
    statuses = dict(TaskRecord.objects.values_list("key", "status"))
    assert statuses == {
        "of-dead": Status.PENDING,
        "before-restart": Status.PENDING,
        "never-proven": Status.PENDING,
        "of-alive": Status.RUNNING,
        "after-restart": Status.RUNNING,
        "just-claimed": Status.RUNNING,
    }
    assert TaskRecord.objects.get(key="of-dead").error_type == "WorkerLost"
    assert sorted(m["headers"]["idempotency_key"] for m in queued(clean_broker)) == sorted(report.republished)
    # A second pass finds nothing more: the reclaimed rows are pending, the others are held by live nodes.
    assert maintenance.reclaim_dead_nodes(now=now).republished == ()


def test_pruner_deletes_only_finished_rows_past_retention(db):
    old = timezone.now() - timedelta(days=8)
    pending_row("old-ok", status=Status.SUCCEEDED, finished_at=old)
    pending_row("old-failed", status=Status.FAILED, finished_at=old)
    pending_row("new-ok", status=Status.SUCCEEDED, finished_at=timezone.now())
    pending_row("old-pending", enqueued_at=old)
    assert maintenance.prune_finished(older_than=timedelta(days=7)) == 2
    assert set(TaskRecord.objects.values_list("key", flat=True)) == {"new-ok", "old-pending"}


def test_status_api_by_key_and_id(db):
    row = pending_row("api", status=Status.FAILED, error_type="ValueError", error_message="bad", error_traceback="tb")
    by_key = selectors.get_result(key="api")
    by_id = selectors.get_result(id=str(row.pk))
    assert by_key == by_id
    assert by_key.status == Status.FAILED
    assert by_key.is_finished
    assert by_key.error == selectors.TaskError("ValueError", "bad", "tb")
    assert by_key.refresh() == by_key
    with pytest.raises(TaskRecordNotFoundError, match="'nope'"):
        selectors.get_result(key="nope")
    with pytest.raises(TaskRecordNotFoundError, match="ids are UUIDs"):
        selectors.get_result(id="not-a-uuid")
    with pytest.raises(TypeError):
        selectors.get_result(key="api", id=str(row.pk))


def test_the_admin_index_names_the_worker_liveness_rows_in_plain_english(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert ">Worker liveness<" in page
    assert "livenesss" not in page  # Django's default plural of the model's name


def test_admin_filters_shows_the_traceback_and_retries_failed_rows(transactional_db, clean_broker, admin_client):
    failed = pending_row(
        "broken", status=Status.FAILED, attempts=3, error_type="ValueError", error_traceback="Traceback <line 1>"
    )
    pending_row("fine", status=Status.SUCCEEDED)
    changelist = reverse("admin:idempotency_taskrecord_changelist")
    page = admin_client.get(changelist, {"status__exact": "failed"}).content.decode()
    assert "broken" in page
    assert "fine" not in page
    for query in ({"queue__exact": "default"}, {"task_name__exact": tasks.make_effect.name}):
        assert admin_client.get(changelist, query).status_code == 200
    detail = admin_client.get(reverse("admin:idempotency_taskrecord_change", args=[failed.pk])).content.decode()
    assert "<pre" in detail
    assert "Traceback &lt;line 1&gt;" in detail

    response = admin_client.post(
        changelist,
        {"action": "retry_selected", "_selected_action": [str(r.pk) for r in TaskRecord.objects.all()]},
        follow=True,
    )
    assert response.status_code == 200
    row = TaskRecord.objects.get(key="broken")
    assert (row.status, row.attempts) == (Status.PENDING, 0)
    assert TaskRecord.objects.get(key="fine").status == Status.SUCCEEDED
    [message] = queued(clean_broker)
    assert message["headers"]["idempotency_key"] == "broken"


def test_enqueue_many_keeps_the_blobs_of_committed_rows_when_a_commit_callback_fails(
    transactional_db, clean_broker, settings, monkeypatch, tmp_path
):
    from {{ cookiecutter.project_slug }}.claimcheck import base as claimcheck_base
    from {{ cookiecutter.project_slug }}.claimcheck import blobs
    from {{ cookiecutter.project_slug }}.idempotency import publishing

    settings.STORAGES = {
        **settings.STORAGES,
        "claimcheck": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": tmp_path}},
    }
    settings.CLAIMCHECK_ARGS_THRESHOLD = 64  # every call below is offloaded to a blob

    def broken(records: Any) -> int:
        raise RuntimeError("a commit callback failed after the rows committed")

    monkeypatch.setattr(publishing, "publish_all", broken)
    with pytest.raises(RuntimeError, match="after the rows committed"):
        tasks.make_effect.enqueue_many([(("x" * 200,), {}), (("y" * 200,), {})])
    rows = list(TaskRecord.objects.all())
    assert len(rows) == 2  # committed before the callback ran: the reaper or a retry publishes them
    for row in rows:
        reference = claimcheck_base.arguments_reference(row.args, row.kwargs)
        assert reference is not None
        assert blobs.get_storage().exists(reference.key), "the blob of a committed row was deleted"
