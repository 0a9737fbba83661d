"""The emulator itself, driven over real HTTP with curl_cffi like the service drives chatgpt.com."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from curl_cffi import requests as curl_requests
from curl_cffi.requests.exceptions import RequestException

from tests.emulator import Emulator, Switches, streams, turns
from tests.emulator.conversations import ConversationStore
from tests.emulator.failures import FAILURES
from tests.servers import stop_process
from tests.service_fixtures import FIXTURES_DIR

HEARTBEAT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


# --- a tiny client: sentinel, proof of work, conversation ------------------------------------

def _config_token(prefix: str, seed: str | None = None, difficulty: str | None = None) -> str:
    """prefix + base64(JSON browser-config list); searched until it clears `difficulty`."""
    config = [3000, "Mon Jan 01 2024 00:00:00 GMT+0000", 4294705152, 0, "Mozilla/5.0",
              None, "prod-emulator", "en-US", "en-US,en", 0, "webdriver\u2212false", "location",
              "onload", 12.5, str(uuid.uuid4())]
    for nonce in range(100_000):
        config[3], config[9] = nonce, nonce >> 1
        encoded = base64.b64encode(
            json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode()).decode()
        if seed is None:
            return prefix + encoded
        if hashlib.sha3_512((seed + encoded).encode()).hexdigest()[:len(difficulty)] <= difficulty:
            return prefix + encoded
    raise AssertionError("no proof found")


def _wrong_proof(seed: str, difficulty: str) -> str:
    """A well-formed proof whose hash does NOT clear the difficulty."""
    while True:
        encoded = base64.b64encode(json.dumps([random.random()]).encode()).decode()
        if hashlib.sha3_512((seed + encoded).encode()).hexdigest()[:len(difficulty)] > difficulty:
            return "gAAAAAB" + encoded


class Chat:
    """Drives one account against the emulator under one API root."""

    def __init__(self, emulator, api: str = "/backend-api", token: str | None = None):
        self.root = emulator.url + api
        self.token = token or emulator.mint_access_token()
        self.session = curl_requests.Session(impersonate="chrome")

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def requirements(self, body: dict | None = None):
        if body is None:
            body = {"p": _config_token("gAAAAAC")}
        return self.session.post(f"{self.root}/sentinel/chat-requirements", json=body,
                                 headers=self.auth())

    def sentinel_headers(self, **extra) -> dict:
        answer = self.requirements()
        assert answer.status_code == 200, answer.text
        requirements = answer.json()
        pow_ = requirements["proofofwork"]
        headers = {**self.auth(), "Openai-Sentinel-Chat-Requirements-Token": requirements["token"]}
        if pow_["required"]:
            headers["Openai-Sentinel-Proof-Token"] = _config_token(
                "gAAAAAB", pow_["seed"], pow_["difficulty"])
        return {**headers, **extra}

    def post(self, body: dict, headers: dict | None = None, **kwargs):
        headers = self.sentinel_headers() if headers is None else headers
        return self.session.post(f"{self.root}/conversation", json=body,
                                 headers={**headers, "Accept": "text/event-stream"}, **kwargs)

    def send(self, text: str = "hello there", *, v1: bool = False, **fields):
        return self.post(body(text, v1=v1, **fields))


def body(text: str = "hello there", *, v1: bool = False, messages=None, **fields) -> dict:
    return {
        "action": "next",
        "messages": messages if messages is not None else [user_message(text)],
        "parent_message_id": str(uuid.uuid4()),
        "model": "auto",
        "supported_encodings": ["v1"] if v1 else [],
        **fields,
    }


def user_message(text: str, role: str = "user") -> dict:
    return {"id": str(uuid.uuid4()), "author": {"role": role},
            "content": {"content_type": "text", "parts": [text]}, "metadata": {}}


# --- reading streams -------------------------------------------------------------------------

def sse_events(raw: bytes, keep_pings: bool = False) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event; asserts the real framing (a blank line ends each event)."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            assert field in ("event", "data"), line
            if field == "event":
                name = value
            else:
                data.append(value)
        events.append((name, "\n".join(data)))
    if keep_pings:
        return events
    return [(n, d) for n, d in events if n != "ping" and not HEARTBEAT.match(d)]


def payloads(raw: bytes) -> list:
    return [json.loads(d) for _, d in sse_events(raw) if d != "[DONE]"]


def reduce_v1(raw: bytes) -> dict[int, dict]:
    """The channel objects after applying every delta (docs/protocol.md, the stream grammar)."""
    channels: dict[int, dict] = {}
    state = {"p": None, "o": None, "c": None}

    def apply(channel, path, op, value):
        if path == "" and op == "add":
            channels[channel] = value
            return
        if op == "patch":
            for sub in value:
                apply(channel, sub["p"], sub["o"], sub["v"])
            return
        *parents, last = path.split("/")[1:]
        target = channels[channel]
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        key = int(last) if isinstance(target, list) else last
        if op == "append" and isinstance(target[key], dict):
            target[key].update(value)
        elif op == "append":
            target[key] += value
        else:
            target[key] = value

    for name, data in sse_events(raw):
        if name != "delta":
            continue
        delta = json.loads(data)
        if "p" not in delta and isinstance(delta["v"], dict) and "message" in delta["v"]:
            state.update(p="", o="add")  # a snapshot without p/o
        state.update({k: delta[k] for k in ("p", "o", "c") if k in delta})
        apply(state["c"], state["p"], state["o"], delta["v"])
    return channels


def answer_of_v1(raw: bytes) -> dict:
    [assistant] = [ch["message"] for ch in reduce_v1(raw).values()
                   if ch["message"]["author"]["role"] == "assistant"]
    return assistant


# --- general -----------------------------------------------------------------------------------

@pytest.mark.parametrize("api", ["/backend-api", "/api"])
def test_both_api_roots_serve_the_whole_tree(emulator, api):
    chat = Chat(emulator, api)
    models = chat.session.get(f"{chat.root}/models", headers=chat.auth())
    assert models.status_code == 200
    assert "auto" in [m["slug"] for m in models.json()["models"]]
    answer = chat.send("ping")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert payloads(answer.content)[-1]["type"] == "moderation"
    conversation_id = payloads(answer.content)[0]["conversation_id"]
    listed = chat.session.get(f"{chat.root}/conversations", headers=chat.auth()).json()
    assert [item["id"] for item in listed["items"]] == [conversation_id]
    assert emulator.requests_to(f"{api}/conversation")


def test_home_page_carries_a_build_id(emulator):
    page = curl_requests.get(emulator.url + "/")
    assert page.status_code == 200
    assert 'data-build="prod-' in page.text and "<script src=" in page.text


def test_every_request_is_recorded_with_lower_case_headers(emulator):
    chat = Chat(emulator)
    chat.send("recorded")
    [sentinel_call] = emulator.requests_to("/sentinel/chat-requirements")
    [conversation_call] = emulator.requests_to("/conversation")
    assert sentinel_call.json["p"].startswith("gAAAAAC")
    assert conversation_call.method == "POST"
    token = conversation_call.headers["openai-sentinel-chat-requirements-token"]
    assert token.startswith("gAAAAAB")
    assert conversation_call.json["messages"][0]["content"]["parts"] == ["recorded"]


def test_an_emulator_run_as_a_program_keeps_no_request_log():
    """`python -m tests.emulator` serves for hours and nobody can read its log: it keeps none
    (a log that grows without bound lengthens every garbage collection), and still answers."""
    with Emulator(record_requests=False) as emulator:
        answer = Chat(emulator).send("not recorded")
        assert answer.status_code == 200 and "not recorded" in answer.text
        assert emulator.requests == [] and emulator.requests_to("/conversation") == []


def test_the_emulator_program_announces_its_start_in_one_write():
    """A reader of the start-up lines may talk to the program as soon as it has ACCESS_TOKEN
    (bench/concurrency.py asks for its collector clock on stdin). Unbuffered, line by line, the
    last start-up line was still being written then, and the answer landed inside it."""
    program = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--easy"], stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        ready, _, _ = select.select([program.stdout], [], [], 60)
        assert ready, "the emulator printed nothing in 60 s"
        first_read = os.read(program.stdout.fileno(), 65536).decode()
    finally:
        program.terminate()
        program.wait(30)
    names = [line.partition("=")[0].partition(":")[0] for line in first_read.splitlines()]
    assert names == ["CHATGPT_BASE_URL", "ACCESS_TOKEN", "API roots"]
    assert first_read.endswith("Ctrl-C stops.\n")


def test_the_emulator_program_stopped_by_sigterm_leaves_no_certificate_folder():
    """Tests and benches stop the program with SIGTERM (tests/servers.stop_process). With --tls
    it makes a CA and a certificate in a folder of its own, which it must remove as it ends: it
    did only on Ctrl-C, and every run left a folder in the temporary directory."""
    program = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--easy", "--tls"], stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent, text=True)
    try:
        lines = [program.stdout.readline() for _ in range(3)]  # base URL, CA file, token
        ca_file = next(line.strip().partition("=")[2] for line in lines
                       if line.startswith("CHATGPT_CA_FILE="))
        folder = Path(ca_file).parent
        assert (folder / "ca.pem").is_file()
        stop_process(program, 30)
        assert program.returncode == 0
        assert not folder.exists()
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()


def test_a_connection_is_kept_open_between_requests(emulator):
    """As chatgpt.com does: a client's requests ride one connection (a streamed answer too), and
    no answer says `Connection: close`."""
    chat = Chat(emulator)
    answer = chat.send("kept")
    assert answer.status_code == 200 and b"kept" in answer.content
    assert "connection" not in {name.lower() for name in answer.headers}
    again = chat.session.get(emulator.url + "/")
    assert again.status_code == 200
    ports = {r.client_port for r in emulator.requests}
    assert len(emulator.requests) == 3 and len(ports) == 1 and None not in ports


def test_a_client_that_asks_to_close_gets_connection_close(emulator):
    """`Connection: close` (and HTTP/1.0) is honoured: the answer says so, then the emulator
    closes the connection."""
    with _connect(emulator) as connection:
        connection.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = _read_until_closed(connection)
    head = received.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 404") and b"\r\nConnection: close" in head


def test_stopping_the_emulator_closes_its_kept_connections():
    """A stopped emulator answers nowhere, not even on a connection kept from before."""
    from tests.emulator import Emulator

    emulator = Emulator().start()
    try:
        connection = _connect(emulator)
        connection.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        head = connection.recv(65536)
        assert head.startswith(b"HTTP/1.1 404") and b"Connection: close" not in head
    finally:
        emulator.stop()
    with connection:
        assert _read_until_closed(connection) == b""  # the end of the connection, not a timeout


def test_accepting_a_connection_never_waits_for_its_handler_thread_to_start(emulator,
                                                                             monkeypatch):
    """Thread.start() waits until the new thread has run: an accept loop that called it stood
    still for a few turns at the GIL per connection, and a burst of connections queued."""
    starters = []
    start = threading.Thread.start

    def recorded_start(thread):
        if threading.current_thread() is emulator._thread:  # the accept loop; no other thread
            starters.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recorded_start)
    connections = [_connect(emulator) for _ in range(3)]
    for connection in connections:
        with connection:
            connection.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            assert connection.recv(65536).startswith(b"HTTP/1.1 404")
    assert starters == []


def _connect(emulator) -> socket.socket:
    host, port = emulator.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):  # the socket's timeout bounds each wait
        received += chunk
    return received


def test_form_posts_are_recorded_too(emulator):
    curl_requests.post(emulator.url + "/u/login/identifier?state=abc",
                       data={"username": "a@b.c", "action": "default"})
    [call] = emulator.requests_to("/u/login/identifier")
    assert call.form == {"username": "a@b.c", "action": "default"}
    assert call.args == {"state": "abc"} and call.json is None


def test_switches_reject_unknown_names_and_values():
    switches = Switches()
    with pytest.raises(AttributeError):
        switches.fail_whit = "cloudflare"
    with pytest.raises(ValueError):
        switches.fail_with = "cloudflair"
    switches.fail_with, switches.pow_difficulty = "cloudflare", "000fff"
    switches.restore_defaults()
    assert (switches.fail_with, switches.pow_difficulty) == (None, "0fffff")


# --- auth -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/sentinel/chat-requirements", "/conversation"])
def test_expired_token_is_401_token_expired(emulator, path):
    chat = Chat(emulator, token=emulator.mint_access_token(exp_in=-60))
    answer = chat.session.post(chat.root + path, json={}, headers=chat.auth())
    assert answer.status_code == 401
    assert answer.json()["detail"]["code"] == "token_expired"


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt", "Basic abc"])
def test_missing_or_invalid_token_is_401_invalid_jwt(emulator, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = curl_requests.post(emulator.url + "/backend-api/sentinel/chat-requirements",
                                json={"p": _config_token("gAAAAAC")}, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["detail"]["code"] == "invalid_jwt"


def test_token_from_another_key_is_refused(emulator):
    import jwt
    forged = jwt.encode({"exp": 9999999999}, b"x" * 64, algorithm="HS256")
    answer = Chat(emulator, token=forged).requirements()
    assert answer.status_code == 401


def test_an_accepted_token_is_checked_again_for_expiry_only():
    from tests.emulator import tokens
    now = [time.time()]
    accepted = tokens.AcceptedTokens(clock=lambda: now[0])
    secret = b"s" * 64
    token = tokens.mint(secret, exp_in=100)
    assert tokens.user_id(accepted.verify(secret, token)).startswith("user-")
    assert accepted.verify(secret, token) == tokens.verify(secret, token)
    now[0] += 200  # the remembered token has expired since
    with pytest.raises(tokens.TokenRejected) as expired:
        accepted.verify(secret, token)
    assert expired.value.code == "token_expired"


def test_a_token_accepted_under_one_secret_is_refused_under_another():
    from tests.emulator import tokens
    accepted = tokens.AcceptedTokens()
    token = tokens.mint(b"a" * 64)
    accepted.verify(b"a" * 64, token)
    for _ in range(2):  # a refusal is not remembered as an acceptance either
        with pytest.raises(tokens.TokenRejected):
            accepted.verify(b"b" * 64, token)


def test_the_emulator_takes_a_burst_of_connections_without_dropping_handshakes():
    """bench/concurrency.py opens hundreds of connections at once: all of them must be queued
    for accept(), none dropped to be retried a second later (a listen backlog of 128 did)."""
    from tests.emulator.server import _Server

    server = _Server("127.0.0.1", 0, lambda environ, start_response: [])  # nothing accepts
    sockets = []
    try:
        for _ in range(300):
            sockets.append(socket.create_connection(("127.0.0.1", server.server_port),
                                                    timeout=10))
    finally:
        for connection in sockets:
            connection.close()
        server.server_close()
    assert len(sockets) == 300


class _CountingSocket(socket.socket):
    """An accepted connection that notes the size of every send."""

    def __init__(self, sends: list, connection: socket.socket):
        super().__init__(connection.family, connection.type, connection.proto,
                         fileno=connection.detach())
        self.sends = sends

    def send(self, data, *flags):
        self.sends.append(len(data))
        return super().send(data, *flags)

    def sendall(self, data, *flags):
        self.sends.append(len(data))
        return super().sendall(data, *flags)


def test_each_piece_of_a_streamed_answer_leaves_in_one_send():
    """The same chunked bytes, but one send per piece (not four: size, CRLF, data, CRLF)."""
    from tests.emulator.server import _QuietHandler, _Server

    sends: list[int] = []

    class Counting(_Server):
        def get_request(self):
            connection, address = super().get_request()
            return _CountingSocket(sends, connection), address

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return (f"data: {i}\n\n".encode() for i in range(20))

    server = Counting("127.0.0.1", 0, app, handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        answer = curl_requests.get(f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert answer.content == b"".join(f"data: {i}\n\n".encode() for i in range(20))
    assert 20 <= len(sends) <= 22  # the head rides with the first piece; the last chunk alone


def test_minted_token_has_the_real_claim_layout(emulator):
    import jwt
    token = emulator.mint_access_token(email="a@b.c", exp_in=100)
    assert token.startswith("eyJhbGciOi")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["https://api.openai.com/profile"]["email"] == "a@b.c"
    assert claims["https://api.openai.com/auth"]["user_id"].startswith("user-")
    assert claims["iss"] == "https://auth.openai.com"
    assert "https://api.openai.com/v1" in claims["aud"]
    assert "model.request" in claims["scope"]
    assert 90 <= claims["exp"] - claims["iat"] <= 100


# --- sentinel ---------------------------------------------------------------------------------

def test_chat_requirements_answer_shape(emulator):
    answer = Chat(emulator).requirements()
    assert answer.status_code == 200
    data = answer.json()
    assert list(data) == ["persona", "token", "arkose", "turnstile", "proofofwork", "force_login"]
    assert data["token"].startswith("gAAAAAB")
    assert data["proofofwork"]["required"] is True
    assert data["proofofwork"]["difficulty"] == "0fffff"
    assert isinstance(data["proofofwork"]["seed"], str)
    assert data["turnstile"] == {"required": False, "dx": None}
    assert data["arkose"] == {"required": False, "dx": None}
    assert data["force_login"] is False


@pytest.mark.parametrize("sent", [{}, {"p": "gAAAAABnope"}, {"p": "gAAAAAC!!!not base64"},
                                  {"p": "gAAAAAC" + base64.b64encode(b'{"a": 1}').decode()}])
def test_chat_requirements_wants_a_well_formed_p(emulator, sent):
    assert Chat(emulator).requirements(sent).status_code == 400


def test_chat_requirements_without_p_when_not_required(emulator):
    emulator.switches.require_requirements_token = False
    emulator.switches.persona = "chatgpt-paid"
    answer = Chat(emulator).requirements({})
    assert answer.status_code == 200 and answer.json()["persona"] == "chatgpt-paid"


def test_requirements_token_is_single_use(emulator):
    chat = Chat(emulator)
    # Header names in any case, as HTTP/2 clients send them.
    headers = {name.lower(): value for name, value in chat.sentinel_headers().items()}
    assert chat.post(body(), headers).status_code == 200
    again = chat.post(body(), headers)
    assert again.status_code == 403
    assert again.json()["detail"]["code"] == "sentinel_token_invalid"


def test_conversation_without_requirements_token_is_403(emulator):
    chat = Chat(emulator)
    assert chat.post(body(), chat.auth()).status_code == 403


def test_proof_of_work_is_verified_independently(emulator):
    chat = Chat(emulator)

    def attempt(make_proof) -> tuple[int, str]:
        requirements = chat.requirements().json()
        pow_ = requirements["proofofwork"]
        assert pow_["difficulty"] == "0fffff"
        headers = {**chat.auth(),
                   "Openai-Sentinel-Chat-Requirements-Token": requirements["token"],
                   "Openai-Sentinel-Proof-Token": make_proof(pow_["seed"], pow_["difficulty"])}
        answer = chat.post(body(), headers)
        return answer.status_code, "" if answer.ok else answer.json()["detail"]["code"]

    fallback = "gAAAAABwQ8Lk5FbGpA2NcR9dShT6gYjU7VxZ4D" + base64.b64encode(b'"0.5"').decode()
    assert attempt(lambda seed, hard: _config_token("gAAAAAB", seed, hard)) == (200, "")
    assert attempt(_wrong_proof) == (403, "proof_of_work_failed")
    assert attempt(lambda seed, hard: fallback) == (403, "proof_of_work_failed")
    assert attempt(lambda seed, hard: "gAAAAAB%%%") == (403, "proof_of_work_failed")
    assert attempt(lambda seed, hard: "") == (403, "proof_of_work_failed")


def test_pow_not_required_skips_the_proof(emulator):
    emulator.switches.pow_required = False
    chat = Chat(emulator)
    token = chat.requirements().json()["token"]
    headers = {**chat.auth(), "Openai-Sentinel-Chat-Requirements-Token": token}
    assert chat.post(body(), headers).status_code == 200


@pytest.mark.parametrize("switch, header", [
    ("turnstile_required", "Openai-Sentinel-Turnstile-Token"),
    ("arkose_required", "Openai-Sentinel-Arkose-Token"),
])
def test_turnstile_and_arkose_when_required(emulator, switch, header):
    setattr(emulator.switches, switch, True)
    chat = Chat(emulator)
    kind = switch.split("_")[0]
    assert chat.requirements().json()[kind]["required"] is True
    refused = chat.post(body(), chat.sentinel_headers())
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == switch
    assert chat.post(body(), chat.sentinel_headers(**{header: "solved"})).status_code == 200


def test_force_login_tokens_are_not_accepted(emulator):
    emulator.switches.force_login = True
    chat = Chat(emulator)
    assert chat.requirements().json()["force_login"] is True
    assert chat.send().status_code == 403


# --- streams ----------------------------------------------------------------------------------

def test_legacy_stream(emulator):
    answer = Chat(emulator).send("hello there")
    raw = answer.content
    events = sse_events(raw)
    assert all(name is None for name, _ in events)
    assert events[-1] == (None, "[DONE]")
    # Python-style separators, as the real server writes them.
    assert events[0][1].startswith('{"message": {"id": "')
    system, user, *assistant, moderation = payloads(raw)
    assert system["message"]["author"]["role"] == "system"
    assert system["message"]["metadata"]["is_visually_hidden_from_conversation"] is True
    assert user["message"]["content"]["parts"] == ["hello there"]
    texts = [e["message"]["content"]["parts"][0] for e in assistant]
    assert texts == ["", "Echo: ", "Echo: hello ", "Echo: hello there", "Echo: hello there"]
    statuses = [e["message"]["status"] for e in assistant]
    assert statuses == ["in_progress"] * 4 + ["finished_successfully"]
    final = assistant[-1]["message"]
    assert final["end_turn"] is True
    assert final["metadata"]["finish_details"] == {"type": "stop", "stop_tokens": [200002]}
    assert final["metadata"]["parent_id"] == user["message"]["id"]
    assert moderation["type"] == "moderation" and moderation["message_id"] == final["id"]
    assert set(moderation) >= {"is_completion", "message_id", "moderation_response"}
    assert len({e["conversation_id"] for e in payloads(raw)}) == 1


def test_legacy_stream_has_pings_unless_switched_off(emulator):
    chat = Chat(emulator)
    with_pings = sse_events(chat.send().content, keep_pings=True)
    assert any(name == "ping" or HEARTBEAT.match(data) for name, data in with_pings)
    emulator.switches.pings = False
    raw = chat.send().content
    assert sse_events(raw, keep_pings=True) == sse_events(raw)


def planned_turn(text: str, switches: Switches | None = None, **fields) -> streams.Turn:
    """The Turn the emulator would stream for a new conversation saying `text`."""
    request = turns.parse(body(text, v1=True, **fields))
    return turns.apply(ConversationStore(), "owner", request, switches or Switches())


def test_the_2024_v1_stream_follows_the_capture():
    raw = b"".join(streams.v1_events_2024(planned_turn("give me a list"), "resume-token"))
    events = sse_events(raw)
    assert events[0] == ("delta_encoding", '"v1"')
    assert events[-1] == (None, "[DONE]")
    kinds = []
    for name, data in events[1:-1]:
        payload = json.loads(data)
        assert (name == "delta") == ("type" not in payload)
        kinds.append(payload.get("type", "delta"))
    assert kinds[:5] == ["resume_conversation_token", "delta", "delta", "input_message", "delta"]
    assert kinds[5] == "message_marker"
    assert kinds[-4:] == ["delta", "server_ste_metadata", "message_stream_complete",
                          "title_generation"]
    assert kinds.count("title_generation") == 2
    deltas = [json.loads(d) for n, d in events if n == "delta"]
    assert deltas[0]["p"] == "" and deltas[0]["o"] == "add" and deltas[0]["c"] == 0
    assert list(deltas[1]) == ["v", "c"] and deltas[1]["c"] == 1
    assert deltas[2]["c"] == 2 and deltas[2]["v"]["message"]["status"] == "in_progress"
    assert deltas[2]["v"]["error_code"] is None
    assert deltas[3] == {"p": "/message/content/parts/0", "o": "append", "v": "Echo: "}
    assert all(list(d) == ["v"] for d in deltas[4:-1])
    closing = deltas[-1]
    assert closing["p"] == "" and closing["o"] == "patch"
    assert [op["p"] for op in closing["v"]] == ["/message/content/parts/0", "/message/status",
                                                "/message/end_turn", "/message/metadata"]
    answer = answer_of_v1(raw)
    assert answer["content"]["parts"] == ["Echo: give me a list"]
    assert answer["status"] == "finished_successfully" and answer["end_turn"] is True
    assert answer["metadata"]["finish_details"] == {"type": "stop", "stop_tokens": [200002]}


def test_force_format_overrides_supported_encodings(emulator):
    chat = Chat(emulator)
    emulator.switches.force_format = "legacy"
    assert sse_events(chat.send(v1=True).content)[0][0] is None
    emulator.switches.force_format = "v1"
    assert sse_events(chat.send(v1=False).content)[0] == ("delta_encoding", '"v1"')


def test_answer_and_answer_fn_switches(emulator):
    chat = Chat(emulator)
    emulator.switches.answer = "Fixed answer."
    assert _answer_text(chat.send().content) == "Fixed answer."
    emulator.switches.answer_fn = lambda sent: f"model={sent['model']}"
    assert answer_of_v1(chat.send(v1=True).content)["content"]["parts"] == ["model=auto"]


def test_words_per_delta_sets_the_granularity(emulator):
    emulator.switches.answer = "one two three four five six"
    emulator.switches.words_per_delta = 3
    deltas = [d for n, d in sse_events(Chat(emulator).send(v1=True).content) if n == "delta"]
    appends = [json.loads(d)["v"] for d in deltas[2:-1]]  # after the system and answer snapshots
    assert appends == ["one two three "]


def test_rechunk_splits_events_mid_line_and_packs_several():
    events = [streams.sse_json({"n": i, "pad": "x" * 40}) for i in range(200)]
    chunks = list(streams.rechunk(iter(events), random.Random(1)))
    assert b"".join(chunks) == b"".join(events)
    assert all(chunks)
    assert any(not c.endswith(b"\n\n") for c in chunks)
    assert any(c.count(b"\n\n") >= 2 for c in chunks)


def test_stream_arrives_in_several_chunks(emulator):
    emulator.switches.answer = " ".join(["word"] * 300)
    emulator.switches.chunk_delay = 0.001
    answer = Chat(emulator).post(body(), stream=True)
    chunks = list(answer.iter_content())
    answer.close()
    assert len(chunks) > 5
    assert sse_events(b"".join(chunks))[-1] == (None, "[DONE]")


def test_chunking_off_writes_whole_events(emulator):
    emulator.switches.chunking, emulator.switches.pings = False, False
    emulator.switches.chunk_delay = 0.02
    answer = Chat(emulator).post(body(), stream=True)
    chunks = list(answer.iter_content())
    answer.close()
    assert all(chunk.endswith(b"\n\n") for chunk in chunks)
    assert len(chunks) == len(sse_events(b"".join(chunks)))


# --- conversation tree ------------------------------------------------------------------------

def _ids(raw: bytes) -> tuple[str, str]:
    last = [p for p in payloads(raw) if p.get("message")][-1]
    return last["conversation_id"], last["message"]["id"]


def test_continuing_a_conversation_builds_the_tree(emulator):
    chat = Chat(emulator)
    first = body("first")
    root = first["parent_message_id"]
    conversation_id, answer_id = _ids(chat.post(first).content)
    second = chat.post(body("second", conversation_id=conversation_id, parent_message_id=answer_id))
    assert second.status_code == 200
    events = payloads(second.content)
    assert [e["message"]["author"]["role"] for e in events if e.get("message")][0] == "user"
    _, second_id = _ids(second.content)

    url = f"{chat.root}/conversation/{conversation_id}"
    tree = chat.session.get(url, headers=chat.auth()).json()
    mapping = tree["mapping"]
    assert tree["conversation_id"] == conversation_id and tree["current_node"] == second_id
    assert "message" not in mapping[root] and mapping[root]["parent"] is None
    chain, node = [], root
    while mapping[node]["children"]:
        [node] = mapping[node]["children"]
        chain.append(mapping[node]["message"]["author"]["role"])
    assert chain == ["system", "user", "assistant", "user", "assistant"]
    assert mapping[second_id]["message"]["content"]["parts"] == ["Echo: second"]
    stored = emulator.conversations.get(conversation_id)
    assert stored.roles() == ["user", "user"]
    assert stored.current_node == second_id


def test_history_messages_are_all_added_in_order(emulator):
    history = [user_message("be brief", "system"), user_message("hi"),
               user_message("hello!", "assistant"), user_message("and now?")]
    raw = Chat(emulator).post(body(messages=history)).content
    conversation_id, _ = _ids(raw)
    roles = emulator.conversations.get(conversation_id).roles()
    assert roles == ["system", "user", "assistant", "user"]
    echoed = [e["message"]["content"]["parts"][0] for e in payloads(raw)
              if e.get("message") and e["message"]["author"]["role"] != "assistant"]
    assert echoed == ["", "be brief", "hi", "and now?"]
    assert _answer_text(raw) == "Echo: and now?"


def _answer_text(raw: bytes) -> str:
    return [p for p in payloads(raw) if p.get("message")][-1]["message"]["content"]["parts"][0]


def test_unknown_conversation_or_parent_is_404(emulator):
    chat = Chat(emulator)
    missing = chat.post(body(conversation_id=str(uuid.uuid4())))
    assert missing.status_code == 404 and missing.json() == {"detail": "Conversation not found"}
    conversation_id, _ = _ids(chat.send().content)
    stray = chat.post(body(conversation_id=conversation_id, parent_message_id=str(uuid.uuid4())))
    assert stray.status_code == 404


def test_conversations_belong_to_their_account(emulator):
    conversation_id, answer_id = _ids(Chat(emulator).send().content)
    other = Chat(emulator, token=emulator.mint_access_token(email="other@example.com"))
    sent = other.post(body(conversation_id=conversation_id, parent_message_id=answer_id))
    assert sent.status_code == 404
    assert other.session.get(f"{other.root}/conversation/{conversation_id}",
                             headers=other.auth()).status_code == 404


def test_variant_adds_a_sibling_answer(emulator):
    chat = Chat(emulator)
    first = body("again")
    conversation_id, answer_id = _ids(chat.post(first).content)
    user = first["messages"][0]
    system_id = emulator.conversations.get(conversation_id).mapping[user["id"]].parent
    again = chat.post({**first, "action": "variant", "conversation_id": conversation_id,
                       "parent_message_id": system_id})
    assert again.status_code == 200
    siblings = emulator.conversations.get(conversation_id).mapping[user["id"]].children
    assert len(siblings) == 2 and siblings[0] == answer_id


def test_patch_and_list_conversations(emulator):
    chat = Chat(emulator)
    conversation_id, _ = _ids(chat.send("title me please").content)
    url = f"{chat.root}/conversation/{conversation_id}"
    assert chat.session.get(url, headers=chat.auth()).json()["title"] == "title me please"
    renamed = chat.session.patch(url, json={"title": "New"}, headers=chat.auth())
    assert renamed.json() == {"success": True}
    listed = chat.session.get(f"{chat.root}/conversations?offset=0&limit=5",
                              headers=chat.auth()).json()
    assert listed["items"][0]["title"] == "New" and listed["total"] == 1
    chat.session.patch(url, json={"is_visible": False}, headers=chat.auth())
    assert chat.session.get(url, headers=chat.auth()).status_code == 404


def test_temporary_chats_are_not_listed_and_patch_all_hides(emulator):
    chat = Chat(emulator)
    temporary, _ = _ids(chat.send("secret", history_and_training_disabled=True).content)
    kept, _ = _ids(chat.send("kept").content)
    listing = f"{chat.root}/conversations"
    listed = chat.session.get(listing, headers=chat.auth()).json()["items"]
    assert [item["id"] for item in listed] == [kept]
    assert chat.session.get(f"{chat.root}/conversation/{temporary}",
                            headers=chat.auth()).status_code == 200
    chat.session.patch(listing, json={"is_visible": False}, headers=chat.auth())
    assert chat.session.get(listing, headers=chat.auth()).json()["items"] == []


@pytest.mark.parametrize("broken", [
    {"action": "jump"},
    {"action": None},
    {"messages": []},
    {"messages": [{"content": {"content_type": "text", "parts": ["x"]}}]},
    {"messages": [{"author": {"role": "user"}, "content": {"content_type": "text"}}]},
    {"model": ""},
    {"parent_message_id": None},
    {"action": "continue"},
])
def test_malformed_bodies_are_400(emulator, broken):
    answer = Chat(emulator).post({**body(), **broken})
    assert answer.status_code == 400
    assert "detail" in answer.json()


def test_prompt_above_max_prompt_chars_is_400(emulator):
    emulator.switches.max_prompt_chars = 10
    answer = Chat(emulator).send("x" * 11)
    assert answer.status_code == 400
    assert answer.json()["detail"]["code"] == "message_length_exceeds_limit"


# --- max tokens and continue ------------------------------------------------------------------

@pytest.mark.parametrize("v1", [False, True])
def test_max_tokens_cuts_then_continue_resumes_the_same_message(emulator, v1):
    emulator.switches.answer = "alpha beta gamma delta epsilon zeta"
    emulator.switches.max_tokens_cuts = 2
    chat = Chat(emulator)
    texts, finishes = [], []

    def final(raw):
        if v1:
            return answer_of_v1(raw)
        return [p for p in payloads(raw) if p.get("message")][-1]["message"]

    raw = chat.send(v1=v1).content
    message = final(raw)
    conversation_id = next(p["conversation_id"] for p in payloads(raw) if isinstance(p, dict))
    answer_id = message["id"]
    while True:
        texts.append(message["content"]["parts"][0])
        finishes.append((message["metadata"]["finish_details"]["type"], message["end_turn"]))
        if message["end_turn"]:
            break
        sent = chat.post({"action": "continue", "conversation_id": conversation_id,
                          "parent_message_id": answer_id, "model": "auto",
                          "supported_encodings": ["v1"] if v1 else []})
        assert sent.status_code == 200
        message = final(sent.content)
        assert message["id"] == answer_id
    assert texts == ["alpha beta ", "alpha beta gamma delta ",
                     "alpha beta gamma delta epsilon zeta"]
    assert finishes == [("max_tokens", False), ("max_tokens", False), ("stop", True)]


# --- injected failures --------------------------------------------------------------------------

EXPECTED_FAILURES = {
    "token_expired": (401, "token_expired"),
    "invalid_token": (401, "invalid_jwt"),
    "cloudflare": (403, "<title>Just a moment...</title>"),
    "rate_limit": (429, "clears_in"),
    "rate_limit_text": (429, "Too Many Requests"),
    "server_error": (500, "Internal Server Error"),
    "too_long": (400, "message_length_exceeds_limit"),
    "not_json": (200, "<!DOCTYPE html>"),
    "only_one_message": (429, "Only one message at a time."),
    "not_found": (404, "Conversation not found"),
    "sentinel_failed": (403, "sentinel_failed"),
}


def test_every_failure_has_an_expectation():
    assert set(EXPECTED_FAILURES) == set(FAILURES)


@pytest.mark.parametrize("name", sorted(EXPECTED_FAILURES))
def test_fail_with(emulator, name):
    emulator.switches.fail_with = name
    status, marker = EXPECTED_FAILURES[name]
    answer = Chat(emulator).send()
    assert answer.status_code == status
    assert marker in answer.text
    assert "text/event-stream" not in answer.headers.get("content-type", "")


def test_cloudflare_page_has_the_challenge_markers(emulator):
    emulator.switches.fail_with = "cloudflare"
    page = Chat(emulator).send()
    assert page.headers["content-type"].startswith("text/html")
    assert "window._cf_chl_opt" in page.text and "/cdn-cgi/challenge-platform/" in page.text


def test_rate_limit_reports_clears_in(emulator):
    emulator.switches.fail_with, emulator.switches.clears_in = "rate_limit", 7
    assert Chat(emulator).send().json()["detail"]["clears_in"] == 7


def test_fail_at_and_fail_times(emulator):
    emulator.switches.fail_with = "server_error"
    emulator.switches.fail_at = "sentinel"
    emulator.switches.fail_times = 1
    chat = Chat(emulator)
    assert chat.requirements().status_code == 500
    assert chat.send().status_code == 200
    emulator.switches.fail_at = "any"
    emulator.reset()
    emulator.switches.fail_with, emulator.switches.fail_at = "not_found", "any"
    assert chat.session.get(f"{chat.root}/models", headers=chat.auth()).status_code == 404


# --- faults inside the stream -------------------------------------------------------------------

@pytest.mark.parametrize("v1", [False, True])
def test_stream_error_midway(emulator, v1):
    emulator.switches.answer = "one two three four"
    emulator.switches.stream_error = "Something went wrong"
    events = payloads(Chat(emulator).send(v1=v1).content)
    errors = [e for e in events if isinstance(e, dict) and e.get("error")]
    assert errors == [{"message": None, "conversation_id": errors[0]["conversation_id"],
                       "error": "Something went wrong"}]
    assert not any(isinstance(e, dict) and e.get("type") == "message_stream_complete"
                   for e in events)


@pytest.mark.parametrize("v1", [False, True])
def test_moderation_blocked_withholds_the_answer(emulator, v1):
    emulator.switches.moderation_blocked = True
    events = payloads(Chat(emulator).send(v1=v1).content)
    [moderation] = [e for e in events if isinstance(e, dict) and e.get("type") == "moderation"]
    assert moderation["moderation_response"]["blocked"] is True
    assert "Echo" not in json.dumps(events)


@pytest.mark.parametrize("v1", [False, True])
def test_drop_after_events_eof_ends_without_done(emulator, v1):
    emulator.switches.drop_after_events = 4
    answer = Chat(emulator).send(v1=v1)
    assert answer.status_code == 200
    events = sse_events(answer.content)
    assert len(events) == 4
    assert (None, "[DONE]") not in events


def test_drop_after_events_abort_breaks_the_body(emulator):
    emulator.switches.drop_after_events = 3
    emulator.switches.drop_mode = "abort"
    with pytest.raises(RequestException, match="curl: \\(18\\)"):
        Chat(emulator).send()


# --- replay -------------------------------------------------------------------------------------

def test_replay_of_the_v1_capture(emulator):
    capture = FIXTURES_DIR / "delta-v1-capture.txt"
    emulator.switches.replay_file = capture
    answer = Chat(emulator).send(v1=True)
    recorded = [line for line in capture.read_text().splitlines() if line.startswith("data: ")]
    replayed = [line for line in answer.text.splitlines() if line.startswith("data: ")]
    assert replayed == recorded
    assert "#" not in answer.text.split("\n", 1)[0]


def test_replay_bytes(emulator):
    emulator.switches.replay_bytes = b"# comment\ndata: {\"v\": \"x\"}\n\ndata: [DONE]\n\n"
    assert Chat(emulator).send().content == b"data: {\"v\": \"x\"}\n\ndata: [DONE]\n\n"
