"""Scoped client keys on the relay: the `backends` scope per target, the usage ledger and token
quotas from the upstream's usage, and moderation before an upstream key sees the prompt.

The service has a web account pool (the emulator) and one relay upstream (the fake OpenAI API);
callers use the official openai SDK.
"""
import json

import httpx
import openai
import pytest

from chatgpt_web.keys import key_digest
from tests.fake_openai import answers as fake_answers
from tests.relay_fixtures import key_env, upstream
from tests.service_fixtures import LiveServer
from tests.vision_helpers import png

ADMIN = "admin-relay-keys"
WEB_ONLY = "sk-cw-web-only-key"
RELAY_ONLY = "sk-cw-relay-only-key"
BOTH = "sk-cw-both-backends-key"
HELLO = [{"role": "user", "content": "hello relay"}]
# gpt-4o: the web pool first, the relay after it; gpt-4o-mini and the others: the relay only.
# Images: gpt-image-1 on the web pool first, gpt-image-1-mini on the relay (as dall-e-3) first.
ROUTES = {"gpt-4o": {"routes": [{"to": "web", "priority": 0}, {"to": "openai", "priority": 1}]},
          "gpt-4o-mini": {"routes": [{"to": "openai"}]},
          "gpt-image-1": {"routes": [{"to": "web", "priority": 0},
                                     {"to": "openai", "model": "dall-e-3", "priority": 1}]},
          "gpt-image-1-mini": {"routes": [{"to": "openai", "model": "dall-e-3", "priority": 0},
                                          {"to": "web", "priority": 1}]}}


def entry(key, **scopes):
    return {"hash": "sha256:" + key_digest(key), **scopes}


@pytest.fixture
def mixed(make_app, tmp_path, emulator, fake_openai):
    """mixed(keys=[...], **env) -> a LiveServer with a pool, a relay upstream and a KEYS_FILE."""
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"name": "pooled",
                                     "access_token": emulator.mint_access_token()}]))
    plan = tmp_path / "upstreams.json"
    plan.write_text(json.dumps({"upstreams": [upstream(fake_openai.base_url, "x")],
                                "models": ROUTES}))
    servers = []

    def factory(keys=(), **env):
        keys_file = tmp_path / f"keys-{len(servers)}.json"
        keys_file.write_text(json.dumps({"keys": list(keys)}))
        server = LiveServer(make_app(
            KEYS_FILE=str(keys_file), ADMIN_KEY=ADMIN, ACCOUNTS_FILE=str(accounts),
            UPSTREAMS_FILE=str(plan), RELAY_MODEL_DISCOVERY="0", RATE_LIMIT="off",
            RATE_LIMIT_IP="off", CACHE_DIR=str(tmp_path / f"cache-{len(servers)}"),
            **key_env("openai", ["sk-fake-good-1"]), **env))
        servers.append(server)
        return server
    yield factory
    for server in servers:
        server.stop()


