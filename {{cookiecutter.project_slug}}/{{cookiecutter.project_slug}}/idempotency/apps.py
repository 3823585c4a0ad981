"""App configuration of idempotent task execution."""

from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    """Status rows that let a task have its effect once, whatever happens to its messages."""

    name = "{{ cookiecutter.project_slug }}.idempotency"
    label = "idempotency"
    verbose_name = "Idempotent tasks"
