"""The emulator's hand-off WebSocket, driven by a plain WebSocket client (tests/emulator/topics.py).

`GET /backend-api/celsius/ws/user` names the WebSocket; its handshake wants the URL's ticket and the
site's Origin; a subscribe to a handed-off turn's topic is answered with the reply (catch-ups), the
turn's SSE events one `stream-item` each, and `done`.
"""
from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.test_emulator_2026 import Browser, answer_text, events, new_chat

TIMEOUT = 30  # seconds any one read may wait: a bound, not an expectation


def handed_off(emulator, text: str = "tell me slowly") -> tuple[Browser, dict]:
    browser = Browser(emulator)
    first = browser.write(new_chat(text))
    assert first.status_code == 200, first.text
    [handoff] = [e for e in events(first.content)
                 if isinstance(e, dict) and e.get("type") == "stream_handoff"]
    return browser, handoff


def websocket_url(emulator, browser: Browser) -> str:
    response = browser.session.get(emulator.url + "/backend-api/celsius/ws/user",
                                   headers=browser.headers())
    assert response.status_code == 200, response.text
    url = response.json()["websocket_url"]
    assert url.startswith("ws://127.0.0.1:")
    return url


def dial(emulator, url: str, origin: str | None = None):
    return connect(url, origin=origin or emulator.url, open_timeout=TIMEOUT)


def subscribe(topic: str, *, as_array: bool = True) -> str:
    commands = [{"id": 1, "command": {"type": "connect",
                                      "presence": {"type": "presence", "state": "background"}}},
                {"id": 2, "command": {"type": "subscribe", "topic_id": topic, "offset": "0"}}]
    return json.dumps(commands if as_array else commands[1])


def read_turn(websocket) -> tuple[dict, list[dict], dict]:
    """(our reply, the stream items pushed after it, the done payload)."""
    [reply] = json.loads(websocket.recv(timeout=TIMEOUT))
    pushed = []
    while True:
        frame = json.loads(websocket.recv(timeout=TIMEOUT))
        inner = frame["payload"]["payload"]
        if inner["type"] == "done":
            return reply, pushed, inner
        pushed.append(frame)


def test_the_websocket_url_needs_the_account(emulator):
    assert Browser(emulator).session.get(
        emulator.url + "/backend-api/celsius/ws/user").status_code == 401


@pytest.mark.parametrize("as_array", [True, False])
def test_a_turn_topic_replays_the_turn_then_says_done(emulator, as_array):
    emulator.switches.handoff = "both"
    browser, handoff = handed_off(emulator)
    [topic] = {option["topic_id"] for option in handoff["options"]}
    assert topic == "conversation-turn-" + handoff["turn_exchange_id"]
    with dial(emulator, websocket_url(emulator, browser)) as websocket:
        websocket.send(subscribe(topic, as_array=as_array))
        reply, pushed, done = read_turn(websocket)
    assert reply["id"] == 2 and reply["type"] == "reply"
    body = reply["reply"]
    assert (body["topic_id"], body["recovered"], body["last_offset"]) == (topic, True, "2")
    assert len(body["catchups"]) == 2
    frames = body["catchups"] + pushed
    for frame in frames:
        assert frame["type"] == "message" and frame["topic_id"] == topic
        assert frame["payload"]["type"] == "conversation-turn-stream"
        item = frame["payload"]["payload"]
        assert item["type"] == "stream-item" and item["turn_id"] == handoff["turn_exchange_id"]
        assert item["conversation_id"] == handoff["conversation_id"]
        assert item["encoded_item"].endswith("\n\n")
    assert done == {"type": "done", "conversation_id": handoff["conversation_id"],
                    "turn_id": handoff["turn_exchange_id"]}
    sse = "".join(frame["payload"]["payload"]["encoded_item"] for frame in frames).encode()
    assert sse.startswith(b'event: delta_encoding\ndata: "v1"\n\n')
    assert sse.endswith(b"data: [DONE]\n\n")
    assert answer_text(sse) == "Echo: tell me slowly"
    # Delivered to its end: the turn is gone, and a resume is a duplicate.
    body = {"conversation_id": handoff["conversation_id"], "offset": 0}
    assert browser.post("/f/conversation/resume", body).status_code == 404


