"""Flower's configuration: basic auth from settings, or Flower does not start."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.config.settings.local")
django.setup()

from django.conf import settings  # noqa: E402

if not (settings.FLOWER_USER and settings.FLOWER_PASSWORD):
    raise SystemExit("Flower needs FLOWER_USER and FLOWER_PASSWORD (the post-generation hook wrote them to .env).")

basic_auth = [f"{settings.FLOWER_USER}:{settings.FLOWER_PASSWORD}"]
# The HTTP API answers 401 without credentials; /metrics stays open for Prometheus.
os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
