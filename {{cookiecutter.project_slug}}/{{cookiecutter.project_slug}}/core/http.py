"""The JSON HTTP layer every API view uses: one error envelope, strict JSON bodies, login and CSRF answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.csrf import csrf_failure as django_csrf_failure

from .errors import ProjectError

__all__ = [
    "ApiError",
    "ConflictError",
    "ForbiddenError",
    "InvalidFieldsError",
    "MalformedJSONError",
    "MethodNotAllowedError",
    "NotFoundError",
    "NotSignedInError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "choice",
    "csrf_failure",
    "error_response",
    "json_api",
    "json_body",
]

#: What an anonymous caller is told, by every JSON view.
SIGN_IN = "Sign in first: the API uses the session cookie set by /accounts/login/ (see the README)."
#: What a caller whose CSRF check failed is told.
CSRF_FAILED = (
    "CSRF check failed ({reason}). Send the csrftoken cookie's value in the X-CSRFToken header "
    "along with the session cookie."
)
#: The words a JSON type is named by in error messages.
JSON_TYPES: dict[type, str] = {str: "a string", int: "an integer", bool: "true or false", dict: "an object"}


class ApiError(ProjectError):
    """An error a JSON view answers with ``{"error": {"code", "message"}}`` and a 4xx status. Do not raise directly."""

    #: HTTP status of the answer.
    status = 400
    #: Short machine-readable name of the problem, in the JSON body.
    code = "bad_request"


class NotSignedInError(ApiError):
    """The request carries no signed-in session."""

    status = 401
    code = "not_signed_in"


class ForbiddenError(ApiError):
    """The request is signed, but its credential (a signed policy or link) does not allow it."""

    status = 403
    code = "forbidden"


class NotFoundError(ApiError):
    """What the request names does not exist (or is not the caller's)."""

    status = 404
    code = "not_found"


class MethodNotAllowedError(ApiError):
    """The view does not answer this HTTP method."""

    status = 405
    code = "method_not_allowed"


class ConflictError(ApiError):
    """The request would overwrite something that already exists."""

    status = 409
    code = "conflict"


class PayloadTooLargeError(ApiError):
    """A request body or an uploaded file is larger than the limit."""

    status = 413
    code = "too_large"


class UnsupportedMediaTypeError(ApiError):
    """The request body is not JSON."""

    status = 415
    code = "unsupported_media_type"


class MalformedJSONError(ApiError):
    """The request body does not parse as a JSON object."""

    code = "malformed_json"


class InvalidFieldsError(ApiError):
    """Fields are missing, unknown or have a value the API does not accept."""

    code = "invalid_fields"


def error_response(exc: ApiError, **headers: str) -> JsonResponse:
    """Return the JSON error body for ``exc`` with its HTTP status."""
    return JsonResponse({"error": {"code": exc.code, "message": str(exc)}}, status=exc.status, headers=headers)


View = Callable[..., HttpResponseBase]


def json_api(*methods: str, login: bool = True) -> Callable[[View], View]:
    """Wrap a JSON view: only ``methods``, signed-in users only (unless ``login=False``), every ApiError as JSON."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                message = f"Method {request.method} is not allowed here; allowed: {', '.join(methods)}."
                return error_response(MethodNotAllowedError(message), Allow=", ".join(methods))
            try:
                if login and not request.user.is_authenticated:
                    raise NotSignedInError(SIGN_IN)
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc)

        return wrapper

    return decorate


def json_body(
    request: HttpRequest, fields: Mapping[str, type], required: Collection[str], *, limit: int | None = None
) -> dict[str, Any]:
    """Return the request's JSON object after checking content type, size, depth and every field's type."""
    content_type = request.content_type or ""
    if content_type != "application/json":
        shown = content_type or "none"
        raise UnsupportedMediaTypeError(f"Content-Type {shown!r} is not accepted; send application/json.")
    limit = settings.JOBS_MAX_REQUEST_BYTES if limit is None else limit
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
    except RecursionError:
        raise MalformedJSONError("The request body nests JSON deeper than the parser accepts.") from None
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


def choice(name: str, value: str, accepted: Collection[str]) -> str:
    """Return ``value`` if it is one of ``accepted``, or raise naming the field and the accepted values."""
    if value not in accepted:
        shown = ", ".join(accepted) or "none (nothing is registered)"
        raise InvalidFieldsError(f"Field {name!r} is {value!r}; accepted values: {shown}.")
    return value


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Answer a failed CSRF check with JSON to API calls (under /api/, or a JSON body), with Django's page elsewhere."""
    if request.path.startswith("/api/") or request.content_type == "application/json":
        return error_response(CsrfFailedError(CSRF_FAILED.format(reason=reason)))
    return django_csrf_failure(request, reason=reason)


class CsrfFailedError(ForbiddenError):
    """The request's CSRF token is missing or wrong."""

    code = "csrf_failed"
