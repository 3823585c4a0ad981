"""The work of the demo flows as plain functions: customer reports, thumbnails, notifications."""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.core.mail import EmailMessage

from {{ cookiecutter.project_slug }} import claimcheck
from {{ cookiecutter.project_slug }}.core.errors import PermanentError

#: Called with the fraction done (0.0 to 1.0) and a short message.
Progress = Callable[[float, str], None]

#: Thumbnail sizes (longest side, pixels) the images flow makes.
THUMBNAIL_SIZES = (64, 128, 256)
#: Rows between two progress reports of the customer report.
PROGRESS_EVERY_ROWS = 5000


class DemoInputError(PermanentError):
    """An uploaded file the demo flows cannot read: retrying cannot fix it."""


def _no_progress(fraction: float, message: str) -> None:
    """Ignore progress."""


class BinaryStream(Protocol):
    """A binary stream read in chunks: an open file, or a claim-check blob (``claimcheck.open_blob``)."""

    def read(self, size: int = -1, /) -> bytes | None: ...


class _CountingReader(io.RawIOBase):
    """A read-only stream that counts the bytes read through it, for progress."""

    def __init__(self, raw: BinaryStream) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        assert data is not None  # only a non-blocking stream has nothing to give yet
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


@dataclass
class CustomerSummary:
    """Customers per country after removing duplicate e-mail addresses."""

    rows: int = 0
    customers: int = 0
    duplicates: int = 0
    #: Rows without an e-mail address, not counted as customers.
    skipped: int = 0
    countries: Counter[str] = field(default_factory=Counter)

    def stats(self) -> dict[str, Any]:
        """Return the numbers as JSON data."""
        return {
            "rows": self.rows,
            "customers": self.customers,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "countries": dict(sorted(self.countries.items())),
        }

    def to_csv(self) -> bytes:
        """Return the summary as CSV: one ``country,customers`` line per country, largest first."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["country", "customers"])
        for country, count in sorted(self.countries.items(), key=lambda item: (-item[1], item[0])):
            writer.writerow([country, count])
        return out.getvalue().encode()


def _column(header: Iterable[str], wanted: str) -> int:
    names = [name.strip().lower() for name in header]
    if wanted not in names:
        raise DemoInputError(f"The CSV has no {wanted!r} column; its columns are {names}. Required: email, country.")
    return names.index(wanted)


def summarize_customers(stream: BinaryStream, *, size: int, progress: Progress = _no_progress) -> CustomerSummary:
    """Stream a CSV of customers (``email``, ``country``), drop repeated e-mails, count customers per country."""
    counting = _CountingReader(stream)
    text = io.TextIOWrapper(io.BufferedReader(counting, 1024 * 1024), encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise DemoInputError("The CSV is empty: it needs a header row with email and country.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DemoInputError(f"The file is not a UTF-8 CSV: {exc}.") from None
    email_at, country_at = _column(header, "email"), _column(header, "country")
    # 16-byte digests instead of the addresses: the set of seen e-mails stays small for millions of rows.
    seen: set[bytes] = set()
    summary = CustomerSummary()
    try:
        for row in reader:
            summary.rows += 1
            email = row[email_at].strip().lower() if len(row) > email_at else ""
            if not email:
                summary.skipped += 1
                continue
            digest = hashlib.blake2b(email.encode(), digest_size=16).digest()
            if digest in seen:
                summary.duplicates += 1
                continue
            seen.add(digest)
            summary.customers += 1
            country = row[country_at].strip() if len(row) > country_at else ""
            summary.countries[country or "(unknown)"] += 1
            if summary.rows % PROGRESS_EVERY_ROWS == 0:
                progress(min(counting.count / size, 0.99) if size else 0.0, f"{summary.rows} rows read")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DemoInputError(f"The CSV cannot be read after row {summary.rows}: {exc}.") from None
    return summary


def customer_report(upload: str, *, progress: Progress = _no_progress) -> dict[str, Any]:
    """Summarize the uploaded CSV behind the signed reference ``upload``; store the summary as CSV."""
    reference = claimcheck.Reference.from_token(upload)
    progress(0.0, "reading the upload")
    with claimcheck.open_blob(reference) as blob:  # streamed; size and sha256 checked at the end
        summary = summarize_customers(blob, size=reference.size, progress=progress)
    stored = claimcheck.store_bytes(summary.to_csv(), prefix="reports", content_type="text/csv")
    progress(1.0, f"{summary.customers} customers in {len(summary.countries)} countries")
    return {"files": {"summary.csv": stored.sign()}, "stats": summary.stats()}


def delete_upload(upload: str) -> None:
    """Delete the raw upload behind ``upload`` once the job that read it has succeeded (safe to repeat)."""
    claimcheck.delete(claimcheck.Reference.from_token(upload))


def notify_report_ready(upload: str, notify: str, filename: str, stats: dict[str, Any], notify_task: Any) -> None:
    """Enqueue the "report ready" e-mail to ``notify`` once per upload, however often this runs.

    ``notify_task`` is a ``django.tasks`` task; ``using(key=...)`` gives its call the upload's key.
    """
    key = f"report-ready:{claimcheck.Reference.from_token(upload).key}"
    notify_task.using(key=key).enqueue(notify, filename, stats)


def thumbnails(upload: str, *, progress: Progress = _no_progress) -> dict[str, Any]:
    """Make thumbnails of the uploaded image behind ``upload``; store each as PNG."""
    reference = claimcheck.Reference.from_token(upload)
    progress(0.1, "reading the image")
    data = claimcheck.read_bytes(reference)
    progress(0.3, "resizing")
    made = make_thumbnails(data)
    files = {}
    for done, (name, png) in enumerate(made.items(), start=1):
        files[name] = claimcheck.store_bytes(png, prefix="thumbnails", content_type="image/png").sign()
        progress(0.3 + 0.7 * done / len(made), f"{done} of {len(made)} thumbnails stored")
    return {"files": files, "stats": {"sizes": list(THUMBNAIL_SIZES), "bytes": reference.size}}


def max_image_pixels() -> int:
    """Return the most pixels an image may have to be decoded: DEMO_MAX_IMAGE_PIXELS, or the demo's default."""
    from .apps import MAX_IMAGE_PIXELS

    return int(getattr(settings, "DEMO_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS))


def make_thumbnails(data: bytes, sizes: Iterable[int] = THUMBNAIL_SIZES) -> dict[str, bytes]:
    """Return PNG thumbnails of an image, keyed ``thumb-<size>.png``, aspect ratio kept."""
    from PIL import Image, UnidentifiedImageError

    limit = max_image_pixels()
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Image.open reads only the header: refuse a large image before anything is decoded.
            width, height = image.size
            if width * height > limit:
                raise DemoInputError(
                    f"The image is {width} x {height} pixels ({width * height:,}); the thumbnails flow decodes "
                    f"images of at most {limit:,} pixels (DEMO_MAX_IMAGE_PIXELS)."
                )
            image.load()
            source = image.convert("RGBA") if image.mode not in ("RGB", "RGBA") else image.copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise DemoInputError(f"The upload is not an image Pillow can read: {exc}.") from None
    thumbnails = {}
    for size in sizes:
        thumb = source.copy()
        thumb.thumbnail((size, size))
        buffer = io.BytesIO()
        thumb.save(buffer, format="PNG", optimize=True)
        thumbnails[f"thumb-{size}.png"] = buffer.getvalue()
    return thumbnails


def printable(text: str, limit: int = 120) -> str:
    """Return ``text`` fit for a mail header: control characters, line breaks and lone surrogates become "?"."""
    # A file name with CR or LF made Django refuse the subject, and every retry of the e-mail failed again.
    text = "".join("?" if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") else c for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def send_report_ready(to: str, *, filename: str, stats: dict[str, Any]) -> int:
    """Send the "your report is ready" e-mail through the default mailer; return the messages sent."""
    filename = printable(filename)
    countries = stats.get("countries", {})
    body = (
        f"The customer report for {filename} is ready.\n\n"
        f"Rows read: {stats.get('rows', 0)}\n"
        f"Customers: {stats.get('customers', 0)} ({stats.get('duplicates', 0)} duplicate e-mails removed)\n"
        f"Countries: {len(countries)}\n"
    )
    message = EmailMessage(f"Report ready: {filename}", body, settings.DEFAULT_FROM_EMAIL, [to])
    return message.send()
