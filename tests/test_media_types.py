"""What a file is, from its bytes (chatgpt_web/media_types.py): no server needed."""
import struct

import pytest

from chatgpt_web.media_types import sniff, type_of_name


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\1\1\0\0\1\0\1\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\1\x11\0"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


@pytest.mark.parametrize("data, expected", [
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + struct.pack(">II", 640, 480) + b"\x08\x02\0\0\0",
     ("image/png", 640, 480)),
    (jpeg(1024, 768), ("image/jpeg", 1024, 768)),
    (b"GIF89a" + struct.pack("<HH", 32, 16) + b"\0\0\0", ("image/gif", 32, 16)),
    (b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0" + (299).to_bytes(3, "little")
     + (199).to_bytes(3, "little"), ("image/webp", 300, 200)),
    (b"%PDF-1.7\n...", ("application/pdf", None, None)),
    (b"MZ\x90\0\3\0\0\0", (None, None, None)),
])
def test_types_and_image_sizes_come_from_the_bytes(data, expected):
    info = sniff(data, label="image/png")  # the label never overrides a signature
    assert (info.mime_type, info.width, info.height) == expected


def test_text_keeps_a_text_label_only_when_it_is_text():
    assert sniff(b"a,b\n1,2\n", "text/csv").mime_type == "text/csv"
    assert sniff(b"a\0b", "text/plain").mime_type is None
    assert sniff(b"\xff\xfe\xfa", "text/plain").mime_type is None
    assert sniff(b"hello", "image/png").mime_type is None


def test_office_files_are_zips_named_by_their_label_or_extension():
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert sniff(b"PK\x03\x04rest", docx).mime_type == docx
    assert sniff(b"PK\x03\x04rest", type_of_name("Report.DOCX")).mime_type == docx
    assert sniff(b"PK\x03\x04rest", "application/zip").mime_type is None
