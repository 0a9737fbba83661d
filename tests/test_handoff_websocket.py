"""A handed-off answer read from the site's WebSocket, and how it gives way to the resume stream
and to polling (chatgpt_web/upstream/handoff.py, turn_topic.py; docs/protocol-requests.md,
"Hand-off").

The service runs against the emulator over real HTTP and a real WebSocket (tests/emulator/
topics.py), configured as a user would configure it.
"""
from __future__ import annotations

import json

import pytest

from tests.test_http2 import hashed_directory

ANSWER = "a long and careful answer, told word by word so that it takes many events to arrive"


def send(client, token, **fields):
    return client.post("/send_message", data={"access_token": token, "prompt": "Hi", **fields})


def streamed_text(client, token) -> str:
    body = send(client, token, stream="true").get_data(as_text=True)
    deltas = [json.loads(line[6:])["delta"] for line in body.split("\n")
              if line.startswith('data: {"delta"')]
    assert body.rstrip().endswith("data: [DONE]"), body[-300:]
    return "".join(deltas)


def v1(client, token, *, stream: bool):
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                       json={"model": "gpt-4o", "stream": stream,
                             "messages": [{"role": "user", "content": "Hi"}]})


def v1_streamed_text(response) -> str:
    lines = [line[6:] for line in response.get_data(as_text=True).split("\n")
             if line.startswith("data: ")]
    assert lines[-1] == "[DONE]", lines[-3:]
    return "".join(json.loads(line)["choices"][0]["delta"].get("content") or ""
                   for line in lines[:-1] if json.loads(line).get("choices"))


def resumes(emulator):
    return [r for r in emulator.requests_to("/f/conversation/resume") if r.method == "POST"]


def handshakes(emulator):
    return [r for r in emulator.requests if r.path == "/ws/user"]


def reads(emulator):
    return [r for r in emulator.requests if r.method == "GET" and "/conversation/" in r.path]


def texts_sent_over_the_websocket(emulator) -> bool:
    return any(b'"o": "append"' in item for item in emulator.topics.sent)


@pytest.fixture
def app(make_app, emulator):
    emulator.switches.answer = ANSWER
    app = make_app()
    app.extensions["chatgpt_web"].conversations.poll_interval = 0.05
    return app


@pytest.fixture
def client(app):
    return app.test_client()


# --- which transport -----------------------------------------------------------------------

def test_an_answer_offered_only_on_the_websocket_is_read_there(client, token, emulator):
    emulator.switches.handoff = "ws"
    response = send(client, token)
    assert response.status_code == 200, response.json
    assert response.json["text"] == ANSWER
    [(_, topic)] = emulator.topics.subscriptions
    assert topic.startswith("conversation-turn-")
    assert not resumes(emulator) and not reads(emulator)


def test_the_websocket_is_dialled_as_a_browser_dials_it(client, token, emulator):
    emulator.switches.handoff = "ws"
    assert send(client, token).status_code == 200
    [url_request] = emulator.requests_to("/celsius/ws/user")
    assert url_request.headers["authorization"] == f"Bearer {token}"
    assert url_request.headers["x-openai-target-path"] == "/backend-api/celsius/ws/user"
    [handshake] = handshakes(emulator)
    headers = handshake.headers
    assert headers["origin"] == emulator.url  # the page's origin, not the WebSocket's host
    assert headers["sec-fetch-mode"] == "websocket" and headers["upgrade"] == "websocket"
    assert "chrome/152" in headers["user-agent"].lower()
    assert "authorization" not in headers  # the URL is the credential


def test_when_both_are_offered_the_websocket_is_used(client, token, emulator):
    emulator.switches.handoff = "both"
    assert send(client, token).json["text"] == ANSWER
    assert handshakes(emulator) and not resumes(emulator) and not reads(emulator)


def test_an_answer_offered_only_by_resume_is_resumed(client, token, emulator):
    emulator.switches.handoff = "resume"
    assert send(client, token).json["text"] == ANSWER
    assert resumes(emulator) and not handshakes(emulator)


def test_with_handoff_websocket_false_the_resume_stream_is_used(make_app, token, emulator):
    emulator.switches.handoff = "both"
    emulator.switches.answer = ANSWER
    client = make_app(HANDOFF_WEBSOCKET="false").test_client()
    assert send(client, token).json["text"] == ANSWER
    assert resumes(emulator) and not handshakes(emulator)


def test_a_reverse_proxy_is_never_followed_to_a_websocket(client, token, emulator):
    # The WebSocket's host is named by the upstream's answer, which the SSRF guard never saw.
    emulator.switches.handoff = "both"
    response = send(client, token, reverse_proxy=emulator.url + "/api/conversation")
    assert response.json["text"] == ANSWER
    assert resumes(emulator) and not handshakes(emulator)


# --- the faces ------------------------------------------------------------------------------

def test_a_websocket_answer_streams_to_send_message(client, token, emulator):
    emulator.switches.handoff = "ws"
    assert streamed_text(client, token) == ANSWER
    assert emulator.topics.subscriptions and not resumes(emulator)


