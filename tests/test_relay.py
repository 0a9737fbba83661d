"""The relay, driven by the official openai SDK through the service to the fake OpenAI API.

Each test configures an UPSTREAMS_FILE whose keys script the fake's behaviour (tests/fake_openai)
and asserts what the caller gets, what the fake received, and what /admin/upstreams shows.
"""
import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.fake_openai import keys as fake_keys
from tests.relay_fixtures import ADMIN_KEY, CLIENT_KEY, upstream
from tests.servers import http_request

MESSAGES = [{"role": "user", "content": "hello relay"}]


def sdk(service, **options):
    return openai.OpenAI(base_url=service.url + "/v1", api_key=CLIENT_KEY,
                         **{"max_retries": 0, "timeout": 30, **options})


def raw(service, path, body, key=CLIENT_KEY):
    return http_request(service.url, "POST", path, json.dumps(body).encode(),
                        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def direct(fake, path, body, key="sk-fake-good-1"):
    return http_request(fake.url, "POST", path, json.dumps(body).encode(),
                        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def upstreams(service):
    status, _, body = http_request(service.url, path="/admin/upstreams",
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200
    return {row["key"]: row for row in json.loads(body)["keys"]}


# --- every endpoint, sync, async and streaming ----------------------------------------------

def test_every_endpoint_through_the_sync_sdk(relay_service, fake_openai):
    client = sdk(relay_service())
    chat = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert chat.choices[0].message.content == "Echo: hello relay"
    text = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say")
    assert text.choices[0].text == "Echo: say"
    vector = client.embeddings.create(model="text-embedding-3-small", input="abc")
    assert len(vector.data[0].embedding) == 8  # the SDK asked for base64 and decoded it
    assert client.moderations.create(input="a forbidden-word here").results[0].flagged
    assert client.images.generate(model="dall-e-3", prompt="a cat").data[0].url
    assert client.audio.speech.create(model="tts-1", voice="alloy",
                                      input="one two").content == b"ID3fake-audio:one|two|"
    transcript = client.audio.transcriptions.create(model="whisper-1",
                                                    file=("a.wav", b"RIFF\x00\x01audio"))
    assert transcript.text == "transcribed 11 bytes of a.wav"
    # the multipart body reached the upstream exactly as the SDK sent it
    upstream_body = fake_openai.requests_to("/audio/transcriptions")[0].body
    assert b'filename="a.wav"' in upstream_body and b"RIFF\x00\x01audio" in upstream_body


def test_every_endpoint_through_the_async_sdk(relay_service):
    service = relay_service()

    async def run():
        async with openai.AsyncOpenAI(base_url=service.url + "/v1", api_key=CLIENT_KEY,
                                      max_retries=0, timeout=30) as client:
            chat = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                          stream=True)
            pieces = [c.choices[0].delta.content async for c in stream if c.choices]
            text = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="p")
            vector = await client.embeddings.create(model="text-embedding-3-small", input="x")
            moderation = await client.moderations.create(input="fine")
            image = await client.images.generate(model="dall-e-3", prompt="p",
                                                 response_format="b64_json")
            speech = await client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
            heard = await client.audio.transcriptions.create(model="whisper-1",
                                                             file=("b.mp3", b"xyz"))
            return chat, pieces, text, vector, moderation, image, speech, heard

    # In a thread of its own: an earlier test's browser may leave an event loop in this one.
    with ThreadPoolExecutor(1) as thread:
        chat, pieces, text, vector, moderation, image, speech, heard = thread.submit(
            asyncio.run, run()).result()
    assert chat.choices[0].message.content == "Echo: hello relay"
    assert "".join(p or "" for p in pieces) == "Echo: hello relay"
    assert text.choices[0].text == "Echo: p"
    assert vector.data[0].embedding
    assert moderation.results[0].flagged is False
    assert image.data[0].b64_json
    assert speech.content.startswith(b"ID3")
    assert heard.text == "transcribed 3 bytes of b.mp3"


def test_streamed_completions_and_chat_through_the_sdk(relay_service):
    client = sdk(relay_service())
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
        == "Echo: hello relay"
    assert chunks[-1].usage.total_tokens > 0
    text = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="a b",
                                          stream=True))
    assert "".join(c.choices[0].text for c in text) == "Echo: a b"


# --- honest transport -------------------------------------------------------------------------

