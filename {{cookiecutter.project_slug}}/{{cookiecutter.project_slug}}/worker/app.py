"""The Celery application, configured from Django settings and the worker-pool registry."""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from celery import Celery, signals
from celery.app.routes import Router
from celery.apps.worker import Worker
from celery.utils.nodenames import default_nodename, host_format

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.claimcheck.broker import capped_sender
from {{ cookiecutter.project_slug }}.core.celery_internals import AMQP, reentrant_hub_lock, register_pool, register_transport
from {{ cookiecutter.project_slug }}.core.rundirs import make_run_dirs
from {{ cookiecutter.project_slug }}.worker.deferredsignals import defer_shutdown_signals
from {{ cookiecutter.project_slug }}.worker.flowerguard import on_import_modules as _require_flower_authentication
from {{ cookiecutter.project_slug }}.worker.queues import RegistryRouter, pools_in_force
from {{ cookiecutter.project_slug }}.worker.threadpool import SHUTDOWN_SIGNALS, interrupts_held

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.config.settings.local")
# `-P threads` gets a threads pool whose running tasks the soft shutdown can stop (threadpool.py).
register_pool("threads", "{{ cookiecutter.project_slug }}.worker.threadpool:TaskPool")
# `-P prefork` gets Celery's prefork pool that stops without billiard's naps on the filesystem broker (prefork.py).
register_pool("prefork", "{{ cookiecutter.project_slug }}.worker.prefork:TaskPool")
# The embedded stack's broker, polled in short slices: an idle worker stops within a second (fstransport.py).
register_transport("filesystem", "{{ cookiecutter.project_slug }}.worker.fstransport:Transport")
# Redis, with a channel close that lets a busy worker reconnect after Redis went away (redistransport.py).
register_transport("redis", "{{ cookiecutter.project_slug }}.worker.redistransport:Transport")
register_transport("sentinel", "{{ cookiecutter.project_slug }}.worker.redistransport:SentinelTransport")


class RegistryAMQP(AMQP):
    """AMQP wiring whose router refuses queues outside the registry with a clear error."""

    def Router(self, queues: Any = None, create_missing: bool | None = None) -> Router:  # noqa: N802
        return RegistryRouter(
            self.routes,
            queues or self.queues,
            self.app.either("task_create_missing_queues", create_missing),
            app=self.app,
        )

    def _create_task_sender(self) -> Any:
        # Every task message, whoever sends it, is measured against the claim check's hard broker cap.
        return capped_sender(super()._create_task_sender(), self.app.conf.task_serializer)


class PoolWorker(Worker):
    """A worker that takes its pool options from the registry when started with ``-Q <pool>``."""

    def __init__(self, app: Any = None, hostname: str | None = None, **kwargs: Any) -> None:
        conf = (app or self.app).conf
        pool = worker_pool(kwargs)
        hostname, kwargs = pool_worker_options(conf, hostname, kwargs)
        # Celery reads the soft shutdown from app.conf when the worker stops (WorkController.wait_for_soft_shutdown):
        # this process runs one worker, so its app's setting is that worker's, its pool's own value.
        conf["worker_soft_shutdown_timeout"] = pool.soft_shutdown_timeout
        super().__init__(app=app, hostname=hostname, **kwargs)

    def on_start(self) -> None:
        """Start as Celery's worker does; its event loop runs the shutdown signals' handlers (deferredsignals.py)."""
        super().on_start()
        hub = getattr(self, "hub", None)  # None without an event loop (celery-types does not declare it)
        if hub is not None:
            reentrant_hub_lock(hub)
            # Celery's handlers are installed by now: the loop runs them, between two callbacks (issue 16).
            defer_shutdown_signals(hub, SHUTDOWN_SIGNALS)


class SeveralPoolsError(ValueError):
    """A worker asked to consume the queues of several pools (or of every pool, without ``-Q``)."""

    def __init__(self, queues: Iterable[str]) -> None:
        self.queues = tuple(queues)
        super().__init__(
            f"One worker cannot consume the queues {', '.join(map(repr, self.queues))}: each pool needs its own "
            "pool type, concurrency, prefetch, time limits and soft shutdown, and a task worked with another "
            "pool's settings can outlive its lease and run twice. Start one worker per pool: "
            + "; ".join(f"celery -A {{ cookiecutter.project_slug }} worker -Q {q}" for q in self.queues)
            + "."
        )


