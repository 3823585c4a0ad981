"""App configuration of the long-running jobs API and page."""

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The jobs app."""

    name = "{{ cookiecutter.project_slug }}.jobs"
    label = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from {{ cookiecutter.project_slug }}.idempotency.maintenance import rows_pruning

        from .services import keep_outcomes

        # A pruned status row must not turn a finished job into an unstarted one.
        rows_pruning.connect(keep_outcomes, dispatch_uid="jobs.keep_outcomes")