def test_the_handoff_switch_says_which_transports_are_offered(emulator):
    offered = {}
    for mode in ("both", "ws", "resume", "poll"):
        emulator.switches.handoff = mode
        offered[mode] = [option["type"] for option in handed_off(emulator)[1]["options"]]
    assert offered == {"both": ["subscribe_ws_topic", "resume_sse_endpoint"],
                       "ws": ["subscribe_ws_topic"], "resume": ["resume_sse_endpoint"],
                       "poll": ["subscribe_ws_topic", "resume_sse_endpoint"]}


def test_resume_is_refused_when_only_the_websocket_is_offered(emulator):
    emulator.switches.handoff = "ws"
    browser, handoff = handed_off(emulator)
    body = {"conversation_id": handoff["conversation_id"], "offset": 0}
    assert browser.post("/f/conversation/resume", body).status_code == 404


def test_the_handshake_wants_the_ticket_and_the_site_origin(emulator):
    emulator.switches.handoff = "both"
    browser, _ = handed_off(emulator)
    url = websocket_url(emulator, browser)
    with pytest.raises(InvalidStatus) as no_ticket:
        dial(emulator, url.split("?")[0] + "?verify=forged")
    assert no_ticket.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as foreign:
        dial(emulator, url, origin="https://elsewhere.example")
    assert foreign.value.response.status_code == 403
    emulator.switches.ws_fault = "refuse"
    with pytest.raises(InvalidStatus) as refused:
        dial(emulator, url)
    assert refused.value.response.status_code == 403


def test_other_topics_get_an_empty_reply(emulator):
    emulator.switches.handoff = "both"
    browser, _ = handed_off(emulator)
    with dial(emulator, websocket_url(emulator, browser)) as websocket:
        websocket.send(json.dumps([{"id": 3, "command": {"type": "subscribe",
                                                         "topic_id": "conversations"}}]))
        [reply] = json.loads(websocket.recv(timeout=TIMEOUT))
    assert reply == {"id": 3, "type": "reply", "reply": {
        "topic_id": "conversations", "recovered": False, "catchups": [], "last_offset": "0"}}


def test_in_poll_mode_the_topic_closes_after_its_reply(emulator):
    emulator.switches.handoff = "poll"
    browser, handoff = handed_off(emulator)
    topic = handoff["options"][0]["topic_id"]
    with dial(emulator, websocket_url(emulator, browser)) as websocket:
        websocket.send(subscribe(topic))
        [reply] = json.loads(websocket.recv(timeout=TIMEOUT))
        assert reply["reply"]["catchups"] == [] and not reply["reply"]["recovered"]
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=TIMEOUT)


def test_the_break_fault_cuts_the_connection_and_keeps_the_turn_for_resume(emulator):
    emulator.switches.handoff = "both"
    emulator.switches.ws_fault = "break"
    emulator.switches.ws_break_after = 3
    browser, handoff = handed_off(emulator)
    topic = handoff["options"][0]["topic_id"]
    received = 0
    with dial(emulator, websocket_url(emulator, browser)) as websocket:
        websocket.send(subscribe(topic))
        websocket.recv(timeout=TIMEOUT)  # the reply
        with pytest.raises(ConnectionClosed):
            while True:
                websocket.recv(timeout=TIMEOUT)
                received += 1
    assert received == 3
    resumed = browser.post("/f/conversation/resume",
                           {"conversation_id": handoff["conversation_id"], "offset": 0})
    assert resumed.status_code == 200 and answer_text(resumed.content) == "Echo: tell me slowly"
