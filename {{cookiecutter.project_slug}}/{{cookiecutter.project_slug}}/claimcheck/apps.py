"""Django app of the claim-check storage."""

from typing import Any

from django.apps import AppConfig


class ClaimCheckConfig(AppConfig):
    """Large task payloads travel as signed references to blobs in the ``claimcheck`` storage."""

    name = "{{ cookiecutter.project_slug }}.claimcheck"
    label = "claimcheck"
    verbose_name = "Claim check"

    def ready(self) -> None:
        from celery.signals import worker_init

        from . import checks  # noqa: F401  (registers the system checks)

        worker_init.connect(_load_storage_backend, weak=False)


def _load_storage_backend(**_kwargs: Any) -> None:
    """Import the claim-check storage backend in the worker's main process, before the pool forks.

    boto3 takes seconds to import; done here, no task spends its time limit on it.
    """
    from .blobs import get_storage

    get_storage()
