"""ASGI entry point: the web process, which also serves the long-lived SSE streams."""

import os
from typing import cast

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.config.settings.local")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402  (settings are configured by get_asgi_application)

from {{ cookiecutter.project_slug }}.core.rundirs import make_run_dirs  # noqa: E402
from {{ cookiecutter.project_slug }}.jobs.streams import shared_thread_streams  # noqa: E402

make_run_dirs()

# Open event streams hold no thread each (jobs/streams.py); every other request is Django's as usual.
application = shared_thread_streams(django_application)

if settings.SERVE_STATIC:
    # Serve the apps' static files (the jobs page's CSS and JS) from the ASGI process itself; turn
    # off with DJANGO_SERVE_STATIC=false when a proxy or CDN serves the collected files instead.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.handlers.asgi import ASGIHandler

    # The handler only calls the app it wraps, which need not be an ASGIHandler as django-stubs asks.
    application = ASGIStaticFilesHandler(cast("ASGIHandler", application))
