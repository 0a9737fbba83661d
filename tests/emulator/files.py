"""The backend's file store: upload endpoints, the blob sink, and the files messages refer to.

The upload flow (chatgpt_web/upstream/uploads.py, docs/files.md):

* `POST {api}/files {file_name, file_size, use_case[, mime_type, width, height]}` ->
  `{"status": "success", "file_id", "upload_url"}`. Ids look like the site's: `file_0000…`
  (asset pointer `sediment://`) in the 2026 dialect, `file-…` (`file-service://`) in 2024.
* `PUT /blob/<file_id>?…&sig=…` (the upload URL, on this origin): needs `x-ms-blob-type:
  BlockBlob`, `x-ms-version` and exactly `file_size` bytes; 201.
* `POST {api}/files/<id>/uploaded {}` -> `{"status": "success", "file_id"}`.
* `POST {api}/files/process_upload_stream {file_id, file_name, use_case, …}` (2026 only) ->
  NDJSON `file.processing.started`, then `file.processing.metadata` with progress 100.

A write whose messages point at files (`image_asset_pointer` parts, `metadata.attachments`)
is checked by `check_message_files()`: every file must exist, belong to the writing account and
have its bytes, else 404 `{"detail": "File not found"}`; an image part outside a
`multimodal_text` message is a 400. `describe()` is what the emulated model says it received (name,
type, size and SHA-256 of the bytes), so tests can see that the real bytes travelled.

`FileStore` holds every file of the emulated site, as the site has one file service: the
uploads above and the files the emulator makes itself (the images the model draws, images.py):
`put(data, name, mime_type, owner, ...) -> file_id`, `get(file_id)`, `generated()`. A file's
id tells its pointer kind: `file_0000…` is `sediment://`, `file-…` is `file-service://`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import threading
from dataclasses import dataclass

from flask import Blueprint, Response, abort, current_app, request

from . import bearer
from .failures import json_response

MAX_FILE_BYTES = 64 << 20
USE_CASES = ("multimodal", "my_files", "ace_upload", "profile_picture")
POINTER_SCHEMES = ("file-service://", "sediment://")

api = Blueprint("files", __name__)  # mounted under /backend-api and /api
blobs = Blueprint("blobs", __name__)  # the blob storage the upload URLs point at


@dataclass
class StoredFile:
    file_id: str
    owner: str
    name: str
    size: int  # the declared size
    mime_type: str
    use_case: str
    signature: str
    data: bytes | None = None  # None until the PUT arrived
    confirmed: bool = False  # POST /files/{id}/uploaded
    generated: bool = False  # made by the emulator (put), not uploaded
    conversation_id: str | None = None  # the conversation a generated image was drawn in

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data or b"").hexdigest()

    @property
    def scheme(self) -> str:
        """The asset pointer kind of this file's id."""
        return "file-service" if self.file_id.startswith("file-") else "sediment"

    @property
    def pointer(self) -> str:
        return f"{self.scheme}://{self.file_id}"


