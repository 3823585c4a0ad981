"""Store, read back (size and sha256 checked, streaming) and delete claim-check blobs."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import mimetypes
import os
import posixpath
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard, cast

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.serializers.json import DjangoJSONEncoder

from .exceptions import BlobCorruptError, BlobMissingError, ClaimCheckError
from .references import KEY_RE, Reference, check_content_type, check_key, check_prefix, storage_alias

if TYPE_CHECKING:

    class S3Storage(Storage):
        """What the project reads of django-storages' ``S3Storage``, which ships no type hints."""

        bucket_name: str
        location: str
        #: The boto3 S3 resource; ``connection.meta.client`` is its client.
        connection: Any


logger = logging.getLogger(__name__)

#: Bytes read from storage at a time when streaming.
CHUNK_SIZE = 1024 * 1024


def get_storage() -> Storage:
    """Return the storage backend that holds claim-check blobs."""
    return storages[storage_alias()]


def is_s3(storage: Storage) -> TypeGuard[S3Storage]:
    """Return whether ``storage`` is django-storages' S3 backend (read and listed through boto3 directly)."""
    # Compared by name: importing boto3 costs seconds, and a local-disk project never needs it.
    return any(
        f"{cls.__module__}.{cls.__qualname__}" == "storages.backends.s3.S3Storage" for cls in type(storage).__mro__
    )


def object_key(storage: Storage, key: str) -> str:
    """Return the bucket key of a claim-check key (the storage's ``location`` prepended)."""
    location = str(getattr(storage, "location", "") or "").strip("/")
    return posixpath.join(location, check_key(key)) if location else check_key(key)


def new_key(prefix: str) -> str:
    """Return a fresh, hard-to-guess key ``<prefix>/<uuid4>``."""
    return f"{check_prefix(prefix)}/{uuid.uuid4()}"


class _HashingReader:
    """A read-only, non-seekable stream that counts and hashes what passes through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.size = 0
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if isinstance(data, str):
            raise ClaimCheckError("claim-check streams must yield bytes, got str: open files in binary mode ('rb')")
        self.size += len(data)
        self.hash.update(data)
        return data

    def seekable(self) -> bool:
        return False  # the hash must see every byte exactly once

    @property
    def closed(self) -> bool:
        return bool(getattr(self._stream, "closed", False))

    def close(self) -> None:
        """Leave closing to whoever opened the stream."""


class _BlobContent(File):
    """The file handed to the storage backend, with the content type that django-storages' S3 backend reads."""

    def __init__(self, reader: _HashingReader, name: str, content_type: str) -> None:
        # File only calls read(), seekable() and close() on the reader, which is all _HashingReader provides.
        super().__init__(cast("IO[bytes]", reader), name=name)
        self.content_type = content_type


def store_stream(
    stream: IO[bytes], *, prefix: str = "blobs", content_type: str = "application/octet-stream"
) -> Reference:
    """Store a binary stream under a new key, hashing it on the way; return its reference."""
    check_content_type(content_type)
    storage = get_storage()
    key = new_key(prefix)
    reader = _HashingReader(stream)
    saved = storage.save(key, _BlobContent(reader, key, content_type))
    if saved != key:
        storage.delete(saved)
        raise ClaimCheckError(f"storage saved claim-check blob {key!r} as {saved!r}; keys must be kept exactly")
    return Reference(
        key=key, size=reader.size, sha256=reader.hash.hexdigest(), content_type=content_type, storage=storage_alias()
    )


def store_bytes(data: bytes, *, prefix: str = "blobs", content_type: str = "application/octet-stream") -> Reference:
    """Store ``data`` under a new key; return its reference."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ClaimCheckError(f"store_bytes() takes bytes, got {type(data).__name__}: use store_json() for objects")
    return store_stream(io.BytesIO(bytes(data)), prefix=prefix, content_type=content_type)


def store_file(
    file: str | os.PathLike[str] | IO[bytes], *, prefix: str = "blobs", content_type: str | None = None
) -> Reference:
    """Store a file (a path or a binary file object) under a new key; return its reference."""
    if isinstance(file, str | os.PathLike):
        guessed = mimetypes.guess_type(os.fspath(file))[0]
        with Path(file).open("rb") as handle:
            return store_stream(
                handle, prefix=prefix, content_type=content_type or guessed or "application/octet-stream"
            )
    return store_stream(file, prefix=prefix, content_type=content_type or "application/octet-stream")


def store_json(value: Any, *, prefix: str = "blobs") -> Reference:
    """Store ``value`` as JSON (Django's encoder: dates, decimals, UUIDs) under a new key; return its reference."""
    data = json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":")).encode()
    return store_stream(io.BytesIO(data), prefix=prefix, content_type="application/json")


