"""HTTP endpoints: presigned upload forms, upload completion, and the local-disk upload and download views."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import blobs, uploads
from .exceptions import ClaimCheckError, InvalidReferenceError, UploadRejectedError

#: Room for the multipart boundaries and the small fields around the file.
MULTIPART_OVERHEAD = 64 * 1024


#: The error code each status answers with; the body has the jobs API's shape,
#: ``{"error": {"code": ..., "message": ...}}``, so one client reads both.
ERROR_CODES = {
    400: "invalid_request",
    401: "authentication_required",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
}


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": ERROR_CODES[status], "message": message}}, status=status)


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise UploadRejectedError(f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UploadRejectedError(f"request body must be a JSON object, got {type(body).__name__}")
    return body


@require_POST
def create_upload(request: HttpRequest) -> JsonResponse:
    """Answer with a presigned POST for one new upload (``{"content_type": ..., "max_size": ...}``)."""
    if not request.user.is_authenticated:
        return _error("authentication required to upload", 401)
    try:
        body = _json_body(request)
        form = uploads.create_upload(
            content_type=body.get("content_type"),  # type: ignore[arg-type]  # checked inside
            max_size=body.get("max_size"),
            request=request,
        )
    except UploadRejectedError as exc:
        return _error(str(exc), 400)
    return JsonResponse(form.as_dict(), status=201)


@require_POST
def complete_upload(request: HttpRequest) -> JsonResponse:
    """Check the object of an upload ticket (``{"ticket": ...}``) and answer with its signed reference."""
    if not request.user.is_authenticated:
        return _error("authentication required to upload", 401)
    try:
        reference = uploads.complete_upload(_json_body(request).get("ticket"))
    except ClaimCheckError as exc:
        return _error(str(exc), 400)
    return JsonResponse(
        {
            "reference": reference.sign(),
            "key": reference.key,
            "size": reference.size,
            "sha256": reference.sha256,
            "content_type": reference.content_type,
        }
    )


class _SizeLimitedUploadHandler(TemporaryFileUploadHandler):
    """Spool an upload to a temporary file, stopping as soon as it passes the policy's size limit."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.exceeded = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=True)  # stop reading: do not drain a body that is too large
        return super().receive_data_chunk(raw_data, start)


@csrf_exempt  # the signed policy in the URL is the credential, as with an S3 presigned POST
@require_POST
def receive_upload(request: HttpRequest) -> HttpResponse:
    """Store a multipart upload on local disk under the exact key its signed policy names."""
    try:
        policy = uploads.load_policy(request.GET.get("policy"))
    except ClaimCheckError as exc:
        return _error(str(exc), 403)
    limit = policy["max_size"]
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > limit + MULTIPART_OVERHEAD:
        return _error(f"upload of {declared} bytes is over the limit of {limit} bytes", 413)
    handler = _SizeLimitedUploadHandler(request, limit)
    request.upload_handlers = [handler]
    upload = request.FILES.get("file")
    if handler.exceeded:
        return _error(f"upload is over the limit of {limit} bytes; nothing was stored", 413)
    if request.POST.get("key") != policy["key"]:
        return _error(f"field 'key' is {request.POST.get('key')!r}; the policy allows only {policy['key']!r}", 403)
    if request.POST.get("Content-Type") != policy["content_type"]:
        return _error(
            f"field 'Content-Type' is {request.POST.get('Content-Type')!r}; the policy allows only "
            f"{policy['content_type']!r}",
            403,
        )
    if upload is None:
        return _error("no 'file' field in the upload: send it last, after the policy fields", 400)
    if upload.size < uploads.MIN_UPLOAD_SIZE:
        return _error("upload is empty", 400)
    storage = blobs.get_storage()
    if storage.exists(policy["key"]):
        return _error(f"an object was already uploaded at {policy['key']!r}; ask for a new upload form", 409)
    saved = storage.save(policy["key"], upload)
    if saved != policy["key"]:
        storage.delete(saved)
        return _error(f"an object was already uploaded at {policy['key']!r}; ask for a new upload form", 409)
    return HttpResponse(status=204)


def _stream(reader: blobs.BlobReader) -> Iterator[bytes]:
    with reader:
        yield from reader.chunks()


@require_GET
def download(request: HttpRequest, token: str) -> HttpResponse:
    """Stream a blob named by a signed, short-lived download token (local disk; S3 uses presigned URLs)."""
    try:
        reference = uploads.load_download_token(token)
        reader = blobs.open_blob(reference)
    except InvalidReferenceError as exc:
        return _error(str(exc), 403)
    except ClaimCheckError as exc:
        return _error(str(exc), 404)
    response = StreamingHttpResponse(_stream(reader), content_type=reference.content_type)
    response["Content-Length"] = str(reference.size)
    response["Cache-Control"] = "private, no-store"
    return response
