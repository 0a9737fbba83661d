"""The backend's file upload, and how uploaded files appear in a message (docs/files.md).

One upload is three or four calls, all on the account that will send the message (a file id
belongs to its account):

1. `POST {api}/files {file_name, file_size, use_case, mime_type[, width, height]}` answers
   `{file_id, upload_url}`; `use_case` is "multimodal" for images, "my_files" for documents.
2. `PUT upload_url` with the bytes and the Azure blob headers (`x-ms-blob-type: BlockBlob`,
   `x-ms-version: 2020-04-08`); 201. The URL comes from the upstream, which may be a caller's
   reverse proxy: it must be on the upstream's own origin or pass the SSRF guard (public https).
3. `POST {api}/files/{id}/uploaded {}`.
4. 2026 dialect: `POST {api}/files/process_upload_stream {file_id, file_name, use_case,
   index_for_retrieval, entry_surface}` answers NDJSON `file.processing.*` events; the file is
   ready at an event with progress 100, broken at `file.processing.error`. A 404 (an upstream
   without it) is taken as ready.

`Uploader.upload()` remembers, per account, the SHA-256 of the bytes -> the uploaded file's id,
type and sizes (never the bytes or the file's name), so a chat UI that resends the same image
every turn uploads it once. The store key is a hash of the account identity, the upstream and the
digest.

In a message (`message_content`, `attachments_metadata`): images are `image_asset_pointer` parts
before the text, with content type `multimodal_text` (`sediment://file_...` for the 2026 ids,
`file-service://file-...` for the older ones); every file is an entry of
`metadata.attachments` `{id, name, size, mime_type[, width, height]}`. A message with documents
only stays `text`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt

from ..config import Config
from ..errors import ApiError, UnsupportedMediaType, UpstreamError, UpstreamTimeout, seconds_left
from ..media_types import IMAGE_TYPES
from ..metrics import timed_upstream
from ..store import Store
from ..transport import new_session, upstream_errors
from .endpoints import Upstream, guard_destination
from .errors import from_upstream

CACHE_PREFIX = "upload:v1:"
CACHE_SECONDS = 24 * 3600  # how long an uploaded file's id is reused for the same bytes
TYPES_PREFIX = "upload-types:v1:"
TYPES_SECONDS = 6 * 3600  # how long an account's accepted types are remembered
MAX_ANSWER_BYTES = 256 * 1024  # a JSON answer or the whole processing stream
MAX_PROCESSING_EVENTS = 200
BLOB_HEADERS = {"x-ms-blob-type": "BlockBlob", "x-ms-version": "2020-04-08"}
AUTH_CLAIM = "https://api.openai.com/auth"


@dataclass(frozen=True)
class Attachment:
    """A file to send with a message: its bytes and what they are (media_types.sniff)."""

    name: str
    mime_type: str
    data: bytes = field(repr=False)
    width: int | None = None
    height: int | None = None
    digest: str = ""  # SHA-256 of data, hex; computed when not given

    def __post_init__(self):
        if not self.digest:
            object.__setattr__(self, "digest", hashlib.sha256(self.data).hexdigest())

    @property
    def identity(self) -> str:
        """What identifies the file in a remembered history (chat_memory.py)."""
        return "sha256:" + self.digest

    @property
    def is_image(self) -> bool:
        return self.mime_type in IMAGE_TYPES


@dataclass(frozen=True)
class UploadedFile:
    """A file in the account's file store, as a message refers to it."""

    file_id: str
    name: str
    mime_type: str
    size: int
    width: int | None = None
    height: int | None = None
    digest: str = ""

    @property
    def identity(self) -> str:
        return "sha256:" + self.digest

    @property
    def is_image(self) -> bool:
        return self.mime_type in IMAGE_TYPES

    @property
    def asset_pointer(self) -> str:
        scheme = "sediment" if self.file_id.startswith("file_") else "file-service"
        return f"{scheme}://{self.file_id}"

    def image_part(self) -> dict:
        return {"content_type": "image_asset_pointer", "asset_pointer": self.asset_pointer,
                "size_bytes": self.size, "width": self.width or 0, "height": self.height or 0}

    def metadata(self) -> dict:
        entry = {"id": self.file_id, "name": self.name, "size": self.size,
                 "mime_type": self.mime_type}
        if self.width and self.height:
            entry.update(width=self.width, height=self.height)
        return entry

    def to_cache(self) -> dict:
        """What the upload cache keeps: ids and sizes; not the bytes, not the file's name."""
        return {"file_id": self.file_id, "mime_type": self.mime_type, "size": self.size,
                "width": self.width, "height": self.height}


def message_content(text: str, files: tuple[UploadedFile, ...]) -> dict:
    """The `content` of a message with these files: image pointers first, then the text."""
    images = [file.image_part() for file in files if file.is_image]
    if not images:
        return {"content_type": "text", "parts": [text]}
    return {"content_type": "multimodal_text", "parts": [*images, *([text] if text else [])]}


