"""Image turns and the download endpoints: what the site does when the model draws.

A write asks for an image when its top-level `system_hints` holds "picture_v2" (the web app's
image mode), or when the last user message begins like a request for one ("Draw ...", "Generate
an image ..."). A user message may carry pictures to edit (`multimodal_text` with
`image_asset_pointer` parts of files uploaded to the account, checked by files.py as any
write's): the tool draws all the same.

Such a turn, as on the real site, always hands off: the write's stream carries the preamble and
`stream_handoff`, then `POST /f/conversation/resume` streams the image tool's message (author
role "tool", an obfuscated tool name, `multimodal_text` content whose part is an
`image_asset_pointer`). The pointer arrives by a `replace` on
`/message/content/parts/0/asset_pointer`, then the closing patch. With `switches.handoff = "poll"`
the resume answers 404 and the finished tool message is in `GET /conversation/{id}`.

The drawn image is kept in the emulator's one file store (files.py, beside the uploads), as a
file of the account and its conversation. Pointers are `sediment://file_<hex>` (2026);
`images.scheme = "file-service"` makes them the older `file-service://file-<id>`. Each pointer is
downloadable by its owner only, through the endpoint of its kind:

    GET /files/download/{file_id}?conversation_id=...&inline=false  (sediment, conversation needed)
    GET /files/{file_id}/download                                     (file-service)
        -> {"status": "success",
            "download_url": "<origin>/backend-api/estuary/content?id=...&ts=...&sig=..."}
    GET /estuary/content?id=...&ts=...&sig=...  -> the PNG (owner's bearer + a valid signature)

The PNG is made here, deterministic for (prompt, conversation id): `tiny_png(seed)`.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import struct
import time
import uuid
import zlib

from flask import Blueprint, Response, current_app, request

from . import bearer, streams, turns
from .conversations import make_message, message_text
from .failures import json_response
from .files import FileStore, StoredFile

blueprint = Blueprint("images", __name__)

TOOL_NAME = "t2uay3k.sj1i4kz"  # the image tool's author name: an obfuscated per-build hash
PNG_SIDE = 8
LINK_LIFETIME = 300  # seconds an estuary download URL stays valid
_ASKS_FOR_IMAGE = re.compile(r"^\s*(draw|paint|generate an image|create an image|make an image)"
                             r"\b", re.I)


class ImageTool:
    """The image tool's knobs and captions; what it draws goes to `store` (the one file store)."""

    def __init__(self, files: FileStore) -> None:
        self.store = files
        self.captions: dict[str, dict] = {}  # conversation id -> the text after its image
        self.defaults()

    def defaults(self) -> None:
        """The knobs tests turn: the pointer kind; a refusal the model answers instead of
        drawing; a caption it writes after the image; a download URL to name instead of the
        estuary's (e.g. a foreign host)."""
        self.scheme = "sediment"
        self.refusal: str | None = None
        self.caption: str | None = None
        self.download_url: str | None = None

    def add(self, owner: str, conversation_id: str, data: bytes) -> str:
        """Keep the drawn PNG `data` as a file of `owner`; return its asset pointer."""
        file_id = self.store.put(data, "image.png", "image/png", owner,
                                 dialect="2024" if self.scheme == "file-service" else "2026",
                                 conversation_id=conversation_id)
        return self.store.get(file_id).pointer

    def clear(self) -> None:
        """The knobs' defaults and no captions (the files are the file store's to forget)."""
        self.captions.clear()
        self.defaults()


