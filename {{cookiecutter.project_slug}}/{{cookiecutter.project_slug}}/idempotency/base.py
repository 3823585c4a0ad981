"""The idempotent Celery base task: claim the status row, run the body once, store the outcome."""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore, Reject, Retry
from celery.utils.log import get_task_logger
from django.db import InterfaceError, OperationalError, connections, router, transaction

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.claimcheck.base import ClaimCheckTask, discard_arguments, payload_identity
from {{ cookiecutter.project_slug }}.core.celery_internals import current_task_object, request_claim, set_request_claim
from {{ cookiecutter.project_slug }}.core.errors import PermanentError
from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force

from . import claims, publishing
from .backend import RequestedResultsBackend
from .claims import Claim, Outcome
from .exceptions import (
    ArgumentsDoNotFitError,
    AttemptsExhaustedError,
    DeliveryLostError,
    LeaseLostError,
    PayloadMismatchError,
    ResultNotSerializableError,
    TaskAlreadyFailedError,
)
from .models import Status, TaskRecord
from .payload import check_serializable, derive_key, normalised, normalised_call, payload_hash, validate_key
from .publishing import KEY_HEADER, Call

if TYPE_CHECKING:
    from .selectors import TaskResult

__all__ = ["IdempotentTask", "KeyedTask", "set_progress"]

logger = get_task_logger(__name__)

#: Log lines of deliveries that do not run the body.
#: (The task logger prefixes each line with the task name and id.)
SKIPPED_SUCCEEDED = "key %r already succeeded: returning the stored result without running"
SKIPPED_CANCELLED = "key %r was cancelled: not running it"
SKIPPED_BUSY = "key %r is running under a live lease (owner %s): not running it twice"
TAKING_OVER = "%s[%s] key %r: the lease holder %s was a process of this worker that no longer exists; taking over"
LEASE_LOST = "key %r: the row is no longer this delivery's (taken over, or cancelled); its outcome is discarded"
RETRYING = "key %r attempt %d/%d failed (%r); retrying in %.1fs"
DATABASE_UNAVAILABLE = "key %r: the database did not answer the claim (%s); delivering again in %.1fs"
MISMATCH_FAILED = "key %r: this row's own message (task id %s) carries other arguments; the row failed"


