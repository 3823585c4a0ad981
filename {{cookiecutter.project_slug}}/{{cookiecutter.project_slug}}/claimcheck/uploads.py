"""Browser uploads straight to the claim-check storage (presigned POST) and short-lived download URLs."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from django.urls import reverse

from . import blobs
from .exceptions import BlobMissingError, InvalidReferenceError, UploadRejectedError
from .references import Reference, check_content_type, check_key, storage_alias

#: Salts: an upload ticket, a local upload policy and a local download token are not interchangeable.
TICKET_SALT = "{{ cookiecutter.project_slug }}.claimcheck.upload-ticket"
POLICY_SALT = "{{ cookiecutter.project_slug }}.claimcheck.upload-policy"
DOWNLOAD_SALT = "{{ cookiecutter.project_slug }}.claimcheck.download"
UPLOAD_PREFIX = "uploads"
#: Uploads must hold at least one byte.
MIN_UPLOAD_SIZE = 1


@dataclass(frozen=True)
class UploadForm:
    """A presigned POST: the browser sends ``fields`` plus the file (last) as multipart/form-data to ``url``."""

    url: str
    fields: dict[str, str]
    key: str
    content_type: str
    max_size: int
    expires_at: datetime
    #: Signed ticket the client hands to the completion endpoint.
    ticket: str

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON shape the upload endpoint answers with."""
        return {
            "url": self.url,
            "fields": self.fields,
            "key": self.key,
            "content_type": self.content_type,
            "max_size": self.max_size,
            "expires_at": self.expires_at.isoformat(),
            "ticket": self.ticket,
        }


def _presign_client(storage: Any) -> Any:
    """Return a boto3 client that signs for the public S3 endpoint (SigV4 signs the Host header)."""
    public = settings.AWS_S3_PUBLIC_ENDPOINT_URL
    if not public or public == storage.endpoint_url:
        return storage.connection.meta.client
    return storage._create_session().client(
        "s3",
        region_name=storage.region_name,
        endpoint_url=public,
        config=storage.client_config,
        verify=storage.verify,
        use_ssl=public.startswith("https"),
    )


def _accepted_content_type(content_type: object, accepted: Collection[str] | None) -> str:
    accepted = list(settings.CLAIMCHECK_UPLOAD_CONTENT_TYPES if accepted is None else accepted)
    try:
        check_content_type(content_type)
    except InvalidReferenceError as exc:
        raise UploadRejectedError(f"{exc}; accepted: {', '.join(accepted)}") from None
    if content_type not in accepted:
        raise UploadRejectedError(
            f"content type {content_type!r} is not accepted for uploads; accepted: {', '.join(accepted)}"
        )
    return str(content_type)


def create_upload(
    *,
    content_type: str,
    max_size: int | None = None,
    expires: int | None = None,
    accepted: Collection[str] | None = None,
    request: HttpRequest | None = None,
) -> UploadForm:
    """Return a presigned POST for one new exact key, limited in size, content type and time.

    ``accepted`` names the content types the caller takes (default: ``settings.CLAIMCHECK_UPLOAD_CONTENT_TYPES``).
    """
    content_type = _accepted_content_type(content_type, accepted)
    ceiling = settings.CLAIMCHECK_UPLOAD_MAX_BYTES
    max_size = ceiling if max_size is None else max_size
    if not isinstance(max_size, int) or isinstance(max_size, bool) or not MIN_UPLOAD_SIZE <= max_size <= ceiling:
        raise UploadRejectedError(
            f"upload size limit {max_size!r} is refused; accepted: {MIN_UPLOAD_SIZE} to {ceiling} bytes "
            "(CLAIMCHECK_UPLOAD_MAX_BYTES)"
        )
    expires = settings.CLAIMCHECK_UPLOAD_EXPIRES if expires is None else expires
    key = blobs.new_key(UPLOAD_PREFIX)
    expires_at = int(time.time()) + expires
    storage = blobs.get_storage()
    if blobs.is_s3(storage):
        post = _presign_client(storage).generate_presigned_post(
            Bucket=storage.bucket_name,
            Key=blobs.object_key(storage, key),
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", MIN_UPLOAD_SIZE, max_size]],
            ExpiresIn=expires,
        )
        url, fields = post["url"], dict(post["fields"])
    else:
        policy = signing.dumps(
            {"key": key, "content_type": content_type, "max_size": max_size, "expires_at": expires_at},
            salt=POLICY_SALT,
            compress=False,
        )
        url = f"{reverse('claimcheck:receive-upload')}?{urlencode({'policy': policy})}"
        url = request.build_absolute_uri(url) if request is not None else url
        fields = {"key": key, "Content-Type": content_type}
    ticket = signing.dumps({"key": key, "content_type": content_type, "max_size": max_size}, salt=TICKET_SALT)
    return UploadForm(
        url=url,
        fields=fields,
        key=key,
        content_type=content_type,
        max_size=max_size,
        expires_at=datetime.fromtimestamp(expires_at, tz=UTC),
        ticket=ticket,
    )