def test_answers_pass_byte_for_byte(relay_service, fake_openai):
    service = relay_service()
    for body in ({"model": "gpt-4o", "messages": MESSAGES},
                 {"model": "gpt-4o", "messages": MESSAGES, "stream": True,
                  "stream_options": {"include_usage": True}},
                 {"model": "text-embedding-3-small", "input": ["a", "b"]}):
        path = "/v1/embeddings" if "input" in body else "/v1/chat/completions"
        status, headers, relayed = raw(service, path, body)
        assert status == 200
        assert relayed == direct(fake_openai, path, body)[2]


def test_usage_is_asked_upstream_and_hidden_from_callers_who_did_not_ask(relay_service,
                                                                          fake_openai):
    service = relay_service()
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    status, _, relayed = raw(service, "/v1/chat/completions", body)
    sent = fake_openai.requests_to("/chat/completions")[-1].json
    assert sent["stream_options"] == {"include_usage": True}
    # the caller gets exactly what the upstream sends to a caller that did not ask for usage
    assert relayed == direct(fake_openai, "/v1/chat/completions", body)[2]
    assert b'"usage"' not in relayed and relayed.endswith(b"data: [DONE]\n\n")


def test_a_broken_stream_ends_with_an_error_event_the_sdk_raises(relay_service, fake_openai):
    service = relay_service()
    fake_openai.fault("sk-fake-good-1", "cut_after:3")
    with pytest.raises(openai.APIError) as raised:
        list(sdk(service).chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": "one two three four five"}], stream=True))
    assert "broke" in str(raised.value)
    fake_openai.fault("sk-fake-good-1", "cut_after:3")
    status, _, body = raw(service, "/v1/chat/completions", {
        "model": "gpt-4o", "messages": MESSAGES, "stream": True})
    assert status == 200 and b"[DONE]" not in body
    assert body.endswith(b'"code": "upstream_stream_broken"}}\n\n')
    state = upstreams(service)["k0"]
    assert state["strikes"] == 2 and state["reason"] == "upstream_stream_broken"  # soft strikes


@pytest.mark.parametrize("fault", ["first_event_error", "empty_stream", "status:502",
                                   "html_page"])
def test_failover_until_the_first_real_event(relay_service, fake_openai, fault):
    service = relay_service(keys=("sk-fake-good-1", "sk-fake-good-2"))
    fake_openai.fault("*", fault, times=1)  # whichever key is tried first fails, once
    status, _, body = raw(service, "/v1/chat/completions",
                          {"model": "gpt-4o", "messages": MESSAGES, "stream": True})
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert b"overloaded" not in body and b"error" not in body
    used = fake_openai.keys_used("/chat/completions")
    assert len(used) == 2 and len(set(used)) == 2
    struck = [k for k in upstreams(service).values() if k["strikes"]]
    assert len(struck) == 1 and " " not in struck[0]["reason"]  # a code, never a message


def test_a_stalled_stream_ends_after_the_idle_timeout(relay_service, fake_openai):
    service = relay_service(RELAY_IDLE_TIMEOUT="1", RELAY_PING_INTERVAL="0")
    fake_openai.fault("*", "stall_after:2")
    started = time.monotonic()
    status, _, body = raw(service, "/v1/chat/completions", {
        "model": "gpt-4o", "messages": MESSAGES, "stream": True})
    assert time.monotonic() - started < 10
    assert b"upstream_stream_stalled" in body and b"[DONE]" not in body


def test_a_body_that_lingers_after_done_is_cut(relay_service, fake_openai):
    # The answer is complete at [DONE]; the end of the body is read only to keep the connection.
    # An upstream that holds its body open must not hold the caller's body (nor its thread) open.
    service = relay_service(RELAY_PING_INTERVAL="0")
    fake_openai.fault("*", "linger_after_done:30")
    started = time.monotonic()
    status, _, body = raw(service, "/v1/chat/completions", {
        "model": "gpt-4o", "messages": MESSAGES, "stream": True})
    assert time.monotonic() - started < 15
    assert status == 200 and body.endswith(b"data: [DONE]\n\n") and b"error" not in body
    assert not [key for key in upstreams(service).values() if key["strikes"]]


def test_a_slow_first_event_commits_and_pings(relay_service, fake_openai):
    service = relay_service(RELAY_COMMIT_AFTER="0.3", RELAY_PING_INTERVAL="0.2")
    fake_openai.fault("*", "slow_first_event:2.5")  # far beyond the commit: a loaded machine
    status, _, body = raw(service, "/v1/chat/completions", {
        "model": "gpt-4o", "messages": MESSAGES, "stream": True})
    assert status == 200 and body.startswith(b": ping\n\n") and body.endswith(b"[DONE]\n\n")
    fake_openai.fault("*", "slow_first_event:1")
    chunks = list(sdk(service).chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                       stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
        == "Echo: hello relay"


# --- key health -------------------------------------------------------------------------------

def test_a_refused_key_is_disabled_and_the_next_serves(relay_service, fake_openai):
    invalid = "sk-fake-invalid-abcdefgh12345678"
    service = relay_service(keys=(invalid, "sk-fake-good-1"))
    # Keys are chosen at random by weight: ask until the refused key has had its turn (4 requests
    # alone missed it 1 time in 16), then it must never be tried again.
    for _ in range(40):
        answer = sdk(service).chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert answer.choices[0].message.content == "Echo: hello relay"
        if invalid in fake_openai.keys_used("/chat/completions"):
            break
    for _ in range(4):
        answer = sdk(service).chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert answer.choices[0].message.content == "Echo: hello relay"
    assert fake_openai.keys_used("/chat/completions").count(invalid) == 1  # not tried again
    state = upstreams(service)
    assert state["k0"]["status"] == "disabled" and state["k0"]["reason"] == "invalid_api_key"
    assert state["k1"]["status"] == "healthy"


def test_a_disabled_key_gets_one_trial_after_the_recheck(relay_service, fake_openai):
    service = relay_service(keys=("sk-fake-quota-1",), RELAY_RECHECK="1")
    client = sdk(service, max_retries=2)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 503
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert raised.value.body["code"] == "upstream_unavailable"
    assert "quota" not in raised.value.message and "billing" not in raised.value.message
    assert len(fake_openai.requests_to("/chat/completions")) == 1  # the SDK did not retry
    assert upstreams(service)["k0"]["status"] == "disabled"
    time.sleep(1.1)
    assert upstreams(service)["k0"]["status"] == "half-open"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(fake_openai.requests_to("/chat/completions")) == 2  # one trial, no more
    assert upstreams(service)["k0"]["status"] == "disabled"


def test_a_rate_limited_key_rests_until_its_reset(relay_service, fake_openai):
    service = relay_service(keys=("sk-fake-ratelimit-1", "sk-fake-good-1"))
    for _ in range(3):
        sdk(service).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake_openai.keys_used("/chat/completions").count("sk-fake-ratelimit-1") <= 1
    state = upstreams(service)["k0"]
    if state["status"] == "cooling":  # it was picked once: resting until the fake's 20 s reset
        assert 15 < state["until"] - time.time() <= 20.5


def test_when_every_key_rests_the_sdk_waits_and_retries(relay_service, fake_openai):
    fake_openai.ratelimit_reset = 1.0
    service = relay_service()
    fake_openai.fault("*", "ratelimit", times=1)
    status, headers, body = raw(service, "/v1/chat/completions",
                                {"model": "gpt-4o", "messages": MESSAGES})
    assert status == 429 and json.loads(body)["error"]["code"] == "upstream_rate_limited"
    assert headers["retry-after"] == "1" and 0 < int(headers["retry-after-ms"]) <= 1000
    assert fake_keys.ORGANIZATION.encode() not in body
    fake_openai.fault("*", "ratelimit", times=1)
    started = time.monotonic()
    answer = sdk(service, max_retries=2).chat.completions.create(model="gpt-4o",
                                                                 messages=MESSAGES)
    assert answer.choices[0].message.content == "Echo: hello relay"
    assert time.monotonic() - started >= 0.5  # it waited for the reset the relay announced


# --- errors and privacy -----------------------------------------------------------------------

def test_client_errors_pass_through_without_failover(relay_service, fake_openai):
    service = relay_service(keys=("sk-fake-good-1", "sk-fake-good-2"))
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(service).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "context-overflow"}])
    assert raised.value.code == "context_length_exceeded" and raised.value.param == "messages"
    assert len(fake_openai.requests_to("/chat/completions")) == 1


