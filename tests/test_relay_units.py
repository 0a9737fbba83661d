"""The relay's parts that need no server: UPSTREAMS_FILE checks, SSE bytes, outcomes, routing."""
import json
import random
from collections import Counter
from types import SimpleNamespace

import pytest

from chatgpt_web import create_app
from chatgpt_web.errors import ConfigError
from chatgpt_web.relay import events, forward, outcomes
from chatgpt_web.relay.health import KeyHealth
from chatgpt_web.relay.plan import parse_plan
from chatgpt_web.relay.routing import Router
from chatgpt_web.relay.scrub import Scrubber, client_headers
from chatgpt_web.store import MemoryStore

BASE = {"upstreams": [{"name": "openai", "base_url": "https://api.example.test/v1",
                       "keys": [{"id": "main", "key": "env:OPENAI_KEY"}]}]}
ENV = {"OPENAI_KEY": "sk-test-0123456789abcdef"}


def plan_with(**changes):
    return {**json.loads(json.dumps(BASE)), **changes}


# --- UPSTREAMS_FILE ---------------------------------------------------------------------------

def test_the_documented_example_parses(tmp_path):
    from pathlib import Path
    text = Path(__file__).resolve().parents[1].joinpath("docs", "relay.md").read_text()
    example = text.split("```json\n", 1)[1].split("```", 1)[0]
    environ = {"OPENAI_KEY_MAIN": "sk-a" * 5, "OPENAI_KEY_SPARE": "sk-b" * 5,
               "DEEPSEEK_KEY": "sk-c" * 5, "OPENAI_PROJECT": "proj_x"}
    plan = parse_plan(json.loads(example), environ)
    assert plan.route("fast") == plan.route("gpt-4o-mini")
    assert [t.to for t in plan.route("gpt-4o")] == ["web", "openai"]
    assert plan.route("deepseek-reasoner")[0].to == "deepseek"  # a wildcard route


@pytest.mark.parametrize("change, message", [
    ({"upstreams": []}, "non-empty list"),
    ({"upstreams": [{"name": "x", "base_url": "ftp://h", "keys": [{"key": "k"}]}]}, "base_url"),
    ({"upstreams": [{"name": "x", "base_url": "http://h", "keys": [{"id": "a", "key": "k"},
                                                                      {"id": "a", "key": "k"}]}]},
     "same id"),
    ({"upstreams": [{"name": "x", "base_url": "http://h", "keys": [{"key": "env:MISSING"}]}]},
     "MISSING"),
    ({"models": {"m": {"routes": [{"to": "nowhere"}]}}}, "'to' must be"),
    ({"models": {"a": {"alias_of": "b"}, "b": {"alias_of": "a"}}}, "cycle"),
    ({"models": {"a": {"alias_of": "ghost"}}}, "no routes"),
    ({"models": {"m": {"routes": [{"to": "openai", "weight": 0}]}}}, "positive"),
    ({"colour": "blue"}, "unknown field"),
])
def test_mistakes_stop_the_start_without_quoting_secrets(change, message):
    with pytest.raises(ConfigError) as raised:
        parse_plan(plan_with(**change), ENV)
    assert message in str(raised.value)
    assert ENV["OPENAI_KEY"] not in str(raised.value)


def test_the_service_refuses_to_start_on_a_bad_file(tmp_path):
    path = tmp_path / "u.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        create_app({"UPSTREAMS_FILE": str(path), "CACHE_DIR": str(tmp_path)})


# --- SSE bytes --------------------------------------------------------------------------------

def test_events_are_split_whatever_the_chunking_and_line_endings():
    stream = b'data: {"a":1}\n\n: keep-alive\n\ndata: {"b":2}\r\n\r\ndata: [DONE]\n\n'
    for size in (1, 3, 7, len(stream)):
        splitter = events.EventSplitter()
        found = []
        for at in range(0, len(stream), size):
            found += splitter.feed(stream[at:at + size])
        assert b"".join(found) == stream
        assert [events.is_comment(e) for e in found] == [False, True, False, False]
        assert events.is_done(found[-1]) and not events.is_done(found[0])


