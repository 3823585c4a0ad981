"""Canonical JSON, payload hashes and keys, with the JSON rules of Celery's serializer (kombu) and the database's."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from kombu.utils import json as kombu_json

from .exceptions import ArgumentNotSerializableError, ArgumentNotStorableError, InvalidKeyError

__all__ = [
    "KEY_MAX_LENGTH",
    "CeleryJSONDecoder",
    "CeleryJSONEncoder",
    "canonical_json",
    "check_serializable",
    "derive_key",
    "normalised",
    "normalised_call",
    "payload_hash",
    "storage_problem",
    "validate_key",
]

#: Longest idempotency key the status row stores.
KEY_MAX_LENGTH = 255
#: The key kombu's encoder marks a typed value with (``{"__type__": "datetime", "__value__": ...}``).
_TYPE_MARK = '"__type__"'
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


def normalised(value: Any) -> Any:
    """Return ``value`` as the database stores it and a worker decodes it from a message.

    kombu's JSON, read back as PostgreSQL's jsonb keeps numbers: a float written with a positive
    exponent (``1e+16``) is an integer there, ``-0.0`` is ``0.0``. Normalised once, the value is a
    fixed point: row, message and payload hash all see the same thing. Raise ``ValueError`` for a value
    jsonb refuses (see :func:`storage_problem`), ``TypeError`` for one JSON cannot carry.
    """
    text = canonical_json(value)
    plain = json.loads(text, parse_float=_jsonb_number, parse_constant=float)
    problem = storage_problem(plain)
    if problem is not None:
        path, culprit, reason = problem
        raise ValueError(f"{path or 'the value'} is a {type(culprit).__name__} ({_short_repr(culprit)}), {reason}")
    # Only kombu's typed values (datetimes, Decimals, UUIDs, bytes) need its decoder: the common case parses once.
    return json.loads(text, cls=CeleryJSONDecoder, parse_float=_jsonb_number) if _TYPE_MARK in text else plain


def normalised_call(
    task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return the call's arguments :func:`normalised`; refuse one JSON or the database cannot store, naming it."""
    try:
        call_args, call_kwargs = normalised([list(args), dict(kwargs)])
    except (TypeError, ValueError):
        check_serializable(task_name, args, kwargs)  # raises, naming the argument
        raise
    return tuple(call_args), call_kwargs


def storage_problem(value: Any, path: str = "") -> tuple[str, Any, str] | None:
    """Return (path, part, reason) of the first part of decoded JSON that PostgreSQL's jsonb refuses, or None.

    jsonb has no NaN or infinities, and its strings (keys too) can hold neither NUL nor a lone
    UTF-16 surrogate. The embedded SQLite would store them: refusing them everywhere keeps a
    project that runs on SQLite in development from failing only in production.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return path, value, "which is not a number the database's JSON can store (no NaN or infinity)"
    if isinstance(value, str):
        reason = _string_problem(value)
        return (path, value, reason) if reason else None
    if isinstance(value, dict):
        for key, item in value.items():
            reason = _string_problem(key) if isinstance(key, str) else None
            if reason:
                return f"{path} (a key of the dict, {_short_repr(key)})", key, reason
            found = storage_problem(item, f"{path}[{key!r}]")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = storage_problem(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "which contains a NUL character (\\u0000) the database's JSON cannot store"
    if any("\ud800" <= char <= "\udfff" for char in text):
        return "which contains a lone UTF-16 surrogate the database's JSON cannot store"
    return None


def _jsonb_number(token: str) -> int | float:
    """Return a JSON number with a fraction or exponent as jsonb gives it back (numeric, printed in full)."""
    number = Decimal(token)
    if number.is_zero():
        number = number.copy_abs()  # numeric has no negative zero
    exponent = number.as_tuple().exponent
    # numeric keeps the decimal places written (1.50 stays 1.50); with none left it prints an integer.
    return int(number) if isinstance(exponent, int) and exponent >= 0 else float(number)


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
        text = canonical_json(value)
    except (TypeError, ValueError):
        path, culprit = _find_culprit(value)
        raise ArgumentNotSerializableError(
            task_name, label + path, type(culprit).__name__, _short_repr(culprit), ACCEPTED_TYPES
        ) from None
    problem = storage_problem(json.loads(text, parse_float=_jsonb_number, parse_constant=float))
    if problem is not None:
        path, culprit, reason = problem
        raise ArgumentNotStorableError(task_name, label + path, type(culprit).__name__, _short_repr(culprit), reason)


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
