"""The demo's work as plain functions, called without Celery: customer summaries, thumbnails, small tasks."""

from __future__ import annotations

import io
import resource
import time

import pytest
from django.core import mail
from PIL import Image

from {{ cookiecutter.project_slug }}.demo import services, tasks

from support.customers import customer_csv
from support.images import large_blank_png


def summarize(data: bytes, progress: services.Progress | None = None) -> services.CustomerSummary:
    if progress is None:
        return services.summarize_customers(io.BytesIO(data), size=len(data))
    return services.summarize_customers(io.BytesIO(data), size=len(data), progress=progress)


def test_summary_counts_customers_once_per_address_per_country():
    sample = customer_csv(2000, duplicate_share=0.3, seed=11)
    summary = summarize(sample.data)
    assert summary.rows == sample.rows
    assert summary.customers == sample.customers
    assert summary.duplicates == sample.duplicates
    assert summary.countries == sample.countries
    lines = summary.to_csv().decode().splitlines()
    assert lines[0] == "country,customers"
    counts = [int(line.split(",")[1]) for line in lines[1:]]
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) == sample.customers


def test_summary_skips_rows_without_an_address_and_names_unknown_countries():
    data = b"Email,Country\na@example.com,DE\n,FR\nb@example.com,\n A@EXAMPLE.COM ,US\n"
    summary = summarize(data)
    assert summary.stats() == {
        "rows": 4,
        "customers": 2,
        "duplicates": 1,
        "skipped": 1,
        "countries": {"(unknown)": 1, "DE": 1},
    }


def test_summary_reports_progress_by_bytes_read():
    sample = customer_csv(3 * services.PROGRESS_EVERY_ROWS)
    reports: list[tuple[float, str]] = []
    summarize(sample.data, progress=lambda fraction, message: reports.append((fraction, message)))
    assert [message for _, message in reports] == [f"{n * services.PROGRESS_EVERY_ROWS} rows read" for n in (1, 2, 3)]
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] < 1
    assert fractions[-1] <= 0.99


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "The CSV is empty"),
        (b"name,country\nx,DE\n", "no 'email' column"),
        (b"email\na@example.com\n", "no 'country' column"),
        (b"email,country\n\xff\xfe,DE\n", "not a UTF-8 CSV"),
    ],
)
def test_unreadable_csv_is_a_permanent_error_naming_the_problem(data, needle):
    with pytest.raises(services.DemoInputError, match=needle):
        summarize(data)


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), "red" if mode != "P" else 1).save(buffer, format="PNG")
    return buffer.getvalue()


def test_thumbnails_keep_the_aspect_ratio_at_each_size():
    made = services.make_thumbnails(png(1000, 500))
    assert set(made) == {f"thumb-{size}.png" for size in services.THUMBNAIL_SIZES}
    for size in services.THUMBNAIL_SIZES:
        with Image.open(io.BytesIO(made[f"thumb-{size}.png"])) as thumb:
            assert thumb.format == "PNG"
            assert thumb.size == (size, size // 2)


def test_thumbnails_never_enlarge_and_convert_palette_images():
    made = services.make_thumbnails(png(40, 30, mode="P"), sizes=(64,))
    with Image.open(io.BytesIO(made["thumb-64.png"])) as thumb:
        assert thumb.size == (40, 30)
        assert thumb.mode == "RGBA"


def test_a_file_that_is_not_an_image_is_a_permanent_error():
    with pytest.raises(services.DemoInputError, match="not an image Pillow can read"):
        services.make_thumbnails(b"email,country\n")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns at open; the flow refuses
def test_an_image_of_too_many_pixels_is_refused_before_it_is_decoded(settings):
    data = large_blank_png(12_000, 12_000)
    assert len(data) < 1024 * 1024  # under the upload limits and under Pillow's own bomb limit
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(services.DemoInputError, match=r"12000 x 12000 pixels .* at most 25,000,000 pixels"):
        services.make_thumbnails(data)
    # Decoding would take 144 MB for the pixels and 576 MB for the RGBA copy, and seconds.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB
    assert time.monotonic() - started < 1.0
    settings.DEMO_MAX_IMAGE_PIXELS = 1000
    with pytest.raises(services.DemoInputError, match="at most 1,000 pixels"):
        services.make_thumbnails(png(40, 30))


def test_the_small_demo_tasks_do_their_work_when_called_directly():
    assert tasks.add(2, 3)["sum"] == 5
    assert tasks.count_primes(10_000)["primes"] == 1229
    swatch = tasks.render_swatch(64, 32)
    assert len(swatch["sha256"]) == 64
    assert swatch["bytes"] > 0


@pytest.mark.parametrize("filename", ["a\r\nBcc: x@example.com.csv", "\ud800.csv", "a\u2028b.csv", "x" * 500])
def test_the_report_ready_email_goes_out_whatever_the_file_name(filename):
    mail.outbox = []
    assert services.send_report_ready("bob@example.com", filename=filename, stats={"rows": 3}) == 1
    (message,) = mail.outbox
    raw = message.message().as_bytes()  # what the SMTP backend sends: every header and the body encode
    subject = message.subject
    assert subject.startswith("Report ready: ")
    assert not set(subject) & {"\r", "\n"}
    assert len(subject) < 200
    assert b"\nBcc:" not in raw  # no header of its own