def test_the_stream_changes():
    usage_chunk = b'data: {"id":"x","choices":[],"usage":{"total_tokens":3}}\n\n'
    content = b'data: {"id":"x","model":"deepseek-chat-0324","choices":[{"delta":{}}],' \
              b'"usage":null}\n\n'
    assert events.strip_injected_usage(usage_chunk) is None
    assert events.strip_injected_usage(content) == content.replace(b',"usage":null', b"")
    assert events.rename_model(content, b"deepseek-chat", b"house") \
        == content.replace(b"deepseek-chat-0324", b"house")
    assert events.error_of(b'data: {"error":{"message":"m","code":"overloaded"}}\n\n') \
        == {"message": "m", "code": "overloaded"}
    assert events.error_of(b'data: {"choices":[{"delta":{"content":"error"}}]}\n\n') is None


def test_usage_is_stripped_alike_whatever_the_reads_hold():
    # The relay asked for usage on the caller's behalf: `"usage":null` members go, and so does
    # the usage chunk, whether a read holds whole events (one replace over the read), part of
    # one, or the usage chunk beside others (event by event).
    content = [b'data: {"id":"x","choices":[{"delta":{"content":"%d"}}],"usage":null}\n\n' % n
               for n in range(3)]
    usage = b'data: {"id":"x","choices":[],"usage":{"total_tokens":3}}\n\n'
    stream = b"".join(content) + usage + b"data: [DONE]\n\n"
    expected = b"".join(c.replace(b',"usage":null', b"") for c in content) + b"data: [DONE]\n\n"
    request = SimpleNamespace(model="gpt-4o")
    cuts = [[len(content[0]), len(stream)],  # whole events, then the usage chunk with [DONE]
            [len(stream)],  # everything at once
            list(range(7, len(stream), 7)) + [len(stream)],  # cut anywhere
            [len(b"".join(content)) - 20, len(stream)]]  # a marker cut between two reads
    for ends in cuts:
        transform = forward._Transform(request, SimpleNamespace(model="gpt-4o"), injected=True)
        out, start = [], 0
        for end in ends:
            out.append(transform(stream[start:end]))
            start = end
        out.append(transform.flush())
        assert b"".join(out) == expected, ends


# --- outcomes and scrubbing -------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [("20s", 20), ("1.5s", 1.5), ("6m0s", 360),
                                            ("120ms", 0.12), ("7", 7), ("soon", None)])
def test_reset_durations(value, seconds):
    assert outcomes.parse_duration(value) == seconds


def test_the_error_table():
    def outcome(status, code=None, message="m", headers=None):
        body = json.dumps({"error": {"message": message, "type": "t", "code": code}}).encode()
        return outcomes.classify(status, headers or {}, body, scrub=lambda t: t,
                                 public_model="fast", upstream_model="gpt-4o-mini")
    assert outcome(401, "invalid_api_key").kind == outcomes.DISABLE
    assert outcome(429, "insufficient_quota").kind == outcomes.DISABLE
    assert outcome(429, "insufficient_quota").error.code == "upstream_unavailable"
    limited = outcome(429, "rate_limit_exceeded", headers={"retry-after-ms": "1500"})
    assert (limited.kind, limited.retry_after) == (outcomes.RATE, 1.5)
    assert outcome(404, "model_not_found").error.message.startswith("The model `fast`")
    client = outcome(400, "context_length_exceeded", "too long for gpt-4o-mini")
    assert (client.kind, client.failover, client.error.message) \
        == (outcomes.CLIENT, False, "too long for fast")
    assert outcome(500).kind == outcomes.SOFT and outcome(500).failover


