"""The conversation answer as server-sent events, in the formats docs/protocol.md describes.

* `events_2026`: the 2026 delta-encoded turn, frame for frame: `delta_encoding` header, resume
  token (`kind: "topic"`), hidden system snapshot (`c: 0`), `input_message`, assistant snapshot
  (`c: 1`, no p/o), markers, an `append` then bare `{"v"}` continuations, a terminal `patch`
  batch, `title_generation`, `server_ste_metadata`, `message_stream_complete`,
  `conversation_detail_metadata`, `[DONE]`; with a reasoning turn (thoughts in the analysis
  channel, a recap, then the final channel), the downgrade banner, `max_tokens`, an in-band error
  and a blocked moderation. `handoff_leg` / `resumed_leg` split a turn across a hand-off.
* `v1_events_2024`: the delta stream as the January 2026 capture shows it (tests/fixtures), which
  the 2024 dialect serves.
* `legacy_events`: every event repeats the whole message so far.

Writers turn a planned `Turn` into complete SSE events (bytes); `rechunk` then cuts the byte stream
at arbitrary points, the way TCP delivers it. Framing follows the real server: JSON written by
Python's default encoder (", " and ": " separators, non-ASCII escaped), `event:` lines where the
server sends them, and a blank line after every event.

In-stream faults: `error` puts `{"message": null, "conversation_id": ..., "error": "<text>"}`
halfway through the answer, then `[DONE]` (the same object in every format; the envelope of every
message carries this `error` key). A blocked moderation withholds the assistant message and sends
a `type: "moderation"` event with the keys ninja's Dec-2023 capture shows.
"""
from __future__ import annotations

import json
import random
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

STOP = {"type": "stop", "stop_tokens": [200002]}
MAX_TOKENS = {"type": "max_tokens"}


@dataclass
class Turn:
    """What one conversation POST streams: messages to echo, then the assistant's answer."""

    conversation_id: str
    model_slug: str
    # The hidden system message (new conversation) + the request's non-assistant messages.
    echoed: list[dict]
    input_message: dict | None    # the user message of this turn, for v1's input_message event
    assistant: dict | None        # the answer's final state after this turn; None when blocked
    previous_text: str = ""       # text the assistant message already had (action "continue")
    new_text: str = ""            # text this turn adds
    title: str | None = None      # sent as title_generation (v1) for a new conversation
    is_new: bool = False
    request_id: str = field(default_factory=lambda: secrets.token_hex(16))
    dialect: str = "2026"
    reasoning: str | None = None   # thoughts streamed before the answer (a reasoning turn)
    served_model: str | None = None  # the model that answered, when not the one asked
    internal_model: str | None = None  # server_ste_metadata's internal name for it (`i-mini`)
    degraded: bool = False         # conversation_detail_metadata carries the downgrade banner


