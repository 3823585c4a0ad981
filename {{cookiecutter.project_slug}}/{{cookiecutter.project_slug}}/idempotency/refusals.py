"""Messages a worker drops before any task runs (unknown task, refused or undecodable content): noted on the row."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from . import claims
from .exceptions import MessageRefusedError
from .publishing import KEY_HEADER

__all__ = ["NoteUndecodableMessages", "note_refused_message"]

logger = logging.getLogger(__name__)


def note_refused_message(
    sender: Any = None, message: Any = None, exc: BaseException | None = None, **info: Any
) -> None:
    """Write why the worker dropped ``message`` on its row (Celery's ``task_unknown`` and ``task_rejected``).

    Celery acks such a message without running anything. The row stays pending, with the refusal as its
    error, for the admin, the API and the page: the row's own arguments can still be published again (a
    deploy that had not yet reached this worker, a message mangled on the way), so this is not its end.
    """
    headers = getattr(message, "headers", None) or {}
    key, task_id = headers.get(KEY_HEADER), headers.get("id")
    if not isinstance(key, str) or not isinstance(task_id, str):
        return  # not a message of a status row (or protocol 1): nothing to note it on
    name = info.get("name") or headers.get("task") or "?"
    hostname = getattr(sender, "hostname", None) or "?"
    refusal = MessageRefusedError(key, str(name), str(hostname), f"{type(exc).__name__}: {exc}" if exc else "")
    try:
        claims.note_refusal(key=key, task_id=task_id, exc=refusal)
    except Exception:
        # The consumer must go on consuming whatever the database does; the log keeps the refusal.
        logger.warning("Could not note the refused message of key %r on its row", key, exc_info=True)


class NoteUndecodableMessages(bootsteps.Step):
    """Consumer step: a message whose body does not decode also notes its reason on its row.

    Celery sends no signal for it (``Consumer.on_decode_error`` logs and acks), so the step wraps the
    consumer's handler; the headers, which carry the key and id, decode apart from the body.
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        celery_handler = parent.on_decode_error

        def on_decode_error(message: Any, exc: BaseException) -> None:
            note_refused_message(sender=parent, message=message, exc=exc)
            celery_handler(message, exc)

        parent.on_decode_error = on_decode_error
