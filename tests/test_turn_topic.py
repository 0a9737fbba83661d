"""The WebSocket hand-off's messages -> the turn's SSE text -> the answer, without a server
(chatgpt_web/upstream/turn_topic.py; docs/protocol-requests.md, "Hand-off")."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from chatgpt_web.errors import UpstreamError
from chatgpt_web.upstream.endpoints import from_base_url
from chatgpt_web.upstream.headers import without_write_tokens
from chatgpt_web.upstream.stream import Handoff, HandoffOption, StreamReducer, relay
from chatgpt_web.upstream.turn_topic import (
    TopicReader,
    subscribe_message,
    topic_of,
    websocket_url,
)

TOPIC = "conversation-turn-tx-9"
CID = "69544e47-48c8-832c-a76e-8593ef78f119"


def sse(payload, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n"


ASSISTANT = {"id": "m-1", "author": {"role": "assistant"}, "recipient": "all", "channel": "final",
             "content": {"content_type": "text", "parts": [""]}, "status": "in_progress"}
ITEMS = [
    sse({"v": {"message": ASSISTANT, "conversation_id": CID}, "c": 1}, "delta"),
    sse({"p": "/message/content/parts/0", "o": "append", "v": "Hello"}, "delta"),
    sse({"v": " there"}, "delta"),
    sse({"p": "", "o": "patch", "v": [
        {"p": "/message/content/parts/0", "o": "append", "v": "!"},
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
        {"p": "/message/end_turn", "o": "replace", "v": True}]}, "delta"),
    sse({"type": "message_stream_complete", "conversation_id": CID}),
    "data: [DONE]\n\n",
]


def item(encoded: str, topic: str = TOPIC) -> dict:
    return {"type": "message", "topic_id": topic,
            "payload": {"type": "conversation-turn-stream",
                        "payload": {"type": "stream-item", "conversation_id": CID,
                                    "turn_id": "tx-9", "encoded_item": encoded}}}


def done(topic: str = TOPIC) -> dict:
    return {"type": "message", "topic_id": topic,
            "payload": {"type": "conversation-turn-stream",
                        "payload": {"type": "done", "conversation_id": CID, "turn_id": "tx-9"}}}


def reply(catchups: list[dict], topic: str = TOPIC) -> dict:
    return {"id": 2, "type": "reply", "reply": {"topic_id": topic, "recovered": bool(catchups),
                                                 "catchups": catchups,
                                                 "last_offset": str(len(catchups))}}


def answer_of(messages: list) -> tuple[str, TopicReader]:
    reader = TopicReader(TOPIC)
    chunks = [chunk for message in messages for chunk in reader.feed(json.dumps(message))]
    reducer = StreamReducer()
    text = "".join(delta.text for delta in relay(chunks, reducer))
    assert reducer.result().text == text
    return text, reader


def test_catchups_then_pushed_items_then_done_make_the_answer():
    messages = [[reply([item(ITEMS[0]), item(ITEMS[1])])],
                *[item(encoded) for encoded in ITEMS[2:]], done()]
    text, reader = answer_of(messages)
    assert text == "Hello there!" and reader.done and reader.subscribed


def test_a_message_may_be_one_frame_or_an_array_of_them():
    one_array = [[reply([]), *[item(encoded) for encoded in ITEMS], done()]]
    assert answer_of(one_array)[0] == "Hello there!"


def test_frames_of_other_topics_and_unknown_frames_are_skipped():
    other = "conversation-turn-someone-else"
    messages = [reply([], "calpico-chatgpt"), reply([]),
                item(sse({"p": "/message/content/parts/0", "o": "append", "v": "NO"}), other),
                {"type": "message", "topic_id": "conversations",
                 "payload": {"type": "conversation-update", "payload": {}}},
                {"type": "presence"}, *[item(encoded) for encoded in ITEMS], done()]
    assert answer_of(messages)[0] == "Hello there!"


def test_a_message_that_is_not_json_is_skipped():
    reader = TopicReader(TOPIC)
    assert reader.feed(b"\xff not json") == [] and reader.feed("[1, 2]") == []
    assert not reader.done


def test_an_item_without_its_blank_line_does_not_run_into_the_next():
    reader = TopicReader(TOPIC)
    chunks = reader.feed(json.dumps([item(ITEMS[0].rstrip("\n")), item(ITEMS[1][:-1])]))
    assert all(chunk.endswith(b"\n\n") for chunk in chunks)


def test_nothing_after_done_is_read():
    reader = TopicReader(TOPIC)
    assert reader.feed(json.dumps([done(), item(ITEMS[1])])) == [] and reader.done


def test_a_refused_subscription_is_an_upstream_error():
    reader = TopicReader(TOPIC)
    with pytest.raises(UpstreamError) as raised:
        reader.feed(json.dumps({"id": 2, "type": "reply", "error": {"code": "forbidden"}}))
    assert raised.value.code == "upstream_stream_broken"


def test_the_first_message_connects_and_subscribes_from_offset_zero():
    connect, subscribe = json.loads(subscribe_message(TOPIC))
    assert connect == {"id": 1, "command": {"type": "connect", "presence": {
        "type": "presence", "state": "foreground"}}}
    assert subscribe == {"id": 2, "command": {"type": "subscribe", "topic_id": TOPIC,
                                              "offset": "0"}}


@pytest.mark.parametrize("options, topic", [
    ((HandoffOption("subscribe_ws_topic", TOPIC), HandoffOption("resume_sse_endpoint", TOPIC)),
     TOPIC),
    ((HandoffOption("subscribe_ws_topic", None),), "conversation-turn-tx-9"),
    ((HandoffOption("resume_sse_endpoint", TOPIC),), None),
    ((), None),
])
def test_the_topic_is_the_offered_one_or_named_after_the_turn_exchange(options, topic):
    assert topic_of(Handoff(CID, "tx-9", options)) == topic


# The conversation headers as the write sends them: the account's, and its one-use tokens.
WRITE_HEADERS = {"Authorization": "Bearer t", "Oai-Device-Id": "d-1",
                 "Openai-Sentinel-Chat-Requirements-Token": "r", "openai-sentinel-proof-token": "p",
                 "OpenAI-Sentinel-Turnstile-Token": "ts", "X-Conduit-Token": "c"}


def test_a_read_carries_the_account_headers_without_the_writes_tokens():
    read = without_write_tokens(WRITE_HEADERS)
    assert read == {"Authorization": "Bearer t", "Oai-Device-Id": "d-1"}
    assert len(WRITE_HEADERS) == 6  # a copy: the write's headers are left as they were


def test_the_websocket_url_is_asked_for_without_the_writes_tokens():
    sent = []

    def get(url, headers, timeout):
        sent.append((url, headers))
        return SimpleNamespace(status_code=200, headers={},
                               content=b'{"websocket_url": "wss://ws.example/ws/user?verify=v"}')

    upstream = from_base_url("https://chatgpt.example")
    url = websocket_url(SimpleNamespace(get=get), upstream, WRITE_HEADERS, time.monotonic() + 30)
    assert url == "wss://ws.example/ws/user?verify=v"
    [(asked, headers)] = sent
    assert asked == "https://chatgpt.example/backend-api/celsius/ws/user"
    assert headers == {"Authorization": "Bearer t", "Oai-Device-Id": "d-1", "Accept": "*/*",
                       "X-Openai-Target-Path": "/backend-api/celsius/ws/user",
                       "X-Openai-Target-Route": "/backend-api/celsius/ws/user"}
