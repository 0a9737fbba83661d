"""The first leg of a handed-off turn: the preamble, then `stream_handoff` and no answer text.

The answer itself is streamed by `POST /f/conversation/resume` (backend.py), which repeats the
preamble and then sends the answer, or read from `GET /conversation/{id}`. Kept apart from
streams.py, whose 2026 event generator may replace this function.
"""
from __future__ import annotations

from collections.abc import Iterator

from .streams import DONE, Turn, sse_json


def handoff_first_leg(turn: Turn, resume_token: str) -> Iterator[bytes]:
    cid = turn.conversation_id
    exchange = (turn.assistant or {}).get("metadata", {}).get("turn_exchange_id") or "unknown"
    topic = f"conversation-turn-{exchange}"
    yield sse_json("v1", event="delta_encoding")
    yield sse_json({"type": "resume_conversation_token", "kind": "topic", "token": resume_token,
                    "conversation_id": cid})
    for channel, message in enumerate(turn.echoed):
        yield sse_json({"p": "", "o": "add", "v": {"message": message, "conversation_id": cid,
                                                   "error": None}, "c": channel}, event="delta")
    yield sse_json({"type": "stream_handoff", "conversation_id": cid,
                    "turn_exchange_id": exchange,
                    "options": [{"type": "subscribe_ws_topic", "topic_id": topic},
                                {"type": "resume_sse_endpoint", "topic_id": topic}]})
    yield DONE
