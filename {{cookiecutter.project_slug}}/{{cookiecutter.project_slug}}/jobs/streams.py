"""Serve the jobs' event streams without parking a thread for each open stream."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.handlers.asgi import ASGIHandler

ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]

#: Paths of the event streams (``jobs:events``).
EVENTS_PATH = re.compile(r"^/api/jobs/[^/]+/events$")


def shared_thread_streams(handler: ASGIHandler) -> ASGIApp:
    """Return an ASGI app that runs event-stream requests outside Django's per-request thread context.

    Django gives every request its own thread-sensitive context, and the thread that runs the
    request's synchronous parts (session, middleware) lives until the response ends: for a stream
    that is one idle thread per open connection. Streams run those short parts on the process's
    shared thread instead; the stream itself is an async iterator on the event loop, and its
    status polls use the default executor's bounded pool. Every other request is untouched.
    """

    async def app(
        scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[Any]]
    ) -> None:
        if scope["type"] == "http" and EVENTS_PATH.match(scope.get("path", "")):
            await handler.handle(scope, receive, send)
        else:
            await handler(scope, receive, send)

    return app
