"""The files a caller sends with a message: read, fetched, checked (docs/files.md).

Four faces bring files: `/v1/chat/completions` content parts (`image_url` with a `data:` or an
https URL, `file` with base64 `file_data` and a `filename`), `/v1/responses` items
(`input_image`, `input_file`, mapped to those parts), `/send_message` multipart `file` fields,
and the pictures of `/v1/images/edits` and `/variations` (PNG, JPEG and WebP only): multipart
`image` files, or a JSON edit's `images[].image_url`, read as an `image_url` part's URL is.

A part is first only *named* (`FileRef`): chat UIs resend the whole history every turn, and only
the messages that go upstream need their files. `resolve()` turns the refs of those messages into
`uploads.Attachment`s (bytes and their sniffed type), which the conversation client uploads to
the account:

* a `data:` URL or base64 `file_data` is decoded;
* an https URL is fetched by this service through the SSRF guard reverse_proxy uses
  (upstream/endpoints.py: https, every address public, the connection pinned to the checked
  addresses; a prefix listed in IMAGE_URL_ALLOW skips the address check), redirects followed
  through the same guard (at most MAX_REDIRECTS), the answer bounded by MAX_UPLOAD_BYTES and
  IMAGE_URL_TIMEOUT (504 `image_url_timeout`), its Content-Type required to be an image type;
* every file must be at most MAX_UPLOAD_BYTES (413 `file_too_large`) and one of the accepted
  types, judged from its bytes (415 `unsupported_file_type`); at most MAX_FILES files per request,
  holding at most TOTAL_FACTOR x MAX_UPLOAD_BYTES together (413).

A ref's `identity` (a hash of its data URL, or its https URL) is what a remembered history is
keyed by (chat_memory.py), so the same history finds the same web conversation without any file
being decoded or fetched.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from urllib.parse import unquote_to_bytes, urljoin

from ..config import Config
from ..errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamTimeout,
)
from ..media_types import (
    ACCEPTED_TYPES,
    EXTENSIONS,
    IMAGE_NAMES,
    IMAGE_TYPES,
    clean_label,
    sniff,
    type_of_name,
)
from ..transport import plain_session, upstream_errors
from ..upstream.conversation import ChatMessage
from ..upstream.endpoints import Resolver, guard_destination, system_resolver
from ..upstream.uploads import Attachment

MAX_FILES = 10  # files sent upstream with one request
TOTAL_FACTOR = 4  # all files of one request: at most this many times MAX_UPLOAD_BYTES
MAX_REDIRECTS = 3
MAX_NAME = 200


@dataclass(frozen=True)
class FileRef:
    """A file named by a request, not yet read: `source` is a data URL, bare base64, or an
    https URL (`remote`)."""

    source: str
    name: str | None = None  # the caller's file name, if it gave one
    param: str = ""  # where it was in the request, for errors
    remote: bool = False
    image_only: bool = False  # an image_url part: only images are accepted

    @property
    def identity(self) -> str:
        if self.remote:
            return "url:" + self.source
        return "data:" + hashlib.sha256(self.source.encode()).hexdigest()


def image_ref(value, param: str) -> FileRef:
    """The FileRef of an `image_url` part's value (`{"url": ...}` or the URL itself)."""
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("an image_url part needs image_url.url: a data: URL or an https URL",
                         "invalid_field", param=f"{param}.image_url.url")
    return url_ref(url, param, field="image_url.url", field_param=f"{param}.image_url.url")


def url_ref(url: str, param: str, *, field: str, field_param: str | None = None) -> FileRef:
    """The image-only FileRef of the image URL `url` (a non-empty string) at the request's
    `param`: a data: URL, or an http(s) URL that fetch() reads (its guard refuses http).

    :raise BadRequest: invalid_image_url, another scheme (naming `field`, at `field_param`,
        default `param`).
    """
    url = url.strip()
    scheme = url.split(":", 1)[0].lower()
    if scheme == "data":
        return FileRef(url, param=param, image_only=True)
    if scheme in ("http", "https"):
        return FileRef(url, param=param, remote=True, image_only=True)
    raise BadRequest(f"{field} must be a data: URL or an https URL", "invalid_image_url",
                     param=field_param or param)