def test_planted_secrets_never_reach_the_caller_or_the_logs(relay_service, fake_openai,
                                                            caplog):
    invalid = "sk-fake-invalid-PLANTEDsecret9876"
    service = relay_service(keys=(invalid, "sk-fake-org-PLANTEDorg55555"))
    caplog.set_level("DEBUG")
    status, headers, body = raw(service, "/v1/chat/completions",
                                {"model": "gpt-4o", "messages": MESSAGES})
    assert status in (502, 503)
    status, headers, ok_body = raw(service, "/v1/embeddings",
                                   {"model": "text-embedding-3-small", "input": "x"})
    text = (body + ok_body + json.dumps(headers).encode()).decode() + caplog.text
    for secret in (invalid, invalid[:8] + "*", invalid[-4:], "PLANTED", fake_keys.ORGANIZATION,
                   fake_keys.PROJECT, "platform.openai.com", fake_openai.url):
        assert secret not in text, secret
    for header in ("openai-organization", "openai-project", "x-ratelimit-remaining-requests",
                   "openai-processing-ms"):
        assert header not in headers


def test_unsupported_endpoints_answer_501_and_unknown_urls_404(relay_service):
    client = sdk(relay_service())
    for call in (client.files.list, lambda: client.batches.list(),
                 lambda: client.vector_stores.list()):
        with pytest.raises(openai.APIStatusError) as raised:
            call()
        assert raised.value.status_code == 501
        assert raised.value.body["code"] == "unsupported_endpoint"
    status, _, body = http_request(client.base_url.host and relay_service().url, "GET",
                                   "/v1/organization/users",
                                   headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert status == 501
    status, _, _ = http_request(relay_service().url, "GET", "/v1/no-such-thing",
                                headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert status == 404


# --- routes and models ------------------------------------------------------------------------

def test_aliases_and_renames(relay_service, fake_openai):
    plan = {"upstreams": [upstream(fake_openai.base_url, "sk-fake-good-1")],
            "models": {"house-model": {"routes": [{"to": "openai", "model": "gpt-4o-mini"}]},
                       "fast": {"alias_of": "house-model"}}}
    service = relay_service(plan=plan)
    answer = sdk(service).chat.completions.create(model="fast", messages=MESSAGES)
    assert answer.model == "fast"  # the upstream's name stays hidden
    assert fake_openai.requests_to("/chat/completions")[-1].json["model"] == "gpt-4o-mini"
    chunks = list(sdk(service).chat.completions.create(model="fast", messages=MESSAGES,
                                                       stream=True))
    assert {c.model for c in chunks} == {"fast"}
    listed = [m.id for m in sdk(service).models.list()]
    assert "fast" in listed and "house-model" in listed
    assert all(m.owned_by != "openai" for m in sdk(service).models.list())


def test_a_renamed_transcription_model_is_renamed_in_the_multipart_body(relay_service,
                                                                        fake_openai):
    plan = {"upstreams": [upstream(fake_openai.base_url, "sk-fake-good-1")],
            "models": {"house-whisper": {"routes": [{"to": "openai", "model": "whisper-1"}]}}}
    service = relay_service(plan=plan)
    audio = b"RIFF\x00\x01\r\n--not-the-boundary\r\nname=\"model\"\r\n\x00\xff"
    boundary = b"relay-test-boundary"

    def body(model: bytes) -> bytes:
        return (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
                b'filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n' + audio
                + b"\r\n--" + boundary + b'\r\nContent-Disposition: form-data; name="model"'
                b"\r\n\r\n" + model + b"\r\n--" + boundary + b"--\r\n")

    content_type = "multipart/form-data; boundary=" + boundary.decode()
    status, _, answer = http_request(service.url, "POST", "/v1/audio/transcriptions",
                                     body(b"house-whisper"), {
                                         "Authorization": f"Bearer {CLIENT_KEY}",
                                         "Content-Type": content_type})
    assert status == 200
    assert json.loads(answer) == {"text": f"transcribed {len(audio)} bytes of a.wav"}
    (sent,) = fake_openai.requests_to("/audio/transcriptions")
    # The upstream got the route's name, and every other byte as the caller sent it.
    assert sent.body == body(b"whisper-1")
    assert sent.headers["content-type"] == content_type


def test_discovered_models_decide_which_key_serves(relay_service, fake_openai):
    plan = {"upstreams": [{"name": "openai", "base_url": fake_openai.base_url,
                           "keys": [{"id": "a", "key": "sk-fake-good-a"},
                                    {"id": "b", "key": "sk-fake-good-b"}]}]}
    fake_openai.models["sk-fake-good-a"] = ("gpt-4o",)
    fake_openai.models["sk-fake-good-b"] = ("gpt-4o", "deepseek-chat")
    service = relay_service(plan=plan, RELAY_MODEL_DISCOVERY="60")
    deadline = time.time() + 10
    while "deepseek-chat" not in [m.id for m in sdk(service).models.list()]:
        assert time.time() < deadline, "discovery did not run"
        time.sleep(0.1)
    for _ in range(4):
        sdk(service).chat.completions.create(model="deepseek-chat", messages=MESSAGES)
    assert set(fake_openai.keys_used("/chat/completions")) == {"sk-fake-good-b"}


def test_byok_passes_the_callers_key_and_keeps_no_trace(fake_openai, tmp_path, caplog):
    from chatgpt_web import create_app
    from tests.service_fixtures import LiveServer
    plan = tmp_path / "u.json"
    plan.write_text(json.dumps({"upstreams": [upstream(fake_openai.base_url, "x")]}))
    caplog.set_level("DEBUG")
    server = LiveServer(create_app({"UPSTREAMS_FILE": str(plan), "K_openai_0": "sk-fake-good-1",
                                    "RELAY_BYOK": "on", "CACHE_DIR": str(tmp_path / "cache"),
                                    "RELAY_MODEL_DISCOVERY": "0"}))
    try:
        own = "sk-fake-good-CALLERSownKEY42"
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=own, max_retries=0)
        assert client.embeddings.create(model="text-embedding-3-small", input="x").data
        assert fake_openai.keys_used("/embeddings") == [own]
        stored = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
        assert own.encode() not in stored and own not in caplog.text
    finally:
        server.stop()


def test_byok_callers_list_the_relay_models_without_a_chatgpt_token(fake_openai, tmp_path):
    from chatgpt_web import create_app
    from tests.service_fixtures import LiveServer
    plan = tmp_path / "u.json"
    plan.write_text(json.dumps({"upstreams": [upstream(fake_openai.base_url, "x")],
                                "models": {"fast": {"routes": [{"to": "openai",
                                                                "model": "gpt-4o-mini"}]}}}))
    server = LiveServer(create_app({"UPSTREAMS_FILE": str(plan), "K_openai_0": "sk-fake-good-1",
                                    "RELAY_BYOK": "on", "CACHE_DIR": str(tmp_path / "cache"),
                                    "RELAY_MODEL_DISCOVERY": "0"}))
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-fake-good-mine",
                               max_retries=0)
        listed = {model.id: model.owned_by for model in client.models.list()}
        assert "fast" in listed and "gpt-4o-mini" in listed
        assert set(listed.values()) == {"relay"}  # no web model: this caller has no account
        assert client.models.retrieve("fast").id == "fast"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-5")
        assert fake_openai.requests == []  # listing asks no upstream
    finally:
        server.stop()


