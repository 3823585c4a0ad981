#!/usr/bin/env python3
"""Walk through the jobs API as a client does: sign in, upload, start a job, poll, stream until done."""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import mimetypes
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

#: Only the standard library: the script runs with any Python 3.12+, inside the project's venv or not.
USAGE_EXAMPLE = "PASSWORD=... python scripts/jobs_walkthrough.py customers.csv"


class WalkthroughError(Exception):
    """A step answered something other than what the API promises."""


class Client:
    """An HTTP client with a cookie jar that sends the CSRF token as the jobs page does."""

    def __init__(self, base: str, timeout: float) -> None:
        self.base = base.rstrip("/") + "/"
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def url(self, path: str) -> str:
        """Return ``path`` resolved against the base URL (absolute URLs, such as S3's, stay as they are)."""
        return urllib.parse.urljoin(self.base, path)

    def csrf(self) -> str:
        """Return the current CSRF token (signing in rotates it)."""
        return next((c.value or "" for c in self.jar if c.name == "csrftoken"), "")

    def send(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send a request; return the status, the headers (lowercased names) and the body, whatever the status."""
        request = urllib.request.Request(self.url(path), data=body, method=method, headers=headers or {})  # noqa: S310
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def post_json(self, path: str, data: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        """POST ``data`` as JSON with the CSRF header; return the status, headers and parsed body."""
        headers = {"Content-Type": "application/json", "X-CSRFToken": self.csrf()}
        status, answer_headers, body = self.send("POST", path, json.dumps(data).encode(), headers)
        return status, answer_headers, parse(body)


def parse(body: bytes) -> Any:
    """Return a JSON body parsed, or its text when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]


def expect(step: str, status: int, wanted: tuple[int, ...], body: Any) -> None:
    """Raise naming ``step`` unless ``status`` is one of ``wanted``."""
    if status not in wanted:
        raise WalkthroughError(f"{step}: HTTP {status}, expected {' or '.join(map(str, wanted))}: {body}")


def say(step: str, text: str) -> None:
    """Print one step of the walkthrough."""
    print(f"[{step}] {text}", flush=True)


def sign_in(client: Client, username: str, password: str) -> None:
    """Sign in through the login form: it sets the session cookie and rotates the CSRF token."""
    status, _, page = client.send("GET", "/accounts/login/")
    expect("sign in", status, (200,), page[:200])
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if token is None:
        raise WalkthroughError("sign in: the login page has no CSRF token")
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1).decode(), "next": "/"}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, page = client.send("POST", "/accounts/login/", urllib.parse.urlencode(form).encode(), headers)
    expect("sign in", status, (200,), page[:200])
    if b"upload-form" not in page and b"no-kinds" not in page:
        raise WalkthroughError(f"sign in: the user {username!r} and that password are refused")
    say("sign in", f"signed in as {username}")