def worker_pool(options: dict[str, Any]) -> pools.Pool:
    """Return the pool in force whose queue the worker options (``-Q``) name; refuse none, several or unknown."""
    queues = options.get("queues") or []
    if isinstance(queues, str):
        queues = [q for q in queues.split(",") if q]
    registry = pools_in_force()
    found = [pools.by_queue(queue, registry) for queue in dict.fromkeys(queues)]  # a typo must not start idle
    if len(found) != 1:
        # Without -Q Celery consumes every queue in task_queues: every pool in one worker.
        raise SeveralPoolsError(pools.queue_names(found or registry))
    return found[0]


def pool_worker_options(conf: Any, hostname: str | None, options: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Fill the worker options the command line left unset from the one pool the worker consumes."""
    pool = worker_pool(options)
    options = dict(options)
    if hostname in (None, host_format(default_nodename(""))):
        hostname = f"{pool.name}@%h"
    # The CLI passes its default (prefork) when -P is not given: only another choice overrides the registry.
    chosen = options.get("pool") or options.get("pool_cls")
    if chosen is None or getattr(chosen, "__module__", str(chosen)).endswith("prefork"):
        options["pool"] = pool.pool
        options.pop("pool_cls", None)
    defaults = {
        "concurrency": pool.concurrency,
        "prefetch_multiplier": pool.prefetch_multiplier,
        "time_limit": pool.time_limit,
        "soft_time_limit": pool.soft_time_limit,
        "max_tasks_per_child": pool.max_tasks_per_child,
        "max_memory_per_child": pool.max_memory_per_child,
    }
    # Some CLI options fall back to the app's setting when not given: that value means "unset" too.
    fallbacks = {"concurrency": conf.worker_concurrency, "prefetch_multiplier": conf.worker_prefetch_multiplier}
    for key, value in defaults.items():
        if options.get(key) is None or (key in fallbacks and options[key] == fallbacks[key]):
            options[key] = value
    return hostname, options


class ProjectCelery(Celery):
    """The project's Celery class: registry-aware routing and workers."""

    amqp_cls = f"{__name__}:RegistryAMQP"
    #: Task events are published by the worker's event loop alone, never by a signal handler or a task thread.
    events_cls = "{{ cookiecutter.project_slug }}.worker.events:WorkerEvents"
    #: Every task offloads large arguments and results to the claim-check storage.
    task_cls = "{{ cookiecutter.project_slug }}.claimcheck.base:ClaimCheckTask"

    @cached_property
    def Worker(self) -> type[Worker]:  # noqa: N802
        return self.subclass_with_self(PoolWorker)

    def send_task(self, *args: Any, **kwargs: Any) -> Any:
        """Send a task message; in a threads pool's task, with the pool's interrupts held until it is sent.

        An interrupt (a time limit, the cold shutdown) halfway through py-amqp's I/O left the connection unusable
        and its close waiting for good (issue 16, worker/threadpool.py).
        """
        with interrupts_held():
            return super().send_task(*args, **kwargs)


app = ProjectCelery("{{ cookiecutter.project_slug }}")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_configure.connect
def _make_run_dirs(sender: Celery, **kwargs: Any) -> None:
    # The filesystem broker and the file result backend need their folders before they connect.
    make_run_dirs()


# `celery -A {{ cookiecutter.project_slug }} flower`, with or without --conf, gets basic auth from settings or does not start.
signals.import_modules.connect(_require_flower_authentication, sender=app, weak=False)

app.autodiscover_tasks()
app.steps["consumer"].add("{{ cookiecutter.project_slug }}.worker.heartbeat:Heartbeat")
# On RabbitMQ only: the pool's dead-letter queue exists before a message can pass the delivery limit.
app.steps["consumer"].add("{{ cookiecutter.project_slug }}.worker.deadletters:DeadLetterQueues")
# Named by path: the idempotency app sits above the worker runtime and owns the liveness records it writes.
app.steps["worker"].add("{{ cookiecutter.project_slug }}.idempotency.liveness:Liveness")
app.steps["consumer"].add("{{ cookiecutter.project_slug }}.idempotency.refusals:NoteUndecodableMessages")
