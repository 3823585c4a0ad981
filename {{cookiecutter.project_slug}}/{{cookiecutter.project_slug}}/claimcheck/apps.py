"""Django app of the claim-check storage."""

from django.apps import AppConfig


class ClaimCheckConfig(AppConfig):
    """Large task payloads travel as signed references to blobs in the ``claimcheck`` storage."""

    name = "{{ cookiecutter.project_slug }}.claimcheck"
    label = "claimcheck"
    verbose_name = "Claim check"
