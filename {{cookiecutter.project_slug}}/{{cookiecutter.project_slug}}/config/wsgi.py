"""WSGI entry point, for servers that cannot speak ASGI (no SSE streams there)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.config.settings.local")

application = get_wsgi_application()

from {{ cookiecutter.project_slug }}.core.rundirs import make_run_dirs  # noqa: E402  (settings are configured by get_wsgi_application)

make_run_dirs()