class BlobReader(io.RawIOBase):
    """A blob opened for streaming: every byte is counted and hashed, and checked against the reference at EOF."""

    def __init__(self, reference: Reference, raw: Any) -> None:
        super().__init__()
        self.reference = reference
        self._raw = raw
        self._size = 0
        self._hash = hashlib.sha256()
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        if not data:
            self._verify()
            return 0
        self._size += len(data)
        if self._size > self.reference.size:
            raise BlobCorruptError(
                f"claim-check blob {self.reference.key!r} is longer than the {self.reference.size} bytes "
                "its reference recorded"
            )
        self._hash.update(data)
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the blob in chunks of at most ``chunk_size`` bytes, verified at the end."""
        buffer = bytearray(chunk_size)
        while True:
            count = self.readinto(buffer)
            if not count:
                return
            yield bytes(buffer[:count])

    def _verify(self) -> None:
        if self._verified:
            return
        ref = self.reference
        if self._size != ref.size:
            raise BlobCorruptError(
                f"claim-check blob {ref.key!r} has {self._size} bytes; its reference recorded {ref.size}"
            )
        digest = self._hash.hexdigest()
        # A pinned upload has no sha256 to compare: its pin was checked when it was opened (_open_raw).
        if ref.sha256 is not None and digest != ref.sha256:
            raise BlobCorruptError(
                f"claim-check blob {ref.key!r} has sha256 {digest}; its reference recorded {ref.sha256}"
            )
        self._verified = True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def _missing(reference: Reference) -> BlobMissingError:
    return BlobMissingError(
        f"claim-check blob {reference.key!r} ({reference.size} bytes) is missing from storage {reference.storage!r}: "
        "it was deleted, swept as an orphan, or never stored; retrying cannot bring it back"
    )


def etag_pin(etag: str) -> str:
    """Return the pin of an S3 object with this ETag (as S3 sends it, quoted)."""
    return "etag:" + etag.strip('"')


def file_pin(stat: os.stat_result) -> str:
    """Return the pin of a local file with this ``os.stat`` result."""
    return f"file:{stat.st_ino}:{stat.st_mtime_ns}"


@dataclass(frozen=True)
class ObjectState:
    """What storage says about an object without reading it: size, content type (S3 only) and pin."""

    size: int
    content_type: str | None
    #: None when the storage can tell neither an ETag nor a file's inode and mtime.
    pin: str | None


def stat_object(key: str) -> ObjectState:
    """Return the size, content type and pin of the object at ``key`` (one HEAD or ``stat``, no bytes read)."""
    storage = get_storage()
    missing = BlobMissingError(f"no claim-check object is stored at {key!r}")
    if is_s3(storage):
        from botocore.exceptions import ClientError

        try:
            head = storage.connection.meta.client.head_object(Bucket=storage.bucket_name, Key=object_key(storage, key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise missing from None
            raise
        return ObjectState(int(head["ContentLength"]), head.get("ContentType", ""), etag_pin(head["ETag"]))
    if isinstance(storage, FileSystemStorage):
        try:
            stat = os.stat(storage.path(check_key(key)))
        except FileNotFoundError:
            raise missing from None
        return ObjectState(stat.st_size, None, file_pin(stat))
    if not storage.exists(check_key(key)):
        raise missing
    return ObjectState(storage.size(key), None, None)


def _changed(key: str, now: str, pinned: str) -> BlobCorruptError:
    return BlobCorruptError(
        f"claim-check blob {key!r} changed after its reference was taken: it is {now} now, the reference pinned "
        f"{pinned} (uploaded again to the same form, or replaced); start again from a new upload"
    )


def _open_raw(
    key: str, missing: Callable[[], Exception], expected_size: int | None = None, pin: str | None = None
) -> Any:
    """Open the stored object at ``key`` for streaming; raise ``missing()`` when it is not there.

    With ``pin``, the object opened must be the pinned one: the ETag S3 sends with the body it streams,
    or the ``fstat`` of the open file, so no write between the check and the read can slip through.
    """
    storage = get_storage()
    if is_s3(storage):
        from botocore.exceptions import ClientError

        client = storage.connection.meta.client
        try:
            # S3File would spool the whole object to a temporary file first; the raw body streams.
            response = client.get_object(Bucket=storage.bucket_name, Key=object_key(storage, key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise missing() from None
            raise
        if expected_size is not None and response["ContentLength"] != expected_size:
            response["Body"].close()
            raise BlobCorruptError(
                f"claim-check blob {key!r} has {response['ContentLength']} bytes; "
                f"its reference recorded {expected_size}"
            )
        if pin is not None and etag_pin(response["ETag"]) != pin:
            response["Body"].close()
            raise _changed(key, etag_pin(response["ETag"]), pin)
        return response["Body"]
    try:
        raw = storage.open(check_key(key), "rb")
    except FileNotFoundError:
        raise missing() from None
    if pin is not None:
        stat = os.fstat(raw.fileno())
        if expected_size is not None and stat.st_size != expected_size:
            raw.close()
            raise BlobCorruptError(
                f"claim-check blob {key!r} has {stat.st_size} bytes; its reference recorded {expected_size}"
            )
        if file_pin(stat) != pin:
            raw.close()
            raise _changed(key, file_pin(stat), pin)
    return raw


def open_blob(reference: Reference) -> BlobReader:
    """Open a blob for streaming; reading it to the end verifies size and sha256 (or its pin, when opened)."""
    if not isinstance(reference, Reference):
        raise ClaimCheckError(
            f"open_blob() takes a Reference, got {type(reference).__name__}: use Reference.from_token()"
        )
    raw = _open_raw(reference.key, lambda: _missing(reference), reference.size, reference.pin)
    return BlobReader(reference, raw)


def sha256_of(key: str) -> str:
    """Return the sha256 of the object stored at ``key``, streaming it."""
    digest = hashlib.sha256()
    raw = _open_raw(check_key(key), lambda: BlobMissingError(f"no claim-check object is stored at {key!r}"))
    try:
        for chunk in iter(lambda: raw.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    finally:
        raw.close()
    return digest.hexdigest()


def read_bytes(reference: Reference) -> bytes:
    """Return a blob's bytes after checking size and sha256."""
    with open_blob(reference) as reader:
        return reader.readall()