def tiny_png(seed: bytes, side: int = PNG_SIDE) -> bytes:
    """A valid `side`x`side` RGB PNG whose pixels come from SHA-256(seed)."""
    digest = hashlib.sha256(seed).digest()
    rows = b"".join(b"\x00" + bytes(digest[(x * 3 + y + k) % 32]
                                    for x in range(side) for k in range(3))
                    for y in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def wants_image(body) -> bool:
    """Whether a write asks the model to draw (see the module docstring)."""
    if not isinstance(body, dict):
        return False
    hints = body.get("system_hints")
    if isinstance(hints, list) and "picture_v2" in hints:
        return True
    users = [m for m in body.get("messages") or []
             if isinstance(m, dict) and (m.get("author") or {}).get("role") == "user"]
    return bool(users) and bool(_ASKS_FOR_IMAGE.match(message_text(users[-1])))


def image_turn(emulator, owner: str, chat) -> streams.Turn:
    """Apply an image write: the tree gets the tool's finished message (the image) where the
    answer would be (nothing when a blocked moderation withholds the answer)."""
    turn = turns.apply(emulator.conversations, owner, chat, emulator.switches)
    store = emulator.images
    if turn.assistant is None:
        return turn
    if store.refusal is not None:  # the model declines: a plain text answer, no tool call
        with emulator.conversations.lock:
            turn.assistant["content"]["parts"] = [store.refusal]
            turn.new_text = store.refusal
        return turn
    prompt = message_text(turn.input_message) if turn.input_message else ""
    conversation = emulator.conversations.get(turn.conversation_id)
    with emulator.conversations.lock:
        node = conversation.mapping[conversation.current_node]
        seed = f"{prompt}\n{turn.conversation_id}".encode()
        data = tiny_png(seed)
        pointer = emulator.images.add(owner, turn.conversation_id, data)
        answer = turn.assistant
        tool = make_message("tool", [_image_part(pointer, len(data))], message_id=answer["id"],
                            content_type="multimodal_text", end_turn=True,
                            create_time=time.time(), metadata={
                                **answer["metadata"], "image_gen_title": prompt[:40],
                                "finish_details": dict(streams.STOP), "is_complete": True})
        tool["author"]["name"] = TOOL_NAME
        node.message = tool
        turn.assistant, turn.new_text = tool, ""
        if store.caption is not None:
            tool["end_turn"] = None
            caption = make_message("assistant", [store.caption], end_turn=True,
                                   create_time=time.time(), metadata={
                                       **answer["metadata"], "is_complete": True,
                                       "finish_details": dict(streams.STOP)})
            conversation.current_node = conversation.add(caption, node.id).id
            store.captions[turn.conversation_id] = caption
    return turn


def _image_part(pointer: str, size: int) -> dict:
    return {"content_type": "image_asset_pointer", "asset_pointer": pointer, "size_bytes": size,
            "width": PNG_SIDE, "height": PNG_SIDE, "fovea": None,
            "metadata": {"dalle": None, "gizmo": None, "emu_omit_glimpse_image": None,
                         "generation": {"gen_id": uuid.uuid4().hex, "gen_size": "image",
                                        "seed": None, "parent_gen_id": None,
                                        "height": PNG_SIDE, "width": PNG_SIDE,
                                        "transparent_background": False,
                                        "serialization_title": "Image Generation Output"},
                         "container_pixel_height": PNG_SIDE, "container_pixel_width": PNG_SIDE}}


def is_image(turn: streams.Turn) -> bool:
    return (turn.assistant or {}).get("author", {}).get("role") == "tool"


def resumed_leg(store: ImageTool, turn: streams.Turn, resume_token: str):
    """What `/f/conversation/resume` streams for an image turn (see the module docstring), with
    the caption after the image when there is one."""
    cid = turn.conversation_id
    tool = turn.assistant
    pointer = tool["content"]["parts"][0]["asset_pointer"]
    channel = len([m for m in turn.echoed if m["author"]["role"] == "system"])
    yield from streams._preamble_2026(turn, resume_token)
    yield streams.sse_json({"type": "conversation_async_status", "conversation_id": cid,
                            "async_status": 7})
    drawing = {**tool, "status": "in_progress", "end_turn": None,
               "content": {"content_type": "multimodal_text",
                           "parts": [{**tool["content"]["parts"][0], "asset_pointer": None}]},
               "metadata": {key: value for key, value in tool["metadata"].items()
                            if key not in ("finish_details", "is_complete")}}
    yield streams.sse_json({"v": {"message": drawing, "conversation_id": cid}, "c": channel},
                           event="delta")
    yield streams.sse_json({"p": "/message/content/parts/0/asset_pointer", "o": "replace",
                            "v": pointer}, event="delta")
    yield streams.sse_json({"p": "", "o": "patch", "v": [
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
        {"p": "/message/end_turn", "o": "replace", "v": tool["end_turn"]},
        {"p": "/message/metadata", "o": "append",
         "v": {"is_complete": True, "finish_details": dict(streams.STOP)}}]}, event="delta")
    caption = store.captions.get(cid)
    if caption is not None:
        yield streams.sse_json({"v": {"message": caption, "conversation_id": cid},
                                "c": channel + 1}, event="delta")
    if turn.title:
        yield streams.sse_json({"type": "title_generation", "title": turn.title,
                                "conversation_id": cid})
    metadata = {**streams._server_metadata(turn), "tool_invoked": True, "tool_name": "image_gen",
                "fast_convo": False}
    yield streams.sse_json({"type": "server_ste_metadata", "metadata": metadata,
                            "conversation_id": cid})
    yield streams.sse_json({"type": "message_stream_complete", "conversation_id": cid})
    yield streams.DONE


# --- downloads ----------------------------------------------------------------------------------

def _emulator():
    return current_app.extensions["emulator"]


def _signature(file_id: str, stamp: str) -> str:
    return hmac.new(_emulator().secret, f"estuary:{file_id}:{stamp}".encode(),
                    hashlib.sha256).hexdigest()


def _download_answer(file_id: str) -> Response:
    stamp = str(int(time.time()))
    url = _emulator().images.download_url or (
        f"{request.host_url}backend-api/estuary/content?id={file_id}&ts={stamp}&p=fs&cid=1"
        f"&sig={_signature(file_id, stamp)}")
    return json_response(200, {"status": "success", "download_url": url, "metadata": {},
                               "file_name": f"{file_id}.png", "creation_time": None})


def _not_found() -> Response:
    return json_response(404, {"detail": "File not found"})


def _owned(file_id: str, scheme: str) -> StoredFile | Response:
    owner = bearer.account()
    found = _emulator().files.get(file_id)
    if found is None or found.owner != owner or found.scheme != scheme or found.data is None:
        return _not_found()
    return found


@blueprint.get("/files/download/<file_id>")
def download(file_id: str):
    """A sediment file's download URL; the conversation it belongs to must be named."""
    found = _owned(file_id, "sediment")
    if isinstance(found, Response):
        return found
    if request.args.get("conversation_id") != found.conversation_id:
        return _not_found()
    return _download_answer(file_id)


@blueprint.get("/files/<file_id>/download")
def legacy_download(file_id: str):
    found = _owned(file_id, "file-service")
    if isinstance(found, Response):
        return found
    return _download_answer(file_id)


@blueprint.get("/estuary/content")
def estuary_content():
    owner = bearer.account()
    file_id, stamp = request.args.get("id", ""), request.args.get("ts", "")
    found = _emulator().files.get(file_id)
    if (found is None or found.owner != owner or found.data is None or not stamp.isdigit()
            or int(stamp) + LINK_LIFETIME < time.time()
            or not hmac.compare_digest(request.args.get("sig", ""),
                                       _signature(file_id, stamp))):
        return json_response(403, {"detail": "Invalid or expired signature"})
    return Response(found.data, 200, content_type="image/png",
                    headers={"Cache-Control": "private, max-age=299"})
