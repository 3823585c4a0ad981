"""Strict reading of JSON request bodies: content type, size, shape and fields are all checked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from .errors import InvalidFieldsError, MalformedJSONError, PayloadTooLargeError, UnsupportedMediaTypeError

JSON_TYPES: dict[type, str] = {str: "a string", int: "an integer", bool: "true or false", dict: "an object"}


def read_json(request: HttpRequest, fields: Mapping[str, type], required: tuple[str, ...]) -> dict[str, Any]:
    """Return the request's JSON object after checking content type, size, unknown, missing and mistyped fields."""
    content_type = request.content_type or ""
    if content_type != "application/json":
        shown = content_type or "none"
        raise UnsupportedMediaTypeError(f"Content-Type {shown!r} is not accepted; send application/json.")
    limit = settings.JOBS_MAX_REQUEST_BYTES
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"The request body has {int(declared)} bytes; the limit is {limit}.")
    body = request.body
    if len(body) > limit:
        raise PayloadTooLargeError(f"The request body has {len(body)} bytes; the limit is {limit}.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJSONError(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise MalformedJSONError(f"The request body must be a JSON object, not {type(data).__name__}.")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidFieldsError(
            f"Unknown field(s): {', '.join(unknown)}; accepted fields: {', '.join(sorted(fields))}."
        )
    missing = [name for name in required if name not in data]
    if missing:
        raise InvalidFieldsError(f"Missing field(s): {', '.join(missing)}.")
    for name, value in data.items():
        expected = fields[name]
        # bool is an int in Python; JSON true must not pass as a size.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            wanted = JSON_TYPES.get(expected, expected.__name__)
            raise InvalidFieldsError(f"Field {name!r} must be {wanted}, not {json.dumps(value)[:80]}.")
    return data


def choice(name: str, value: str, accepted: Mapping[str, Any] | tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``accepted``, or raise naming the field and the accepted values."""
    if value not in accepted:
        raise InvalidFieldsError(f"Field {name!r} is {value!r}; accepted values: {', '.join(accepted)}.")
    return value
