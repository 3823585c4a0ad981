"""Celery's private API and what celery-types leaves out, in one place: checked against Celery 5.7.0."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

import celery
from celery import Celery, Task, concurrency, current_task
from celery.app.task import Context
from celery.worker import state as worker_state
from kombu import transport as kombu_transport

__all__ = [
    "AMQP",
    "ApplyResult",
    "Router",
    "ThreadTaskPool",
    "check_signature",
    "cold_shutdown_started",
    "current_task_object",
    "filesystem_broker_lock",
    "forget_connections",
    "ignores_result",
    "reentrant_hub_lock",
    "register_pool",
    "register_transport",
    "request_claim",
    "set_request_claim",
    "shared_task",
    "wrap_signature_check",
]

# ------------------------------------------------------------------------------
# Classes the project subclasses. Under TYPE_CHECKING they declare what celery-types 0.26 leaves out;
# at run time they are Celery's own classes, so the subclasses' MRO is exactly Celery's.
# ------------------------------------------------------------------------------
if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from celery.app import amqp, routes
    from celery.concurrency import thread
    from kombu import Queue

    from {{ cookiecutter.project_slug }}.claimcheck.base import ClaimCheckTask

    class AMQP(amqp.AMQP):
        """``celery.app.amqp.AMQP``, with the private factory of ``send_task_message``."""

        # RegistryAMQP wraps the sender every task message goes through (the claim check's size cap);
        # Celery has no public hook that can refuse a message (before_task_publish swallows errors).
        def _create_task_sender(self) -> Callable[..., Any]: ...

    class Router(routes.Router):
        """``celery.app.routes.Router``, with the queues its ``__init__`` stores."""

        # RegistryRouter names the known queues when it refuses an unknown one.
        queues: Mapping[str, Queue]

    class ApplyResult:
        """``celery.concurrency.thread.ApplyResult``: the threads pool's pending result (not in ``__all__``)."""

        # The project's threads pool extends it with ``terminate``, which Celery's lacks.
        f: Future[Any]
        get: Callable[..., Any]

        def __init__(self, future: Future[Any]) -> None: ...

        def wait(self, timeout: float | None = None) -> None: ...

    class ThreadTaskPool(thread.TaskPool):
        """``celery.concurrency.thread.TaskPool``, with the executor its ``__init__`` creates."""

        # The project's threads pool submits to it and shuts it down itself ({{ cookiecutter.project_slug }}.worker.threadpool).
        executor: ThreadPoolExecutor
        # Where BasePool keeps the options it does not name (the worker's time limits).
        options: dict[str, Any]

        # The pool's part of `celery inspect stats`; the project's threads pool adds its time limits.
        def _get_info(self) -> dict[str, Any]: ...

else:
    from celery.app.amqp import AMQP
    from celery.app.routes import Router
    from celery.concurrency.thread import ApplyResult
    from celery.concurrency.thread import TaskPool as ThreadTaskPool


# ------------------------------------------------------------------------------
# Worker pools
# ------------------------------------------------------------------------------
def register_pool(name: str, target: str) -> None:
    """Make ``celery worker -P <name>`` load the pool class ``target`` (``"module:Class"``)."""
    # -P is looked up in this private table; the only public hook, CELERY_CUSTOM_WORKER_POOL, adds "custom"
    # and would not replace the "threads" pool that the registry's threads pools name.
    concurrency.ALIASES[name] = target  # type: ignore[attr-defined]


def reentrant_hub_lock(hub: Any) -> None:
    """Make the lock of kombu's event loop ``hub`` reentrant, so a signal handler on its thread can schedule work.

    The loop thread takes this plain ``threading.Lock`` on every turn (to take the ready callbacks) and in
    ``call_soon``. The cold shutdown runs in the SIGTERM handler on that thread and calls ``call_soon`` (for each
    task event it sends, see worker/events.py): landing while the thread held the lock, it would wait for it for
    good. Nested in either critical section, ``call_soon`` only adds to the set being taken or to the new one, and
    wakes no other thread: reentrance is safe. Call it before the loop runs (the worker's ``on_start``).
    """
    hub._ready_lock = threading.RLock()


def register_transport(scheme: str, target: str) -> None:
    """Make broker URLs of ``scheme`` (``filesystem://``) load the kombu transport class ``target``."""
    # kombu resolves a URL's scheme in this table; a class set with broker_transport would lose to the URL's scheme.
    kombu_transport.TRANSPORT_ALIASES[scheme] = target


def cold_shutdown_started() -> bool:
    """Return whether this worker's cold shutdown has begun: running tasks are being cancelled and requeued."""
    # Celery's shutdown sets this worker-state global (True, or the exit code) and tests its truth itself;
    # celery-types declares it as None, which would leave the code behind such a test unchecked.
    return bool(worker_state.should_terminate)


