"""Flower never starts without authentication, however it is started (``--conf`` or not)."""

from __future__ import annotations

import os
from typing import Any

import click
from django.conf import settings

MISSING = (
    "Flower needs FLOWER_USER and FLOWER_PASSWORD (the post-generation hook wrote them to .env), "
    "or --basic-auth=user:password: it refuses to serve task arguments to anyone who asks."
)


def settings_basic_auth() -> list[str]:
    """Return Flower's ``basic_auth`` from FLOWER_USER and FLOWER_PASSWORD, or nothing when either is empty."""
    if settings.FLOWER_USER and settings.FLOWER_PASSWORD:
        return [f"{settings.FLOWER_USER}:{settings.FLOWER_PASSWORD}"]
    return []


def require_authentication(options: Any) -> None:
    """Give Flower's parsed ``options`` basic auth from settings unless they carry credentials; exit without any."""
    # The HTTP API would answer without credentials; /metrics stays open for Prometheus either way.
    os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
    if options.basic_auth:
        if not all(user and password for user, _, password in (entry.partition(":") for entry in options.basic_auth)):
            raise SystemExit(f"--basic-auth (or FLOWER_BASIC_AUTH) needs user:password entries. {MISSING}")
        return
    if options.auth:  # OAuth: Flower itself refuses whoever its provider does not sign in
        return
    options.basic_auth = settings_basic_auth()
    if not options.basic_auth:
        raise SystemExit(MISSING)


def on_import_modules(**kwargs: Any) -> None:
    """Check Flower's options when Flower builds its application (Celery's ``import_modules`` signal)."""
    # Flower sends the signal once its command line, FLOWER_* variables and --conf file are all parsed;
    # workers and beat send it too, but run no Flower command.
    context = click.get_current_context(silent=True)
    if context is None or context.command.name != "flower":
        return
    from tornado.options import options  # Flower's own options object, imported only under Flower

    require_authentication(options)
