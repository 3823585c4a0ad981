"""The claim-check task base: large arguments and results travel as signed references, not through the broker."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from celery import states
from celery.contrib.django.task import DjangoTask
from celery.exceptions import Ignore
from celery.result import AsyncResult
from django.conf import settings
from django.db import transaction
from kombu.serialization import dumps, loads
from kombu.utils.json import dumps as json_dumps

from {{ cookiecutter.project_slug }}.core.celery_internals import check_signature, wrap_signature_check

from . import blobs
from .exceptions import BlobMissingError, InvalidReferenceError
from .references import Reference, from_envelope, is_envelope

logger = logging.getLogger(__name__)

#: Storage prefix of offloaded argument sets and of offloaded results.
ARGS_PREFIX = "args"
RESULTS_PREFIX = "results"
#: Offloaded argument sets are always stored as JSON, and only JSON is accepted back.
_ARGS_CONTENT_TYPE = "application/json"


def serialized_size(value: Any, serializer: str = "json") -> tuple[int, bytes]:
    """Return the size and bytes of ``value`` serialized as the broker would see it."""
    _content_type, _encoding, data = dumps(value, serializer=serializer)
    payload = data if isinstance(data, bytes) else data.encode()
    return len(payload), payload


def offload_arguments(
    args: Any, kwargs: Any, *, threshold: int | None = None, force: bool = False
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Replace an argument set larger than the threshold (or any, with ``force``) by a reference to a stored blob."""
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    if not args and len(kwargs) == 1 and is_envelope(kwargs):
        return args, kwargs  # already offloaded (a retry re-sends the request's own arguments)
    limit = settings.CLAIMCHECK_ARGS_THRESHOLD if threshold is None else threshold
    size, payload = serialized_size([list(args), kwargs])
    if size <= limit and not force:
        return args, kwargs
    # Sorted keys: equal argument sets make equal blobs, so the sha256 identifies them (idempotency keys).
    # Dict keys of mixed types cannot be sorted: those keep the broker's own encoding.
    with contextlib.suppress(TypeError):
        payload = json_dumps([list(args), kwargs], sort_keys=True).encode()
    reference = blobs.store_bytes(payload, prefix=ARGS_PREFIX, content_type=_ARGS_CONTENT_TYPE)
    return (), reference.envelope()


