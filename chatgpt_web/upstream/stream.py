"""The conversation stream: SSE bytes -> events -> ONE reducer for every body format.

docs/protocol.md describes the grammar. Legacy format: every `data:` line carries the whole
message so far. Delta encoding "v1" (announced by an `event: delta_encoding` header): JSON-patch
deltas `{p, o, v, c}` build one message per counter `c`; a frame with only `v` reuses the last
path and op, `c` is carried over, and typed frames (`{"type": ...}`) say what happens around the
answer: title, model, quotas, hand-off to another transport, errors, moderation.

The reducer keeps the visible answer of the turn (assistant messages addressed to "all", not
reasoning, not tool calls) and emits only what is new after each event, so the text deltas it
returns add up to the final text. Reasoning is kept apart (`Completion.reasoning`).
"""
from __future__ import annotations

import codecs
import copy
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any

from .. import json_codec
from ..errors import ApiError, ContentBlocked, RateLimited, UpstreamError, seconds_left

_HEARTBEAT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?$")
_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_SEPARATOR = "\n\n"  # between visible messages of one turn (e.g. before and after a tool call)
# Longest line, and longest event, accepted from the upstream (characters; MAX_UPSTREAM_EVENT_BYTES
# sets it per service). A caller may choose a reverse_proxy it controls, which could otherwise
# send one endless line and grow this process without bound.
DEFAULT_MAX_EVENT = 1 << 20


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event: its `event:` name (or None) and its data lines joined by newlines."""

    event: str | None
    data: str


@dataclass(frozen=True)
class TextDelta:
    """A new piece of the visible answer."""

    text: str


@dataclass
class Completion:
    """The reduced answer of one stream."""

    text: str
    conversation_id: str | None
    message_id: str | None
    finish_type: str | None
    model_slug: str | None = None   # the model that answered (it may differ from the one asked)
    title: str | None = None        # the title the upstream gave a new conversation
    banner: Banner | None = None    # e.g. account_sharing_degrade: answers from a lesser model
    reasoning: str | None = None    # the reasoning shown (thoughts, analysis); never in `text`
    # The slug the answering message's own metadata names: a public slug (`gpt-5-2`) where
    # model_slug may be server_ste_metadata's internal name (`i-mini`).
    message_model_slug: str | None = None
    # Asset pointers of the images the turn drew (`sediment://...`), in order (image_pointers).
    images: tuple[str, ...] = ()

    def continuing(self, earlier: Completion | None) -> Completion:
        """This leg's completion with what the earlier legs of the same answer said about the
        turn: a continuation (`max_tokens`) streams no title or banner of its own."""
        if earlier is None:
            return self
        reasoning = "\n\n".join(r for r in (earlier.reasoning, self.reasoning) if r) or None
        return replace(self, title=self.title or earlier.title,
                       banner=self.banner or earlier.banner,
                       model_slug=self.model_slug or earlier.model_slug, reasoning=reasoning,
                       message_model_slug=self.message_model_slug or earlier.message_model_slug,
                       images=earlier.images + self.images)


def _split_lines(text: str) -> list[str]:
    # Most streams end lines with "\n" alone, which str.split handles much faster than the regex.
    return _LINE_BREAK.split(text) if "\r" in text else text.split("\n")


def _too_long(max_event: int) -> UpstreamError:
    return UpstreamError(f"the upstream sent a line or event longer than {max_event} characters",
                         "upstream_bad_answer")


def _is_payload(text: str) -> bool:
    if text == "[DONE]":
        return True
    try:
        json_codec.loads(text)
    except ValueError:
        return False
    return True


def _dispatch(name: str | None, data: list[str]) -> Iterator[SseEvent]:
    joined = "\n".join(data)
    # Some servers (and aurora's fixtures) omit the blank line between events, which glues
    # several one-line JSON payloads into one event; split them when that is what happened.
    if len(data) > 1 and not _is_payload(joined) and all(_is_payload(line) for line in data):
        for line in data:
            yield SseEvent(name, line)
    else:
        yield SseEvent(name, joined)


class SseParser:
    """Server-sent events from network chunks split at arbitrary byte positions, one chunk at a
    time: `feed(chunk)` returns the events that chunk completed, `close()` the last one.

    :raise UpstreamError: upstream_bad_answer for a line or an event over `max_event` characters.
    """

    def __init__(self, max_event: int = DEFAULT_MAX_EVENT):
        self.max_event = max_event
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""  # the start of a line whose end has not arrived yet
        self._name: str | None = None
        self._data: list[str] = []
        self._size = 0  # characters of the event so far
        self._decoder_holds_bytes = False

    def _decode(self, chunk: bytes) -> str:
        text = self._decoder.decode(chunk)
        self._decoder_holds_bytes = bool(self._decoder.getstate()[0])
        return text

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._decoder_holds_bytes:  # the end of a character split across chunks is pending
            text = self._decode(chunk)
        else:
            try:
                text = chunk.decode()  # the usual chunk: whole characters, without a frame
            except UnicodeDecodeError:  # a split character or invalid bytes: the decoder's way
                text = self._decode(chunk)
        pending = self._pending + text
        if "\n" not in text and "\r" not in text and not self._pending.endswith("\r"):
            # No line ends in this chunk (a long event arriving in pieces): re-splitting the
            # whole pending line for every piece would cost quadratic time in its length.
            if len(pending) > self.max_event:
                raise _too_long(self.max_event)
            self._pending = pending
            return []
        # A trailing "\r" may be the first half of "\r\n" split across chunks: keep it back.
        held = "\r" if pending.endswith("\r") else ""
        text = pending[: len(pending) - len(held)] if held else pending
        *complete, pending = text.split("\n") if "\r" not in text else _split_lines(text)
        self._pending = pending + held
        # No line can be longer than the text it was split from (the usual case: a short chunk).
        if len(text) >= self.max_event and (
                len(self._pending) > self.max_event
                or any(len(line) > self.max_event for line in complete)):
            raise _too_long(self.max_event)
        return self._events(complete)

    def close(self) -> list[SseEvent]:
        """The events the end of the stream completes (a last line or event left unended)."""
        tail = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        events = self._events(_split_lines(tail.rstrip("\r"))) if tail else []
        if self._data:
            events += _dispatch(self._name, self._data)
        self._name, self._data, self._size = None, [], 0
        return events

    def _events(self, lines: list[str]) -> list[SseEvent]:
        events: list[SseEvent] = []
        name, data, size = self._name, self._data, self._size
        for line in lines:
            if not line:
                if len(data) == 1:  # the usual event: one data line
                    events.append(SseEvent(name, data[0]))
                elif data:
                    events += _dispatch(name, data)
                name, data, size = None, [], 0
                continue
            size += len(line)
            if size > self.max_event:  # many short data: lines that add up to one endless event
                raise _too_long(self.max_event)
            if line.startswith("data: "):  # the usual line, without partition()
                data.append(line[6:])
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
        self._name, self._data, self._size = name, data, size
        return events


def iter_sse(chunks: Iterable[bytes], max_event: int = DEFAULT_MAX_EVENT) -> Iterator[SseEvent]:
    """Decode server-sent events from network chunks split at arbitrary byte positions; each
    event as soon as the chunk that completes it is read.

    :raise UpstreamError: upstream_bad_answer for a line or an event over `max_event` characters.
    """
    for events in _event_batches(chunks, SseParser(max_event)):
        yield from events


def bounded_chunks(chunks: Iterable[bytes], deadline: float, max_bytes: int) -> Iterator[bytes]:
    """`chunks` (a response's body, as read) while the answer is within its deadline
    (time.monotonic()) and `max_bytes` in all (MAX_UPSTREAM_ANSWER_BYTES: a hostile
    reverse_proxy never ends).

    :raise UpstreamTimeout: the deadline passed. :raise UpstreamError: upstream_bad_answer.
    """
    received = 0
    for chunk in chunks:
        if time.monotonic() >= deadline:  # seconds_left(deadline), without a call per chunk
            seconds_left(deadline)
        received += len(chunk)
        if received > max_bytes:
            raise UpstreamError(f"the upstream answer is longer than {max_bytes} bytes",
                                "upstream_bad_answer")
        yield chunk


def relay(chunks: Iterable[bytes], reducer: StreamReducer,
          max_event: int = DEFAULT_MAX_EVENT) -> Iterator[TextDelta]:
    """The text an upstream stream adds, fed to `reducer` chunk by chunk, until it is done.

    What the events of one chunk add is one TextDelta: they arrived together, so joining them
    delays none of them, and a face makes one write for them rather than one per event (a busy
    reader finds several of the site's small events in one network read).
    :raise ApiError: what `reducer` or the parser raise, after the text that came before it.
    """
    for events in _event_batches(chunks, SseParser(max_event)):
        pieces: list[TextDelta] = []
        try:
            for event in events:
                pieces += reducer.feed(event)
                if reducer._done and reducer.done:  # the property's call only once it may be
                    break
        except ApiError:
            if pieces:
                yield _joined(pieces)
            raise
        if pieces:
            yield pieces[0] if len(pieces) == 1 else _joined(pieces)
        if reducer._done and reducer.done:
            return


def _event_batches(chunks: Iterable[bytes], parser: SseParser) -> Iterator[list[SseEvent]]:
    """The events each chunk completes, then those the end of the stream completes."""
    # map() and chain() run in C: no Python frame is resumed per chunk, as a generator's would be.
    return chain(map(parser.feed, chunks), _at_the_end(parser.close))


def _at_the_end(close: Callable[[], list[SseEvent]]) -> Iterator[list[SseEvent]]:
    yield close()


def _joined(pieces: list[TextDelta]) -> TextDelta:
    return pieces[0] if len(pieces) == 1 else TextDelta("".join(piece.text for piece in pieces))


# --- delta encoding v1: JSON pointer operations -------------------------------------------------

class _Text:
    """A string grown by appends at a cost proportional to each append.

    `str + str` copies the whole string, so a message built by 20,000 appends would cost time
    quadratic in its length; appended text is kept here as pieces, joined when it is read.
    """

    __slots__ = ("_pieces", "_length")

    def __init__(self, *pieces: str):
        self._pieces = [piece for piece in pieces if piece]
        self._length = sum(len(piece) for piece in self._pieces)

    def __len__(self) -> int:
        return self._length

    def append(self, piece: str) -> None:
        if piece:
            self._pieces.append(piece)
            self._length += len(piece)

    def __str__(self) -> str:
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""


def _str(value: Any) -> Any:
    """A value read from a reduced tree, with grown strings turned back into `str`."""
    return str(value) if isinstance(value, _Text) else value


def _plain(value: Any) -> Any:
    """A reduced tree with every grown string turned back into `str` (for callers and tests)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return _str(value)


def _combine(existing: Any, value: Any) -> Any:
    """`append`: strings concatenate, lists extend, objects merge keys; anything else is replaced.

    Containers are extended in place and strings grow as `_Text`, so an append costs what it adds.
    """
    if isinstance(value, str) and isinstance(existing, _Text):
        existing.append(value)
        return existing
    if isinstance(value, str) and isinstance(existing, str):
        return _Text(existing, value)
    if isinstance(existing, list):
        existing.extend(value if isinstance(value, list) else [value])
        return existing
    if isinstance(existing, dict) and isinstance(value, dict):
        existing.update(value)
        return existing
    return value


def _tokens(path: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in path.lstrip("/").split("/")]


def _child(container: Any, token: str, next_token: str) -> Any:
    """The child at `token`, created (a list if the next token is an index) when missing."""
    if isinstance(container, list):
        index = int(token)
        while len(container) <= index:
            container.append(None)
        if container[index] is None:
            container[index] = [] if next_token.isdigit() else {}
        return container[index]
    if container.get(token) is None:
        container[token] = [] if next_token.isdigit() else {}
    return container[token]


def _apply(root: Any, path: str, op: str, value: Any) -> Any:
    """Apply one delta operation at JSON pointer `path` of `root` (in place); the new root."""
    if op == "patch":
        for sub in value if isinstance(value, list) else []:
            if isinstance(sub, dict):
                root = _apply(root, sub.get("p", path), sub.get("o", "append"), sub.get("v"))
        return root
    if path == "":
        if op in ("add", "replace"):
            return copy.deepcopy(value)
        if op == "append":
            return _combine(root, copy.deepcopy(value))
        if op == "remove":
            return {}
        if op == "truncate" and isinstance(root, (str, _Text, list)):
            return _str(root)[: int(value)]
        return root
    if not isinstance(root, (dict, list)):
        root = {}
    tokens = _tokens(path)
    parent = root
    for token, next_token in zip(tokens[:-1], tokens[1:], strict=True):
        parent = _child(parent, token, next_token)
        if not isinstance(parent, (dict, list)):
            return root  # a path through a string or number: nothing to apply it to
    _apply_at(parent, tokens[-1], op, copy.deepcopy(value))
    return root


def _apply_at(parent: Any, key: str, op: str, value: Any) -> None:
    if isinstance(parent, list):
        index = len(parent) if key == "-" else int(key)
        if op == "add" and index < len(parent):
            parent.insert(index, value)
            return
        while len(parent) <= index:
            parent.append(None)
        key = index
    existing = parent[key] if isinstance(parent, list) else parent.get(key)
    if op in ("add", "replace"):
        parent[key] = value
    elif op == "append":
        parent[key] = _combine(existing, value)
    elif op == "truncate" and isinstance(existing, (str, _Text, list)):
        parent[key] = _str(existing)[: int(value)]
    elif op == "remove":
        del parent[key]


def apply_operation(root: Any, path: str, op: str, value: Any) -> Any:
    """Apply one delta operation at JSON pointer `path` of `root`; returns the new root."""
    return _plain(_apply(root, path, op, value))


# --- messages -----------------------------------------------------------------------------------

def _field(message: dict, *keys: str) -> Any:
    value: Any = message
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return _str(value)


def _role(message: dict) -> Any:
    return _field(message, "author", "role") or message.get("role")


def _visible_text(message: dict) -> str | None:
    """The text of an assistant message meant for the user, or None for anything else."""
    if _role(message) not in (None, "assistant"):
        return None
    if _field(message, "recipient") not in ("all", None):
        return None  # a tool call
    if _field(message, "channel") == "analysis":
        return None  # reasoning
    content = message.get("content") or {}
    if not isinstance(content, dict):
        return None
    if _str(content.get("content_type", "text")) not in ("text", "multimodal_text"):
        return None
    parts = content.get("parts") or []
    if not isinstance(parts, list):
        return None
    return "".join(_str(part) for part in parts if isinstance(part, (str, _Text)))


def image_pointers(message: dict) -> list[str]:
    """The asset pointers of the images a message of the answer carries: the image tool's
    `multimodal_text` parts of type `image_asset_pointer` (never the user's own uploads)."""
    if _role(message) in ("user", "system"):
        return []
    content = message.get("content")
    if not isinstance(content, dict) or _str(content.get("content_type")) != "multimodal_text":
        return []
    parts = content.get("parts")
    pointers = []
    for part in parts if isinstance(parts, list) else []:
        if isinstance(part, dict) and _str(part.get("content_type")) == "image_asset_pointer":
            pointer = _str(part.get("asset_pointer"))
            if isinstance(pointer, str) and pointer:
                pointers.append(pointer)
    return pointers


def _reasoning_text(message: dict) -> str:
    """What an assistant message says about its reasoning (thoughts, analysis), else ""."""
    if _role(message) not in (None, "assistant"):
        return ""
    content = message.get("content") or {}
    if not isinstance(content, dict):
        return ""
    if _str(content.get("content_type")) == "thoughts":
        thoughts = []
        for thought in content.get("thoughts") or []:
            if isinstance(thought, dict):
                lines = [_str(thought.get(key)) for key in ("summary", "content")]
                thoughts.append("\n".join(line for line in lines if isinstance(line, str) and line))
        return "\n\n".join(thought for thought in thoughts if thought)
    if _field(message, "channel") == "analysis":
        parts = content.get("parts") or []
        return "".join(_str(p) for p in parts if isinstance(p, (str, _Text))) \
            if isinstance(parts, list) else ""
    return ""


def _error_text(payload: dict) -> str | None:
    """The error an in-band frame reports (`error`, `detail`, typed error frames), else None."""
    error = payload.get("error")
    if payload.get("type") in ("error", "conversation_error"):
        error = error or payload.get("message") or payload.get("detail") or payload.get("code") \
            or "the upstream reported an error"
    if error and not payload.get("message") or payload.get("type") in ("error",
                                                                         "conversation_error"):
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail") or error.get("code") or error
        text = error if isinstance(error, str) else json.dumps(error)
    elif isinstance(payload.get("detail"), (str, dict)) and "message" not in payload:
        detail = payload["detail"]
        text = detail if isinstance(detail, str) else str(detail.get("message") or detail)
    else:
        return None
    text = re.sub(r"<[^>]*>", "", text).strip()
    return (text or "the upstream reported an error")[:300]


def _raise_for_error(payload: dict) -> None:
    error = _error_text(payload)
    if error is None:
        return
    if payload.get("error_code") == "usage_limit" or "hit your limit" in error.lower():
        raise RateLimited(f"the account reached its usage limit: {error}", "upstream_rate_limited")
    raise UpstreamError(f"the upstream reported an error: {error}", "upstream_stream_error")


# --- what the upstream says about the turn ----------------------------------------------------

@dataclass(frozen=True)
class HandoffOption:
    """One way to pick up a handed-off answer: `resume_sse_endpoint` or `subscribe_ws_topic`."""

    type: str
    topic_id: str | None = None


@dataclass(frozen=True)
class Handoff:
    """A `stream_handoff` frame: the rest of the turn continues through another transport."""

    conversation_id: str | None
    turn_exchange_id: str | None
    options: tuple[HandoffOption, ...] = ()

    def offers(self, option_type: str) -> bool:
        return any(option.type == option_type for option in self.options)


@dataclass(frozen=True)
class Banner:
    """A banner about the account, e.g. `account_sharing_degrade` (answers from a lesser model)."""

    name: str
    title: str | None = None
    resets_after: str | None = None


def _handoff(payload: dict) -> Handoff:
    options = []
    for option in payload.get("options") or []:
        if isinstance(option, dict) and isinstance(option.get("type"), str):
            topic = option.get("topic_id")
            options.append(HandoffOption(option["type"], topic if isinstance(topic, str) else None))
    return Handoff(_text_or_none(payload.get("conversation_id")),
                   _text_or_none(payload.get("turn_exchange_id")), tuple(options))


def _banner(info: Any) -> Banner | None:
    if not isinstance(info, dict) or not isinstance(info.get("name"), str):
        return None
    resets = info.get("resets_after")
    return Banner(info["name"], _text_or_none(info.get("title")),
                  None if resets is None else str(resets))


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- the reducer -----------------------------------------------------------------------------

class _Entry:
    """One message of the turn: its envelope (`{"message": ..., "conversation_id": ...}`) and
    what the reducer knows about its visible text."""

    __slots__ = ("order", "root", "visible", "length", "sent", "cot")

    def __init__(self, order: int, root: Any):
        self.order = order
        self.root = root
        self.visible = False          # an assistant answer message (not reasoning, not a tool call)
        self.length = 0               # characters of its visible text
        self.sent: _Text | None = None  # the text emitted for it so far (None: nothing yet)
        self.cot = False              # marked as chain of thought by a `cot_token` marker

    @property
    def message(self) -> dict:
        message = self.root.get("message") if isinstance(self.root, dict) else None
        return message if isinstance(message, dict) else {}

    def text(self) -> str | None:
        return None if self.cot else _visible_text(self.message)


_PARTS = "/message/content/parts/"
# Paths whose change can change which messages are visible or what their text is.
_TEXT_PATHS = ("/message/content", "/message/author", "/message/recipient", "/message/channel")
# Slow-path work allowed (characters re-read) per character received, plus a fixed allowance.
_REWORK_PER_CHAR = 4
_REWORK_ALLOWANCE = 1 << 20


class StreamReducer:
    """Reduce one conversation stream (either format) to text deltas and a final Completion.

    Work per event is proportional to what the event adds: appends grow the answer in place and
    only a change that rewrites text already seen (a snapshot, `truncate`, a changed channel)
    re-reads that one message. That re-reading is bounded by what the stream has sent; a stream
    that would make the reducer re-read more than _REWORK_PER_CHAR times its own size is refused.
    """

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self._cumulative: bool | None = None if prefix else True
        self._entries: dict[Any, _Entry] = {}   # message key -> entry, in order of appearance
        self._channels: dict[int, _Entry] = {}  # delta channel `c` -> its current message
        self._last = {"p": "", "o": "add", "c": 0}
        self._current: _Entry | None = None     # the message whose text is being emitted
        self._steady = True                      # the current message's text == what was sent
        # The part of the answer the last event appended to with the carried-over path and op, and
        # its entry; else None. A bare `{"v": "..."}` right after it appends there (most events
        # of an answer are such), so it is applied directly instead of walking the path again.
        self._appending: tuple[_Text, _Entry] | None = None
        self._sent_any = False
        self._received = 0
        self._reworked = 0
        self._done = False
        self._complete = False
        self._awaiting_resume = False
        self.conversation_id: str | None = None
        self.title: str | None = None
        self.encoding: str | None = None        # "v1" when the stream announced delta encoding
        self.resume_token: str | None = None    # the `resume_conversation_token` (a credential)
        self.handoff: Handoff | None = None
        self.server_metadata: dict = {}         # `server_ste_metadata.metadata`
        self.conversation_detail: dict = {}     # `conversation_detail_metadata`
        self.async_status: int | None = None

    @property
    def done(self) -> bool:
        """True once `data: [DONE]` arrived and no hand-off is waiting to be resumed."""
        return self._done and not self._awaiting_resume

    @property
    def handoff_pending(self) -> bool:
        """True when the stream handed the answer off and it has not been resumed yet."""
        return self._awaiting_resume

    def resume_leg(self) -> None:
        """Announce that the events fed next come from the transport the answer was handed to.

        That leg may repeat the hand-off preamble (header, resume token, the snapshots already
        seen): repeated messages are matched by id, so nothing is emitted twice.
        """
        self._awaiting_resume = False
        self._done = False
        self._complete = False
        self._appending = None

    def feed(self, event: SseEvent) -> list[TextDelta]:
        """Apply one event; return the new visible text it produced (possibly nothing).

        :raise ContentBlocked: the moderation withheld the answer.
        :raise RateLimited: the account reached its usage limit (an in-band error).
        :raise UpstreamError: an in-stream error, or a payload that is not JSON.
        """
        data = event.data.strip()
        if self._done or event.event == "ping" or not data or (
                data[0] != "{" and _HEARTBEAT.match(data)):
            return []
        if data == "[DONE]":
            self._done = True
            return []
        self._received += len(data)
        try:
            payload = json_codec.loads(data)
        except ValueError:
            raise UpstreamError("the upstream sent an event that is not JSON",
                                "upstream_bad_stream") from None
        out: list[TextDelta] = []
        appending, self._appending = self._appending, None
        if (appending is not None and type(payload) is dict and len(payload) == 1
                and type(payload.get("v")) is str):
            # More text at the end of the part the last event grew: what `_delta` would do
            # (path, op and channel carry over), without re-walking the path.
            part, entry = appending
            part.append(payload["v"])
            self._grow(entry, payload["v"], out)
            self._appending = appending
            return out
        if isinstance(payload, dict):
            self._read(payload, out)
        elif event.event == "delta_encoding" and isinstance(payload, str):
            self.encoding = payload
        return out

    # --- frames ---------------------------------------------------------------------------------

    def _read(self, payload: dict, out: list[TextDelta]) -> None:
        _raise_for_error(payload)
        self._note_conversation(payload.get("conversation_id"))
        kind = payload.get("type")
        moderation = payload.get("moderation_response")
        if kind == "moderation" or isinstance(moderation, dict):
            if isinstance(moderation, dict) and moderation.get("blocked"):
                raise ContentBlocked("the upstream moderation withheld this answer")
        elif isinstance(kind, str):
            self._typed(kind, payload)
        elif isinstance(payload.get("message"), dict):
            self._snapshot(payload, None, out)   # the legacy format: the whole message each time
        elif any(key in payload for key in ("v", "p", "o", "c")):
            self._delta(payload, out)

    def _typed(self, kind: str, payload: dict) -> None:
        if kind == "title_generation":
            self.title = _text_or_none(payload.get("title")) or self.title
        elif kind == "message_stream_complete":
            self._complete = True
        elif kind == "server_ste_metadata" and isinstance(payload.get("metadata"), dict):
            self.server_metadata = payload["metadata"]
        elif kind == "conversation_detail_metadata":
            self.conversation_detail = payload
        elif kind == "conversation_async_status":
            status = payload.get("async_status")
            self.async_status = status if isinstance(status, int) else self.async_status
        elif kind == "resume_conversation_token":
            self.resume_token = _text_or_none(payload.get("token")) or self.resume_token
        elif kind == "stream_handoff":
            handoff = _handoff(payload)
            if handoff != self.handoff:  # a resumed leg may repeat the frame that sent us there
                self.handoff = handoff
                self._awaiting_resume = True
        elif kind == "message_marker":
            entry = self._entry_by_id(payload.get("message_id"))
            if entry is not None and payload.get("marker") == "cot_token" and entry.sent is None:
                # Chain of thought outside the analysis channel: reasoning, not the answer.
                entry.cot, entry.visible = True, False
        # input_message (the user's own message echoed), search and ad frames: not the answer.

    def _entry_by_id(self, message_id: Any) -> _Entry | None:
        return self._entries.get(message_id) if isinstance(message_id, str) else None

    def _delta(self, delta: dict, out: list[TextDelta]) -> None:
        value = delta.get("v")
        bare = "p" not in delta and "o" not in delta
        if "c" in delta and isinstance(delta["c"], int):
            self._last["c"] = delta["c"]
        if "v" not in delta:
            return  # `{"c": 5}` alone: only moves to message 5
        if bare and isinstance(value, dict) and isinstance(value.get("message"), dict):
            # A snapshot without p/o: `{"v": {"message": ...}, "c": 1}`.
            self._last.update(p="", o="add")
            self._snapshot(value, self._last["c"], out)
            return
        if bare and isinstance(value, str) and self._last["p"] == "":
            # Bare strings after a snapshot (or opening the stream) append to the answer text.
            self._last.update(p=_PARTS + "0", o="append")
        for key in ("p", "o"):
            if key in delta and isinstance(delta[key], str):
                self._last[key] = delta[key]
        self._operate(self._last["c"], self._last["p"], self._last["o"], value, out)

    def _operate(self, channel: int, path: str, op: str, value: Any,
                 out: list[TextDelta]) -> None:
        if op == "patch":
            for sub in value if isinstance(value, list) else []:
                if isinstance(sub, dict):
                    self._operate(channel, _str(sub.get("p", path)), _str(sub.get("o", "append")),
                                  sub.get("v"), out)
            return
        if path == "" and op in ("add", "replace") and isinstance(value, dict):
            _raise_for_error(value)
            if isinstance(value.get("message"), dict):
                self._snapshot(value, channel, out)
                return
        entry = self._channels.get(channel)
        if entry is None:
            entry = self._channels[channel] = self._add_entry(("channel", channel), {})
        entry.root = _apply(entry.root, path, op, value)
        if isinstance(entry.root, dict):
            self._note_conversation(_str(entry.root.get("conversation_id")))
        if op == "append" and isinstance(value, str) and path.startswith(_PARTS):
            parts = _field(entry.message, "content", "parts")
            index = path[len(_PARTS):]
            if isinstance(parts, list) and index == str(len(parts) - 1) and entry.visible:
                self._grow(entry, value, out)  # the answer's text grew at its end
                last = parts[-1]
                if isinstance(last, str):
                    parts[-1] = last = _Text(last)
                if isinstance(last, _Text) and (path, op, channel) == (
                        self._last["p"], self._last["o"], self._last["c"]):
                    self._appending = (last, entry)
                return
        if path in ("", "/message") or path.startswith(_TEXT_PATHS):
            self._changed(entry, out)

    def _add_entry(self, key: Any, root: Any) -> _Entry:
        entry = self._entries[key] = _Entry(len(self._entries), root)
        return entry

    def _snapshot(self, envelope: dict, channel: int | None, out: list[TextDelta]) -> None:
        """A whole message (legacy events, v1 snapshots, messages a resumed leg repeats)."""
        _raise_for_error(envelope)
        self._note_conversation(envelope.get("conversation_id"))
        message = envelope["message"]
        message_id = message.get("id")
        key = message_id if isinstance(message_id, str) and message_id else ("channel", channel)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._add_entry(key, envelope)
        else:
            entry.root = envelope
        if channel is not None:
            self._channels[channel] = entry
        self._changed(entry, out)

    # --- the visible text -----------------------------------------------------------------------

    def _grow(self, entry: _Entry, piece: str, out: list[TextDelta]) -> None:
        """The fast path: `piece` was appended at the end of `entry`'s visible text."""
        before = entry.length
        entry.length += len(piece)
        if entry is self._current and self._steady and self._cumulative is not None:
            self._emit(entry, piece, out)
        elif entry is self._current and self._cumulative is None and self._steady:
            self._decide_cumulative(entry, piece, before, out)
        elif entry is self._current:
            if entry.length >= len(entry.sent or ""):
                self._changed(entry, out)  # it has grown back past what was sent: compare once
        elif before == 0 and self._is_next(entry):
            self._start(entry, piece, out)
        else:
            self._changed(entry, out)

    def _changed(self, entry: _Entry, out: list[TextDelta]) -> None:
        """The slow path: re-read `entry`'s text after a change that was not a plain append."""
        text = entry.text()
        entry.visible = text is not None
        text = text or ""
        entry.length = len(text)
        self._rework(len(text) + len(entry.sent or ""))
        if entry is self._current:
            sent = str(entry.sent)
            if self._cumulative is None:
                self._steady = self.prefix.startswith(text)
                if not self._steady or len(text) >= len(self.prefix):
                    self._decide_cumulative(entry, "", 0, out, text)
            elif text.startswith(sent):
                self._steady = True
                self._emit(entry, text[len(sent):], out)
            else:
                self._steady = False  # rewritten below what was sent: wait until it catches up
        elif text and self._is_next(entry):
            self._start(entry, text, out)
        elif entry.sent is not None and text != str(entry.sent):
            self._current = None  # an earlier part of the answer was rewritten: stop streaming
            self._steady = False

    def _is_next(self, entry: _Entry) -> bool:
        current = self._current
        if current is None:
            return not self._sent_any and self._steady
        return entry.order > current.order

    def _start(self, entry: _Entry, text: str, out: list[TextDelta]) -> None:
        """`entry` is the next message of the answer; `text` is all of its text so far."""
        if self._current is not None and self._current.length < len(self._current.sent or ""):
            self._current = None  # the previous message ended shorter than what was sent
            self._steady = False
            return
        self._current, self._steady = entry, True
        entry.sent = _Text()
        if self._cumulative is None:
            self._decide_cumulative(entry, "", 0, out, text)
            return
        if self._sent_any:
            out.append(TextDelta(_SEPARATOR))
        self._emit(entry, text, out)

    def _emit(self, entry: _Entry, piece: str, out: list[TextDelta]) -> None:
        if piece:
            entry.sent.append(piece)
            self._sent_any = True
            out.append(TextDelta(piece))

    def _decide_cumulative(self, entry: _Entry, piece: str, before: int,
                           out: list[TextDelta], text: str | None = None) -> None:
        """A continuation either repeats the text it continues (cumulative) or sends only what
        follows it; tell which from the first message, comparing only what each event adds."""
        prefix = self.prefix
        if text is None:
            agrees = prefix[before:before + len(piece)] == piece[:len(prefix) - before]
        else:
            agrees = text[:len(prefix)] == prefix[:len(text)]
        if agrees and entry.length <= len(prefix):
            return  # still inside the text we continue: cannot tell yet, send nothing
        whole = text if text is not None else str(entry.message and entry.text() or "")
        self._rework(len(whole))
        self._cumulative = agrees
        self._steady = True
        if agrees:
            entry.sent = _Text(prefix)
            self._emit(entry, whole[len(prefix):], out)
        else:
            self._emit(entry, whole, out)

    def _rework(self, characters: int) -> None:
        self._reworked += characters
        if self._reworked > _REWORK_ALLOWANCE + _REWORK_PER_CHAR * self._received:
            raise UpstreamError("the upstream kept rewriting its answer", "upstream_bad_stream")

    def _note_conversation(self, conversation_id: Any) -> None:
        if isinstance(conversation_id, str) and conversation_id:
            self.conversation_id = conversation_id

    # --- the result -----------------------------------------------------------------------------

    @property
    def model_slug(self) -> str | None:
        """The model that answered: `server_ste_metadata.model_slug`, else the message's own."""
        return _text_or_none(self.server_metadata.get("model_slug")) or self.message_model_slug

    @property
    def message_model_slug(self) -> str | None:
        """The model slug the last visible (answering) message's metadata names, if any."""
        for entry in reversed(self._entries.values()):
            if entry.visible:
                return _text_or_none(_field(entry.message, "metadata", "model_slug"))
        return None

    @property
    def banner(self) -> Banner | None:
        """The account banner of `conversation_detail_metadata` (e.g. a downgrade), if any."""
        return _banner(self.conversation_detail.get("banner_info"))

    @property
    def reasoning(self) -> str | None:
        """The reasoning the upstream showed (thoughts, analysis), never part of the answer."""
        texts = [_reasoning_text(entry.message) for entry in self._entries.values()]
        texts += [_visible_text(entry.message) or ""
                  for entry in self._entries.values() if entry.cot]
        joined = "\n\n".join(text for text in texts if text)
        return joined or None

    @property
    def images(self) -> tuple[str, ...]:
        """The asset pointers of the images drawn in this turn, each once, in order."""
        found: dict[str, None] = {}
        for entry in self._entries.values():
            found.update(dict.fromkeys(image_pointers(entry.message)))
        return tuple(found)

    def _turn_text(self, visible: list[str]) -> str:
        joined = _SEPARATOR.join(text for text in visible if text)
        if self._cumulative is None:
            # Never grew past what we had: cumulative only if it repeats it exactly.
            self._cumulative = joined == self.prefix
        return joined if self._cumulative else self.prefix + joined

    def result(self) -> Completion:
        """The final answer of this stream.

        :raise UpstreamError: the stream ended before the turn did (no [DONE], no completion), or
            it handed the answer off to another transport and was not resumed.
        """
        if self._awaiting_resume:
            raise UpstreamError("the upstream handed the answer off to another transport and "
                                "it was not picked up there", "upstream_stream_broken")
        visible = [(entry, entry.text()) for entry in self._entries.values()]
        visible = [(entry, text) for entry, text in visible if text is not None]
        last = visible[-1][0].message if visible else None
        # Early-2023 messages carry end_turn but no status yet.
        finished = last is not None and last.get("end_turn") is True and _str(last.get(
            "status", "finished_successfully")) == "finished_successfully"
        if not (self._done or self._complete or finished):
            raise UpstreamError("the upstream stream ended before the answer was complete",
                                "upstream_stream_broken")
        if last is None:
            return self._image_result()
        finish = last.get("metadata", {}).get("finish_details") \
            if isinstance(last.get("metadata"), dict) else None
        return Completion(
            text=self._turn_text([text for _, text in visible]),
            conversation_id=self.conversation_id,
            message_id=_text_or_none(_str(last.get("id"))),
            finish_type=_str(finish.get("type")) if isinstance(finish, dict) else None,
            model_slug=self.model_slug,
            message_model_slug=self.message_model_slug,
            title=self.title,
            banner=self.banner,
            reasoning=self.reasoning,
            images=self.images,
        )

    def _image_result(self) -> Completion:
        """A turn whose only answer is the image tool's output (no text).
        :raise UpstreamError: no image either."""
        images = self.images
        if not images:
            raise UpstreamError("the upstream stream carried no answer", "upstream_stream_broken")
        drawn = [entry.message for entry in self._entries.values()
                 if image_pointers(entry.message)]
        return Completion(text=self._turn_text([]), conversation_id=self.conversation_id,
                          message_id=_text_or_none(_str(drawn[-1].get("id"))),
                          finish_type="stop", model_slug=self.model_slug, title=self.title,
                          banner=self.banner, reasoning=self.reasoning, images=images,
                          message_model_slug=self.message_model_slug)
