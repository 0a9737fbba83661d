"""Helpers of the vision tests: real image and document bytes, the parts that carry them, and
what the emulator recorded of them (tests/emulator/files.py)."""
from __future__ import annotations

import base64
import hashlib
import struct
import zlib


def png(width: int, height: int, shade: int = 0) -> bytes:
    """A real PNG of `width` x `height` grey pixels of `shade`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\0" + bytes([shade]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_message(text: str, url: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image_url", "image_url": {"url": url}}]}


def received(data: bytes) -> str:
    """What the emulated model says about a file it received."""
    return f"{len(data)} bytes sha256={hashlib.sha256(data).hexdigest()}"


def writes(emulator) -> list[dict]:
    return [r.json for r in emulator.requests_to("/conversation") if r.method == "POST"]


def uploads_started(emulator) -> int:
    return len([r for r in emulator.requests_to("/files") if r.method == "POST"])

