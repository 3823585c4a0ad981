"""Canonical JSON, payload hashes and keys, with the JSON rules of Celery's serializer (kombu)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kombu.utils import json as kombu_json

from .exceptions import ArgumentNotSerializableError, InvalidKeyError

__all__ = [
    "KEY_MAX_LENGTH",
    "CeleryJSONDecoder",
    "CeleryJSONEncoder",
    "canonical_json",
    "check_serializable",
    "derive_key",
    "payload_hash",
    "validate_key",
]

#: Longest idempotency key the status row stores.
KEY_MAX_LENGTH = 255
#: What kombu's JSON serializer (Celery's ``json``) carries, for error messages.
ACCEPTED_TYPES = (
    "str, int, float, bool, None, list, tuple, dict with str/int/float/bool/None keys, "
    "datetime, date, time, Decimal, UUID, bytes, and objects with a __json__() method"
)


class CeleryJSONEncoder(kombu_json.JSONEncoder):
    """Encode values as Celery's json serializer does, so rows store exactly what messages carry."""


class CeleryJSONDecoder(json.JSONDecoder):
    """Decode values as Celery's json serializer does (datetimes, Decimals, UUIDs come back typed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("object_hook", kombu_json.object_hook)
        super().__init__(*args, **kwargs)


def canonical_json(value: Any) -> str:
    """Return ``value`` as JSON with sorted keys and no spaces, encoded by kombu's rules."""
    return kombu_json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """Return the sha256 of the canonical JSON of a task call: name, arguments and keyword arguments."""
    document = {"task": task_name, "args": list(args), "kwargs": dict(kwargs)}
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def derive_key(task_name: str, digest: str) -> str:
    """Return the key of a call that names none: the task name and its payload hash."""
    return validate_key(f"{task_name}:{digest}")


def validate_key(key: Any) -> str:
    """Return ``key`` if it is a usable idempotency key, or raise :class:`InvalidKeyError`."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"Idempotency key must be a str, not {type(key).__name__} ({key!r}).")
    if not key or len(key) > KEY_MAX_LENGTH:
        raise InvalidKeyError(
            f"Idempotency key must be 1 to {KEY_MAX_LENGTH} characters long; {key[:40]!r} has {len(key)}."
        )
    return key


def check_serializable(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`ArgumentNotSerializableError` naming the first argument JSON cannot carry."""
    for position, value in enumerate(args):
        _check(task_name, f"positional argument {position}", value)
    for name, value in kwargs.items():
        if not isinstance(name, str):
            raise ArgumentNotSerializableError(
                task_name, f"keyword argument name {name!r}", type(name).__name__, _short_repr(name), "str"
            )
        _check(task_name, f"keyword argument {name!r}", value)


def _check(task_name: str, label: str, value: Any) -> None:
    try:
        canonical_json(value)
    except (TypeError, ValueError):
        path, culprit = _find_culprit(value)
        raise ArgumentNotSerializableError(
            task_name, label + path, type(culprit).__name__, _short_repr(culprit), ACCEPTED_TYPES
        ) from None


def _find_culprit(value: Any) -> tuple[str, Any]:
    """Return the path below ``value`` to the first part JSON cannot carry, and that part."""
    # Only plain containers are walked: kombu encodes anything else (or fails) as a whole.
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool | type(None)):
                return f" (a key of the dict, {key!r})", key
            try:
                canonical_json(item)
            except (TypeError, ValueError):
                path, culprit = _find_culprit(item)
                return f"[{key!r}]{path}", culprit
        # Every key and value encodes: only sorting the keys (mixed types) can have failed.
        return " (its keys mix types that cannot be sorted into canonical JSON)", value
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            try:
                canonical_json(item)
            except (TypeError, ValueError):
                path, culprit = _find_culprit(item)
                return f"[{index}]{path}", culprit
    return "", value


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
