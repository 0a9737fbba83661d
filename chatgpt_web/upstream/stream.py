"""The conversation stream: SSE bytes -> events -> ONE reducer for both body formats (protocol §3).

Legacy format: every `data:` line carries the whole message so far (`parts[0]` is cumulative).
Delta encoding "v1": JSON-patch-like deltas `{p, o, v, c}` build one object per channel `c`; a
missing `p`, `o` or `c` is carried over from the previous delta, `v` never is.

The reducer keeps the visible answer of the turn (assistant messages addressed to "all", not the
reasoning `analysis` channel, not tool calls) and emits only what is new after each event, so the
text deltas it returns always add up to the final text.
"""
from __future__ import annotations

import codecs
import copy
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ContentBlocked, UpstreamError

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
    model_slug: str | None = None
    title: str | None = None


def _split_lines(text: str) -> list[str]:
    # Most streams end lines with "\n" alone, which str.split handles much faster than the regex.
    return _LINE_BREAK.split(text) if "\r" in text else text.split("\n")


def _too_long(max_event: int) -> UpstreamError:
    return UpstreamError(f"the upstream sent a line or event longer than {max_event} characters",
                         "upstream_bad_answer")


def _lines(chunks: Iterable[bytes], max_line: int = DEFAULT_MAX_EVENT) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    for chunk in chunks:
        text = decoder.decode(chunk)
        if "\n" not in text and "\r" not in text and not pending.endswith("\r"):
            # No line ends in this chunk (a long event arriving in pieces): re-splitting the
            # whole pending line for every piece would cost quadratic time in its length.
            pending += text
            if len(pending) > max_line:
                raise _too_long(max_line)
            continue
        pending += text
        # A trailing "\r" may be the first half of "\r\n" split across chunks: keep it back.
        held = "\r" if pending.endswith("\r") else ""
        *complete, pending = _split_lines(pending[: len(pending) - len(held)])
        pending += held
        if len(pending) > max_line or any(len(line) > max_line for line in complete):
            raise _too_long(max_line)
        yield from complete
    pending += decoder.decode(b"", final=True)
    if pending:
        yield from _split_lines(pending.rstrip("\r"))


def _is_payload(text: str) -> bool:
    if text == "[DONE]":
        return True
    try:
        json.loads(text)
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


def iter_sse(chunks: Iterable[bytes], max_event: int = DEFAULT_MAX_EVENT) -> Iterator[SseEvent]:
    """Decode server-sent events from network chunks split at arbitrary byte positions.

    :raise UpstreamError: upstream_bad_answer for a line or an event over `max_event` characters.
    """
    name: str | None = None
    data: list[str] = []
    size = 0
    for line in _lines(chunks, max_event):
        if not line:
            if data:
                yield from _dispatch(name, data)
            name, data, size = None, [], 0
            continue
        size += len(line)
        if size > max_event:  # many short data: lines that add up to one endless event
            raise _too_long(max_event)
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if data:
        yield from _dispatch(name, data)


# --- delta encoding v1: JSON pointer operations -------------------------------------------------

def _combine(existing: Any, value: Any) -> Any:
    """`append`: strings concatenate, lists extend, objects merge keys; anything else is
    replaced."""
    if isinstance(existing, str) and isinstance(value, str):
        return existing + value
    if isinstance(existing, list):
        return existing + (value if isinstance(value, list) else [value])
    if isinstance(existing, dict) and isinstance(value, dict):
        return {**existing, **value}
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


def apply_operation(root: Any, path: str, op: str, value: Any) -> Any:
    """Apply one delta operation at JSON pointer `path` of `root`; returns the new root."""
    if op == "patch":
        for sub in value if isinstance(value, list) else []:
            root = apply_operation(root, sub.get("p", path), sub.get("o", "append"), sub.get("v"))
        return root
    if path == "":
        if op in ("add", "replace"):
            return copy.deepcopy(value)
        if op == "append":
            return _combine(root, copy.deepcopy(value))
        if op == "remove":
            return {}
        if op == "truncate" and isinstance(root, (str, list)):
            return root[: int(value)]
        return root
    if not isinstance(root, (dict, list)):
        root = {}
    tokens = _tokens(path)
    parent = root
    for token, next_token in zip(tokens[:-1], tokens[1:], strict=True):
        parent = _child(parent, token, next_token)
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
    elif op == "truncate" and isinstance(existing, (str, list)):
        parent[key] = existing[: int(value)]
    elif op == "remove":
        del parent[key]


# --- the reducer -----------------------------------------------------------------------------

def _visible_text(message: dict) -> str | None:
    """The text of an assistant message meant for the user, or None for anything else."""
    author = message.get("author") or {}
    role = author.get("role") if isinstance(author, dict) else None
    role = role or message.get("role")
    content = message.get("content") or {}
    if role not in (None, "assistant") or message.get("recipient", "all") not in ("all", None):
        return None
    if message.get("channel") == "analysis":
        return None
    if content.get("content_type", "text") not in ("text", "multimodal_text"):
        return None
    parts = content.get("parts") or []
    return "".join(part for part in parts if isinstance(part, str))


def _error_text(payload: dict) -> str | None:
    error = payload.get("error")
    if error and not payload.get("message"):
        text = error if isinstance(error, str) else json.dumps(error)
    elif isinstance(payload.get("detail"), (str, dict)) and "message" not in payload:
        detail = payload["detail"]
        text = detail if isinstance(detail, str) else str(detail.get("message") or detail)
    else:
        return None
    text = re.sub(r"<[^>]*>", "", text).strip()
    return (text or "the upstream reported an error")[:300]


