"""System checks: the delivery and shutdown numbers agree with one another, and every task module imports."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker.queues import is_amqp, is_redis, pools_in_force

#: The grace period Docker Compose gives a service without ``stop_grace_period``.
COMPOSE_DEFAULT_GRACE = 10
#: The grace period Kubernetes gives a pod without ``terminationGracePeriodSeconds``.
KUBERNETES_DEFAULT_GRACE = 30
#: The settings the rest of the delivery design relies on, and the value each must have.
REQUIRED_SETTINGS = {
    "CELERY_TASK_ACKS_LATE": True,
    "CELERY_TASK_REJECT_ON_WORKER_LOST": True,
    "CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS": True,
}
HINT = f"Edit the pool registry ({pools.__name__}) and run `make procfiles`; do not type these numbers by hand."


def _is_redis(url: str) -> bool:
    return is_redis(url)


def timing_errors(
    registry: Iterable[pools.Pool],
    *,
    broker_url: str,
    broker_options: Mapping[str, Any],
    result_backend: str,
    backend_options: Mapping[str, Any],
    soft_shutdown: float,
    grace_periods: Mapping[str, Mapping[str, float]],
    consumer_timeout: float = pools.RABBITMQ_DEFAULT_CONSUMER_TIMEOUT,
) -> list[CheckMessage]:
    """Return an error for every pair of numbers in the wrong order.

    Per pool: visibility timeout > lease > hard time limit > soft time limit. Every orchestrator grace
    period (``grace_periods``: file name -> pool name -> seconds) > that pool's soft shutdown timeout;
    ``soft_shutdown`` (the setting: a worker's until PoolWorker applies its pool's own) > 0. The broker's and the
    result backend's visibility timeouts are equal when both are Redis. On RabbitMQ, the server's
    ``consumer_timeout`` (``consumer_timeout``, seconds) > every lease plus margin, as the visibility timeout.
    """
    errors: list[CheckMessage] = []
    registry = tuple(registry)
    visibility = broker_options.get("visibility_timeout") if _is_redis(broker_url) else None
    for pool in registry:
        if not pool.soft_time_limit < pool.time_limit:
            errors.append(
                Error(
                    f"Pool {pool.name!r}: soft time limit ({pool.soft_time_limit}s) must be below the hard time "
                    f"limit ({pool.time_limit}s), or the task is killed before it can clean up.",
                    hint=HINT,
                    id="delivery.E001",
                )
            )
        if not pool.time_limit < pool.lease_seconds:
            errors.append(
                Error(
                    f"Pool {pool.name!r}: lease ({pool.lease_seconds}s) must be above the hard time limit "
                    f"({pool.time_limit}s), or a second delivery may claim a task that is still running.",
                    hint=HINT,
                    id="delivery.E002",
                )
            )
        if visibility is not None and not pool.lease_seconds < visibility:
            errors.append(
                Error(
                    f"Pool {pool.name!r}: Redis visibility timeout ({visibility}s) must be above the lease "
                    f"({pool.lease_seconds}s), or Redis redelivers a task while it is still running.",
                    hint=f"Let {pools.__name__}.broker_transport_options() set CELERY_BROKER_TRANSPORT_OPTIONS.",
                    id="delivery.E003",
                )
            )
    if is_amqp(broker_url):
        needed = pools.consumer_timeout(registry)
        if not consumer_timeout >= needed:
            longest = max(registry, key=lambda p: p.lease_seconds)
            errors.append(
                Error(
                    f"RabbitMQ's consumer_timeout ({consumer_timeout:g}s, RABBITMQ_CONSUMER_TIMEOUT) must be at least "
                    f"{needed}s: the {longest.name!r} pool's lease ({longest.lease_seconds}s) plus margin, or RabbitMQ "
                    "closes the worker's channel and redelivers a task while it is still running.",
                    hint=f"Set `consumer_timeout = {needed * 1000}` (milliseconds) in the server's rabbitmq.conf "
                    f"and RABBITMQ_CONSUMER_TIMEOUT={needed} in the environment (README.md, 'Choosing a broker').",
                    id="delivery.E008",
                )
            )
    if _is_redis(broker_url) and _is_redis(result_backend):
        backend_visibility = backend_options.get("visibility_timeout")
        if backend_visibility != visibility:
            errors.append(
                Error(
                    f"The result backend's visibility timeout ({backend_visibility}) differs from the broker's "
                    f"({visibility}); both must be the same value.",
                    hint=f"Let {pools.__name__}.celery_settings() set both transport options.",
                    id="delivery.E004",
                )
            )
    if not soft_shutdown > 0:
        errors.append(
            Error(
                f"CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT is {soft_shutdown}: without a soft shutdown a stopping "
                "worker cancels running tasks at once instead of letting short ones finish.",
                hint=HINT,
                id="delivery.E005",
            )
        )
    by_name = {pool.name: pool for pool in registry}
    for source, periods in grace_periods.items():
        for pool_name, grace in periods.items():
            # Each pool's worker applies its own pool's soft shutdown ({{ cookiecutter.project_slug }}.worker.app.PoolWorker).
            pool_soft = by_name[pool_name].soft_shutdown_timeout if pool_name in by_name else soft_shutdown
            if not grace > pool_soft:
                errors.append(
                    Error(
                        f"{source}: the grace period of the {pool_name!r} worker ({grace}s) must be above its "
                        f"pool's soft shutdown timeout ({pool_soft}s), or the worker is killed before it requeues "
                        "its running tasks (they then wait for the visibility timeout).",
                        hint=HINT,
                        id="delivery.E006",
                    )
                )
    return errors


def _seconds(value: Any) -> float:
    """Return a compose duration (``30s``, ``1m30s``, ``45``) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    text, total, number = str(value).strip(), 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total, number = total + float(number) * units[char], ""
        else:
            raise ValueError(f"Cannot read the duration {text!r}; write it like 30s or 1m30s.")
    return total + (float(number) if number else 0.0)


