"""Claim-check references: what a message carries instead of the payload, signed with the project secret."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.core import signing

from .exceptions import InvalidReferenceError

#: Salt of reference signatures: a token signed for another purpose (session, upload) is not a reference.
SALT = "{{ cookiecutter.project_slug }}.claimcheck.reference"
#: The envelope key that marks a claim-check reference inside a task message or result.
ENVELOPE_KEY = "__claimcheck__"
VERSION = 1
#: Longest token accepted; a real one is a few hundred characters.
MAX_TOKEN_LENGTH = 2048

_SEGMENT = r"[a-z0-9][a-z0-9_-]{0,62}"
_UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
PREFIX_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
KEY_RE = re.compile(rf"(?:{_SEGMENT}/)+{_UUID4}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: An upload's pin: its S3 ETag (quotes dropped), or the inode and nanosecond mtime of its local file.
PIN_RE = re.compile(r"etag:[\x21\x23-\x7e]{1,128}|file:[0-9]{1,20}:[0-9]{1,20}")
CONTENT_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def storage_alias() -> str:
    """Return the STORAGES alias that holds claim-check blobs."""
    return str(getattr(settings, "CLAIMCHECK_STORAGE", "claimcheck"))


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is made of ``[a-z0-9_-]`` segments, else raise."""
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        raise InvalidReferenceError(
            f"claim-check prefix {prefix!r} is refused: use segments of lowercase letters, digits, '_' and '-' "
            "separated by '/' (for example 'args' or 'uploads/csv')"
        )
    return prefix


def check_key(key: object) -> str:
    """Return ``key`` if it has the form ``<prefix>/<uuid4>``, else raise (this refuses ``..`` and absolute paths)."""
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise InvalidReferenceError(
            f"claim-check key {key!r} is refused: only '<prefix>/<uuid4>' keys are accepted "
            "(lowercase segments, no '..', no leading '/')"
        )
    return key


def check_content_type(content_type: object) -> str:
    """Return ``content_type`` if it is a plain ``type/subtype``, else raise."""
    if not isinstance(content_type, str) or not CONTENT_TYPE_RE.fullmatch(content_type):
        raise InvalidReferenceError(
            f"content type {content_type!r} is refused: use a lowercase 'type/subtype' without parameters"
        )
    return content_type


#: Fields every signed reference holds, beside exactly one of ``sha256`` and ``pin``.
_COMMON_FIELDS = frozenset({"key", "size", "content_type", "storage", "version"})


@dataclass(frozen=True)
class Reference:
    """Where a blob is and what it must be: storage alias, key, size, content type, and its sha256 or pin.

    A blob this project stored carries the sha256 it computed while storing it. A browser upload carries
    a ``pin`` instead: its S3 ETag or its local file's inode and mtime, read without reading the bytes
    (``complete_upload``); reading it checks that the object is still the pinned one.
    """

    key: str
    size: int
    sha256: str | None = None
    content_type: str = "application/octet-stream"
    storage: str = "claimcheck"
    version: int = VERSION
    pin: str | None = None

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise InvalidReferenceError(
                f"claim-check reference version {self.version!r} is unknown; accepted: {VERSION}"
            )
        if self.storage != storage_alias():
            raise InvalidReferenceError(
                f"claim-check reference names storage {self.storage!r}; accepted: {storage_alias()!r}"
            )
        check_key(self.key)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise InvalidReferenceError(f"claim-check reference size {self.size!r} is not a byte count")
        if (self.sha256 is None) == (self.pin is None):
            raise InvalidReferenceError(
                f"claim-check reference {self.key!r} has sha256 {self.sha256!r} and pin {self.pin!r}; "
                "exactly one of them is accepted"
            )
        if self.sha256 is not None and (not isinstance(self.sha256, str) or not SHA256_RE.fullmatch(self.sha256)):
            raise InvalidReferenceError(f"claim-check reference sha256 {self.sha256!r} is not 64 lowercase hex digits")
        if self.pin is not None and (not isinstance(self.pin, str) or not PIN_RE.fullmatch(self.pin)):
            raise InvalidReferenceError(
                f"claim-check reference pin {self.pin!r} is refused; "
                "accepted: 'etag:<ETag>' or 'file:<inode>:<mtime ns>'"
            )
        check_content_type(self.content_type)

    def sign(self) -> str:
        """Return this reference as a signed token safe to carry in a message."""
        # The unset one of sha256 and pin is left out: a stored blob's token is the same as before pins existed.
        fields = {name: value for name, value in asdict(self).items() if name in _COMMON_FIELDS or value is not None}
        return signing.dumps(fields, salt=SALT, compress=False)

    def envelope(self) -> dict[str, str]:
        """Return the JSON envelope that stands for the blob inside a message or result."""
        return {ENVELOPE_KEY: self.sign()}

    @classmethod
    def from_token(cls, token: object) -> Reference:
        """Verify a signed token and return its reference; refuse forged, altered or malformed ones."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            shown = token if not isinstance(token, str) else f"{token[:40]}..." if len(token) > 40 else token
            raise InvalidReferenceError(
                f"claim-check token {shown!r} is refused: expected a signed string of at most {MAX_TOKEN_LENGTH} chars"
            )
        try:
            fields = signing.loads(token, salt=SALT)
        except signing.BadSignature:
            raise InvalidReferenceError(
                "claim-check reference signature does not match: the reference was forged or altered "
                "(or signed with another DJANGO_SECRET_KEY)"
            ) from None
        accepted = (_COMMON_FIELDS | {"sha256"}, _COMMON_FIELDS | {"pin"})
        if not isinstance(fields, dict) or set(fields) not in accepted:
            raise InvalidReferenceError(
                f"claim-check token holds {fields!r}, not a reference with fields {sorted(accepted[0])} "
                f"or {sorted(accepted[1])}"
            )
        return cls(**fields)


def is_envelope(value: Any) -> bool:
    """Return whether ``value`` is a claim-check envelope (``{"__claimcheck__": token}``)."""
    return isinstance(value, dict) and len(value) == 1 and ENVELOPE_KEY in value


def from_envelope(value: dict[str, Any]) -> Reference:
    """Return the verified reference inside an envelope."""
    return Reference.from_token(value[ENVELOPE_KEY])
