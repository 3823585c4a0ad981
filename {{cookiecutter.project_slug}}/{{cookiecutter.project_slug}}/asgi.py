"""ASGI entry point: the web process, which also serves the long-lived SSE streams."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.settings.local")

application = get_asgi_application()
