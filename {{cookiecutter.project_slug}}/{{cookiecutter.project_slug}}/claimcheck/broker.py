"""A hard cap on the size of any task message body that reaches the broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

from .base import serialized_size
from .exceptions import MessageTooLargeError


def check_message_size(task_name: str, body: Any, serializer: str) -> int:
    """Return the serialized size of a message body, or raise when it is over settings.CLAIMCHECK_MESSAGE_MAX_BYTES."""
    cap = settings.CLAIMCHECK_MESSAGE_MAX_BYTES
    size, _payload = serialized_size(body, serializer)
    if size > cap:
        raise MessageTooLargeError(
            f"task {task_name!r} message body is {size} bytes, over the broker cap of {cap} bytes "
            "(CLAIMCHECK_MESSAGE_MAX_BYTES); send large data as a claim-check reference "
            "(a ClaimCheckTask offloads its arguments, or store them with claimcheck.store_* helpers)"
        )
    return size


def capped_sender(send_task_message: Callable[..., Any], default_serializer: str) -> Callable[..., Any]:
    """Wrap Celery's ``amqp.send_task_message`` so an oversized body fails before it is published."""

    def send(producer: Any, name: str, message: Any, *args: Any, **kwargs: Any) -> Any:
        # Celery's before_task_publish signal logs and swallows a receiver's exception, so it cannot refuse.
        check_message_size(name, message.body, kwargs.get("serializer") or default_serializer)
        return send_task_message(producer, name, message, *args, **kwargs)

    return send
