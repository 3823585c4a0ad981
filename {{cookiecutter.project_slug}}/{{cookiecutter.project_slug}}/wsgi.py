"""WSGI entry point, for servers that cannot speak ASGI (no SSE streams there)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.settings.local")

application = get_wsgi_application()
