"""The emulator's 2026 dialect, checked with a mini-client written here from the protocol notes
(docs/protocol-requests.md): plain `requests`, its own FNV proof search, nothing from chatgpt_web.
The hash is the emulator's plain one, which tests/test_pow_2026.py checks against the published
values.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

import pytest
import requests

from tests.emulator.sentinel import UNUSUAL_ACTIVITY, fnv_fmix_hex
from tests.emulator.turnstile import encrypt

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/152.0.0.0 Safari/537.36")
CONFIG = [3000, "Mon Jun 01 2026 12:00:00 GMT-0700 (Pacific Daylight Time)", 4294967296, 1, UA,
          "https://chatgpt.com/backend-api/sentinel/sdk.js", "prod-" + "0" * 40, "en-US",
          "en-US,en", 0, "webdriver\u2212false", "location", "onfocus", 1234.5, str(uuid.uuid4()),
          "", 8, 1780340000000.5, 0, 0, 0, 0, 0, 0, 0]


def encode(config: list) -> str:
    text = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(text.encode()).decode()


def clears_sha3(seed: str, encoded: str, difficulty: str) -> bool:
    return hashlib.sha3_512((seed + encoded).encode()).hexdigest()[:len(difficulty)] <= difficulty


def fnv_proof(seed: str, difficulty: str, *, clearing_sha3: bool | None = None) -> str:
    """An FNV answer; with clearing_sha3, one whose config also does (or does not) clear SHA3."""
    for nonce in range(100_000):
        config = list(CONFIG)
        config[3], config[9] = nonce, 3
        encoded = encode(config)
        if fnv_fmix_hex(seed + encoded)[:len(difficulty)] <= difficulty and (
                clearing_sha3 is None or clears_sha3(seed, encoded, difficulty) == clearing_sha3):
            return "gAAAAAB" + encoded + "~S"
    raise AssertionError("unsolved")


def sha3_proof(seed: str, difficulty: str) -> str:
    for nonce in range(100_000):
        config = list(CONFIG)
        config[3], config[9] = nonce, nonce >> 1
        encoded = encode(config)
        if clears_sha3(seed, encoded, difficulty):
            return "gAAAAAB" + encoded
    raise AssertionError("unsolved")


class Browser:
    """What a 2026 client does, step by step, with a cookie jar and one device id."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": UA})
        self.session.get(emulator.url + "/")
        self.device_id = self.session.cookies.get("oai-did")
        self.token = emulator.mint_access_token()
        self.p = "gAAAAAC" + encode(CONFIG)

    def headers(self, **extra) -> dict:
        return {"Authorization": f"Bearer {self.token}", "Oai-Device-Id": self.device_id, **extra}

    def post(self, path: str, body, **headers) -> requests.Response:
        return self.session.post(self.emulator.url + "/backend-api" + path, json=body,
                                 headers=self.headers(**headers))

    def prepare(self) -> dict:
        response = self.post("/sentinel/chat-requirements/prepare", {"p": self.p})
        assert response.status_code == 200, response.text
        return response.json()

    def turnstile_answer(self, challenge: dict) -> str:
        """The emulator keeps each program's answer; the VM itself is tested in test_turnstile."""
        return self.emulator.two_phase._challenges[challenge["prepare_token"]].turnstile_answer

    def bundle(self) -> dict:
        challenge = self.prepare()
        pow_ = challenge["proofofwork"]
        proof = fnv_proof(pow_["seed"], pow_["difficulty"])
        answer = self.turnstile_answer(challenge)
        finalized = self.post("/sentinel/chat-requirements/finalize", {
            "prepare_token": challenge["prepare_token"], "proofofwork": proof,
            "turnstile": answer})
        assert finalized.status_code == 200, finalized.text
        return {"OpenAI-Sentinel-Chat-Requirements-Token": finalized.json()["token"],
                "OpenAI-Sentinel-Proof-Token": proof, "OpenAI-Sentinel-Turnstile-Token": answer}

    def conduit(self, trace_id: str, previous: str = "") -> str | None:
        response = self.post("/f/conversation/prepare", {"action": "next",
                                                         "client_prepare_state": "success"},
                             **{"X-Oai-Turn-Trace-Id": trace_id, "X-Conduit-Token": previous})
        assert response.status_code == 200, response.text
        return response.json()["conduit_token"]

    def write(self, body: dict | None = None, *, bundle: dict | None = None,
              conduit: str | None = None, trace_id: str | None = None) -> requests.Response:
        trace_id = trace_id or str(uuid.uuid4())
        conduit = self.conduit(trace_id) if conduit is None else conduit
        bundle = self.bundle() if bundle is None else bundle
        return self.post("/f/conversation", body or new_chat(), **bundle,
                         **{"X-Conduit-Token": conduit, "X-Oai-Turn-Trace-Id": trace_id,
                            "Accept": "text/event-stream"})


