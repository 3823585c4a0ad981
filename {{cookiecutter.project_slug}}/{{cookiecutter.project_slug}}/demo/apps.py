"""App configuration of the demo tasks."""

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo app."""

    name = "{{ cookiecutter.project_slug }}.demo"
    label = "demo"