# ------------------------------------------------------------------------------
# Tasks
# ------------------------------------------------------------------------------
@overload
def shared_task[T: Task[Any, Any]](
    *, base: type[T], bind: bool = ..., **options: Any
) -> Callable[[Callable[..., Any]], T]: ...
@overload
def shared_task(*, bind: bool = ..., **options: Any) -> Callable[[Callable[..., Any]], ClaimCheckTask]: ...
def shared_task(**options: Any) -> Any:
    """``celery.shared_task``, typed to take the project's task options (``worker_pool``) without ``base``."""
    # Celery makes every extra decorator option a task class attribute (route_task reads worker_pool), but
    # celery-types accepts extra options only with base=. Without base a task is the app's Task class, whose
    # base is ProjectCelery.task_cls.
    return celery.shared_task(**options)


def wrap_signature_check(
    task_cls: type[Task[Any, Any]], wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace the signature check of a task class made by the task decorator with ``wrap(check)``."""
    # The decorator stores a function with the task's signature as the class's __header__ staticmethod;
    # apply_async calls it (task.typing) with the arguments as given, before the claim check offloads them.
    header = task_cls.__dict__.get("__header__")
    if isinstance(header, staticmethod):
        task_cls.__header__ = staticmethod(wrap(header.__func__))  # type: ignore[attr-defined]


def check_signature(task: Task[Any, Any], args: Any, kwargs: Any) -> None:
    """Raise ``TypeError`` if ``args`` and ``kwargs`` do not fit the task's signature, as ``apply_async`` would."""
    # The same private __header__ check apply_async runs, so a call is refused before anything is stored.
    task.__header__(*(args or ()), **(kwargs or {}))  # type: ignore[attr-defined]


def current_task_object() -> Task[Any, Any] | None:
    """Return the task running in this thread itself (not Celery's proxy to it), or None outside a task."""
    # celery-types types the current_task proxy as the Task it stands for, which has no _get_current_object.
    return current_task._get_current_object() if current_task else None  # type: ignore[attr-defined]


def set_request_claim(request: Context, claim: tuple[str, str] | None) -> None:
    """Keep the ``(key, owner)`` claim of the running idempotent delivery on its request, or clear it."""
    # Celery's request Context takes any attribute (message headers land there too), and it is what a task
    # reaches from set_progress; celery-types declares only Celery's own attributes.
    request.idempotency_claim = claim  # type: ignore[attr-defined]


def ignores_result(task: Task[Any, Any], request: Any) -> bool:
    """Return whether the delivery ``request`` of ``task`` ignores its result (its own choice, else the task's)."""
    # Celery's own rule (celery.app.task.get_actual_ignore_result), which celery-types does not declare.
    from celery.app import task as celery_task

    return bool(celery_task.get_actual_ignore_result(task, request))  # type: ignore[attr-defined]


def request_claim(request: Context) -> tuple[str, str] | None:
    """Return the ``(key, owner)`` claim kept by :func:`set_request_claim`, or None outside a claimed delivery."""
    claim: tuple[str, str] | None = getattr(request, "idempotency_claim", None)
    return claim


# ------------------------------------------------------------------------------
# The app's caches (the test suite repoints a running app at another broker)
# ------------------------------------------------------------------------------
def forget_connections(app: Celery) -> None:
    """Drop the app's cached connection pools and result backend so the next use reads changed URLs."""
    # Celery caches these on first use and has no public reset: this is what its own after-fork hook does,
    # plus the backend, which it caches per thread.
    app._pool = None  # type: ignore[attr-defined]
    app.amqp._producer_pool = None  # type: ignore[attr-defined]
    local: threading.local = app._local  # type: ignore[attr-defined]
    vars(local).pop("backend", None)


# ------------------------------------------------------------------------------
# kombu's filesystem transport (the embedded broker)
# ------------------------------------------------------------------------------
@contextlib.contextmanager
def filesystem_broker_lock(file: io.FileIO) -> Iterator[None]:
    """Hold the filesystem transport's own exclusive lock on an exchange table file (kombu-stubs lack LOCK_EX)."""
    from kombu.transport import filesystem

    filesystem.lock(file, filesystem.LOCK_EX)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        filesystem.unlock(file)


# ------------------------------------------------------------------------------
# The worker's own view of the deliveries it holds (main process)
# ------------------------------------------------------------------------------
def held_task_ids() -> frozenset[str]:
    """Return the ids of the tasks this worker process holds: reserved, waiting for their ETA, or running."""
    from celery.worker import state

    # A copy in one C call: the consumer thread adds and removes requests while this runs in another thread.
    held = set(state.requests.copy())
    # state.requests maps an id to its latest request: a duplicate of a running message (same id) that ends first
    # pops the id while the original still runs. The request sets keep each delivery; their weak references copy
    # in one C call too (celery-types declares these WeakSets as plain MutableSets).
    for requests in (state.active_requests, state.reserved_requests):
        refs = requests.data.copy()  # type: ignore[attr-defined]
        held.update(request.id for ref in refs if (request := ref()) is not None)
    return frozenset(held)