def new_chat(text: str = "hello there", **fields) -> dict:
    return {"action": "next", "messages": [{
        "id": str(uuid.uuid4()), "author": {"role": "user"},
        "content": {"content_type": "text", "parts": [text]}, "metadata": {}}],
        "parent_message_id": "client-created-root", "model": "auto",
        "client_prepare_state": "success", "supported_encodings": ["v1"], **fields}


def events(raw: bytes) -> list:
    found = []
    for block in raw.decode().split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data and data[0] != "[DONE]":
            try:
                found.append(json.loads("\n".join(data)))
            except ValueError:
                pass
    return found


def answer_text(raw: bytes) -> str:
    """The assistant text of a v1 stream, applied the plain way (append ops and patches)."""
    text, path = "", None
    for event in events(raw):
        if not isinstance(event, dict):
            continue
        path = event.get("p", path)
        ops = event["v"] if event.get("o") == "patch" else [event] if "v" in event else []
        for op in ops if isinstance(ops, list) else []:
            if op.get("p", path) == "/message/content/parts/0" and isinstance(op.get("v"), str):
                text += op["v"]
    return text


def refused(response: requests.Response) -> bool:
    return response.status_code == 403 and response.json() == {"detail": UNUSUAL_ACTIVITY}


# --- the home page ------------------------------------------------------------------------------

def test_the_home_page_sets_the_device_cookie_once_and_names_its_build(emulator):
    session = requests.Session()
    page = session.get(emulator.url + "/")
    assert 'data-build="prod-' in page.text and "<script src=" in page.text
    device = session.cookies.get("oai-did")
    assert str(uuid.UUID(device)) == device and session.cookies.get("__cf_bm")
    again = session.get(emulator.url + "/")
    assert "oai-did" not in again.cookies and session.cookies.get("oai-did") == device


def test_a_request_delay_holds_only_the_paths_it_names(emulator):
    """switches.request_delays: a distant site's round trip, per path suffix."""
    browser = Browser(emulator)
    emulator.switches.request_delays = (("/f/conversation/prepare", 0.5),)
    started = time.monotonic()
    assert browser.conduit(str(uuid.uuid4()))
    assert time.monotonic() - started >= 0.5
    emulator.switches.request_delays = (("/f/conversation/prepare", 600.0),)
    sentinel = browser.session.post(emulator.url + "/backend-api/sentinel/chat-requirements/"
                                    "prepare", json={"p": browser.p}, headers=browser.headers(),
                                    timeout=60)
    assert sentinel.status_code == 200


# --- a whole turn -------------------------------------------------------------------------------

def test_a_turn_through_prepare_finalize_conduit_and_write(emulator):
    browser = Browser(emulator)
    response = browser.write(new_chat("first words"))
    assert response.status_code == 200, response.text
    assert answer_text(response.content) == "Echo: first words"
    conversation_id = next(e["conversation_id"] for e in events(response.content)
                           if isinstance(e, dict) and e.get("conversation_id"))
    assert abs(int(conversation_id[:8], 16) - time.time()) < 60  # the id starts with the time