def attachments_metadata(files: tuple[UploadedFile, ...]) -> dict:
    """The metadata entries a message with these files carries (empty without files)."""
    return {"attachments": [file.metadata() for file in files]} if files else {}


def account_identity(access_token: str) -> str:
    """Who the token is (the user and workspace of its claims, stable across renewals), or the
    token itself when it has no such claims. Only ever used hashed."""
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
        auth = claims.get(AUTH_CLAIM) or {}
        user = auth.get("user_id") or auth.get("chatgpt_user_id") or claims.get("sub")
        workspace = auth.get("chatgpt_account_id") or ""
    except (jwt.PyJWTError, AttributeError):
        user = None
    return f"user:{user}:{workspace}" if isinstance(user, str) and user else access_token


def _hashed(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class Uploader:
    """Uploads attachments for one upstream call (the session, headers and token of the turn)."""

    def __init__(self, config: Config, store: Store | None):
        self.config = config
        self.store = store

    def upload_all(self, session, upstream: Upstream, headers: dict, access_token: str,
                   attachments, deadline: float, *, processing: bool) -> tuple[UploadedFile, ...]:
        """Each of `attachments` as an UploadedFile (uploaded once per account and bytes)."""
        account = account_identity(access_token)
        return tuple(self.upload(session, upstream, headers, account, attachment, deadline,
                                 processing=processing)
                     if isinstance(attachment, Attachment) else attachment
                     for attachment in attachments)

    def upload(self, session, upstream: Upstream, headers: dict, account: str,
               attachment: Attachment, deadline: float, *, processing: bool) -> UploadedFile:
        key = CACHE_PREFIX + _hashed(account, upstream.api_root, attachment.digest)
        cached = self.store.get(key) if self.store is not None else None
        if isinstance(cached, dict) and cached.get("file_id"):
            return UploadedFile(**cached, name=attachment.name, digest=attachment.digest)
        self._check_type(session, upstream, headers, account, attachment, deadline)
        calls = _Calls(session, upstream, headers, deadline)
        use_case = "multimodal" if attachment.is_image else "my_files"
        created = {"file_name": attachment.name, "file_size": len(attachment.data),
                   "use_case": use_case, "mime_type": attachment.mime_type}
        if attachment.width and attachment.height:
            created.update(width=attachment.width, height=attachment.height)
        answer = calls.json("POST", "/files", created, step="file upload: create")
        file_id, upload_url = answer.get("file_id"), answer.get("upload_url")
        if not (isinstance(file_id, str) and file_id and isinstance(upload_url, str)):
            raise UpstreamError("file upload: the upstream gave no file_id and upload_url",
                                "upstream_bad_answer")
        self._put_blob(session, upstream, upload_url, attachment, deadline)
        calls.json("POST", f"/files/{file_id}/uploaded", {}, step="file upload: confirm")
        if processing:
            calls.processing({"file_id": file_id, "file_name": attachment.name,
                              "use_case": use_case, "index_for_retrieval": False,
                              "entry_surface": "composer"})
        uploaded = UploadedFile(file_id, attachment.name, attachment.mime_type,
                                len(attachment.data), attachment.width, attachment.height,
                                attachment.digest)
        if self.store is not None:
            self.store.set(key, uploaded.to_cache(), expire=CACHE_SECONDS)
        return uploaded

    def _put_blob(self, session, upstream: Upstream, upload_url: str, attachment: Attachment,
                  deadline: float) -> None:
        """PUT the bytes where the upstream said: on its own origin with its session, anywhere
        else only through the SSRF guard (the upstream may be a caller's reverse proxy)."""
        target = urlsplit(upload_url)
        same_origin = f"{target.scheme}://{target.netloc}" == upstream.origin
        headers = {**BLOB_HEADERS, "Content-Type": attachment.mime_type,
                   "Origin": upstream.origin, "Referer": upstream.origin + "/"}
        if same_origin:
            return self._put(session, upload_url, headers, attachment, deadline)
        try:
            destination = guard_destination(upload_url, (), name="the upload URL",
                                            setting="(none)", query_allowed=True,
                                            codes=("upstream_bad_answer", "upstream_bad_answer"))
        except ApiError:
            raise UpstreamError("file upload: the upstream's upload URL is not a public https "
                                "address", "upstream_bad_answer") from None
        with new_session(self.config, resolve=destination.resolve) as blob_session:
            self._put(blob_session, upload_url, headers, attachment, deadline)

    @staticmethod
    def _put(session, url: str, headers: dict, attachment: Attachment, deadline: float) -> None:
        with upstream_errors("file upload: blob"), timed_upstream("file_upload"):
            response = session.put(url, data=attachment.data, headers=headers,
                                   timeout=seconds_left(deadline, "the file upload"), stream=True)
        try:  # streamed: the blob store's answer is read only up to MAX_ANSWER_BYTES
            if not 200 <= response.status_code < 300:
                raise from_upstream(response.status_code,
                                    _bounded(response, "file upload: blob"), response.headers)
        finally:
            response.close()

    # --- the account's accepted types ------------------------------------------------------
    def _check_type(self, session, upstream: Upstream, headers: dict, account: str,
                    attachment: Attachment, deadline: float) -> None:
        """415 when the account's model list names the types it takes and this is not one."""
        accepted = self._accepted_types(session, upstream, headers, account, deadline)
        if accepted and attachment.mime_type not in accepted:
            raise UnsupportedMediaType(f"this account does not accept {attachment.mime_type} "
                                       "files", "unsupported_file_type")

    def _accepted_types(self, session, upstream: Upstream, headers: dict, account: str,
                        deadline: float) -> frozenset[str]:
        key = TYPES_PREFIX + _hashed(account, upstream.api_root)
        known = self.store.get(key) if self.store is not None else None
        if isinstance(known, list):
            return frozenset(known)
        try:
            answer = _Calls(session, upstream, headers, deadline).json(
                "GET", "/models?iim=false&is_gizmo=true", None, step="models")
            found = sorted(accepted_types_of(answer))
        except UpstreamTimeout:
            raise
        except ApiError:
            found = []  # unknown: the documented list (already checked) stands
        if self.store is not None:
            self.store.set(key, found, expire=TYPES_SECONDS)
        return frozenset(found)


def accepted_types_of(models_answer: dict) -> set[str]:
    """Every type any model of `GET /backend-api/models` accepts as an attachment
    (`product_features.attachments.accepted_mime_types` and `image_mime_types`)."""
    found: set[str] = set()
    models = models_answer.get("models") if isinstance(models_answer, dict) else None
    for model in models if isinstance(models, list) else ():
        features = model.get("product_features") if isinstance(model, dict) else None
        attachments = features.get("attachments") if isinstance(features, dict) else None
        if not isinstance(attachments, dict):
            continue
        for name in ("accepted_mime_types", "image_mime_types"):
            values = attachments.get(name)
            if isinstance(values, list):
                found.update(value.lower() for value in values if isinstance(value, str))
    return found


class _Calls:
    """The JSON calls of an upload on the turn's session, bounded in size and time."""

    def __init__(self, session, upstream: Upstream, headers: dict, deadline: float):
        self.session, self.upstream, self.deadline = session, upstream, deadline
        self.headers = {**headers, "Accept": "application/json",
                        "Content-Type": "application/json"}

    def _send(self, method: str, path: str, body: dict | None, step: str):
        with upstream_errors(step), timed_upstream("file_upload"):
            return self.session.request(method, self.upstream.url(path), json=body,
                                        headers=self.headers, stream=True,
                                        timeout=seconds_left(self.deadline, "the file upload"))

    def json(self, method: str, path: str, body: dict | None, *, step: str) -> dict:
        response = self._send(method, path, body, step)
        try:
            raw = _bounded(response, step)
        finally:
            response.close()
        if not 200 <= response.status_code < 300:
            raise from_upstream(response.status_code, raw, response.headers)
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError(f"{step}: the upstream answer is not a JSON object",
                                "upstream_bad_answer")
        return answer

    def processing(self, body: dict) -> None:
        """Read the NDJSON processing events until the file is ready (see the module doc)."""
        step = "file upload: processing"
        response = self._send("POST", "/files/process_upload_stream", body, step)
        try:
            if response.status_code == 404:
                return  # an upstream without the processing stream: /uploaded was the end
            raw = _bounded(response, step)
            if not 200 <= response.status_code < 300:
                raise from_upstream(response.status_code, raw, response.headers)
        finally:
            response.close()
        for number, line in enumerate(raw.splitlines()):
            if number >= MAX_PROCESSING_EVENTS:
                break
            event = _json_or_none(line)
            name = str(event.get("event", "")) if isinstance(event, dict) else ""
            if name == "file.processing.error" or name.endswith(".failed"):
                raise UpstreamError("file upload: the upstream could not process the file",
                                    "upload_failed")
            if name.startswith("file.processing.") and (
                    event.get("progress") == 100 or name.endswith(".completed")):
                return
        raise UpstreamError("file upload: the processing stream ended before the file was "
                            "ready", "upload_failed")


def _json_or_none(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None


def _bounded(response, step: str) -> bytes:
    body = bytearray()
    with upstream_errors(step):
        for chunk in response.iter_content():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise UpstreamError(f"{step}: the upstream answer is too large",
                                    "upstream_bad_answer")
    return bytes(body)