def file_ref(value, param: str) -> FileRef:
    """The FileRef of a `file` part's value (`{"file_data": ..., "filename": ...}`)."""
    if not isinstance(value, dict):
        raise BadRequest("a file part needs a file object with file_data and filename",
                         "invalid_field", param=f"{param}.file")
    if value.get("file_id") is not None and value.get("file_data") is None:
        raise BadRequest("file_id is not supported: this service has no file store of its own; "
                         "send the file itself as file_data (base64) with a filename",
                         "unsupported_content", param=f"{param}.file.file_id")
    data, name = value.get("file_data"), value.get("filename")
    if not isinstance(data, str) or not data:
        raise BadRequest("a file part needs file.file_data: the file in base64 (or a data: URL)",
                         "invalid_field", param=f"{param}.file.file_data")
    if name is not None and not isinstance(name, str):
        raise BadRequest("file.filename must be a string", "invalid_field",
                         param=f"{param}.file.filename")
    return FileRef(data, name=_clean_name(name), param=param)


def _clean_name(name: str | None) -> str | None:
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if len(name) > MAX_NAME:  # shortened from the middle: the extension tells the type
        stem, dot, extension = name.rpartition(".")
        extension = dot + extension[:16] if dot else ""
        name = name[:MAX_NAME - len(extension)] + extension
    return name or None


@dataclass(frozen=True)
class FileRules:
    """What resolve() accepts, from the settings."""

    max_bytes: int
    allowed_prefixes: tuple[str, ...] = ()
    ca_file: str | None = None
    accepted_types: tuple[str, ...] = ACCEPTED_TYPES
    fetch_timeout: float = 20.0  # seconds for one remote image, redirects included

    @classmethod
    def from_config(cls, config: Config) -> FileRules:
        return cls(config.max_upload_bytes, config.image_url_allow, config.image_url_ca_file,
                   fetch_timeout=config.image_url_timeout)


def resolve(messages: Sequence[ChatMessage], rules: FileRules,
            resolver: Resolver = system_resolver) -> tuple[ChatMessage, ...]:
    """The messages with their FileRefs read into Attachments (see the module doc).

    :raise BadRequest: a malformed file or image URL, too many files, a refused destination.
    :raise PayloadTooLarge: a file over MAX_UPLOAD_BYTES. :raise UnsupportedMediaType.
    :raise UpstreamError: the remote image could not be fetched.
    """
    count = sum(len(message.attachments) for message in messages)
    if count > MAX_FILES:
        raise BadRequest(f"{count} files were sent with this request; at most {MAX_FILES} are "
                         "accepted", "too_many_files", param="messages")
    budget = _Budget(TOTAL_FACTOR * rules.max_bytes)
    return tuple(
        replace(message, attachments=tuple(
            budget.spend(read(ref, rules, resolver), ref.param) if isinstance(ref, FileRef)
            else ref for ref in message.attachments)) if message.attachments else message
        for message in messages)


class _Budget:
    """The bytes all files of one request may hold together (remote images are not bounded by
    the request body, so ten of them could otherwise hold ten times MAX_UPLOAD_BYTES)."""

    def __init__(self, limit: int):
        self.left = limit

    def spend(self, attachment: Attachment, param: str) -> Attachment:
        self.left -= len(attachment.data)
        if self.left < 0:
            raise PayloadTooLarge(f"the files of this request total more than {TOTAL_FACTOR} x "
                                  "MAX_UPLOAD_BYTES", "file_too_large", param=param)
        return attachment


def read_all(refs: Sequence[FileRef], rules: FileRules, resolver: Resolver = system_resolver,
             *, accepted: tuple[str, ...] | None = None) -> tuple[Attachment, ...]:
    """The FileRefs of one request as Attachments, in order, each read() (of the `accepted`
    types when given), together at most TOTAL_FACTOR x MAX_UPLOAD_BYTES (413). The caller has
    checked their number (check_count)."""
    budget = _Budget(TOTAL_FACTOR * rules.max_bytes)
    return tuple(budget.spend(read(ref, rules, resolver, accepted=accepted), ref.param)
                 for ref in refs)