def sse(data: str, event: str | None = None) -> bytes:
    """One SSE event with its terminating blank line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def sse_json(payload, event: str | None = None) -> bytes:
    return sse(json.dumps(payload), event)


DONE = sse("[DONE]")


def split_words(text: str, words_per_piece: int = 1) -> list[str]:
    """`text` in pieces of `words_per_piece` words; the pieces concatenate back to `text`."""
    words = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    step = max(1, words_per_piece)
    return ["".join(words[i:i + step]) for i in range(0, len(words), step)]


def _envelope(message: dict | None, conversation_id: str, v1: bool) -> dict:
    envelope = {"message": message, "conversation_id": conversation_id, "error": None}
    if v1:
        envelope["error_code"] = None
    return envelope


def _in_progress(final: dict, text: str, legacy: bool) -> dict:
    """The assistant message as it looks while streaming (the final one minus completion marks)."""
    metadata = {key: value for key, value in final["metadata"].items()
                if key not in ("finish_details", "is_complete")}
    if legacy:
        metadata["finish_details"] = None
    return {**final, "content": {**final["content"], "parts": [text]},
            "status": "in_progress", "end_turn": None, "metadata": metadata}


def _moderation(turn: Turn, blocked: bool) -> dict:
    message_id = (turn.input_message or {}).get("id") if blocked else turn.assistant["id"]
    return {"type": "moderation", "conversation_id": turn.conversation_id,
            "message_id": message_id, "is_completion": not blocked,
            "moderation_response": {"flagged": blocked, "blocked": blocked,
                                    "moderation_id": f"modr-{secrets.token_hex(12)}"}}


def _error(turn: Turn, text: str) -> bytes:
    return sse_json({"message": None, "conversation_id": turn.conversation_id, "error": text})


def legacy_events(turn: Turn, words_per_delta: int = 1,
                  error: str | None = None) -> Iterator[bytes]:
    """Every event repeats the whole message so far; ends with a moderation event and [DONE]."""
    for message in turn.echoed:
        yield sse_json(_envelope(message, turn.conversation_id, v1=False))
    if turn.assistant is None:
        yield sse_json(_moderation(turn, blocked=True))
        yield DONE
        return
    progress = _in_progress(turn.assistant, turn.previous_text, legacy=True)
    yield sse_json(_envelope(progress, turn.conversation_id, v1=False))
    pieces = split_words(turn.new_text, words_per_delta)
    half = len(pieces) // 2
    text = turn.previous_text
    for index, piece in enumerate(pieces):
        if index == half and error is not None:
            yield _error(turn, error)
            yield DONE
            return
        text += piece
        progress["content"]["parts"] = [text]
        yield sse_json(_envelope(progress, turn.conversation_id, v1=False))
    yield sse_json(_envelope(turn.assistant, turn.conversation_id, v1=False))
    yield sse_json(_moderation(turn, blocked=False))
    yield DONE


class _Deltas:
    """Writes `event: delta` events, omitting p/o and c when they repeat the previous delta."""

    def __init__(self) -> None:
        self._path_op: tuple | None = None
        self._channel: int | None = None

    def __call__(self, p: str, o: str, v, c: int | None = None) -> bytes:
        delta = {}
        if (p, o) != self._path_op:
            delta.update(p=p, o=o)
            self._path_op = (p, o)
        delta["v"] = v
        if c is not None and c != self._channel:
            delta["c"] = c
            self._channel = c
        return sse_json(delta, event="delta")


def v1_events(turn: Turn, resume_token: str, words_per_delta: int = 1,
              error: str | None = None) -> Iterator[bytes]:
    """The delta-encoded stream of the turn's dialect."""
    if turn.dialect == "2024":
        return v1_events_2024(turn, resume_token, words_per_delta, error)
    return events_2026(turn, resume_token, words_per_delta, error)


def v1_events_2024(turn: Turn, resume_token: str, words_per_delta: int = 1,
                   error: str | None = None) -> Iterator[bytes]:
    """The delta-encoded stream, structured like tests/fixtures/delta-v1-capture.txt."""
    cid = turn.conversation_id
    delta = _Deltas()
    yield sse_json("v1", event="delta_encoding")
    yield sse_json({"type": "resume_conversation_token", "kind": "conduit", "token": resume_token,
                    "conversation_id": cid})
    channel = 0
    for message in turn.echoed:
        yield delta("", "add", _envelope(message, cid, v1=True), c=channel)
        channel += 1
    if turn.input_message is not None:
        yield sse_json({"type": "input_message", "input_message": turn.input_message,
                        "conversation_id": cid})
    if turn.assistant is None:
        yield sse_json(_moderation(turn, blocked=True))
        yield sse_json({"type": "message_stream_complete", "conversation_id": cid})
        yield DONE
        return

    answer = turn.assistant
    progress = _in_progress(answer, turn.previous_text, legacy=False)
    yield delta("", "add", _envelope(progress, cid, v1=True), c=channel)
    yield sse_json({"type": "message_marker", "conversation_id": cid, "message_id": answer["id"],
                    "marker": "user_visible_token", "event": "first"})
    # The last piece travels inside the closing patch batch, as in the capture.
    *streamed, last = split_words(turn.new_text, words_per_delta) or [""]
    half = len(streamed) // 2
    for piece in streamed[:half]:
        yield delta("/message/content/parts/0", "append", piece)
    if turn.title:
        yield sse_json({"type": "title_generation", "title": turn.title, "conversation_id": cid})
    if error is not None:
        yield _error(turn, error)
        yield DONE
        return
    for piece in streamed[half:]:
        yield delta("/message/content/parts/0", "append", piece)
    yield delta("", "patch", [
        {"p": "/message/content/parts/0", "o": "append", "v": last},
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
        {"p": "/message/end_turn", "o": "replace", "v": answer["end_turn"]},
        {"p": "/message/metadata", "o": "append",
         "v": {"finish_details": answer["metadata"]["finish_details"], "is_complete": True}},
    ])
    yield sse_json({"type": "server_ste_metadata", "metadata": {
        "conduit_prewarmed": False, "plan_type": "free", "user_agent": "web_desktop",
        "tool_invoked": False, "is_first_turn": turn.is_new, "cluster_region": "emulator",
        "model_slug": turn.model_slug, "message_id": answer["id"], "request_id": turn.request_id,
        "turn_exchange_id": answer["metadata"].get("turn_exchange_id"),
        "resume_with_websockets": False}, "conversation_id": cid})
    yield sse_json({"type": "message_stream_complete", "conversation_id": cid})
    if turn.title:
        yield sse_json({"type": "title_generation", "title": turn.title, "conversation_id": cid})
    yield DONE