def test_the_prepare_answer_has_every_challenge(emulator):
    emulator.switches.so_required = True
    browser = Browser(emulator)
    challenge = browser.prepare()
    assert challenge["prepare_token"].startswith("gAAAAA")
    assert set(challenge["proofofwork"]) == {"required", "seed", "difficulty"}
    assert challenge["so"]["required"] is True and challenge["so"]["collector_dx"]
    program = json.loads("".join(
        chr(ord(c) ^ ord(browser.p[i % len(browser.p)]))
        for i, c in enumerate(base64.b64decode(challenge["turnstile"]["dx"]).decode("latin-1"))))
    assert all(isinstance(i, list) and isinstance(i[0], int) for i in program)
    assert program[-1][0] == 3  # resolves
    assert browser.write().status_code == 200  # so is optional


@pytest.mark.parametrize("p", ["gAAAAAB" + encode(CONFIG), "gAAAAACnot base64",
                               "gAAAAAC" + encode(CONFIG[:10])],
                         ids=["not-a-requirements-prefix", "not-base64", "a-short-config"])
def test_prepare_wants_a_requirements_token_with_a_config(emulator, p):
    browser = Browser(emulator)
    assert browser.post("/sentinel/chat-requirements/prepare", {"p": p}).status_code == 400


def test_finalize_checks_both_hashes_and_the_turnstile_answer(emulator):
    browser = Browser(emulator)

    def finalize(proof_of, answer_of=browser.turnstile_answer):
        challenge = browser.prepare()
        seed, difficulty = challenge["proofofwork"]["seed"], challenge["proofofwork"]["difficulty"]
        return browser.post("/sentinel/chat-requirements/finalize", {
            "prepare_token": challenge["prepare_token"], "proofofwork": proof_of(seed, difficulty),
            "turnstile": answer_of(challenge)})

    assert finalize(fnv_proof).status_code == 200
    assert finalize(sha3_proof).status_code == 200  # no "~S": the 2024 hash
    # An FNV answer without "~S" is checked as SHA3. At the default difficulty one FNV answer in
    # 16 clears SHA3 by chance too, so take one that does not: the check must be deterministic.
    assert refused(finalize(lambda s, d: fnv_proof(s, d, clearing_sha3=False)[:-2]))
    assert refused(finalize(fnv_proof, lambda challenge: "d3Jvbmc="))


def test_a_prepare_token_is_finalized_once(emulator):
    browser = Browser(emulator)
    challenge = browser.prepare()
    pow_ = challenge["proofofwork"]
    body = {"prepare_token": challenge["prepare_token"],
            "proofofwork": fnv_proof(pow_["seed"], pow_["difficulty"]),
            "turnstile": browser.turnstile_answer(challenge)}
    assert browser.post("/sentinel/chat-requirements/finalize", body).status_code == 200
    assert refused(browser.post("/sentinel/chat-requirements/finalize", body))


# --- what the write insists on ----------------------------------------------------------------

def test_a_bundle_is_single_use_and_must_be_sent_unchanged(emulator):
    browser = Browser(emulator)
    bundle = browser.bundle()
    assert browser.write(bundle=bundle).status_code == 200
    assert refused(browser.write(bundle=bundle))  # reused
    other = browser.bundle()
    assert refused(browser.write(bundle={**other, "OpenAI-Sentinel-Proof-Token": "gAAAAABx~S"}))
    assert refused(browser.write(bundle={}))  # missing


