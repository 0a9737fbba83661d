"""MODERATION with the relay engine: prompts are judged by /v1/moderations of a relay upstream (the
fake OpenAI API flags texts holding "forbidden-word" as violence) before any account or upstream
key sees them, for the web pool and the relay alike; verdicts are cached under a keyed hash, and
MODERATION_ON_ERROR decides when the check itself fails. Callers use the official openai SDK."""
import json
import logging

import httpx
import openai
import pytest

from chatgpt_web.errors import ConfigError
from tests.relay_fixtures import key_env, upstream
from tests.service_fixtures import LiveServer

KEY = "sk-cw-moderated-relay"
MOD_KEY = "sk-fake-good-moderation"
BAD = "tell me about the forbidden-word please"
PLAN_MODELS = {"omni-moderation-latest": {"routes": [{"to": "mod"}]},
               "gpt-4o-mini": {"routes": [{"to": "openai"}]}}


@pytest.fixture
def moderated(make_app, tmp_path, emulator, fake_openai):
    """moderated(mode, **env) -> a LiveServer with a pool, the relay and MODERATION=mode."""
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"name": "pooled",
                                     "access_token": emulator.mint_access_token()}]))
    plan = tmp_path / "upstreams.json"
    plan.write_text(json.dumps({
        "upstreams": [upstream(fake_openai.base_url, "x"),
                      upstream(fake_openai.base_url, "x", name="mod")],
        "models": PLAN_MODELS}))
    servers = []

    def factory(mode, **env):
        cache = tmp_path / f"cache-{len(servers)}"
        server = LiveServer(make_app(
            MODERATION=mode, API_KEYS=KEY, ACCOUNTS_FILE=str(accounts), UPSTREAMS_FILE=str(plan),
            RELAY_MODEL_DISCOVERY="0", RATE_LIMIT="off", RATE_LIMIT_IP="off",
            CACHE_DIR=str(cache), **key_env("openai", ["sk-fake-good-1"]),
            **key_env("mod", [MOD_KEY]), **env))
        server.cache = cache
        servers.append(server)
        return server
    yield factory
    for server in servers:
        server.stop()


def sdk(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


def chat(server, model, *texts, **extra):
    messages = [{"role": "user" if n % 2 == 0 else "assistant", "content": text}
                for n, text in enumerate(texts)]
    return sdk(server).chat.completions.create(model=model, messages=messages, **extra)


def judged(fake_openai):
    """The texts each /moderations call asked about."""
    return [r.json["input"] for r in fake_openai.requests_to("/moderations")]


def web_turns(emulator):
    return [r for r in emulator.requests_to("/conversation") if r.method == "POST"]


def metric(server, name, label):
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_block_asks_the_moderation_api_before_the_pool_or_an_upstream_key(moderated, emulator,
                                                                         fake_openai):
    server = moderated("block")  # no word list, an UPSTREAMS_FILE: the relay engine
    for model in ("gpt-4o", "gpt-4o-mini"):  # the web pool, then a relay upstream
        with pytest.raises(openai.BadRequestError) as refused:
            chat(server, model, BAD)
        assert refused.value.code == "content_blocked"
        assert "violence" in refused.value.message and "forbidden" not in refused.value.message
    assert web_turns(emulator) == [] and fake_openai.requests_to("/chat/completions") == []
    # The first verdict was kept: the second request asked nothing more.
    assert judged(fake_openai) == [[BAD]]
    assert fake_openai.keys_used("/moderations") == [MOD_KEY]
    assert chat(server, "gpt-4o-mini", "a clean question").choices
    assert chat(server, "gpt-4o", "a clean question").choices
    assert len(web_turns(emulator)) == 1
    assert judged(fake_openai) == [[BAD], ["a clean question"]]
    # The store keeps verdicts under keyed hashes, never the texts.
    stored = b"".join(p.read_bytes() for p in server.cache.rglob("*") if p.is_file())
    assert b"forbidden-word" not in stored and b"clean question" not in stored
    assert metric(server, "chatgpt_web_moderation_seconds_count", "") >= 4


def test_a_conversation_sends_only_its_new_texts(moderated, fake_openai):
    server = moderated("block", MODERATION_ENGINE="relay")
    chat(server, "gpt-4o-mini", "first question")
    chat(server, "gpt-4o-mini", "first question", "Echo: first question", "second question")
    assert judged(fake_openai) == [["first question"],
                                   ["Echo: first question", "second question"]]


def test_flag_lets_the_prompt_through_and_logs_only_categories(moderated, fake_openai, caplog):
    caplog.set_level(logging.INFO)
    server = moderated("flag")
    before = metric(server, "chatgpt_web_moderation_checks_total", 'result="flagged"')
    assert chat(server, "gpt-4o-mini", BAD).choices
    assert "categories=violence" in caplog.text and "forbidden-word" not in caplog.text
    assert metric(server, "chatgpt_web_moderation_checks_total",
                  'result="flagged"') == before + 1


@pytest.mark.parametrize("on_error", ["allow", "block"])
def test_on_error_decides_when_the_moderation_upstream_fails(moderated, emulator, fake_openai,
                                                            on_error):
    server = moderated("block", MODERATION_ON_ERROR=on_error)
    fake_openai.fault(MOD_KEY, "status:500")
    before = metric(server, "chatgpt_web_moderation_checks_total", 'result="error"')
    if on_error == "allow":
        assert chat(server, "gpt-4o-mini", "hello").choices
        assert chat(server, "gpt-4o", "hello").choices
        assert len(web_turns(emulator)) == 1
        assert len(fake_openai.requests_to("/chat/completions")) == 1
    else:
        for model in ("gpt-4o-mini", "gpt-4o"):
            with pytest.raises(openai.InternalServerError) as refused:
                chat(server, model, "hello")
            assert refused.value.status_code == 503
            assert refused.value.code == "moderation_unavailable"
            assert refused.value.response.headers["retry-after"] == "5"
        assert web_turns(emulator) == [] and fake_openai.requests_to("/chat/completions") == []
    assert metric(server, "chatgpt_web_moderation_checks_total",
                  'result="error"') == before + 2
    # A failed check keeps no verdict: once the upstream is back, the text is judged.
    fake_openai.reset()
    with pytest.raises(openai.BadRequestError):
        chat(server, "gpt-4o-mini", BAD)


def test_the_relay_engine_needs_an_upstreams_file(make_app):
    with pytest.raises(ConfigError, match="UPSTREAMS_FILE"):
        make_app(MODERATION="block", MODERATION_ENGINE="relay")
    with pytest.raises(ConfigError, match="MODERATION_WORDS_FILE"):
        make_app(MODERATION="flag")
