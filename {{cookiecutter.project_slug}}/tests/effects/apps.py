"""App configuration of the test-only effects app."""

from django.apps import AppConfig


class EffectsConfig(AppConfig):
    """Counts side effects of test tasks."""

    name = "tests.effects"
    label = "effects"