class StreamReducer:
    """Reduce one conversation stream (either format) to text deltas and a final Completion."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self._cumulative: bool | None = None if prefix else True
        self._channels: dict[int, Any] = {}
        self._last = {"p": "", "o": "add", "c": 0}
        self._messages: dict[Any, dict] = {}   # key -> latest message dict, in order of appearance
        self._emitted = ""
        self._done = False
        self._complete = False
        self.conversation_id: str | None = None
        self.title: str | None = None

    @property
    def done(self) -> bool:
        """True once `data: [DONE]` arrived."""
        return self._done

    def feed(self, event: SseEvent) -> list[TextDelta]:
        """Apply one event; return the new visible text it produced (possibly nothing).

        :raise ContentBlocked: the moderation withheld the answer.
        :raise UpstreamError: an in-stream error, or a payload that is not JSON.
        """
        data = event.data.strip()
        if self._done or event.event == "ping" or not data or _HEARTBEAT.match(data):
            return []
        if data == "[DONE]":
            self._done = True
            return []
        try:
            payload = json.loads(data)
        except ValueError:
            raise UpstreamError("the upstream sent an event that is not JSON",
                                "upstream_bad_stream") from None
        if not isinstance(payload, dict):
            return []  # the bare "v1" that announces delta encoding
        self._read(payload)
        return self._new_text()

    def _read(self, payload: dict) -> None:
        error = _error_text(payload)
        if error:
            raise UpstreamError(f"the upstream reported an error: {error}", "upstream_stream_error")
        self._note_conversation(payload.get("conversation_id"))
        moderation = payload.get("moderation_response")
        if payload.get("type") == "moderation" or isinstance(moderation, dict):
            if (moderation or {}).get("blocked"):
                raise ContentBlocked("the upstream moderation withheld this answer")
            return
        if isinstance(payload.get("message"), dict):
            message = payload["message"]
            self._messages[message.get("id") or len(self._messages)] = message
        elif any(key in payload for key in ("v", "p", "o")):
            self._apply_delta(payload)
        elif payload.get("type") == "title_generation":
            self.title = payload.get("title") or self.title
        elif payload.get("type") == "message_stream_complete":
            self._complete = True

    def _apply_delta(self, delta: dict) -> None:
        value = delta.get("v")
        if "p" not in delta and "o" not in delta and isinstance(value, str) and not self._channels:
            # A stream that opens with bare strings appends to the first part (aurora's short form).
            self._last.update(p="/message/content/parts/0", o="append")
        for key in ("p", "o", "c"):
            if key in delta:
                self._last[key] = delta[key]
        channel = self._last["c"]
        root = apply_operation(self._channels.get(channel, {}), self._last["p"],
                               self._last["o"], value)
        self._channels[channel] = root
        if isinstance(root, dict):
            self._note_conversation(root.get("conversation_id"))
            if isinstance(root.get("message"), dict):
                self._messages[("channel", channel)] = root["message"]

    def _note_conversation(self, conversation_id: Any) -> None:
        if isinstance(conversation_id, str) and conversation_id:
            self.conversation_id = conversation_id

    def _visible(self) -> list[tuple[dict, str]]:
        found = []
        for message in self._messages.values():
            text = _visible_text(message)
            if text is not None:
                found.append((message, text))
        return found

    def _joined(self) -> str:
        return _SEPARATOR.join(text for _, text in self._visible() if text)

    def _turn_text(self) -> str | None:
        visible = self._joined()
        if self._cumulative is None:
            if len(visible) > len(self.prefix) and visible.startswith(self.prefix):
                self._cumulative = True
            elif not self.prefix.startswith(visible):
                self._cumulative = False
            else:
                return None  # still a prefix of what we already have: cannot tell yet
        return visible if self._cumulative else self.prefix + visible

    def _new_text(self) -> list[TextDelta]:
        full = self._turn_text()
        sent = self.prefix + self._emitted
        if full is None or len(full) <= len(sent) or not full.startswith(sent):
            return []
        piece = full[len(sent):]
        self._emitted += piece
        return [TextDelta(piece)]

    def result(self) -> Completion:
        """The final answer of this stream.

        :raise UpstreamError: the stream ended before the turn did (no [DONE], no completion).
        """
        visible = self._visible()
        last = visible[-1][0] if visible else None
        # Early-2023 messages carry end_turn but no status yet.
        finished = last is not None and last.get("end_turn") is True and last.get(
            "status", "finished_successfully") == "finished_successfully"
        if not (self._done or self._complete or finished):
            raise UpstreamError("the upstream stream ended before the answer was complete",
                                "upstream_stream_broken")
        if last is None:
            raise UpstreamError("the upstream stream carried no answer", "upstream_stream_broken")
        if self._cumulative is None:
            # Never grew past what we had: cumulative only if it repeats it exactly.
            self._cumulative = self._joined() == self.prefix
        text = self._turn_text()
        metadata = last.get("metadata") or {}
        finish = metadata.get("finish_details") or {}
        return Completion(
            text=text if text is not None else self.prefix + self._emitted,
            conversation_id=self.conversation_id,
            message_id=last.get("id"),
            finish_type=finish.get("type") if isinstance(finish, dict) else None,
            model_slug=metadata.get("model_slug"),
            title=self.title,
        )
