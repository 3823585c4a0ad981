"""App configuration of the project package itself: registers the project's system checks."""

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project package; holds no models, only wiring such as system checks."""

    name = "{{ cookiecutter.project_slug }}"
    verbose_name = "{{ cookiecutter.project_name }}"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - importing registers the checks