def test_the_conduit_token_must_be_fresh_and_of_the_same_turn(emulator):
    browser = Browser(emulator)
    trace = str(uuid.uuid4())
    token = browser.conduit(trace)
    assert refused(browser.write(conduit=token, trace_id=str(uuid.uuid4())))  # another turn
    assert refused(browser.write(conduit="", trace_id=trace))                  # none
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["exp"] - claims["iat"] == 60 and {"conduit_uuid", "cluster"} <= set(claims)
    emulator.switches.conduit_lifetime = 0.2
    short = browser.conduit(trace)
    time.sleep(0.5)
    assert refused(browser.write(conduit=short, trace_id=trace))               # expired


def test_prepare_may_answer_a_null_conduit_token(emulator):
    emulator.switches.conduit_null_times = 1
    browser = Browser(emulator)
    trace = str(uuid.uuid4())
    assert browser.conduit(trace) is None
    assert browser.conduit(trace, previous="no-token")  # the next one is a token


def test_the_device_id_must_be_the_device_cookie(emulator):
    browser = Browser(emulator)
    browser.device_id = str(uuid.uuid4())
    assert refused(browser.write())


def test_thinking_effort_takes_three_values(emulator):
    browser = Browser(emulator)
    assert browser.write(new_chat(thinking_effort="extended")).status_code == 200
    wrong = browser.write(new_chat(thinking_effort="high"))
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "thinking_effort"]


def test_a_write_without_client_prepare_state_lands_in_the_mini_pool(emulator):
    browser = Browser(emulator)
    plain = browser.write(new_chat())
    body = new_chat()
    del body["client_prepare_state"]
    mini = browser.write(body)
    slugs = [e["metadata"]["model_slug"] for e in events(mini.content)
             if isinstance(e, dict) and e.get("type") == "server_ste_metadata"]
    assert slugs == ["gpt-5-mini"]
    assert "gpt-5-mini" not in plain.text


def test_reject_writes_answers_unusual_activity_then_recovers(emulator):
    emulator.switches.reject_writes = 1
    browser = Browser(emulator)
    assert refused(browser.write())
    assert browser.write().status_code == 200


# --- hand-off ---------------------------------------------------------------------------------

def test_a_handed_off_turn_is_answered_by_resume_once(emulator):
    emulator.switches.handoff = "both"
    browser = Browser(emulator)
    first = browser.write(new_chat("long thoughts"))
    handoffs = [e for e in events(first.content)
                if isinstance(e, dict) and e.get("type") == "stream_handoff"]
    assert len(handoffs) == 1 and answer_text(first.content) == ""
    assert {o["type"] for o in handoffs[0]["options"]} == {"subscribe_ws_topic",
                                                           "resume_sse_endpoint"}
    body = {"conversation_id": handoffs[0]["conversation_id"], "offset": 0}
    resumed = browser.post("/f/conversation/resume", body)
    assert resumed.status_code == 200 and answer_text(resumed.content) == "Echo: long thoughts"
    assert browser.post("/f/conversation/resume", body).status_code == 404  # a duplicate


def test_in_poll_mode_the_answer_is_read_from_the_conversation(emulator):
    emulator.switches.handoff = "poll"
    browser = Browser(emulator)
    first = browser.write(new_chat("poll me"))
    conversation_id = next(e["conversation_id"] for e in events(first.content)
                           if isinstance(e, dict) and e.get("type") == "stream_handoff")
    body = {"conversation_id": conversation_id, "offset": 0}
    assert browser.post("/f/conversation/resume", body).status_code == 404
    tree = browser.session.get(emulator.url + f"/backend-api/conversation/{conversation_id}",
                               headers=browser.headers()).json()
    message = tree["mapping"][tree["current_node"]]["message"]
    assert message["status"] == "finished_successfully"
    assert message["content"]["parts"] == ["Echo: poll me"]


# --- the optional requests around a turn --------------------------------------------------------

def conversation_id_of(response: requests.Response) -> str:
    return next(e["conversation_id"] for e in events(response.content)
                if isinstance(e, dict) and e.get("conversation_id"))


