"""The jobs page in headless Chromium against a running stack: sign in, upload a CSV, watch the bar, download."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from support.customers import customer_csv
from support.servers import find_binary, unavailable
from support.web import start_web

pytestmark = pytest.mark.workers

PASSWORD = "dana-password"
#: Debian's Chromium, headless, with nothing that reaches beyond loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Records every value the progress bars show, so the test sees the bar move, not only its end.
RECORD_PERCENTS = """
window.__percents = [];
new MutationObserver((changes) => {
  for (const change of changes) window.__percents.push(change.target.dataset.percent);
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-percent"]});
"""


def chromium() -> str:
    """Return the path of Debian's Chromium, or skip (fail under CI) without it."""
    path = os.environ.get("CHROMIUM") or find_binary("chromium")
    if path is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    return str(path)


def summary_of(path: Path) -> dict[str, int]:
    """Return the customers per country of a downloaded summary CSV."""
    with path.open(newline="") as file:
        return {row["country"]: int(row["customers"]) for row in csv.DictReader(file)}


@pytest.fixture
def web(claimcheck_backend, worker_env, tmp_path) -> Iterator[str]:
    """Start the web process on the workers' environment and storage; yield its base URL; stop it however the test ends.

    Stopped at the end of the test body instead, it outlived a failed assertion, still connected to the test database.
    """
    proc, base = start_web({**worker_env, **claimcheck_backend.env}, tmp_path / "logs")
    yield base
    proc.stop()


def test_sign_in_upload_watch_progress_and_download(
    claimcheck_backend, start_worker, worker_env, web, django_user_model, tmp_path
):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    executable = chromium()
    django_user_model.objects.create_user("dana", "dana@example.com", PASSWORD)
    # On S3 the browser posts the file to the S3 API server itself, another origin than the page.
    env = {**worker_env, **claimcheck_backend.env}
    start_worker("reports", env=env)
    start_worker("emails", env=env)
    start_worker("images", env=env)
    base = web
    customers = customer_csv(100_000, seed=11)  # 20 progress reports, a few seconds: inside the 8 s test soft limit
    csv_path = tmp_path / "customers.csv"
    csv_path.write_bytes(customers.data)
    small = customer_csv(500, seed=12)
    small_path = tmp_path / "small.csv"
    small_path.write_bytes(small.data)
    image_path = tmp_path / "photo.png"
    Image.linear_gradient("L").resize((300, 200)).save(image_path)
    bad_path = tmp_path / "people.csv"
    bad_path.write_bytes(b"name,city\nAda,London\n")
    text_path = tmp_path / "notes.txt"
    text_path.write_text("not a job\n")
    screenshot = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path) / "jobs-page.png"

    # No database access from here on: Playwright's sync API runs an event loop in this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 800})
        context.add_init_script(RECORD_PERCENTS)
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(base + "/")
        assert "/accounts/login/" in page.url
        page.fill("input[name=username]", "dana")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#upload-form")
        assert page.locator("#no-jobs").is_visible()
        page.wait_for_selector("#queues tbody tr[data-queue=reports]")
        assert page.locator("#queues tbody tr").count() == 4

        page.set_input_files("#file", str(csv_path))
        page.click("#start")
        row = page.locator("#jobs tbody tr").first
        row.locator(".bar[data-percent='100']").wait_for(timeout=120_000)
        page.wait_for_selector("#jobs tbody tr[data-status=succeeded] td.links a", timeout=30_000)
        assert row.get_attribute("data-status") == "succeeded"
        assert row.locator(".label").inner_text() == "100 %"
        assert f"{customers.customers} customers in {len(customers.countries)} countries" in row.inner_text()
        percents = [int(p) for p in page.evaluate("window.__percents")]
        assert percents[-1] == 100
        assert any(0 < p < 100 for p in percents), percents  # the bar moved on the way
        assert percents == sorted(percents), percents
        assert any(url.endswith(f"/api/jobs/{row.get_attribute('data-job')}/events") for url in requested)

        with page.expect_download() as download_info:
            row.locator("td.links a", has_text="summary.csv").click()
        downloaded = tmp_path / "summary.csv"
        download_info.value.save_as(downloaded)
        summary = summary_of(downloaded)
        assert summary == dict(customers.countries)
        assert sum(summary.values()) == customers.customers == customers.rows - customers.duplicates

        # Without the event stream (blocked here, as some proxies do) the page falls back to polling.
        page.route("**/events", lambda route: route.abort())
        page.set_input_files("#file", str(small_path))
        page.click("#start")
        newest = page.locator("#jobs tbody tr").first
        page.wait_for_function(
            "() => document.querySelectorAll('#jobs tbody tr[data-status=succeeded]').length === 2", timeout=60_000
        )
        assert newest.locator(".bar").get_attribute("data-percent") == "100"
        assert f"{small.customers} customers" in newest.inner_text()
        assert any(url.endswith(f"/api/jobs/{newest.get_attribute('data-job')}") for url in requested)
        page.unroute("**/events")

        # An image becomes thumbnails on the images pool, each a download link.
        page.set_input_files("#file", str(image_path))
        page.click("#start")
        page.wait_for_function(
            "() => document.querySelectorAll('#jobs tbody tr[data-status=succeeded]').length === 3", timeout=60_000
        )
        thumbs = page.locator("#jobs tbody tr").first
        assert thumbs.locator("td.links a").all_inner_texts() == ["thumb-64.png", "thumb-128.png", "thumb-256.png"]
        # The status line follows the job it announced to its end: "job started." does not stay.
        page.wait_for_function("() => document.getElementById('upload-status').textContent.includes('succeeded')")
        assert page.locator("#upload-status").inner_text() == "photo.png: job succeeded."

        # A failed job shows the short error name and the message, never the class path.
        page.set_input_files("#file", str(bad_path))
        page.click("#start")
        failed = page.locator("#jobs tbody tr[data-status=failed]")
        failed.wait_for(timeout=60_000)
        message = failed.locator(".progress-message")
        assert message.inner_text().startswith("DemoInputError: The CSV has no 'email' column"), message.inner_text()
        assert "{{ cookiecutter.project_slug }}." not in failed.inner_text()
        assert "error" in (message.get_attribute("class") or "")
        page.wait_for_function("() => document.getElementById('upload-status').textContent.includes('failed')")
        status = page.locator("#upload-status")
        assert status.inner_text().startswith("people.csv: job failed: DemoInputError: The CSV has no 'email' column")
        assert "error" in (status.get_attribute("class") or "")

        # Two jobs of the same file are told apart by their start times and the start of their ids (uploads within
        # one second show the same time: CI's two uploads of small.csv did).
        page.set_input_files("#file", str(small_path))
        page.click("#start")
        page.wait_for_function(
            "() => document.querySelectorAll('#jobs tbody tr[data-status=succeeded]').length === 4", timeout=60_000
        )
        assert status.inner_text() == "small.csv: job succeeded."
        assert "error" not in (status.get_attribute("class") or "")
        same_file = page.locator("#jobs tbody tr", has=page.locator("td.file", has_text="small.csv"))
        assert same_file.count() == 2
        started = same_file.locator("td.started time")
        assert all(started.nth(i).get_attribute("datetime") for i in range(2))
        assert len(set(same_file.locator("td.started").all_inner_texts())) == 2
        for i in range(2):
            job_id = same_file.nth(i).get_attribute("data-job") or ""
            assert same_file.nth(i).locator(".job-id").inner_text() == job_id[:8] != ""

        # A file no kind takes is refused, and reads as an error.
        page.set_input_files("#file", str(text_path))
        page.click("#start")
        page.wait_for_function("() => document.getElementById('upload-status').textContent.includes('refused')")
        assert "error" in (status.get_attribute("class") or "")
        assert status.inner_text().startswith("notes.txt: refused")
        assert page.locator("#jobs tbody tr").count() == 5

        page.wait_for_timeout(500)  # let the bars' width transition finish before the picture
        page.screenshot(path=str(screenshot), full_page=True)
        assert errors == []
        browser.close()
    assert screenshot.stat().st_size > 10_000
    # Kept for a person to look at: pytest prints it with -rP.
    print(f"screenshot: {screenshot}")


def test_the_page_says_where_a_job_waits_or_runs_and_cancels_it(
    claimcheck_backend, start_worker, worker_env, web, django_user_model, tmp_path
):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    executable = chromium()
    django_user_model.objects.create_user("dana", "dana@example.com", PASSWORD)
    env = {**worker_env, **claimcheck_backend.env}
    base = web
    waiting_path = tmp_path / "waiting.csv"
    waiting_path.write_bytes(customer_csv(500, seed=13).data)
    long_path = tmp_path / "long.csv"
    long_path.write_bytes(customer_csv(400_000, seed=14).data)
    screenshot = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path) / "jobs-page-cancel.png"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1200, "height": 700}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(base + "/")
        page.fill("input[name=username]", "dana")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#upload-form")

        # No reports worker yet: the job says it is queued, and since when.
        page.set_input_files("#file", str(waiting_path))
        page.click("#start")
        waiting = page.locator("#jobs tbody tr", has=page.locator("td.file", has_text="waiting.csv"))
        waiting.locator(".state-note", has_text="queued, waiting for a worker, since").wait_for(timeout=30_000)
        waiting.locator("button.cancel").click()
        waiting.locator(".badge.cancelled").wait_for(timeout=30_000)
        assert waiting.get_attribute("data-status") == "cancelled"
        assert waiting.locator("button.cancel").count() == 0  # a final job offers no cancel
        assert waiting.locator(".state-note").inner_text() == "cancelled before it started"

        # A running report says on which worker and which attempt; cancelling stops it.
        page.set_input_files("#file", str(long_path))
        page.click("#start")
        running = page.locator("#jobs tbody tr", has=page.locator("td.file", has_text="long.csv"))
        running.locator(".state-note", has_text="queued").wait_for(timeout=30_000)
        start_worker("reports", env=env, name="reports-0")
        note = running.locator(".state-note", has_text="running on reports-0@")
        note.wait_for(timeout=60_000)
        assert "(attempt 1 of " in note.inner_text()
        running.locator(".bar:not([data-percent='0'])").wait_for(timeout=60_000)
        page.screenshot(path=str(screenshot.with_name("jobs-page-running.png")), full_page=True)
        running.locator("button.cancel").click()
        running.locator(".badge.cancelled").wait_for(timeout=30_000)
        stopped_at = int(running.locator(".bar").get_attribute("data-percent") or "0")
        assert stopped_at < 100
        page.wait_for_timeout(1500)  # the stream is closed: nothing moves the bar any more
        assert int(running.locator(".bar").get_attribute("data-percent") or "0") == stopped_at
        page.screenshot(path=str(screenshot), full_page=True)
        assert errors == []
        browser.close()
    print(f"screenshots: {screenshot} and jobs-page-running.png beside it")