def payload_identity(args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return what identifies an argument set for deduplication: itself, or the sha256 of its offloaded blob."""
    reference = arguments_reference(args, kwargs)
    if reference is None:
        return tuple(args or ()), dict(kwargs or {})
    return (), {"claimcheck_sha256": reference.sha256, "claimcheck_size": reference.size}


def discard_arguments(args: Any, kwargs: Any) -> None:
    """Delete at once the blob of an offloaded argument set that will not be published (idempotent)."""
    reference = arguments_reference(args, kwargs)
    if reference is not None:
        _delete_quietly(reference)


def arguments_reference(args: Any, kwargs: Any) -> Reference | None:
    """Return the verified reference of an offloaded argument set, or None when the arguments travelled inline."""
    if not args and isinstance(kwargs, dict) and is_envelope(kwargs):
        reference = from_envelope(kwargs)
        if reference.sha256 is None:
            # The sha256 is the argument set's identity (payload_identity); only an upload is pinned instead.
            raise InvalidReferenceError(
                f"claim-check argument blob {reference.key!r} carries a pin, not a sha256: "
                "only blobs stored by offload_arguments() are accepted as an argument set"
            )
        return reference
    return None


def resolve_arguments(args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return the real arguments: load an offloaded set, and resolve results of earlier tasks passed as arguments."""
    reference = arguments_reference(args, kwargs)
    if reference is not None:
        if reference.content_type != _ARGS_CONTENT_TYPE:
            raise InvalidReferenceError(
                f"claim-check argument blob {reference.key!r} has content type {reference.content_type!r}; "
                f"accepted: {_ARGS_CONTENT_TYPE!r}"
            )
        loaded = loads(blobs.read_bytes(reference), _ARGS_CONTENT_TYPE, "utf-8", accept={_ARGS_CONTENT_TYPE})
        args, kwargs = loaded
    # A chained task receives the previous task's (possibly offloaded) result as its first argument.
    return tuple(resolve_result(arg) for arg in args or ()), dict(kwargs or {})


def offload_result(value: Any, *, limit: int | None = None) -> Any:
    """Return ``value``, or a reference envelope to a stored copy when its serialized size is over the limit."""
    limit = settings.CLAIMCHECK_RESULT_LIMIT if limit is None else limit
    if value is None and limit >= len("null"):
        return None  # most tasks return nothing: no serializing to learn that "null" fits
    size, payload = serialized_size(value)
    if size <= limit:
        return value
    return blobs.store_bytes(payload, prefix=RESULTS_PREFIX, content_type="application/json").envelope()


def resolve_result(value: Any) -> Any:
    """Return a task result as the task returned it, loading it from storage when it was offloaded."""
    if not is_envelope(value):
        return value
    reference = from_envelope(value)
    return loads(blobs.read_bytes(reference), "application/json", "utf-8", accept={_ARGS_CONTENT_TYPE})


def wait_for_result(result: AsyncResult, **options: Any) -> Any:
    """Wait for a task's result like ``AsyncResult.get(**options)`` and resolve it if it was offloaded."""
    return resolve_result(result.get(**options))


def delete_arguments_blob(args: Any, kwargs: Any) -> None:
    """Delete the blob of an offloaded argument set once the surrounding transaction commits (idempotent)."""
    try:
        reference = arguments_reference(args, kwargs)
    except Exception:  # a refused reference has no blob of ours to delete
        return
    if reference is not None:
        transaction.on_commit(functools.partial(_delete_quietly, reference), robust=True)


def _delete_quietly(reference: Reference) -> None:
    try:
        blobs.delete(reference)
    except Exception:
        # The orphan sweep removes it later; a storage hiccup must not turn a finished task into a failure.
        logger.warning("Could not delete claim-check blob %s; the orphan sweep will", reference.key, exc_info=True)


def _envelope_aware(check: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task's signature check so it lets an offloaded argument set through (it was checked before)."""

    @functools.wraps(check)
    def check_arguments(*args: Any, **kwargs: Any) -> Any:
        if not args and len(kwargs) == 1 and is_envelope(kwargs):
            return None
        return check(*args, **kwargs)

    return check_arguments


class ClaimCheckTask(DjangoTask):
    """A task whose large argument sets and results are stored as blobs and carried as signed references.

    Task code is the same either way. Two hooks carry the claim check, and every path through a
    task calls each once: :meth:`offload_call` before a call is published (``apply_async``/``delay``,
    and ``IdempotentTask.enqueue``), :meth:`resolve_call` before the body runs (``__call__``);
    :meth:`store_result` offloads a large result after it. ``apply_async(..., claimcheck=True)``
    offloads whatever the size.
    """

    #: Serialized argument size above which arguments are offloaded (default: settings.CLAIMCHECK_ARGS_THRESHOLD).
    claimcheck_threshold: int | None = None
    #: Serialized result size above which results are offloaded (default: settings.CLAIMCHECK_RESULT_LIMIT).
    claimcheck_result_limit: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Celery checks the arguments against the task's signature in apply_async, after our offload.
        wrap_signature_check(cls, _envelope_aware)

    # ------------------------------------------------------------------
    # The hooks
    # ------------------------------------------------------------------

    def offload_call(self, args: Any, kwargs: Any, *, force: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return the arguments to publish: a large argument set (any, with ``force``) becomes a reference."""
        return offload_arguments(args, kwargs, threshold=self.claimcheck_threshold, force=force)

    def resolve_call(self, args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return the arguments the body receives: an offloaded set is loaded, earlier results resolved."""
        return resolve_arguments(args, kwargs)

    def store_result(self, value: Any) -> Any:
        """Return what is stored and returned for ``value``: a large result becomes a reference."""
        return offload_result(value, limit=self.claimcheck_result_limit)

    def already_succeeded(self, task_id: str) -> bool:
        """Return whether the call ``task_id`` already succeeded (asked when its argument blob is gone)."""
        return bool(self.AsyncResult(task_id).state == states.SUCCESS)

    # ------------------------------------------------------------------
    # The paths
    # ------------------------------------------------------------------

    def check_arguments(self, args: Any, kwargs: Any) -> None:
        """Raise ``TypeError`` if the arguments do not fit the task's signature (as ``apply_async`` would)."""
        if self.typing:
            check_signature(self, args, kwargs)

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        """Enqueue the task, offloading a large argument set to the claim-check storage first."""
        force = bool(options.pop("claimcheck", False))
        self.check_arguments(args, kwargs)  # a wrong call fails here, before anything is stored
        args, kwargs = self.offload_call(args, kwargs, force=force)
        return super().apply_async(args, kwargs, *rest, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return super().__call__(*args, **kwargs)  # a plain function call: nothing crossed a broker
        try:
            args, kwargs = self.resolve_call(args, kwargs)
        except BlobMissingError:
            # With acks_late, a worker that died after storing the success but before acking gets the
            # message again, and the success already deleted the blob: nothing is left to do.
            task_id = self.request.id
            assert task_id is not None  # a call that crossed a broker carries its task id
            if self.already_succeeded(task_id):
                logger.info("Task %s already succeeded and its argument blob is gone: not running it again", task_id)
                raise Ignore() from None
            raise
        return self.store_result(super().__call__(*args, **kwargs))

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Delete the argument blob once the task succeeded and its state is stored."""
        super().after_return(status, retval, task_id, args, kwargs, einfo)
        # A retry needs the blob again; a failure keeps it for inspection until the orphan sweep.
        if status == states.SUCCESS:
            delete_arguments_blob(args, kwargs)
