"""Flower's configuration: basic auth from settings ({{ cookiecutter.project_slug }}.worker.flowerguard refuses to start without any)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.config.settings.local")
django.setup()

from {{ cookiecutter.project_slug }}.worker.flowerguard import settings_basic_auth  # noqa: E402

basic_auth = settings_basic_auth()
