"""The bytes of a file the web backend made (a generated image), from its asset pointer.

    sediment://file_0000...  (2026)
        GET {api}/files/download/{file_id}?conversation_id={id}&inline=false
    file-service://file-...  (older)
        GET {api}/files/{file_id}/download
    both answer {"status": "success", "download_url": "<url>"}; then GET <url> -> the bytes.

The download URL (on the site, `{origin}/backend-api/estuary/content?id=...&sig=...`) is followed
only when it is on the upstream's own origin, which gets the account's bearer as every backend
call does, or on `https://*.oaiusercontent.com`, the site's file host of earlier years, which gets
no credential. Any other URL is refused: a reverse proxy chosen by a caller could otherwise point
the service at an internal address. Both reads are bounded in size and time.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from ..config import Config
from ..errors import UpstreamError, UpstreamTimeout
from ..metrics import timed_upstream
from ..transport import new_session, upstream_errors
from .bootstrap import api_headers
from .endpoints import Upstream
from .errors import from_upstream

MAX_ANSWER_BYTES = 64 * 1024  # the JSON that names the download URL
_FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
SCHEMES = ("sediment", "file-service")
FILE_HOST_SUFFIX = ".oaiusercontent.com"
# What the first bytes of a file say it is: the content type the service gives it.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
               (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


@dataclass(frozen=True)
class AssetPointer:
    """`sediment://<file id>` or `file-service://<file id>`."""

    scheme: str
    file_id: str

    @classmethod
    def parse(cls, text: object) -> AssetPointer | None:
        """The pointer `text` names, or None when it is not one (or its id has odd characters)."""
        if not isinstance(text, str):
            return None
        scheme, separator, file_id = text.partition("://")
        if not separator or scheme not in SCHEMES or not _FILE_ID.fullmatch(file_id):
            return None
        return cls(scheme, file_id)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.file_id}"


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str


def content_type_of(data: bytes) -> str:
    """The image type the bytes begin with; application/octet-stream when they are no image."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    return "application/octet-stream"


class DownloadClient:
    """Reads generated files from one upstream, for one access token per call."""

    def __init__(self, config: Config):
        self.config = config

    def fetch(self, access_token: str, upstream: Upstream, pointer: AssetPointer,
              conversation_id: str | None, *, max_bytes: int, timeout: float) -> Download:
        """The file's bytes. :raise ApiError: the upstream refused (its status, translated), the
        file is larger than `max_bytes` (502 upstream_bad_answer), or time ran out (504)."""
        deadline = time.monotonic() + timeout
        headers = api_headers(access_token, upstream)
        if pointer.scheme == "sediment":
            path = (f"/files/download/{pointer.file_id}?conversation_id="
                    f"{quote(conversation_id or '', safe='')}&inline=false")
        else:
            path = f"/files/{pointer.file_id}/download"
        with new_session(self.config, resolve=upstream.resolve) as session:
            answer = _read(session, upstream.url(path), headers, MAX_ANSWER_BYTES, deadline)
            url = _download_url(answer)
            if _same_origin(url, upstream.origin):
                file_headers = {**headers, "Accept": "image/*,*/*;q=0.8"}
            elif _is_file_host(url):
                file_headers = {"Accept": "image/*,*/*;q=0.8"}
            else:
                raise UpstreamError("the upstream named a download URL on a host the service "
                                    "does not fetch from", "upstream_bad_answer")
            data = _read(session, url, file_headers, max_bytes, deadline)
        return Download(data, content_type_of(data))


def _read(session, url: str, headers: dict, max_bytes: int, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UpstreamTimeout("the file download did not complete within the timeout")
    with upstream_errors("file download"), timed_upstream("download"):
        response = session.get(url, headers=headers, timeout=remaining, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_content():
                body += chunk
                if len(body) > max_bytes:
                    raise UpstreamError(f"the file is larger than {max_bytes} bytes",
                                        "upstream_bad_answer")
                if time.monotonic() > deadline:
                    raise UpstreamTimeout("the file download did not complete within the "
                                          "timeout")
        finally:
            response.close()
    if response.status_code != 200:
        raise from_upstream(response.status_code, bytes(body[:MAX_ANSWER_BYTES]),
                            response.headers)
    return bytes(body)


def _download_url(raw: bytes) -> str:
    try:
        answer = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        answer = None
    url = answer.get("download_url") if isinstance(answer, dict) else None
    if not isinstance(url, str) or answer.get("status", "success") != "success":
        raise UpstreamError("the upstream's file download answer names no download URL",
                            "upstream_bad_answer")
    return url


def _same_origin(url: str, origin: str) -> bool:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() == origin.lower() and not parts.username


def _is_file_host(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return (parts.scheme == "https" and host.endswith(FILE_HOST_SUFFIX) and not parts.username
            and parts.port in (None, 443))