def read_json(reference: Reference) -> Any:
    """Return the value of a JSON blob after checking size and sha256."""
    return json.loads(read_bytes(reference))


def delete(reference: Reference) -> None:
    """Delete a blob; deleting one that is already gone is not an error."""
    if not isinstance(reference, Reference):
        raise ClaimCheckError(f"delete() takes a Reference, got {type(reference).__name__}: use Reference.from_token()")
    get_storage().delete(reference.key)


def exists(reference: Reference) -> bool:
    """Return whether a blob is present in storage."""
    return get_storage().exists(reference.key)


def iter_blobs(storage: Storage | None = None) -> Iterator[tuple[str, datetime]]:
    """Yield ``(key, last modified)`` of every claim-check blob in storage; other files are ignored."""
    storage = storage or get_storage()
    if is_s3(storage):
        location = str(getattr(storage, "location", "") or "").strip("/")
        prefix = f"{location}/" if location else ""
        client = storage.connection.meta.client
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket_name, Prefix=prefix):
            for entry in page.get("Contents", ()):
                key = entry["Key"][len(prefix) :]
                if KEY_RE.fullmatch(key):
                    yield key, entry["LastModified"]
        return
    if isinstance(storage, FileSystemStorage):
        root = Path(storage.location)
        for directory, _subdirs, files in os.walk(root):
            for name in files:
                path = Path(directory) / name
                key = path.relative_to(root).as_posix()
                if KEY_RE.fullmatch(key):
                    yield key, datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        return
    raise ClaimCheckError(
        f"cannot list claim-check storage {type(storage).__name__}; supported: FileSystemStorage, S3Storage"
    )


def sweep_orphans(*, older_than: timedelta | None = None, now: datetime | None = None) -> list[str]:
    """Delete blobs older than the orphan TTL (settings.CLAIMCHECK_ORPHAN_TTL); return the deleted keys."""
    ttl = older_than if older_than is not None else timedelta(seconds=settings.CLAIMCHECK_ORPHAN_TTL)
    cutoff = (now or datetime.now(tz=UTC)) - ttl
    storage = get_storage()
    deleted = []
    for key, modified in list(iter_blobs(storage)):
        if modified < cutoff:
            storage.delete(key)
            deleted.append(key)
    if deleted:
        logger.info("Swept %d orphaned claim-check blob(s) older than %s", len(deleted), ttl)
    return deleted