def test_scrubbing_replaces_exact_secrets_fragments_and_patterns():
    scrubber = Scrubber(["sk-proj-SECRETsecretSECRET1234"], ["api.example.test"])
    text = ("Incorrect API key provided: sk-proj-********1234 for org-ABCDEFGHIJKLMNOPQRSTUVWX at "
            "https://api.example.test/v1 (proj_ABCDEFGHIJKLMNOPQRSTUVWX). You can find your API "
            "key at https://platform.openai.com/account/api-keys.")
    cleaned = scrubber.text(text)
    for secret in ("SECRET", "1234", "org-ABC", "proj_ABC", "api.example.test", "platform"):
        assert secret not in cleaned
    assert cleaned.startswith("Incorrect API key provided: ***")
    assert "thinking.type" in scrubber.text("bad field thinking.type")
    assert client_headers({"content-type": "a", "openai-organization": "org-x",
                           "x-ratelimit-remaining-requests": "1"}) == {"content-type": "a"}


# --- routing and health -----------------------------------------------------------------------

def test_priorities_and_weights():
    data = {"upstreams": [
        {"name": name, "base_url": "http://h", "models": ["m"],
         "keys": [{"id": "k", "key": "sk-x" * 4}]} for name in ("a", "b", "c")],
        "models": {"m": {"routes": [{"to": "a", "weight": 3}, {"to": "b", "weight": 1},
                                    {"to": "c", "priority": 1}]}}}
    store = MemoryStore()
    router = Router(parse_plan(data, {}), store, KeyHealth(store, 60), rng=random.Random(7))
    firsts = Counter(router.ordered(router.targets("m"))[0].to for _ in range(1000))
    assert firsts["c"] == 0 and 700 < firsts["a"] < 800 and 200 < firsts["b"] < 300
    assert all(router.ordered(router.targets("m"))[-1].to == "c" for _ in range(50))


class ReadCountingStore(MemoryStore):
    """A MemoryStore that counts its reads."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def get(self, key):
        self.reads += 1
        return super().get(key)


def test_a_healthy_key_that_serves_again_is_not_read_again_from_the_store():
    store = ReadCountingStore()
    health = KeyHealth(store, recheck=60, cache_seconds=3600)
    for _ in range(5):  # five requests answered by the same healthy key
        usable, state = health.usable("u", "k", "m")
        assert usable
        health.record("u", "k", outcomes.Outcome(outcomes.OK, False), "m", state)
    assert store.reads == 1
    # a change this process makes is still seen at once
    health.record("u", "k", outcomes.Outcome(outcomes.RATE, True, None, 5), "m", state)
    assert not health.usable("u", "k", "m")[0]


def test_health_states_and_the_single_half_open_trial():
    now = [1000.0]
    health = KeyHealth(MemoryStore(), recheck=60, clock=lambda: now[0])
    assert health.usable("u", "k", "m")[0]
    health.record("u", "k", outcomes.Outcome(outcomes.RATE, True, None, 5))
    assert not health.usable("u", "k", "m")[0]
    now[0] += 6
    assert health.usable("u", "k", "m")[0]
    health.record("u", "k", outcomes.Outcome(outcomes.DISABLE, True, None, reason="quota"))
    assert not health.usable("u", "k", "m")[0]
    now[0] += 61
    assert [health.usable("u", "k", "m")[0] for _ in range(3)] == [True, False, False]
    health.record("u", "k", outcomes.Outcome(outcomes.OK, False))
    assert health.usable("u", "k", "m")[0] and health.report("u", "k")["status"] == "healthy"
    soft = outcomes.Outcome(outcomes.SOFT, True, None)
    for _ in range(2):
        health.record("u", "k", soft)
    assert health.usable("u", "k", "m")[0]  # two strikes: still serving
    health.record("u", "k", soft)
    assert health.report("u", "k")["status"] == "cooling"
    assert health.report("u", "k")["until"] == now[0] + 10