# --- one model across the web pool and a relay upstream -----------------------------------------

def test_web_accounts_first_and_the_relay_when_the_pool_rests(emulator, fake_openai, tmp_path,
                                                              service_env):
    from chatgpt_web import create_app
    from tests.service_fixtures import LiveServer
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"name": "a", "access_token": emulator.mint_access_token()}]))
    plan = tmp_path / "upstreams.json"
    plan.write_text(json.dumps({
        "upstreams": [upstream(fake_openai.base_url, "x")],
        "models": {"gpt-4o": {"routes": [{"to": "web", "priority": 0},
                                         {"to": "openai", "priority": 1}]}}}))
    app = create_app({**service_env, "ACCOUNTS_FILE": str(accounts), "API_KEYS": CLIENT_KEY,
                      "UPSTREAMS_FILE": str(plan), "K_openai_0": "sk-fake-good-1",
                      "RELAY_MODEL_DISCOVERY": "0", "RATE_LIMIT": "off"})
    server = LiveServer(app)
    try:
        client = sdk(server)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert len(emulator.requests_to("/conversation")) == 1  # the web pool served
        assert fake_openai.requests_to("/chat/completions") == []
        # tools: the route's relay target serves them natively
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[{
            "type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
        assert len(fake_openai.requests_to("/chat/completions")) == 1
        pool = app.extensions["chatgpt_web"].pool
        pool.disable(pool.accounts["a"])  # the pool cannot serve: the paid API takes over
        answer = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert answer.choices[0].message.content == "Echo: hello relay"
        assert len(fake_openai.requests_to("/chat/completions")) == 2
        assert len(emulator.requests_to("/conversation")) == 1
    finally:
        server.stop()