def read(ref: FileRef, rules: FileRules, resolver: Resolver = system_resolver, *,
         accepted: tuple[str, ...] | None = None) -> Attachment:
    """One FileRef as an Attachment, checked (of the `accepted` types when given)."""
    if ref.remote:
        data, label = fetch(ref, rules, resolver)
    else:
        data, label = _decode(ref, rules.max_bytes)
    return checked(data, label, ref.name, rules, param=ref.param, image_only=ref.image_only,
                   accepted=accepted)


def checked(data: bytes, label: str | None, name: str | None, rules: FileRules, *,
            param: str, image_only: bool = False,
            accepted: tuple[str, ...] | None = None) -> Attachment:
    """`data` as an Attachment, if it is small enough and of an accepted type: `accepted`, else
    the images when `image_only`, else the rules' types.

    The type is what the bytes are (media_types.sniff); the label (or the name's extension)
    only decides between types that look alike.
    """
    if len(data) > rules.max_bytes:
        raise _too_large(rules.max_bytes, param)
    if not data:
        raise BadRequest("the file is empty", "invalid_field", param=param)
    info = sniff(data, clean_label(label) if label not in (None, "application/octet-stream")
                 else type_of_name(name or ""))
    accepted = accepted or (IMAGE_TYPES if image_only else rules.accepted_types)
    if info.mime_type not in accepted:
        raise UnsupportedMediaType(f"this file type is not accepted: send {_kinds(accepted)}",
                                   "unsupported_file_type", param=param)
    if not name or type_of_name(name) != info.mime_type:
        stem = (name.rsplit(".", 1)[0] if name else "") or ("image" if info.is_image else "file")
        name = stem + EXTENSIONS[info.mime_type]
    return Attachment(name, info.mime_type, data, info.width, info.height)


def _kinds(accepted: tuple[str, ...]) -> str:
    """The accepted types in words: "images (PNG, JPEG, GIF, WebP)" when they are all images."""
    if all(kind in IMAGE_TYPES for kind in accepted):
        return "images (" + ", ".join(IMAGE_NAMES[kind] for kind in accepted) + ")"
    return "images, PDF, text and office documents"


def _too_large(limit: int, param: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"a file is larger than {limit} bytes (MAX_UPLOAD_BYTES)",
                           "file_too_large", param=param)


