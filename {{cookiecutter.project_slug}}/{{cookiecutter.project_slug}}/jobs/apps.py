"""App configuration of the long-running jobs API and page."""

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The jobs app."""

    name = "{{ cookiecutter.project_slug }}.jobs"
    label = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
