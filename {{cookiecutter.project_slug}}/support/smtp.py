"""A small real SMTP server on loopback that records messages and can refuse the first attempts."""

from __future__ import annotations

import socketserver
import threading
from email import message_from_bytes
from email.message import Message
from types import TracebackType


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        recorder = self.server.recorder
        self.reply("220 localhost test SMTP ready")
        while line := self.rfile.readline(1024):
            verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 localhost")
            elif verb == "MAIL":
                with recorder.lock:
                    recorder.attempts += 1
                    refuse = recorder.attempts <= recorder.fail_first
                # 451: a temporary failure, the kind a sender must retry later.
                self.reply("451 4.3.0 try again later" if refuse else "250 OK")
            elif verb in ("RCPT", "RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while (data := self.rfile.readline(65536)) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                with recorder.lock:
                    recorder.messages.append(message_from_bytes(b"".join(lines)))
                self.reply("250 OK queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 command not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    recorder: SMTPRecorder


class SMTPRecorder:
    """Accept SMTP on 127.0.0.1, answering 451 to the first ``fail_first`` MAIL commands."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts = 0
        self.messages: list[Message] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.recorder = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Return the server's address as an smtp:// URL."""
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # bound to an IPv4 address given as text
        return f"smtp://{host}:{port}"

    def __enter__(self) -> SMTPRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
