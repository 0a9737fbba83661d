"""What kind of file a caller sent: its media type from its first bytes, and an image's size.

Callers label their files (a data URL's type, a multipart part's Content-Type, a file name), and
labels lie: a service that trusted them would send the account a "PNG" that is an executable.
`sniff()` reads the signature of the formats the web backend takes (docs/files.md) and, for the
images, their width and height from the header (the backend's image pointers carry them). Text
formats have no signature: a file that is valid UTF-8 without NUL bytes keeps its label when the
label is a text type.

`ACCEPTED_TYPES` is the documented list used when the account's own list (the `product_features`
of `GET /backend-api/models`) is not known.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
IMAGE_NAMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
               "image/webp": "WebP"}  # as error messages name them
DOCUMENT_TYPES = (
    "application/pdf",
    "text/plain", "text/markdown", "text/csv", "application/json",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
)
ACCEPTED_TYPES = IMAGE_TYPES + DOCUMENT_TYPES
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv", "application/json")
# Office files are zip archives: their label (or extension) says which kind.
_ZIP_TYPES = tuple(t for t in DOCUMENT_TYPES if "openxmlformats" in t)

EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "application/pdf": ".pdf", "text/plain": ".txt", "text/markdown": ".md",
    "text/csv": ".csv", "application/json": ".json",
    _ZIP_TYPES[0]: ".docx", _ZIP_TYPES[1]: ".xlsx", _ZIP_TYPES[2]: ".pptx",
}
_BY_EXTENSION = {extension: kind for kind, extension in EXTENSIONS.items()}
_BY_EXTENSION.update({".jpeg": "image/jpeg", ".markdown": "text/markdown"})


@dataclass(frozen=True)
class MediaInfo:
    mime_type: str | None  # None: not a format we recognise
    width: int | None = None
    height: int | None = None

    @property
    def is_image(self) -> bool:
        return self.mime_type in IMAGE_TYPES


def type_of_name(name: str) -> str | None:
    """The media type a file name's extension stands for, if it is one we know."""
    dot = name.rfind(".")
    return _BY_EXTENSION.get(name[dot:].lower()) if dot >= 0 else None


def clean_label(label: str | None) -> str | None:
    """`image/PNG; charset=x` -> `image/png`; None or blank -> None."""
    if not label:
        return None
    return label.split(";")[0].strip().lower() or None


def sniff(data: bytes, label: str | None = None) -> MediaInfo:
    """The media type `data` really has (and an image's width and height).

    `label` (what the caller said, e.g. `text/csv`) decides between formats that share a
    signature (the office zip formats) or have none (text).
    """
    label = clean_label(label)
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return MediaInfo("image/png", width, height)
    if data.startswith(b"\xff\xd8\xff"):
        return MediaInfo("image/jpeg", *_jpeg_size(data))
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return MediaInfo("image/gif", width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return MediaInfo("image/webp", *_webp_size(data))
    if data.startswith(b"%PDF-"):
        return MediaInfo("application/pdf")
    if data.startswith(b"PK\x03\x04"):
        return MediaInfo(label if label in _ZIP_TYPES else None)
    if label in TEXT_TYPES and b"\0" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return MediaInfo(None)
        return MediaInfo(label)
    return MediaInfo(None)


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from the first start-of-frame segment (SOF0..SOF15 but DHT/JPG/DAC)."""
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None, None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        length = struct.unpack(">H", data[index + 2:index + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5:index + 9])
            return width, height
        index += 2 + length
    return None, None


def _webp_size(data: bytes) -> tuple[int | None, int | None]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None, None