def load_policy(token: object) -> dict[str, Any]:
    """Return a local upload policy after checking its signature and expiry."""
    if not isinstance(token, str) or not token:
        raise UploadRejectedError("upload policy is missing: POST to the url returned by create_upload()")
    try:
        policy = signing.loads(token, salt=POLICY_SALT)
    except signing.BadSignature:
        raise UploadRejectedError("upload policy signature does not match: it was forged or altered") from None
    if time.time() > policy["expires_at"]:
        expired = datetime.fromtimestamp(policy["expires_at"], tz=UTC).isoformat()
        raise UploadRejectedError(f"upload policy expired at {expired}: ask for a new upload form")
    check_key(policy["key"])
    return dict(policy)


def complete_upload(ticket: object) -> Reference:
    """Check an uploaded object (exists, size within the limit, content type) and return its reference.

    The S3 API server in tests (moto) does not enforce POST policy conditions, and a client can
    post to the same form again until it expires, so size is checked here, and the reference pins
    the object as it is now without reading it: its ETag on S3, its file's inode and mtime on local
    disk. A worker reading it refuses an object that changed since. An object over the limit is deleted.
    """
    if not isinstance(ticket, str) or not ticket:
        raise UploadRejectedError("upload ticket is missing: send the 'ticket' returned with the upload form")
    try:
        fields = signing.loads(ticket, salt=TICKET_SALT, max_age=settings.CLAIMCHECK_ORPHAN_TTL)
    except signing.SignatureExpired:
        raise UploadRejectedError("upload ticket expired: its upload may already have been swept") from None
    except signing.BadSignature:
        raise UploadRejectedError("upload ticket signature does not match: it was forged or altered") from None
    key, content_type, max_size = check_key(fields["key"]), fields["content_type"], fields["max_size"]
    storage = blobs.get_storage()
    try:
        # One HEAD (S3) or one stat (local disk): size and pin come from the same answer, whatever the size.
        state = blobs.stat_object(key)
    except BlobMissingError:
        raise UploadRejectedError(f"no object was uploaded at {key!r}: the upload did not finish") from None
    # On local disk the upload view enforced the content type; only S3 stores one to compare.
    size, stored_type = state.size, state.content_type or content_type
    if not MIN_UPLOAD_SIZE <= size <= max_size:
        storage.delete(key)
        raise UploadRejectedError(
            f"uploaded object {key!r} is {size} bytes, outside the accepted {MIN_UPLOAD_SIZE} to {max_size} bytes; "
            "it was deleted"
        )
    if stored_type != content_type:
        storage.delete(key)
        raise UploadRejectedError(
            f"uploaded object {key!r} has content type {stored_type!r}; accepted: {content_type!r}; it was deleted"
        )
    if state.pin is None:
        # A storage that tells neither an ETag nor a file's stat is hashed now, as before pins: slow but sound.
        digest = blobs.sha256_of(key)
        return Reference(key=key, size=size, sha256=digest, content_type=content_type, storage=storage_alias())
    # Why a pin is enough. S3: an object's ETag is the MD5 of a single-part upload's bytes (an opaque
    # per-write value under SSE-KMS or SSE-C), and GetObject sends the ETag of the very body it streams,
    # so a re-post of other bytes is seen by the worker; only an MD5 collision crafted by the uploader
    # of both files would pass, and it gains nothing that uploading the second file first would not.
    # Local disk: the upload view writes each key once (a second post is refused with 409). A file
    # replaced some other way gets a new inode or mtime, which the worker compares on the file it opened;
    # only a same-size rewrite in the same clock tick onto a reused inode number would pass.
    return Reference(key=key, size=size, pin=state.pin, content_type=content_type, storage=storage_alias())


def download_url(reference: Reference, *, expires: int | None = None, request: HttpRequest | None = None) -> str:
    """Return a short-lived URL that downloads a blob (presigned GET on S3, a signed view on local disk)."""
    expires = settings.CLAIMCHECK_DOWNLOAD_EXPIRES if expires is None else expires
    storage = blobs.get_storage()
    if blobs.is_s3(storage):
        return str(
            _presign_client(storage).generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": storage.bucket_name,
                    "Key": blobs.object_key(storage, reference.key),
                    "ResponseContentType": reference.content_type,
                },
                ExpiresIn=expires,
            )
        )
    token = signing.dumps({"reference": reference.sign(), "expires_at": int(time.time()) + expires}, salt=DOWNLOAD_SALT)
    url = reverse("claimcheck:download", kwargs={"token": token})
    return request.build_absolute_uri(url) if request is not None else url


def load_download_token(token: str) -> Reference:
    """Return the reference of a local download token after checking its signature and expiry."""
    try:
        fields = signing.loads(token, salt=DOWNLOAD_SALT)
    except signing.BadSignature:
        raise InvalidReferenceError("download link signature does not match: it was forged or altered") from None
    if time.time() > fields["expires_at"]:
        raise InvalidReferenceError("download link expired: ask for a new one")
    return Reference.from_token(fields["reference"])