def owner_is_dead(owner: str, hostname: str | None) -> bool:
    """Return whether ``owner`` (``node:pid:token``) was a process of this worker node that no longer exists."""
    node, pid, _token = [*owner.rsplit(":", 2), "", ""][:3]
    if not hostname or node != hostname or not pid.isdigit() or int(pid) == os.getpid():
        return False  # another node's process, or a thread of this very process: cannot tell, or alive
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class IdempotentTask(ClaimCheckTask):
    """A task whose effect happens once per key, however often its message is delivered.

    Large argument sets and results travel through the claim-check storage (``ClaimCheckTask``).

    Declare with ``@shared_task(base=IdempotentTask, worker_pool=pools.DEFAULT)``; enqueue with
    ``task.enqueue(*args, **kwargs)`` (key derived from the task name and arguments) or
    ``task.using(key="...").enqueue(...)``.
    """

    #: The pool whose queue runs this task, declared with ``@shared_task(worker_pool=...)``.
    #: Its hard time limit sets the lease (``Pool.lease_seconds``); default: the registry's first pool.
    worker_pool: pools.Pool | None = None
    #: Deliveries that may claim the row before it fails for good; default: the pool's ``max_attempts``.
    max_attempts: int | None = None
    #: Seconds before the first retry, doubled at each further attempt.
    retry_backoff: float = 2
    #: Longest wait between two attempts, in seconds.
    retry_backoff_max: float = 600
    #: Wait a random time between half and all of the backoff, so failures do not retry in lockstep.
    retry_jitter: bool = True
    #: Celery's own retry cap is off: ``max_attempts`` counts every delivery, retries included.
    max_retries = None
    #: Run the body and the success write in one database transaction, after the claim committed, so the
    #: body's writes to the status row's database commit with the success or not at all (a kill, a lost
    #: lease, an exception). ``None``: as the pool decides (``Pool.atomic_effects``: short time limits).
    #: ``False`` for long work: the body's writes then commit as they happen, and a delivery killed
    #: after them but before the success write runs the body again. Off on SQLite, which serialises writers.
    atomic_effects: bool | None = None
    #: The status row holds status, result and error: Celery's result backend is written only for a
    #: call published with ``apply_async(..., ignore_result=False)``, whose caller asked for an AsyncResult.
    ignore_result = True

    # ------------------------------------------------------------------
    # Configuration read from the pool registry
    # ------------------------------------------------------------------

    def get_pool(self) -> pools.Pool:
        """Return the pool in force (``settings.WORKER_POOLS``) that runs this task."""
        registry = pools_in_force()
        queue = self.worker_pool.queue if self.worker_pool is not None else registry[0].queue
        return pools.by_queue(queue, registry)

    def get_max_attempts(self) -> int:
        """Return how many deliveries may claim a row of this task."""
        return self.max_attempts if self.max_attempts is not None else self.get_pool().max_attempts

    def get_lease_seconds(self) -> float:
        """Return how long a claim lasts without progress reports: the pool's hard time limit plus a margin."""
        return self.get_pool().lease_seconds

    def runs_atomically(self, pool: pools.Pool | None = None) -> bool:
        """Return whether the body and the success write share one transaction (see :attr:`atomic_effects`)."""
        pool = pool or self.get_pool()
        wanted = self.atomic_effects if self.atomic_effects is not None else pool.runs_atomic_effects
        return wanted and connections[router.db_for_write(TaskRecord)].vendor != "sqlite"

    @property
    def backend(self) -> Any:
        """Return the app's result backend, written only for deliveries whose caller asked for a result."""
        return RequestedResultsBackend(self, super().backend)

    @backend.setter
    def backend(self, value: Any) -> None:
        self._backend = value

    def backoff_delay(self, attempt: int) -> float:
        """Return the seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = min(float(self.retry_backoff_max), float(self.retry_backoff) * 2 ** max(attempt - 1, 0))
        return random.uniform(delay / 2, delay) if self.retry_jitter else delay  # noqa: S311

    # ------------------------------------------------------------------
    # Enqueueing
    # ------------------------------------------------------------------

    def enqueue(self, *args: Any, **kwargs: Any) -> TaskResult:
        """Create the row (key: task name + canonical arguments) and publish on commit."""
        return publishing.enqueue(self.prepare_call(args, kwargs))

    def enqueue_many(
        self, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any] | None]], *, batch_size: int = 500
    ) -> list[TaskResult]:
        """Create the rows of many calls (``(args, kwargs)`` pairs) in batches; publish the new ones on commit.

        Every call is checked before anything is written: one bad argument refuses the batch.
        """
        publishing.check_batch_size(batch_size)
        pairs = [_pair(number, call) for number, call in enumerate(calls)]
        for args, kwargs in pairs:
            self.check_call(args, kwargs)
        prepared: list[Call] = []
        try:
            for args, kwargs in pairs:
                prepared.append(self.prepare_call(args, kwargs, checked=True))
        except BaseException:
            # Nothing was written: the blobs already stored for earlier calls of the batch are nobody's.
            for call in prepared:
                call.discard()
            raise
        return publishing.enqueue_many(prepared, batch_size=batch_size)

    def using(self, *, key: str) -> KeyedTask:
        """Return this task bound to an explicit idempotency ``key``."""
        return KeyedTask(self, validate_key(key))

    def check_call(self, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> None:
        """Raise if the arguments are not JSON (naming the argument) or do not fit the task's signature."""
        check_serializable(self.name, tuple(args), dict(kwargs or {}))
        self.check_arguments(tuple(args), dict(kwargs or {}))

    def prepare_call(
        self, args: Sequence[Any], kwargs: Mapping[str, Any] | None, *, key: str | None = None, checked: bool = False
    ) -> Call:
        """Return the checked call as publishing writes it: arguments offloaded (claim check), hashed, keyed."""
        if key is not None:
            key = validate_key(key)
        if not checked:
            self.check_arguments(tuple(args), dict(kwargs or {}))
        # What the row stores, the message carries and the hash covers: the database's own form of the values.
        args, kwargs = normalised_call(self.name, tuple(args), dict(kwargs or {}))
        offloaded_args, offloaded_kwargs = self.offload_call(args, kwargs)
        digest = payload_hash(self.name, *payload_identity(offloaded_args, offloaded_kwargs))
        return Call(
            key=key if key is not None else derive_key(self.name, digest),
            task_name=self.name,
            queue=self.get_pool().queue,
            payload_hash=digest,
            args=offloaded_args,
            kwargs=offloaded_kwargs,
            discard=partial(discard_arguments, offloaded_args, offloaded_kwargs),
        )

    def already_succeeded(self, task_id: str) -> bool:
        """Return ``False``: the status row, claimed before the arguments are resolved, already decided that."""
        return False

    # ------------------------------------------------------------------
    # Execution
    # ------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Claim the row, run the claim-check task's ``__call__`` (resolve, body, offload) once, store the outcome."""
        request = self.request
        if request.called_directly:
            return super().__call__(*args, **kwargs)
        # A call published without enqueue (apply_async) gets the form its row will store, as enqueue's has.
        args, kwargs = normalised_call(self.name, args, kwargs)
        # An offloaded argument set is identified by its blob's sha256: no blob read before the claim.
        digest = payload_hash(self.name, *payload_identity(args, kwargs))
        given = getattr(request, KEY_HEADER, None)
        key = validate_key(given) if given is not None else derive_key(self.name, digest)
        owner = f"{request.hostname or 'worker'}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        task_id = request.id
        assert task_id is not None  # a call that crossed a broker carries its task id
        pool = self.get_pool()
        max_attempts = self.get_max_attempts()
        claim_call = partial(
            claims.claim,
            key=key,
            task_name=self.name,
            queue=pool.queue,
            payload_hash=digest,
            args=args,
            kwargs=kwargs,
            owner=owner,
            task_id=task_id,
            lease_seconds=self.get_lease_seconds(),
            max_attempts=max_attempts,
            expect_row=given is not None,
        )
        try:
            claim = claim_call()
            if claim.outcome is Outcome.BUSY and claim.record is not None:
                holder = claim.record.owner
                if owner_is_dead(holder, request.hostname):
                    # A process of this very worker held the lease and is gone (SIGKILL, OOM): the message
                    # came back at once (task_reject_on_worker_lost), so take over now, not after the lease.
                    logger.warning(TAKING_OVER, self.name, request.id, key, holder)
                    claim = claim_call(dead_owner=holder)
                    if claim.outcome is Outcome.CLAIMED:
                        # The dead holder's attempt failed without a word: its row keeps one error per attempt.
                        claims.log_error(key=key, owner=owner, entry=lost_attempt(f"The process of {holder} died."))
        except (OperationalError, InterfaceError) as exc:
            # The database did not answer (restart, failover, network) and the body did not run. Failing here
            # would ack the message and leave the row pending for good; deliver it again later instead. (If the
            # claim did commit before the answer was lost, the redelivery finds a live lease, and beat's reaper
            # publishes the call once that lease expires.)
            delay = self.backoff_delay(request.retries + 1)
            logger.warning(DATABASE_UNAVAILABLE, key, exc, delay)
            raise self.retry(exc=exc, countdown=delay) from None
        if claim.outcome is not Outcome.CLAIMED:
            return self._not_claimed(claim, key, digest, max_attempts, task_id)
        set_request_claim(request, (key, owner))
        atomic = self.runs_atomically(pool)
        try:
            if atomic:
                return self._run_atomically(key, owner, args, kwargs)
            stored = storable_result(self.name, super().__call__(*args, **kwargs))
        except LeaseLostError:
            logger.warning(LEASE_LOST, key)
            raise Ignore() from None
        except PermanentError as exc:
            claims.fail(key=key, owner=owner, exc=exc)
            raise
        except (Retry, Ignore, Reject) as exc:
            # The body asked Celery for a retry (or to drop the message) itself: give the row back.
            claims.release(key=key, owner=owner, exc=exc.exc if isinstance(exc, Retry) and exc.exc else None)
            raise
        except Exception as exc:
            record = claims.attempt_failed(key=key, owner=owner, exc=exc, max_attempts=max_attempts)
            if record is None:
                logger.warning(LEASE_LOST, key)
                raise Ignore() from None
            if record.status == Status.FAILED:
                raise
            delay = self.backoff_delay(record.attempts)
            logger.warning(RETRYING, key, record.attempts, max_attempts, exc, delay)
            claims.retry_due(key=key, seconds=delay)  # a retry waiting for its countdown is not a lost message
            raise self.retry(exc=exc, countdown=delay) from None
        except BaseException:
            # Cold shutdown (SystemExit) or interrupt: give the row back at once so the requeued
            # message can claim it, instead of waiting for the lease to expire.
            with contextlib.suppress(Exception):
                claims.release(key=key, owner=owner)
            raise
        finally:
            set_request_claim(request, None)
        if not claims.succeed(key=key, owner=owner, result=stored):
            logger.warning(LEASE_LOST, key)
            raise Ignore()
        return stored

    def _run_atomically(self, key: str, owner: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the claim-check call and the fenced success write in one transaction; a lost fence undoes both."""
        # The claim committed before this transaction began, so a reaper or a duplicate sees the lease;
        # the body's writes and the success commit together: a kill anywhere leaves both or neither.
        using = router.db_for_write(TaskRecord)
        with transaction.atomic(using=using):
            stored = storable_result(self.name, super().__call__(*args, **kwargs))
            # A body that wrote nothing leaves no transaction to share: the success write alone, in autocommit,
            # is the same one statement without its BEGIN and COMMIT round trips.
            alone = claims.transaction_unused(using)
            if not alone and not claims.succeed(key=key, owner=owner, result=stored):
                raise LeaseLostError(key, owner)  # rolls the body's writes back with it
        if alone and not claims.succeed(key=key, owner=owner, result=stored):
            raise LeaseLostError(key, owner)
        return stored

    def resolve_call(self, args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return the body's arguments (loaded if offloaded); arguments that do not fit its signature fail the row."""
        resolved_args, resolved_kwargs = super().resolve_call(args, kwargs)
        try:
            self.check_arguments(resolved_args, resolved_kwargs)
        except TypeError as exc:
            raise ArgumentsDoNotFitError(self.name, str(exc)) from None
        return resolved_args, resolved_kwargs

    def _not_claimed(self, claim: Claim, key: str, digest: str, max_attempts: int, task_id: str) -> Any:
        record = claim.record
        if claim.outcome is Outcome.SUCCEEDED and record is not None:
            logger.info(SKIPPED_SUCCEEDED, key)
            return record.result
        if claim.outcome is Outcome.MISMATCH and record is not None:
            mismatch = PayloadMismatchError(key, self.name, record.payload_hash, digest)
            # Only the row's own message fails it: a stray or forged one under its key must not.
            if claims.fail_own_delivery(key=key, task_id=task_id, exc=mismatch):
                logger.error(MISMATCH_FAILED, key, task_id)
            raise mismatch
        if claim.outcome is Outcome.FAILED and record is not None:
            raise TaskAlreadyFailedError(key, record.error_type, record.error_message)
        if claim.outcome is Outcome.EXHAUSTED and record is not None:
            raise AttemptsExhaustedError(key, record.attempts, max_attempts)
        if claim.outcome is Outcome.CANCELLED:
            # Cancelling is a final state the caller asked for, not an error: ack the late message, record nothing.
            logger.info(SKIPPED_CANCELLED, key)
            raise Ignore()
        logger.info(SKIPPED_BUSY, key, record.owner if record else "?")
        raise Ignore()

    def signature_from_request(
        self, request: Any = None, args: Any = None, kwargs: Any = None, queue: Any = None, **extra_options: Any
    ) -> Any:
        """Build the retry's signature, carrying the idempotency key along with the message."""
        request = self.request if request is None else request
        key = getattr(request, KEY_HEADER, None)
        if key is not None:
            extra_options["headers"] = {**(extra_options.get("headers") or {}), KEY_HEADER: key}
        return super().signature_from_request(request, args, kwargs, queue, **extra_options)

    # ------------------------------------------------------------------
    # Progress
    # ------------------------------------------------------------------

    def set_progress(self, fraction: float, message: str = "") -> None:
        """Record progress (0.0 to 1.0) and extend the lease; raise ``LeaseLostError`` if another delivery took over.

        Inside the transaction of an atomic body the write goes through a connection of its own, so the
        progress and the lease it extends are seen at once, not at the commit.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"Progress must be between 0.0 and 1.0; got {fraction!r}.")
        claim = request_claim(self.request)
        if claim is None:
            return  # called directly, outside a worker: nothing to record
        key, owner = claim
        if not claims.report_progress(
            key=key,
            owner=owner,
            fraction=fraction,
            message=message,
            lease_seconds=self.get_lease_seconds(),
            outside_transaction=True,
        ):
            raise LeaseLostError(key, owner)


@dataclass(frozen=True, slots=True)
class KeyedTask:
    """An idempotent task bound to an explicit key."""

    task: IdempotentTask
    key: str

    def enqueue(self, *args: Any, **kwargs: Any) -> TaskResult:
        """Create the row under this key and publish on commit; the same key again returns the same row."""
        return publishing.enqueue(self.task.prepare_call(args, kwargs, key=self.key))


def _pair(number: int, call: Any) -> tuple[Sequence[Any], Mapping[str, Any] | None]:
    """Return call ``number`` of ``enqueue_many`` as ``(args, kwargs)``, or raise ``TypeError`` naming it."""
    if isinstance(call, tuple | list) and len(call) == 2:
        args, kwargs = call
        if isinstance(args, tuple | list) and (kwargs is None or isinstance(kwargs, Mapping)):
            return args, kwargs
    raise TypeError(f"enqueue_many takes (args, kwargs) pairs; call {number} is {call!r:.80}")


def set_progress(fraction: float, message: str = "") -> None:
    """Record progress of the idempotent task running in this thread (no ``bind=True`` needed)."""
    task = current_task_object()
    if isinstance(task, IdempotentTask):
        task.set_progress(fraction, message)


def lost_attempt(text: str) -> dict[str, str]:
    """Return the ``error_log`` entry of an attempt that ended without a result (its process died)."""
    return claims.error_entry(type_path=f"{DeliveryLostError.__module__}.{DeliveryLostError.__qualname__}", text=text)


def storable_result(task_name: str, value: Any) -> Any:
    """Return ``value`` as the status row stores it, or raise ``ResultNotSerializableError`` naming the problem."""
    if value is None:
        return None  # the common case, already its own normal form
    try:
        return normalised(value)
    except (TypeError, ValueError) as exc:
        raise ResultNotSerializableError(
            f"{task_name} returned a {type(value).__name__} that the status row cannot store ({exc}); "
            "return JSON-compatible data without NaN, infinities or NUL characters."
        ) from None