def grace_periods_on_disk(project_dir: Path, registry: Iterable[pools.Pool]) -> dict[str, dict[str, float]]:
    """Return the worker grace periods written in compose.yaml and k8s/worker-*.yaml under ``project_dir``."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with uvicorn[standard]
        return {}
    found: dict[str, dict[str, float]] = {}
    compose = project_dir / "compose.yaml"
    if compose.exists():
        services = (yaml.safe_load(compose.read_text()) or {}).get("services") or {}
        found["compose.yaml"] = {
            pool.name: _seconds(services[f"worker-{pool.name}"].get("stop_grace_period", COMPOSE_DEFAULT_GRACE))
            for pool in registry
            if f"worker-{pool.name}" in services
        }
    for pool in registry:
        manifest = project_dir / "k8s" / f"worker-{pool.name}.yaml"
        if not manifest.exists():
            continue
        for document in yaml.safe_load_all(manifest.read_text()):
            if (document or {}).get("kind") != "Deployment":
                continue
            spec = document["spec"]["template"]["spec"]
            grace = spec.get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE)
            found.setdefault(f"k8s/worker-{pool.name}.yaml", {})[pool.name] = float(grace)
    return found


@register("delivery")
def check_delivery_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check that time limits, leases, visibility timeouts and grace periods are in the right order."""
    from django.conf import settings

    registry = pools_in_force()
    messages: list[CheckMessage] = []
    for name, wanted in REQUIRED_SETTINGS.items():
        if getattr(settings, name, None) != wanted:
            messages.append(
                Warning(
                    f"{name} is {getattr(settings, name, None)!r}, not {wanted!r}: tasks can be lost when a worker "
                    "stops or dies (README.md, 'What happens when you deploy').",
                    id="delivery.W001",
                )
            )
    try:
        grace_periods = grace_periods_on_disk(Path(settings.BASE_DIR), registry)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        messages.append(Error(f"Cannot read the workers' grace periods: {exc}", hint=HINT, id="delivery.E007"))
        grace_periods = {}
    messages += timing_errors(
        registry,
        broker_url=settings.CELERY_BROKER_URL,
        broker_options=getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {},
        result_backend=getattr(settings, "CELERY_RESULT_BACKEND", "") or "",
        backend_options=getattr(settings, "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS", {}) or {},
        soft_shutdown=float(getattr(settings, "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 0) or 0),
        grace_periods=grace_periods,
        consumer_timeout=float(getattr(settings, "RABBITMQ_CONSUMER_TIMEOUT", pools.RABBITMQ_DEFAULT_CONSUMER_TIMEOUT)),
    )
    return messages


def task_modules() -> list[tuple[str, bool]]:
    """Return the modules a worker imports at start, each with whether it may be absent.

    Celery autodiscovers the ``tasks`` module of every installed app (an app without one is fine),
    then imports ``CELERY_IMPORTS`` and ``CELERY_INCLUDE`` (each must exist).
    """
    from django.apps import apps
    from django.conf import settings

    found = [(f"{config.name}.tasks", True) for config in apps.get_app_configs()]
    for name in ("CELERY_IMPORTS", "CELERY_INCLUDE"):
        listed = getattr(settings, name, None) or ()
        found += [(module, False) for module in ([listed] if isinstance(listed, str) else listed)]
    return found


def task_module_errors(modules: Iterable[tuple[str, bool]]) -> list[CheckMessage]:
    """Return an error for every module of ``modules`` (name, may be absent) that does not import."""
    errors: list[CheckMessage] = []
    for module, optional in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any error at import stops the worker: report it, whatever it is
            # As Celery's autodiscovery: an app's missing tasks module is skipped, a missing import inside it is not.
            if optional and isinstance(exc, ModuleNotFoundError) and exc.name == module:
                continue
            errors.append(_import_error(module, exc))
    return errors


def _import_error(module: str, exc: BaseException) -> Error:
    return Error(
        f"The task module {module!r} does not import: {type(exc).__name__}: {exc}",
        hint="A worker imports every task module when it starts and fails on this error; fix the module "
        "(a missing import, such as `from {{ cookiecutter.project_slug }} import pools`, is the usual cause).",
        obj=module,
        id="tasks.E001",
    )


@register("tasks")
def check_task_modules(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check that every task module a worker imports (autodiscovered and ``CELERY_IMPORTS``) imports."""
    return task_module_errors(task_modules())
