"""The local-disk stand-ins for S3: the presigned-form upload target and the signed download link."""

from __future__ import annotations

from collections.abc import Iterator

from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from {{ cookiecutter.project_slug }}.core.http import (
    ConflictError,
    ForbiddenError,
    InvalidFieldsError,
    NotFoundError,
    PayloadTooLargeError,
    json_api,
)

from . import blobs, uploads
from .exceptions import ClaimCheckError, InvalidReferenceError

#: Room for the multipart boundaries and the small fields around the file.
MULTIPART_OVERHEAD = 64 * 1024


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
@json_api("POST", login=False)
def receive_upload(request: HttpRequest) -> HttpResponse:
    """Store a multipart upload on local disk under the exact key its signed policy names."""
    try:
        policy = uploads.load_policy(request.GET.get("policy"))
    except ClaimCheckError as exc:
        raise ForbiddenError(str(exc)) from None
    limit = policy["max_size"]
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLargeError(f"upload of {declared} bytes is over the limit of {limit} bytes")
    handler = _SizeLimitedUploadHandler(request, limit)
    request.upload_handlers = [handler]
    upload = request.FILES.get("file")
    if handler.exceeded:
        raise PayloadTooLargeError(f"upload is over the limit of {limit} bytes; nothing was stored")
    if request.POST.get("key") != policy["key"]:
        raise ForbiddenError(f"field 'key' is {request.POST.get('key')!r}; the policy allows only {policy['key']!r}")
    if request.POST.get("Content-Type") != policy["content_type"]:
        raise ForbiddenError(
            f"field 'Content-Type' is {request.POST.get('Content-Type')!r}; the policy allows only "
            f"{policy['content_type']!r}"
        )
    if upload is None:
        raise InvalidFieldsError("no 'file' field in the upload: send it last, after the policy fields")
    if upload.size is None or upload.size < uploads.MIN_UPLOAD_SIZE:
        raise InvalidFieldsError("upload is empty")
    storage = blobs.get_storage()
    taken = f"an object was already uploaded at {policy['key']!r}; ask for a new upload form"
    if storage.exists(policy["key"]):
        raise ConflictError(taken)
    saved = storage.save(policy["key"], upload)
    if saved != policy["key"]:
        storage.delete(saved)
        raise ConflictError(taken)
    return HttpResponse(status=204)


def _stream(reader: blobs.BlobReader) -> Iterator[bytes]:
    with reader:
        yield from reader.chunks()


@json_api("GET", login=False)
def download(request: HttpRequest, token: str) -> HttpResponseBase:
    """Stream a blob named by a signed, short-lived download token (local disk; S3 uses presigned URLs)."""
    try:
        reference = uploads.load_download_token(token)
        reader = blobs.open_blob(reference)
    except InvalidReferenceError as exc:
        raise ForbiddenError(str(exc)) from None
    except ClaimCheckError as exc:
        raise NotFoundError(str(exc)) from None
    response = StreamingHttpResponse(_stream(reader), content_type=reference.content_type)
    response["Content-Length"] = str(reference.size)
    response["Cache-Control"] = "private, no-store"
    return response