def sdk(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def web_turns(emulator):
    return [r for r in emulator.requests_to("/conversation") if r.method == "POST"]


def ledger(server, key_id):
    report = httpx.get(server.url + f"/admin/usage?key={key_id}",
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
    return {(row["model"], row["backend"]): row for row in report["usage"]}


# --- the backends scope, per target ------------------------------------------------------------

def test_a_relay_only_key_is_served_by_the_relay_and_skips_web_targets(mixed, emulator,
                                                                       fake_openai):
    server = mixed([entry(RELAY_ONLY, id="relay-only", backends=["relay"])])
    client = sdk(server, RELAY_ONLY)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices
    # gpt-4o would go to the web pool first: the key may not use it, so the relay serves
    answer = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert answer.choices[0].message.content == "Echo: hello relay"
    assert client.embeddings.create(model="text-embedding-3-small", input="x").data
    assert web_turns(emulator) == []
    assert len(fake_openai.requests_to("/chat/completions")) == 2
    # a model only the web accounts serve: nothing left for this key
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="gpt-5", messages=HELLO)
    assert refused.value.code == "backend_not_allowed"


def test_a_web_only_key_never_reaches_the_relay(mixed, emulator, fake_openai):
    server = mixed([entry(WEB_ONLY, id="web-only", backends=["web"])])
    client = sdk(server, WEB_ONLY)
    assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices
    assert len(web_turns(emulator)) == 1
    # tools would send gpt-4o to its relay target: this key stays on the web pool
    client.chat.completions.create(model="gpt-4o", messages=HELLO, tools=[{
        "type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert len(web_turns(emulator)) == 2
    for call in (lambda: client.chat.completions.create(model="gpt-4o-mini", messages=HELLO),
                 lambda: client.embeddings.create(model="text-embedding-3-small", input="x"),
                 lambda: client.moderations.create(input="x")):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call()
        assert refused.value.code == "backend_not_allowed"
        assert "relay" in refused.value.message
    assert fake_openai.requests == []
    status = httpx.get(server.url + "/v1/key", headers={"Authorization": f"Bearer {WEB_ONLY}"})
    # refused before they were counted: two answered requests only
    assert status.json()["usage"]["day"]["requests"]["used"] == 2


def test_image_routes_skip_the_targets_a_key_may_not_use(mixed, emulator, fake_openai):
    server = mixed([entry(RELAY_ONLY, id="relay-only", backends=["relay"]),
                    entry(WEB_ONLY, id="web-only", backends=["web"])])
    # a web-first route: the relay-only key is drawn by the relay, never by a web account
    drawn = sdk(server, RELAY_ONLY).images.generate(model="gpt-image-1", prompt="a fox")
    assert drawn.data
    assert web_turns(emulator) == []
    assert len(fake_openai.requests_to("/images/generations")) == 1
    # a relay-first route: the web-only key is drawn by a web account, never by the relay
    drawn = sdk(server, WEB_ONLY).images.generate(model="gpt-image-1-mini", prompt="an owl",
                                                  response_format="b64_json")
    assert drawn.data[0].b64_json
    assert len(web_turns(emulator)) == 1
    assert len(fake_openai.requests_to("/images/generations")) == 1
    # edits (multipart) are routed the same way
    edited = sdk(server, RELAY_ONLY).images.edit(model="gpt-image-1", image=("p.png", png(2, 2)),
                                                 prompt="a fox in a hat")
    assert edited.data and len(web_turns(emulator)) == 1
    assert len(fake_openai.requests_to("/images/edits")) == 1
    edited = sdk(server, WEB_ONLY).images.edit(model="gpt-image-1-mini", prompt="an owl in a hat",
                                               image=("p.png", png(2, 2)))
    assert edited.data[0].b64_json
    assert len(web_turns(emulator)) == 2
    assert len(fake_openai.requests_to("/images/edits")) == 1


# --- the ledger and token quotas -----------------------------------------------------------------

def test_relay_answers_go_to_the_ledger_with_the_upstreams_usage(mixed, fake_openai):
    server = mixed([entry(BOTH, id="both")])
    client = sdk(server, BOTH)
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    streamed = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                   stream=True))
    assert all(chunk.usage is None for chunk in streamed)  # asked upstream, hidden from the caller
    asked = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                                stream_options={"include_usage": True}))
    vector = client.embeddings.create(model="text-embedding-3-small", input="two words")
    rows = ledger(server, "both")
    chat = rows[("gpt-4o-mini", "relay")]
    assert chat["requests"] == 3
    assert chat["prompt_tokens"] == 3 * whole.usage.prompt_tokens
    assert chat["completion_tokens"] == 3 * whole.usage.completion_tokens
    assert asked[-1].usage.total_tokens == whole.usage.total_tokens
    embedded = rows[("text-embedding-3-small", "relay")]
    assert embedded["requests"] == 1
    assert embedded["prompt_tokens"] == vector.usage.prompt_tokens == 2
    assert embedded["completion_tokens"] == 0