@pytest.mark.parametrize("stream", [False, True])
def test_a_websocket_answer_reaches_the_openai_face(client, token, emulator, stream):
    emulator.switches.handoff = "ws"
    response = v1(client, token, stream=stream)
    assert response.status_code == 200, response.get_data(as_text=True)
    text = v1_streamed_text(response) if stream else \
        response.json["choices"][0]["message"]["content"]
    assert text == ANSWER
    assert emulator.topics.subscriptions and not resumes(emulator)


# --- failures -------------------------------------------------------------------------------

def test_a_refused_websocket_gives_way_to_resume(client, token, emulator):
    emulator.switches.handoff = "both"
    emulator.switches.ws_fault = "refuse"
    assert streamed_text(client, token) == ANSWER
    assert handshakes(emulator) and not emulator.topics.subscriptions and resumes(emulator)


@pytest.mark.parametrize("face", ["send_message", "v1"])
def test_a_websocket_broken_mid_answer_is_resumed_without_repeating_text(client, token,
                                                                         emulator, face):
    emulator.switches.handoff = "both"
    emulator.switches.ws_fault = "break"
    emulator.switches.ws_break_after = 8  # past the preamble: part of the answer came first
    text = streamed_text(client, token) if face == "send_message" else \
        v1_streamed_text(v1(client, token, stream=True))
    assert texts_sent_over_the_websocket(emulator)
    assert text == ANSWER
    assert resumes(emulator) and not reads(emulator)


def test_a_broken_websocket_offered_alone_gives_way_to_polling(client, token, emulator):
    emulator.switches.handoff = "ws"
    emulator.switches.ws_fault = "break"
    emulator.switches.ws_break_after = 8
    assert streamed_text(client, token) == ANSWER
    assert texts_sent_over_the_websocket(emulator)
    assert not resumes(emulator) and reads(emulator)  # resume was not offered


def test_when_no_transport_has_the_turn_the_conversation_is_read(client, token, emulator):
    emulator.switches.handoff = "poll"  # the topic closes after its reply, resume answers 404
    assert send(client, token).json["text"] == ANSWER
    assert emulator.topics.subscriptions and resumes(emulator) and reads(emulator)


def test_the_answer_deadline_ends_a_silent_websocket(make_app, token, emulator):
    # A turn may think for minutes without an item: a connection that answers pings is waited
    # for, within the answer's deadline.
    emulator.switches.handoff = "ws"
    emulator.switches.ws_fault = "silent"
    emulator.switches.ws_break_after = 0
    response = send(make_app(REQUEST_TIMEOUT="3").test_client(), token)
    assert response.status_code == 504 and response.json["code"] == "deadline_exceeded"
    assert not reads(emulator)  # the deadline is final: no other transport


@pytest.mark.parametrize("face", ["send_message", "v1"])
def test_a_websocket_message_over_the_event_limit_ends_the_answer(make_app, token, emulator,
                                                                  face):
    emulator.switches.handoff = "ws"
    emulator.switches.ws_catchups = 0
    emulator.switches.answer = "x" * 20_000  # one word: one item carries all of it
    client = make_app(MAX_UPSTREAM_EVENT_BYTES="8192").test_client()
    response = send(client, token) if face == "send_message" else v1(client, token, stream=False)
    assert response.status_code == 502
    body = response.json
    code = body["code"] if face == "send_message" else body["error"]["code"]
    assert code == "upstream_bad_answer"
    assert not resumes(emulator) and not reads(emulator)  # final: no other transport tried


# --- over TLS, as the site ------------------------------------------------------------------

def test_over_tls_the_websocket_is_wss_and_trusts_chatgpt_ca_file(make_app, tls_emulator):
    tls_emulator.switches.handoff = "ws"
    tls_emulator.switches.answer = ANSWER
    token = tls_emulator.mint_access_token()
    client = make_app(CHATGPT_BASE_URL=tls_emulator.url, CHATGPT_AUTH_URL=tls_emulator.url,
                      CHATGPT_CA_FILE=tls_emulator.ca_file).test_client()
    assert streamed_text(client, token) == ANSWER
    # Read on the WebSocket (only it was offered: a failed handshake would end in polling).
    assert tls_emulator.requests_to("/celsius/ws/user") and tls_emulator.topics.subscriptions
    assert handshakes(tls_emulator)[0].headers["origin"] == tls_emulator.url  # https://…
    assert not resumes(tls_emulator) and not reads(tls_emulator)


def test_over_tls_the_websocket_trusts_the_ca_directory(make_app, tls_emulator, tmp_path):
    tls_emulator.switches.handoff = "ws"
    tls_emulator.switches.answer = ANSWER
    token = tls_emulator.mint_access_token()
    client = make_app(CHATGPT_BASE_URL=tls_emulator.url, CHATGPT_AUTH_URL=tls_emulator.url,
                      CHATGPT_CA_FILE="",
                      CHATGPT_CA_DIR=str(hashed_directory(tmp_path / "cas", tls_emulator.ca_file))
                      ).test_client()
    assert streamed_text(client, token) == ANSWER
    # Read on the WebSocket: its handshake verified the emulator through the directory.
    assert tls_emulator.requests_to("/celsius/ws/user") and tls_emulator.topics.subscriptions
    assert not resumes(tls_emulator) and not reads(tls_emulator)
