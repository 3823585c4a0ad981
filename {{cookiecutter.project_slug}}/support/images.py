"""Images for tests, made without decoding anything: a PNG of many pixels that compresses to kilobytes."""

from __future__ import annotations

import struct
import zlib


def large_blank_png(width: int, height: int) -> bytes:
    """Return a grey-scale PNG of ``width`` x ``height`` black pixels, compressed to a few kilobytes."""
    packer = zlib.compressobj(9)
    row = bytes(1 + width)  # filter byte "none", then one byte per pixel
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