# --- the 2026 turn --------------------------------------------------------------------------------

RECAP = "Thought for 2s"
THOUGHT_SUMMARY = "Thinking it over"


def _frame(payload) -> bytes:
    """A typed frame: `data:` only, no `event:` line."""
    return sse_json(payload)


def _delta(payload) -> bytes:
    return sse_json(payload, event="delta")


def _preamble_2026(turn: Turn, resume_token: str) -> Iterator[bytes]:
    """Header, resume token, the system snapshots (`c` from 0) and the user's message echoed."""
    cid = turn.conversation_id
    yield sse_json("v1", event="delta_encoding")
    yield _frame({"type": "resume_conversation_token", "kind": "topic", "token": resume_token,
                  "conversation_id": cid})
    for channel, message in enumerate(_system_messages(turn)):
        yield _delta({"p": "", "o": "add", "v": _envelope(message, cid, v1=False), "c": channel})
    if turn.input_message is not None:
        echo = {**turn.input_message, "metadata": {**turn.input_message.get("metadata", {}),
                                                   "resolved_model_slug": turn.model_slug}}
        yield _frame({"type": "input_message", "input_message": echo, "conversation_id": cid})


def _system_messages(turn: Turn) -> list[dict]:
    return [m for m in turn.echoed if m["author"]["role"] == "system"]