class FileStore:
    """Files by id, per account, with a counter of creations tests can read."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self.restore_defaults()

    def restore_defaults(self) -> None:
        # Types `GET /models` lists in product_features (None: the list has none).
        self.accepted_types: tuple[str, ...] | None = None
        # The processing stream reports file.processing.error.
        self.fail_processing = False
        # Upload URLs point at this origin instead of the emulator's own (an off-site blob store).
        self.upload_origin: str | None = None
        # The blob sink refuses every PUT with 500 and a body of this many bytes.
        self.blob_error_bytes: int | None = None

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
        self.restore_defaults()

    def new_id(self, dialect: str) -> str:
        number = next(self._numbers)
        if dialect == "2024":
            return f"file-{number:06d}{secrets.token_hex(8)}"
        return f"file_0000{number:08x}{secrets.token_hex(10)}"

    def create(self, owner: str, name: str, size: int, mime_type: str, use_case: str,
               dialect: str) -> StoredFile:
        stored = StoredFile(self.new_id(dialect), owner, name, size, mime_type, use_case,
                            secrets.token_urlsafe(16))
        with self._lock:
            self._files[stored.file_id] = stored
        return stored

    def put(self, data: bytes, name: str, mime_type: str, owner: str, dialect: str = "2026",
            conversation_id: str | None = None) -> str:
        """Store a complete file (one the emulator made) and return its id."""
        stored = self.create(owner, name, len(data), mime_type, "multimodal", dialect)
        stored.data, stored.confirmed, stored.generated = data, True, True
        stored.conversation_id = conversation_id
        return stored.file_id

    def get(self, file_id: str) -> StoredFile | None:
        with self._lock:
            return self._files.get(file_id)

    @property
    def created(self) -> int:
        """How many uploads were started."""
        with self._lock:
            return sum(not f.generated for f in self._files.values())

    def uploaded(self) -> list[StoredFile]:
        """The uploads whose bytes arrived, in order."""
        with self._lock:
            return [f for f in self._files.values() if f.data is not None and not f.generated]

    def generated(self) -> list[StoredFile]:
        """The files the emulator made (drawn images), in order."""
        with self._lock:
            return [f for f in self._files.values() if f.generated]


def _emulator():
    return current_app.extensions["emulator"]


def _owned(file_id: str, owner: str) -> StoredFile:
    stored = _emulator().files.get(file_id)
    if stored is None or stored.owner != owner:
        abort(json_response(404, {"detail": "File not found"}))
    return stored


@api.post("/files")
def create_file():
    owner = bearer.account()
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        abort(json_response(400, {"detail": "the body must be a JSON object"}))
    name, size, use_case = body.get("file_name"), body.get("file_size"), body.get("use_case")
    if not isinstance(name, str) or not name:
        abort(json_response(422, {"detail": "file_name is required"}))
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_FILE_BYTES:
        abort(json_response(422, {"detail": "file_size must be a positive integer"}))
    if use_case not in USE_CASES:
        abort(json_response(422, {"detail": f"use_case must be one of {', '.join(USE_CASES)}"}))
    emulator = _emulator()
    stored = emulator.files.create(owner, name, size, str(body.get("mime_type") or ""),
                                   use_case, emulator.switches.dialect)
    origin = emulator.files.upload_origin or request.host_url.rstrip("/")
    upload_url = (f"{origin}/blob/{stored.file_id}?sv=2020-04-08&sr=b&sp=cw"
                  f"&sig={stored.signature}")
    return json_response(200, {"status": "success", "upload_url": upload_url,
                               "file_id": stored.file_id})


@blobs.put("/blob/<file_id>")
def put_blob(file_id: str):
    files = _emulator().files
    if files.blob_error_bytes is not None:
        return Response(b"<Error>" + b"x" * files.blob_error_bytes, 500,
                        content_type="application/xml")
    stored = files.get(file_id)
    if stored is None or request.args.get("sig") != stored.signature:
        return Response("<Error><Code>AuthenticationFailed</Code></Error>", 403,
                        content_type="application/xml")
    if request.headers.get("x-ms-blob-type") != "BlockBlob" \
            or not request.headers.get("x-ms-version"):
        return Response("<Error><Code>MissingRequiredHeader</Code></Error>", 400,
                        content_type="application/xml")
    data = request.get_data()
    if len(data) != stored.size:
        return Response("<Error><Code>InvalidHeaderValue</Code></Error>", 400,
                        content_type="application/xml")
    stored.data = data
    return Response(b"", 201)


@api.post("/files/<file_id>/uploaded")
def confirm_upload(file_id: str):
    stored = _owned(file_id, bearer.account())
    if stored.data is None:
        abort(json_response(400, {"detail": "File upload has not completed"}))
    stored.confirmed = True
    return json_response(200, {"status": "success", "file_id": file_id})


@api.post("/files/process_upload_stream")
def process_upload_stream():
    emulator = _emulator()
    if emulator.switches.dialect != "2026":
        abort(json_response(404, {"detail": "Not Found"}))
    owner = bearer.account()
    body = request.get_json(force=True, silent=True)
    file_id = body.get("file_id") if isinstance(body, dict) else None
    stored = _owned(file_id if isinstance(file_id, str) else "", owner)
    if stored.data is None or emulator.files.fail_processing:
        events = [{"file_id": file_id, "event": "file.processing.started", "progress": 10},
                  {"file_id": file_id, "event": "file.processing.error", "progress": 0,
                   "message": "The file could not be processed"}]
    else:
        extra = {"mime_type": stored.mime_type, "size_bytes": len(stored.data)}
        events = [{"file_id": file_id, "event": "file.processing.started", "progress": 10},
                  {"file_id": file_id, "event": "file.processing.metadata", "progress": 100,
                   "extra": extra}]
    text = "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events)
    return Response(text, 200, content_type="application/x-ndjson")


# --- files in messages ---------------------------------------------------------------------------

def _file_ids(message: dict) -> list[str]:
    """The file ids a message refers to (pointers first, then attachments), checked for shape."""
    content = message.get("content") or {}
    ids = []
    for part in content.get("parts") or []:
        if isinstance(part, str):
            continue
        if not isinstance(part, dict) or part.get("content_type") != "image_asset_pointer":
            abort(json_response(400, {"detail": "unsupported content part"}))
        if content.get("content_type") != "multimodal_text":
            abort(json_response(400, {"detail": "image parts need content_type "
                                                "multimodal_text"}))
        pointer = part.get("asset_pointer")
        scheme = next((s for s in POINTER_SCHEMES if isinstance(pointer, str)
                       and pointer.startswith(s)), None)
        if scheme is None:
            abort(json_response(400, {"detail": "asset_pointer must be file-service:// or "
                                                "sediment://"}))
        ids.append(pointer[len(scheme):])
    attachments = (message.get("metadata") or {}).get("attachments") or []
    if not isinstance(attachments, list):
        abort(json_response(400, {"detail": "metadata.attachments must be a list"}))
    for entry in attachments:
        if not isinstance(entry, dict) or not all(
                key in entry for key in ("id", "name", "size", "mime_type")):
            abort(json_response(400, {"detail": "each attachment needs id, name, size and "
                                                "mime_type"}))
        ids.append(entry["id"])
    return ids


def check_message_files(store: FileStore, owner: str, messages: list[dict]) -> None:
    """Abort unless every file the messages refer to is this account's and complete."""
    for message in messages:
        for file_id in _file_ids(message):
            stored = store.get(file_id) if isinstance(file_id, str) else None
            if stored is None or stored.owner != owner or stored.data is None:
                abort(json_response(404, {"detail": "File not found"}))


def describe(store: FileStore, message: dict | None) -> str:
    """What the model received with `message`: one line per distinct file."""
    if message is None:
        return ""
    lines, seen = [], set()
    for file_id in _file_ids(message):
        if file_id in seen:
            continue
        seen.add(file_id)
        stored = store.get(file_id)
        if stored is not None and stored.data is not None:
            lines.append(f"[received {stored.name} {stored.mime_type} {len(stored.data)} bytes "
                         f"sha256={stored.sha256}]")
    return "".join("\n" + line for line in lines)