def test_a_token_quota_counts_relay_usage(mixed):
    answer = fake_answers.ChatAnswer({"model": "gpt-4o-mini", "messages": HELLO})
    per_answer = answer.usage["total_tokens"]
    server = mixed([entry(BOTH, id="both", quota={"tokens": f"{2 * per_answer}/day"})])
    client = sdk(server, BOTH)
    for _ in range(2):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert refused.value.code == "quota_exhausted"


# --- moderation before an upstream key sees the prompt ----------------------------------------

def test_moderation_blocks_relay_prompts_before_forwarding(mixed, fake_openai, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("violence: detonator\n")
    server = mixed([entry(BOTH, id="both")], MODERATION="block",
                   MODERATION_WORDS_FILE=str(words))
    client = sdk(server, BOTH)
    calls = [
        lambda: client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": [
                {"type": "text", "text": "build a Detonator"}]}]),
        lambda: client.chat.completions.create(
            model="gpt-4o-mini", stream=True,
            messages=[{"role": "user", "content": "a detonator, please"}]),
        lambda: client.completions.create(model="gpt-3.5-turbo-instruct", prompt="detonator"),
        lambda: client.embeddings.create(model="text-embedding-3-small",
                                         input=["fine", "detonator"]),
        lambda: client.images.generate(model="dall-e-3", prompt="a detonator"),
        # multipart, relay first: the prompt field is screened before the body is passed on
        lambda: client.images.edit(model="gpt-image-1-mini", image=("p.png", png(2, 2)),
                                   prompt="add a detonator"),
    ]
    for call in calls:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.code == "content_blocked" and "violence" in refused.value.message
    assert fake_openai.requests == []
    assert ledger(server, "both") == {}
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices


# --- what operators see -------------------------------------------------------------------------

def attempts_counted(server, key, upstream_name, outcome):
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
    for line in text.splitlines():
        if line.startswith("chatgpt_web_relay_attempts_total{") \
                and f'upstream="{upstream_name}"' in line and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_relay_answers_carry_their_overhead_and_are_counted_per_upstream(mixed, fake_openai):
    server = mixed([entry(BOTH, id="both")])
    before_ok = attempts_counted(server, BOTH, "openai", "ok")
    before_soft = attempts_counted(server, BOTH, "openai", "soft")
    fake_openai.fault("sk-fake-good-1", "status:502", times=1)
    with pytest.raises(openai.InternalServerError):
        sdk(server, BOTH).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    raw = sdk(server, BOTH).chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                      messages=HELLO)
    assert raw.headers["x-chatgpt-web-attempts"] == "1"
    assert float(raw.headers["x-chatgpt-web-overhead-ms"]) >= 0
    assert attempts_counted(server, BOTH, "openai", "ok") == before_ok + 1
    assert attempts_counted(server, BOTH, "openai", "soft") == before_soft + 1
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {BOTH}"}).text
    assert "sk-fake-good-1" not in metrics and fake_openai.url not in metrics


def key_usage(server, key):
    report = httpx.get(server.url + "/v1/key", headers={"Authorization": f"Bearer {key}"},
                       timeout=30).json()
    return report["usage"]["day"]["tokens"]


def test_a_token_quota_holds_the_prompt_before_the_upstream_sees_it(mixed, fake_openai):
    server = mixed([entry(BOTH, id="both", quota={"tokens": "60/day"})])
    client = sdk(server, BOTH)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "word " * 200}])
    assert refused.value.code == "quota_exhausted"
    assert fake_openai.requests == []
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    tokens = key_usage(server, BOTH)
    assert tokens["used"] == whole.usage.total_tokens and tokens["held"] == 0
    # A stream that breaks never completes: its hold is given back, nothing is counted.
    fake_openai.fault("sk-fake-good-1", "cut_after:2", times=1)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    tokens = key_usage(server, BOTH)
    assert tokens["used"] == whole.usage.total_tokens and tokens["held"] == 0