def multipart(fields: dict[str, str], name: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    """Return a multipart/form-data body: the form's fields, then the file, as an HTML form sends them."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
    parts.append(f"{head}Content-Type: {content_type}\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(client: Client, kind: str, path: Path, content_type: str) -> str:
    """Ask for an upload form, post the file straight to storage with it; return the job-start token."""
    data = path.read_bytes()
    request = {"kind": kind, "filename": path.name, "content_type": content_type, "size": len(data)}
    status, _, form = client.post_json("/api/uploads", request)
    expect("upload", status, (201,), form)
    say("upload", f"POST /api/uploads -> {status}: a form for {short(form['url'])}, at most {form['max_size']} bytes")
    body, form_type = multipart(form["fields"], path.name, data, content_type)
    headers = {"Content-Type": form_type}
    target = client.url(form["url"])
    if urllib.parse.urlsplit(target)[:2] == urllib.parse.urlsplit(client.base)[:2]:
        headers["X-CSRFToken"] = client.csrf()  # the local upload view is a view of the site; S3 is not
    status, _, answer = client.send("POST", target, body, headers)
    expect("upload", status, (200, 201, 204), parse(answer))
    say("upload", f"POST {short(form['url'])} -> {status}: {len(data)} bytes of {path.name} stored")
    return str(form["upload"])


def start(client: Client, kind: str, token: str) -> tuple[str, dict[str, Any]]:
    """Start the job; return its Location and the 202 body."""
    status, headers, body = client.post_json("/api/jobs", {"kind": kind, "upload": token})
    expect("start", status, (202,), body)
    say("start", f"POST /api/jobs -> {status} Accepted, Location: {headers.get('location')}")
    return headers["location"], body


def poll(client: Client, location: str, times: int, pause: float) -> dict[str, Any]:
    """Read the job's status ``times`` times, ``pause`` seconds apart; return the last answer."""
    state: dict[str, Any] = {}
    for _ in range(times):
        status, _, body = client.send("GET", location)
        state = parse(body)
        expect("status", status, (200,), state)
        say("status", f"GET {location} -> {status}: {summary(state)}")
        if state["final"]:
            break
        time.sleep(pause)
    return state


def stream(client: Client, events: str) -> dict[str, Any]:
    """Follow the job's event stream until the server closes it at the final state; return that state."""
    state: dict[str, Any] = {}
    while not state.get("final"):
        # The server also closes a stream after JOBS_SSE_MAX_SECONDS: then open it again, as EventSource does.
        request = urllib.request.Request(client.url(events), headers={"Accept": "text/event-stream"})  # noqa: S310
        with client.opener.open(request, timeout=client.timeout) as response:
            say("stream", f"GET {events} -> {response.status} {response.headers['Content-Type']}")
            name, data = "message", []
            while line := response.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith(":"):
                    say("stream", f"comment {text[1:].strip()!r}")
                elif text.startswith("event:"):
                    name = text[6:].strip()
                elif text.startswith("data:"):
                    data.append(text[5:].strip())
                elif not text and data:
                    if name == "status":
                        state = json.loads("\n".join(data))
                        say("stream", f"event {name}: {summary(state)}")
                    name, data = "message", []
    return state


def short(url: str) -> str:
    """Return ``url`` without its query string (a signed policy that is long and says nothing to a reader)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((*parts[:3], "...", "")) if parts.query else url


def summary(state: dict[str, Any]) -> str:
    """Return one line about a job's state."""
    progress = state.get("progress") or {}
    text = f"{state['status']}, {round(100 * (progress.get('fraction') or 0))} %"
    if progress.get("message"):
        text += f", {progress['message']!r}"
    if state.get("error"):
        text += f", error {state['error'].get('name') or state['error']['type']}: {state['error']['message']}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the walkthrough; return 0 when the job succeeded."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=f"Example: {USAGE_EXAMPLE}")
    parser.add_argument("file", type=Path, help="the file to upload, e.g. a CSV with email and country columns")
    parser.add_argument("--base", default=os.environ.get("BASE", "http://127.0.0.1:8000"), help="the site's URL")
    parser.add_argument("--user", default=os.environ.get("JOBS_USER", "demo"), help="who signs in (demo)")
    parser.add_argument("--kind", default="report", help="the kind of job (report)")
    parser.add_argument("--content-type", help="the file's type (guessed from its name)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any one request may take")
    args = parser.parse_args(argv)
    # From the environment only: a password on the command line is visible to every user of the machine.
    password = os.environ.get("PASSWORD", "")
    if not password:
        parser.error("set PASSWORD to the user's password (manage.py demouser prints it)")
    if not args.file.is_file():
        parser.error(f"{args.file} is not a file")
    content_type = args.content_type or mimetypes.guess_type(args.file.name)[0] or "application/octet-stream"
    client = Client(args.base, args.timeout)
    try:
        sign_in(client, args.user, password)
        token = upload(client, args.kind, args.file, content_type)
        location, body = start(client, args.kind, token)
        poll(client, location, times=2, pause=0.5)
        final = stream(client, body["urls"]["events"])
        state = poll(client, location, times=1, pause=0)
    except (WalkthroughError, OSError, KeyError) as exc:
        print(f"walkthrough failed: {exc}", file=sys.stderr)
        return 1
    for name, url in (state.get("links") or {}).items():
        say("done", f"download {name}: {url}")
    say("done", f"job {state['id']} {final['status']}: {json.dumps(state.get('result') or state.get('error'))}")
    return 0 if state["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
