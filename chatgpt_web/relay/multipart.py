"""multipart/form-data bodies, as bytes: the one change the relay makes to them.

A route that renames a model (docs/relay.md, "What passes, and what changes") renames it in a
multipart body too (transcriptions, image edits and variations): `with_field()` sets the value of
one text field and copies every other byte as received (the boundary, the part order, the other
parts' headers, the files). Pure functions, no I/O, so their tests need no server.

The service learnt the caller's model by parsing the same body with Werkzeug, so the parts are
found as Werkzeug finds them (werkzeug/sansio/multipart.py), not only as RFC 7578 writes them:
line breaks may be CRLF, LF or CR alone; a delimiter is a line break, `--` and the boundary, then
`--` for the last one, optional blanks and a line break; a part's headers end at a blank line.
Only the delimiters and the headers are read: a file's bytes are searched for the next delimiter
(bytes.find), never copied apart, and text that looks like a part inside a file is data. The body
is already bounded (MAX_RELAY_BODY) and so are its parts (Werkzeug's max_form_parts, when the
service read the form first).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from werkzeug.http import parse_options_header

_BREAK = rb"(?:\r\n|\n|\r)"
_BLANK_LINE = re.compile(rb"\r\n\r\n|\r\r|\n\n")
_FOLDED_HEADER = re.compile(_BREAK + rb"[ \t]")
# After `--boundary`: `--` and the end of the body (the close delimiter), or the next part.
_DELIMITER_END = rb"(--[^\S\r\n]*%s?|[^\S\r\n]*%s)" % (_BREAK, _BREAK)


@dataclass(frozen=True)
class Part:
    """One part of a body: its name, its filename (None for a text field) and where its data is
    in the body (body[start:end])."""

    name: str | None
    filename: str | None
    start: int
    end: int


@dataclass(frozen=True)
class Layout:
    """Where a body's parts are, and where its close delimiter starts (a new part goes there)."""

    boundary: bytes
    parts: tuple[Part, ...]
    close: int


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a multipart/form-data Content-Type (quoted or not), else None."""
    mimetype, options = parse_options_header(content_type)
    boundary = options.get("boundary")
    if mimetype.lower() != "multipart/form-data" or not boundary:
        return None
    try:
        return boundary.encode("latin-1")
    except UnicodeEncodeError:
        return None


def layout(body: bytes, content_type: str) -> Layout | None:
    """The parts of `body`, or None when it is not a whole multipart/form-data body."""
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    quoted = re.escape(boundary)
    # The first delimiter may come without a line break before it (most bodies start with it).
    first = re.compile(rb"%s?--%s%s" % (_BREAK, quoted, _DELIMITER_END))
    delimiter = re.compile(rb"%s--%s%s" % (_BREAK, quoted, _DELIMITER_END))
    marker = b"--" + boundary
    match = _search(first, marker, body, 0)
    parts = []
    while match is not None and not match.group(1).startswith(b"--"):
        headers_start = match.end()
        blank = _BLANK_LINE.search(body, headers_start)
        if blank is None:
            return None
        headers_end = (blank.start() + blank.end()) // 2  # the first line break is the headers'
        match = _search(delimiter, marker, body, headers_end)
        if match is None or match.start() < blank.end():
            return None  # no close delimiter, or a part without its blank line
        name, filename = _disposition(body[headers_start:blank.start()])
        parts.append(Part(name, filename, blank.end(), match.start()))
    if match is None:
        return None
    return Layout(boundary, tuple(parts), match.start())


def _search(pattern: re.Pattern, marker: bytes, body: bytes, start: int) -> re.Match | None:
    """`pattern.search(body, start)` for a delimiter pattern, faster: `marker` (`--boundary`) is
    found by bytes.find, and the pattern tried only where it could start (the line break before
    the marker is one or two bytes long). A regular expression would step through every byte of
    a file; find skips through it."""
    at = body.find(marker, start)
    while at >= 0:
        for candidate in (at - 2, at - 1, at):
            if candidate >= start:
                match = pattern.match(body, candidate)
                if match is not None:
                    return match
        at = body.find(marker, at + 1)
    return None


def _disposition(headers: bytes) -> tuple[str | None, str | None]:
    """(name, filename) of a part's Content-Disposition header."""
    for line in _FOLDED_HEADER.sub(b" ", headers).splitlines():
        header, _, value = line.strip().decode("utf-8", "replace").partition(":")
        if header.strip().lower() == "content-disposition":
            _, options = parse_options_header(value.strip())
            return options.get("name"), options.get("filename")
    return None, None


def with_field(body: bytes, content_type: str, name: str, value: str) -> bytes:
    """`body` with its text field `name` set to `value`, every other byte as it was.

    Each text part called `name` gets the new value (a caller who sent two would otherwise leave
    the upstream free to read the one not changed); a body without one gets it as a new last
    part, so the upstream reads `value` rather than a default of its own. A body that is not a
    whole multipart body is returned as it is: the upstream says what is wrong with it.
    """
    found = layout(body, content_type)
    if found is None:
        return body
    data = value.encode()
    fields = [part for part in found.parts if part.name == name and part.filename is None]
    if not fields:
        added = (b'\r\n--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s'
                 % (found.boundary, name.encode(), data))
        return body[:found.close] + added + body[found.close:]
    pieces, copied = [], 0
    for part in fields:
        pieces += [body[copied:part.start], data]
        copied = part.end
    pieces.append(body[copied:])
    return b"".join(pieces)