def _reasoning_2026(turn: Turn, channel: int, words_per_delta: int) -> Iterator[bytes]:
    """A thoughts message (analysis channel) streamed piece by piece, then its recap."""
    cid = turn.conversation_id
    thoughts_id, recap_id = str(uuid.uuid4()), str(uuid.uuid4())
    thinking = {"id": thoughts_id, "author": {"role": "assistant", "name": None, "metadata": {}},
                "create_time": time.time(), "update_time": None,
                "content": {"content_type": "thoughts", "thoughts": [],
                            "source_analysis_msg_id": str(uuid.uuid4())},
                "status": "in_progress", "end_turn": None, "weight": 1.0,
                "metadata": {"model_slug": turn.model_slug, "reasoning_status": "is_reasoning"},
                "recipient": "all", "channel": "analysis"}
    yield _delta({"v": {"message": thinking, "conversation_id": cid}, "c": channel})
    yield _frame({"type": "message_marker", "conversation_id": cid, "message_id": thoughts_id,
                  "marker": "cot_token", "event": "first"})
    yield _delta({"p": "/message/content/thoughts", "o": "append",
                  "v": [{"summary": THOUGHT_SUMMARY, "content": "", "chunks": [],
                         "finished": False}]})
    for index, piece in enumerate(split_words(turn.reasoning or "", words_per_delta)):
        if index == 0:
            yield _delta({"p": "/message/content/thoughts/0/content", "o": "append", "v": piece})
        else:
            yield _delta({"v": piece})
    yield _delta({"p": "", "o": "patch", "v": [
        {"p": "/message/content/thoughts/0/finished", "o": "replace", "v": True},
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"}]})
    recap = {**thinking, "id": recap_id, "status": "finished_successfully",
             "content": {"content_type": "reasoning_recap", "content": RECAP},
             "metadata": {"model_slug": turn.model_slug, "reasoning_status": "reasoning_ended"}}
    yield _delta({"v": {"message": recap, "conversation_id": cid}, "c": channel + 1})


def _answer_2026(turn: Turn, words_per_delta: int, error: str | None,
                 offset: int = 0) -> Iterator[bytes]:
    """The answer part of a 2026 turn; `offset` text frames are folded into its snapshot."""
    cid = turn.conversation_id
    channel = len(_system_messages(turn))
    if turn.assistant is None:
        yield _frame(_moderation(turn, blocked=True))
        yield _frame({"type": "message_stream_complete", "conversation_id": cid})
        yield DONE
        return
    if turn.reasoning is not None and offset == 0:
        yield from _reasoning_2026(turn, channel, words_per_delta)
    if turn.reasoning is not None:
        channel += 2
    answer = turn.assistant
    *streamed, last = split_words(turn.new_text, words_per_delta) or [""]
    offset = max(0, min(offset, len(streamed)))
    progress = _in_progress(answer, turn.previous_text + "".join(streamed[:offset]), legacy=False)
    progress["channel"] = "final"
    yield _delta({"v": {"message": progress, "conversation_id": cid}, "c": channel})
    yield _frame({"type": "message_marker", "conversation_id": cid, "message_id": answer["id"],
                  "marker": "final_channel_token" if turn.reasoning is not None
                  else "user_visible_token", "event": "first"})
    rest = streamed[offset:]
    for index, piece in enumerate(rest):
        if error is not None and index == len(rest) // 2:
            break
        if index == 0:
            yield _delta({"p": "/message/content/parts/0", "o": "append", "v": piece})
        else:
            yield _delta({"v": piece})
    if error is not None:
        yield _error(turn, error)
        yield DONE
        return
    # The last piece travels inside the closing patch batch, as in the capture.
    yield _delta({"p": "", "o": "patch", "v": [
        {"p": "/message/content/parts/0", "o": "append", "v": last},
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
        {"p": "/message/end_turn", "o": "replace", "v": answer["end_turn"]},
        {"p": "/message/metadata", "o": "append",
         "v": {"is_complete": True, "finish_details": answer["metadata"]["finish_details"]}}]})
    yield _frame({"type": "message_marker", "marker": "last_token", "event": "last"})
    if turn.title:
        yield _frame({"type": "title_generation", "title": turn.title, "conversation_id": cid})
    yield _frame({"type": "server_ste_metadata", "metadata": _server_metadata(turn),
                  "conversation_id": cid})
    yield _frame({"type": "message_stream_complete", "conversation_id": cid})
    yield _frame(_conversation_detail(turn))
    yield DONE


def _server_metadata(turn: Turn) -> dict:
    answer = turn.assistant or {}
    return {
        "conduit_prewarmed": False, "plan_type": "free", "plan_type_bucket": "free",
        "user_agent": "web_desktop", "tool_name": None, "tool_invoked": False,
        "fast_convo": turn.reasoning is None, "warmup_state": "warm",
        "is_first_turn": turn.is_new, "cluster_region": "emulator",
        "model_slug": turn.internal_model or turn.served_model or turn.model_slug,
        "did_auto_switch_to_reasoning": False, "is_autoswitcher_enabled": True,
        "is_search": None, "message_id": answer.get("id"), "request_id": turn.request_id,
        "turn_exchange_id": answer.get("metadata", {}).get("turn_exchange_id"),
        "turn_trace_id": str(uuid.uuid4()), "resume_with_websockets": False,
        "streaming_async_status": False, "temporal_conversation_turn": False,
    }


def _conversation_detail(turn: Turn) -> dict:
    return conversation_detail(turn.conversation_id, turn.degraded)


def conversation_detail(conversation_id: str | None, degraded: bool) -> dict:
    """The conversation_detail_metadata object: the stream's event, and conversation/init's
    answer."""
    tomorrow = datetime.fromtimestamp(time.time() + 86400, UTC).isoformat()
    banner = {"name": "account_sharing_degrade",
              "title": "Your account is limited to a lighter model for now",
              "resets_after": tomorrow} if degraded else None
    return {"type": "conversation_detail_metadata", "banner_info": banner,
            "blocked_features": [], "model_limits": [],
            "limits_progress": [{"feature_name": "file_upload", "remaining": 10,
                                 "reset_after": tomorrow}],
            "default_model_slug": "auto", "intended_default_model_slug": "auto",
            "atlas_mode_enabled": False, "file_attachment_limits": {"max_size_mb": 512},
            "conversation_id": conversation_id}


def events_2026(turn: Turn, resume_token: str, words_per_delta: int = 1,
                error: str | None = None) -> Iterator[bytes]:
    """The whole 2026 turn (see the module docstring)."""
    yield from _preamble_2026(turn, resume_token)
    yield from _answer_2026(turn, words_per_delta, error)


BOTH_TRANSPORTS = ("subscribe_ws_topic", "resume_sse_endpoint")


def turn_exchange_id(turn: Turn) -> str:
    """The turn's `turn_exchange_id`: the assistant message's, made once if it has none."""
    metadata = (turn.assistant or {}).setdefault("metadata", {})
    if not metadata.get("turn_exchange_id"):
        metadata["turn_exchange_id"] = str(uuid.uuid4())
    return metadata["turn_exchange_id"]


def handoff_leg(turn: Turn, resume_token: str,
                options: tuple[str, ...] = BOTH_TRANSPORTS) -> Iterator[bytes]:
    """The first leg of a handed-off turn: the preamble, `stream_handoff` offering `options`
    (the WebSocket topic, the resume endpoint), and no answer text."""
    cid = turn.conversation_id
    exchange = turn_exchange_id(turn)
    topic = f"conversation-turn-{exchange}"
    yield from _preamble_2026(turn, resume_token)
    yield _frame({"type": "stream_handoff", "conversation_id": cid, "turn_exchange_id": exchange,
                  "options": [{"type": option, "topic_id": topic} for option in options]})
    yield DONE


def resumed_leg(turn: Turn, resume_token: str, offset: int = 0, words_per_delta: int = 1,
                error: str | None = None) -> Iterator[bytes]:
    """What `/f/conversation/resume` streams: the preamble again, then the answer from `offset`
    text frames on (the ones before it are folded into the assistant snapshot)."""
    yield from _preamble_2026(turn, resume_token)
    yield from _answer_2026(turn, words_per_delta, error, offset)


def replay_events(recording: bytes) -> Iterator[bytes]:
    """A recorded stream verbatim, minus the `#` comment lines of our sample files."""
    lines = recording.splitlines(keepends=True)
    yield b"".join(line for line in lines if not line.startswith(b"#"))


def _timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")


def with_pings(events: Iterable[bytes], rng: random.Random) -> Iterator[bytes]:
    """Interleave keep-alives: `event: ping` events and bare timestamp heartbeats (PawanOsman).

    One always precedes the first event; none follows [DONE].
    """
    for index, event in enumerate(events):
        if index == 0 or rng.random() < 0.2:
            if rng.random() < 0.5:
                yield sse(_timestamp(), event="ping")
            else:
                yield sse(_timestamp())
        yield event


def _chunk_size(rng: random.Random) -> int:
    # Mostly tiny cuts (mid-line splits), some mid-sized, a few spanning several events.
    return rng.choice((rng.randint(1, 24), rng.randint(24, 400), rng.randint(400, 4000)))


def rechunk(events: Iterable[bytes], rng: random.Random) -> Iterator[bytes]:
    """The concatenated events re-cut into chunks of random size, never empty."""
    buffer = bytearray()
    size = _chunk_size(rng)
    for event in events:
        buffer += event
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
            size = _chunk_size(rng)
    if buffer:
        yield bytes(buffer)
