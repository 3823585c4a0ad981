"""Start the ASGI web process for tests and talk to it like a browser: cookies, CSRF, JSON, multipart."""

from __future__ import annotations

import http.cookiejar
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .servers import PACKAGE, Process, free_port, port_open, wait_until


def start_web(env: dict[str, str], log_dir: Path) -> tuple[Process, str]:
    """Start uvicorn serving the project's ASGI app on a free loopback port; return it and its base URL."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{PACKAGE}.config.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = Process(argv, log_dir / "web.log", env=env).start()
    wait_until(lambda: port_open(port) or not proc.alive(), 60, "uvicorn to listen")
    if not proc.alive():
        raise RuntimeError(f"uvicorn exited at start:\n{proc.log()[-4000:]}")
    return proc, f"http://127.0.0.1:{port}"


def multipart(fields: dict[str, str], file_name: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    """Return a multipart/form-data body with ``fields`` and then the file, as an HTML form sends it."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class Response:
    """What the server answered."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Browser:
    """An HTTP client with a cookie jar that signs in and sends the CSRF token like the jobs page."""

    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def url(self, path: str) -> str:
        """Return ``path`` resolved against the server's base URL."""
        return urllib.parse.urljoin(self.base, path)

    def cookie(self, name: str) -> str:
        """Return the value of cookie ``name``."""
        return next(c.value for c in self.jar if c.name == name and c.value is not None)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        """Send a request and return the response, whatever its status."""
        request = urllib.request.Request(self.url(path), data=body, method=method, headers=headers or {})  # noqa: S310
        try:
            with self.opener.open(request, timeout=60) as response:
                return Response(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())

    def post_json(self, path: str, data: Any) -> Response:
        """POST ``data`` as JSON with the CSRF header."""
        headers = {"Content-Type": "application/json", "X-CSRFToken": self.cookie("csrftoken")}
        return self.request("POST", path, json.dumps(data).encode(), headers)

    def sign_in(self, username: str, password: str) -> None:
        """Sign in through the login form, as a person would."""
        page = self.request("GET", "/accounts/login/")
        assert page.status == 200, page.status
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
        assert token, "the login form has no CSRF token"
        form = {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1).decode(), "next": "/"}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        answer = self.request("POST", "/accounts/login/", urllib.parse.urlencode(form).encode(), headers)
        assert answer.status == 200, answer.status
        assert b"upload-form" in answer.body, answer.body[:500]

    def events(self, path: str, timeout: float = 60) -> Iterator[str]:
        """Yield the lines of a server-sent event stream until the server closes it."""
        request = urllib.request.Request(self.url(path), headers={"Accept": "text/event-stream"})  # noqa: S310
        with self.opener.open(request, timeout=timeout) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            while line := response.readline():
                yield line.decode().rstrip("\n")


def parse_events(lines: list[str]) -> list[tuple[str, Any]]:
    """Return ``(event, data)`` pairs of an SSE stream's lines; comments become ``(":", text)``."""
    events: list[tuple[str, Any]] = []
    name, data = "message", []
    for line in lines:
        if line.startswith(":"):
            events.append((":", line[1:].strip()))
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
    return events