def _decode(ref: FileRef, max_bytes: int) -> tuple[bytes, str | None]:
    """A data URL's (or bare base64's) bytes and declared type."""
    source, label = ref.source, None
    if source[:5].lower() == "data:":
        header, comma, payload = source[5:].partition(",")
        if not comma:
            raise BadRequest("a data: URL needs a comma before its data", "invalid_field",
                             param=ref.param)
        fields = header.split(";")
        label = fields[0] or None
        if "base64" not in (field.strip().lower() for field in fields[1:]):
            raw = unquote_to_bytes(payload)
            if len(raw) > max_bytes:
                raise _too_large(max_bytes, ref.param)
            return raw, label
        source = payload
    # Checked before decoding: base64 is 4 characters for every 3 bytes.
    if (len(source) // 4) * 3 > max_bytes + 3:
        raise _too_large(max_bytes, ref.param)
    source = "".join(source.split())
    try:  # some encoders leave the padding out
        data = base64.b64decode(source + "=" * (-len(source) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the file data is not valid base64", "invalid_field",
                         param=ref.param) from None
    return data, label


def fetch(ref: FileRef, rules: FileRules,
          resolver: Resolver = system_resolver) -> tuple[bytes, str | None]:
    """Download a remote image through the SSRF guard (see the module doc)."""
    url = ref.source
    deadline = _Deadline(rules.fetch_timeout, ref.param)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            destination = guard_destination(url, rules.allowed_prefixes, resolver,
                                            name="image_url", setting="IMAGE_URL_ALLOW",
                                            codes=("invalid_image_url", "image_url_not_allowed"),
                                            query_allowed=True)
        except BadRequest as refused:  # the guard does not know which part it checked
            raise BadRequest(refused.message, refused.code, param=ref.param) from None
        # The CA file is for the operator's own servers, the ones IMAGE_URL_ALLOW lists.
        verify = rules.ca_file if rules.ca_file and not destination.resolve else True
        left = deadline.remaining()
        with plain_session(destination.resolve, total_timeout=left) as session:
            with _image_server_errors(deadline):
                response = session.get(url, headers={"Accept": "image/*"}, stream=True,
                                       timeout=left, verify=verify)
            try:
                location = response.headers.get("Location")
                if response.status_code in (301, 302, 303, 307, 308) and location:
                    url = _redirect_target(url, location, ref.param)
                    continue
                if response.status_code != 200:
                    raise BadRequest(f"image_url answered HTTP {response.status_code}",
                                     "image_url_unreachable", param=ref.param)
                label = clean_label(response.headers.get("Content-Type"))
                if not label or not label.startswith("image/"):
                    raise UnsupportedMediaType("image_url did not answer with an image "
                                               "(Content-Type)", "unsupported_file_type",
                                               param=ref.param)
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > rules.max_bytes:
                    raise _too_large(rules.max_bytes, ref.param)
                return _read_capped(response, rules.max_bytes, deadline), label
            finally:
                response.close()
    raise BadRequest(f"image_url redirected more than {MAX_REDIRECTS} times",
                     "image_url_not_allowed", param=ref.param)


def _redirect_target(url: str, location: str, param: str) -> str:
    """The absolute URL a Location header names (the guard checks it before it is fetched)."""
    try:
        return urljoin(url, location)
    except ValueError:  # unbalanced IPv6 brackets
        raise BadRequest("image_url redirected to a malformed URL", "invalid_image_url",
                         param=param) from None


def _read_capped(response, max_bytes: int, deadline: _Deadline) -> bytes:
    body = bytearray()
    with _image_server_errors(deadline):
        for chunk in response.iter_content():
            deadline.remaining()
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(max_bytes, deadline.param)
    return bytes(body)


class _Deadline:
    """The time left to fetch one image (IMAGE_URL_TIMEOUT, redirects included)."""

    def __init__(self, seconds: float, param: str):
        self.seconds, self.param = seconds, param
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """:raise UpstreamTimeout: image_url_timeout, once the time is up."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.passed()
        return left

    def passed(self) -> UpstreamTimeout:
        return UpstreamTimeout("image_url: the image server did not send the image within "
                               f"IMAGE_URL_TIMEOUT ({self.seconds:g} s)", "image_url_timeout",
                               param=self.param)


@contextlib.contextmanager
def _image_server_errors(deadline: _Deadline) -> Iterator[None]:
    """curl's failures while talking to the image server (transport.upstream_errors words
    them), naming the part whose URL it was; curl's timeout is the fetch's deadline."""
    try:
        with upstream_errors("image_url"):
            yield
    except UpstreamTimeout as late:
        raise deadline.passed() from late.__cause__
    except UpstreamError as failed:
        raise UpstreamError(failed.message, failed.code, param=deadline.param) \
            from failed.__cause__


def check_count(count: int, most: int, param: str) -> None:
    """:raise BadRequest: too_many_files, when `count` files (at `param`) are more than `most`."""
    if count > most:
        raise BadRequest(f"{count} files were sent; at most {most} "
                         f"{'is' if most == 1 else 'are'} accepted", "too_many_files",
                         param=param)


def form_files(storages: Sequence, rules: FileRules, *, param: str = "file",
               accepted: tuple[str, ...] | None = None,
               most: int = MAX_FILES) -> tuple[Attachment, ...]:
    """The multipart file fields named `param` (werkzeug FileStorage objects: /send_message's
    `file`, /v1/images/edits' `image`) as checked Attachments, at most `most`, each of the
    `accepted` types (default: the rules'). :raise BadRequest: too_many_files.
    :raise PayloadTooLarge, UnsupportedMediaType."""
    check_count(len(storages), most, param)
    found = []
    for index, storage in enumerate(storages):
        data = storage.stream.read(rules.max_bytes + 1)
        found.append(checked(data, storage.mimetype, _clean_name(storage.filename), rules,
                             param=f"{param}[{index}]", accepted=accepted))
    return tuple(found)
