"""App configuration of the worker runtime: registers the delivery checks and the stack commands."""

from django.apps import AppConfig


class WorkerConfig(AppConfig):
    """The worker runtime; holds no models, only the system checks that keep its numbers in agreement."""

    name = "{{ cookiecutter.project_slug }}.worker"
    label = "worker"
    verbose_name = "Worker runtime"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - importing registers the checks
