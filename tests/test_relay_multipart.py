"""relay/multipart.py: a multipart body's `model` field set to the routed name, every other byte
kept. Pure bytes in, bytes out; Werkzeug (which the service and the fake upstream parse forms
with) reads the results to show an upstream would see the new value and the same files.
"""
import io

from werkzeug.formparser import parse_form_data

from chatgpt_web.relay.multipart import layout, with_field

BOUNDARY = "----form-boundary-7MA4YWxk"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
AUDIO = b"RIFF\x00\x01\r\n--not-a-delimiter\r\n\x00\xff audio"


def field(name: str, value: bytes, *, quoted: bool = True, br: bytes = b"\r\n") -> bytes:
    shown = f'"{name}"' if quoted else name
    return (f"--{BOUNDARY}".encode() + br
            + f"Content-Disposition: form-data; name={shown}".encode() + br + br + value + br)


def file(name: str, filename: str, content: bytes, br: bytes = b"\r\n") -> bytes:
    return (f"--{BOUNDARY}".encode() + br
            + f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'.encode()
            + br + b"Content-Type: application/octet-stream" + br + br + content + br)


def close(br: bytes = b"\r\n") -> bytes:
    return f"--{BOUNDARY}--".encode() + br


def parsed(body: bytes, content_type: str = CONTENT_TYPE):
    """(form fields, {file field: (filename, bytes)}) as Werkzeug reads `body`."""
    _, form, files = parse_form_data({
        "REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)})
    return form, {name: (f.filename, f.read()) for name, f in files.items(multi=True)}


def test_the_model_part_is_renamed_and_every_other_byte_kept():
    before = file("file", "a.wav", AUDIO) + field("language", b"en")
    after = field("response_format", b"json") + close()
    body = before + field("model", b"whisper-1") + after
    renamed = with_field(body, CONTENT_TYPE, "model", "whisper-large-v3")
    assert renamed == before + field("model", b"whisper-large-v3") + after
    form, files = parsed(renamed)
    assert form["model"] == "whisper-large-v3" and form["language"] == "en"
    assert files == {"file": ("a.wav", AUDIO)}


def test_a_part_written_inside_a_file_is_file_content_not_a_field():
    lookalike = (f"--{BOUNDARY}x\r\n".encode()  # the boundary, then more: not a delimiter
                 + b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n')
    body = field("model", b"whisper-1") + file("file", "notes.txt", lookalike) + close()
    renamed = with_field(body, CONTENT_TYPE, "model", "house-whisper")
    assert renamed == field("model", b"house-whisper") + file("file", "notes.txt", lookalike) \
        + close()
    assert parsed(renamed)[1] == {"file": ("notes.txt", lookalike)}


def test_bare_line_feeds_are_read_and_kept():
    lf = b"\n"
    body = (file("image", "p.png", b"\x89PNG\n\x1a\n", br=lf) + field("model", b"dall-e-2", br=lf)
            + close(br=lf))
    renamed = with_field(body, CONTENT_TYPE, "model", "gpt-image-1")
    assert renamed == body.replace(b"\n\ndall-e-2\n", b"\n\ngpt-image-1\n")
    form, files = parsed(renamed)
    assert form["model"] == "gpt-image-1" and files == {"image": ("p.png", b"\x89PNG\n\x1a\n")}


def test_an_unquoted_name_and_a_quoted_boundary():
    content_type = f'multipart/form-data; boundary="{BOUNDARY}"'
    body = field("model", b"whisper-1", quoted=False) + file("file", "a.wav", AUDIO) + close()
    renamed = with_field(body, content_type, "model", "house-whisper")
    assert renamed == field("model", b"house-whisper", quoted=False) \
        + file("file", "a.wav", AUDIO) + close()
    assert parsed(renamed, content_type)[0]["model"] == "house-whisper"


def test_a_folded_content_disposition_header_is_read_whole():
    folded = (f"--{BOUNDARY}\r\nContent-Type: text/plain\r\nContent-Disposition: form-data;"
              f'\r\n\tname="model"\r\n\r\n').encode()
    body = folded + b"whisper-1\r\n" + close()
    renamed = with_field(body, CONTENT_TYPE, "model", "house-whisper")
    assert renamed == folded + b"house-whisper\r\n" + close()
    assert parsed(renamed)[0]["model"] == "house-whisper"


def test_a_body_without_a_model_gets_one_as_its_last_part():
    body = b"a preamble\r\n" + file("image", "p.png", b"\x89PNG") + field("prompt", b"moon") \
        + close() + b"an epilogue"
    added = with_field(body, CONTENT_TYPE, "model", "gpt-image-1")
    end = body.index(f"\r\n--{BOUNDARY}--".encode())
    assert added == body[:end] + (f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; '
                                  f'name="model"\r\n\r\ngpt-image-1').encode() + body[end:]
    form, files = parsed(added)
    assert form.to_dict() == {"prompt": "moon", "model": "gpt-image-1"}
    assert files == {"image": ("p.png", b"\x89PNG")}


def test_a_file_called_model_is_not_the_model_field():
    body = file("model", "weights.bin", b"\x00\x01") + close()
    added = with_field(body, CONTENT_TYPE, "model", "whisper-1")
    form, files = parsed(added)
    assert form["model"] == "whisper-1" and files == {"model": ("weights.bin", b"\x00\x01")}


def test_every_model_field_and_an_empty_one_are_set():
    body = field("model", b"") + field("model", b"other") + close()
    renamed = with_field(body, CONTENT_TYPE, "model", "whisper-1")
    assert renamed == field("model", b"whisper-1") + field("model", b"whisper-1") + close()


def test_what_is_not_a_whole_multipart_body_passes_as_it_is():
    whole = field("model", b"whisper-1") + close()
    for body, content_type in ((whole[:-len(close())], CONTENT_TYPE),  # no close delimiter
                               (whole, "multipart/form-data"),  # no boundary
                               (whole, "application/json"),
                               (f"--{BOUNDARY}\r\nno blank line".encode(), CONTENT_TYPE)):
        assert with_field(body, content_type, "model", "x") is body
        assert layout(body, content_type) is None


def test_the_layout_finds_the_parts_where_werkzeug_does():
    body = field("model", b"whisper-1") + file("file", "a.wav", AUDIO) + field("n", b"") \
        + close()
    found = layout(body, CONTENT_TYPE)
    assert [(p.name, p.filename, body[p.start:p.end]) for p in found.parts] == [
        ("model", None, b"whisper-1"), ("file", "a.wav", AUDIO), ("n", None, b"")]
    assert body[found.close:] == b"\r\n" + close()
