"""The Celery application, configured from Django settings and the worker-pool registry."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

from celery import Celery
from celery.app.routes import Router
from celery.apps.worker import Worker
from celery.utils.nodenames import default_nodename, host_format

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.claimcheck.broker import capped_sender
from {{ cookiecutter.project_slug }}.core.celery_internals import AMQP, register_pool
from {{ cookiecutter.project_slug }}.core.rundirs import make_run_dirs
from {{ cookiecutter.project_slug }}.worker.queues import RegistryRouter, pools_in_force

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.config.settings.local")
# `-P threads` gets a threads pool whose running tasks the soft shutdown can stop (threadpool.py).
register_pool("threads", "{{ cookiecutter.project_slug }}.worker.threadpool:TaskPool")


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
        hostname, kwargs = pool_worker_options((app or self.app).conf, hostname, kwargs)
        super().__init__(app=app, hostname=hostname, **kwargs)


def pool_worker_options(conf: Any, hostname: str | None, options: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Fill the worker options the command line left unset from the pool the worker consumes."""
    queues = options.get("queues") or []
    if isinstance(queues, str):
        queues = [q for q in queues.split(",") if q]
    registry = pools_in_force()
    for queue in queues:
        pools.by_queue(queue, registry)  # a typo in -Q must not start an idle worker
    if len(queues) != 1:
        return hostname, options
    pool = pools.by_queue(queues[0], registry)
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
    #: Every task offloads large arguments and results to the claim-check storage.
    task_cls = "{{ cookiecutter.project_slug }}.claimcheck.base:ClaimCheckTask"

    @cached_property
    def Worker(self) -> type[Worker]:  # noqa: N802
        return self.subclass_with_self(PoolWorker)


app = ProjectCelery("{{ cookiecutter.project_slug }}")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_configure.connect
def _make_run_dirs(sender: Celery, **kwargs: Any) -> None:
    # The filesystem broker and the file result backend need their folders before they connect.
    make_run_dirs()


app.autodiscover_tasks()
app.steps["consumer"].add("{{ cookiecutter.project_slug }}.worker.heartbeat:Heartbeat")