def test_conversation_init_answers_the_detail_metadata_with_the_banner_when_degraded(emulator):
    browser = Browser(emulator)
    body = {"requested_default_model": None, "conversation_id": None,
            "timezone_offset_min": -480, "conversation_origin": None}
    plain = browser.post("/conversation/init", body)
    assert plain.status_code == 200, plain.text
    assert plain.json()["type"] == "conversation_detail_metadata"
    assert plain.json()["banner_info"] is None and plain.json()["default_model_slug"] == "auto"
    emulator.switches.degraded = True
    banner = browser.post("/conversation/init", body).json()["banner_info"]
    assert banner["name"] == "account_sharing_degrade"
    anonymous = requests.post(emulator.url + "/backend-api/conversation/init", json=body)
    assert anonymous.status_code == 401


def test_stream_status_is_complete_after_a_turn_and_private_to_its_account(emulator):
    browser = Browser(emulator)
    conversation_id = conversation_id_of(browser.write(new_chat("status please")))
    path = f"/backend-api/conversation/{conversation_id}/stream_status"
    status = browser.session.get(emulator.url + path, headers=browser.headers())
    assert status.status_code == 200 and status.json() == {"status": "COMPLETE"}
    stranger = emulator.mint_access_token(email="someone-else@example.com")
    other = requests.get(emulator.url + path, headers={"Authorization": f"Bearer {stranger}"})
    assert other.status_code == 404


def test_sentinel_ping_and_heartbeat_answer_like_the_site(emulator):
    browser = Browser(emulator)
    extra = base64.b64encode(json.dumps({"v": 1, "sequence_number": 0, "signals": {
        "ping_source": "session_observer_background_submit"}}).encode()).decode()
    ping = browser.post("/sentinel/ping", None, **{"OpenAI-Sentinel-Extra-Data": extra})
    assert ping.status_code == 200 and ping.json() == {"status": "ok"}
    garbled = browser.post("/sentinel/ping", None, **{"OpenAI-Sentinel-Extra-Data": "%%%"})
    assert garbled.status_code == 400
    assert browser.post("/sentinel/heartbeat", None).json() == {"status": "ok"}


def test_the_cloudflare_trace_is_key_value_text(emulator):
    trace = requests.get(emulator.url + "/cdn-cgi/trace", headers={"User-Agent": UA})
    assert trace.status_code == 200 and trace.headers["content-type"].startswith("text/plain")
    fields = dict(line.split("=", 1) for line in trace.text.splitlines())
    assert fields["uag"] == UA and fields["visit_scheme"] == "http" and "ts" in fields


# --- the 2024-only mirror ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/sentinel/chat-requirements/prepare",
                                  "/sentinel/chat-requirements/finalize",
                                  "/f/conversation/prepare", "/f/conversation",
                                  "/f/conversation/resume"])
def test_a_2024_mirror_answers_404_to_every_2026_endpoint(emulator, path):
    emulator.switches.dialect = "2024"
    browser = Browser(emulator)
    assert browser.post(path, {"p": browser.p}).status_code == 404
    assert browser.post("/sentinel/chat-requirements", {"p": browser.p}).status_code == 200


def test_without_two_phase_the_one_step_call_carries_the_program(emulator):
    emulator.switches.two_phase_sentinel = False
    browser = Browser(emulator)
    assert browser.post("/sentinel/chat-requirements/prepare", {"p": browser.p}).status_code \
        == 404
    answer = browser.post("/sentinel/chat-requirements", {"p": browser.p}).json()
    assert answer["turnstile"]["required"] is True and answer["turnstile"]["dx"]


def test_the_generator_encrypts_with_the_key_it_is_given():
    program = [[2, 40, "x"], [3, 40]]
    dx = encrypt(program, "key")
    decoded = base64.b64decode(dx).decode("latin-1")
    assert json.loads("".join(chr(ord(c) ^ ord("key"[i % 3])) for i, c in enumerate(decoded))) \
        == program
