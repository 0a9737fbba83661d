"""What the service sends in the 2026 dialect, and how it falls back (docs/protocol-requests.md).

The service runs against the emulator over real HTTP, configured as a user would configure it.
"""
from __future__ import annotations

import json
import threading
import uuid

import pytest
from prometheus_client import REGISTRY

from chatgpt_web.config import Config
from chatgpt_web.errors import ServiceUnavailable
from chatgpt_web.store import DiskStore, RedisStore
from chatgpt_web.transport import new_session
from chatgpt_web.upstream.bootstrap import DEVICE_PREFIX, Bootstrap, Visit, account_key
from chatgpt_web.upstream.endpoints import from_base_url
from tests.emulator.app import BUILD_ID, BUILD_NUMBER


def send(client, **fields):
    return client.post("/send_message", data=fields)


def posts(emulator, suffix: str):
    return [r for r in emulator.requests_to(suffix) if r.method == "POST"]


def writes(emulator):
    return posts(emulator, "/f/conversation")


def test_a_turn_runs_home_conduit_sentinel_then_the_write(client, token, emulator):
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: Hi"
    order = [r.path.removeprefix("/backend-api") for r in emulator.requests]
    assert order == ["/", "/f/conversation/prepare", "/sentinel/chat-requirements/prepare",
                     "/sentinel/chat-requirements/finalize", "/f/conversation"]


def test_the_write_carries_the_headers_of_the_page_and_the_turn(client, token, emulator):
    send(client, access_token=token, prompt="Hi")
    home = emulator.requests[0]
    prepare, write = posts(emulator, "/f/conversation/prepare")[0], writes(emulator)[0]
    headers = write.headers
    assert headers["oai-client-version"] == BUILD_ID
    assert headers["oai-client-build-number"] == BUILD_NUMBER
    assert str(uuid.UUID(headers["oai-session-id"])) == headers["oai-session-id"]
    assert headers["oai-language"] == "en-US" and headers["accept"] == "text/event-stream"
    assert headers["x-openai-target-path"] == headers["x-openai-target-route"] \
        == "/backend-api/f/conversation"
    assert prepare.headers["x-openai-target-path"] == "/backend-api/f/conversation/prepare"
    assert prepare.headers["x-conduit-token"] == ""  # the first prepare of a turn
    assert headers["x-oai-turn-trace-id"] == prepare.headers["x-oai-turn-trace-id"]
    assert headers["x-conduit-token"].count(".") == 2
    assert "chrome/152" in headers["user-agent"].lower() and 'v="152"' in headers["sec-ch-ua"]
    # the device id is the site's cookie, and the site's cookies come back
    assert "oai-did" not in home.headers.get("cookie", "")
    assert f"oai-did={headers['oai-device-id']}" in headers["cookie"]
    assert "__cf_bm=" in headers["cookie"]


def test_the_body_of_a_new_chat_and_of_its_next_turn(client, token, emulator):
    first = send(client, access_token=token, prompt="one").json
    send(client, access_token=token, prompt="two", conversation_id=first["conversation_id"],
         parent_message_id=first["parent_message_id"])
    new, following = (w.json for w in writes(emulator))
    assert new["parent_message_id"] == "client-created-root" and "conversation_id" not in new
    assert new["client_prepare_state"] == "success" and new["timezone"] == "America/Los_Angeles"
    assert isinstance(new["messages"][0]["create_time"], float)
    assert following["conversation_id"] == first["conversation_id"]
    assert following["parent_message_id"] == first["parent_message_id"]
    assert writes(emulator)[1].headers["referer"].endswith("/c/" + first["conversation_id"])


def test_the_device_id_is_stable_per_account_across_instances(make_app, emulator):
    alice = emulator.mint_access_token(email="alice@example.com")
    bob = emulator.mint_access_token(email="bob@example.com")
    for _ in range(2):  # two instances sharing one store (the same CACHE_DIR)
        client = make_app().test_client()
        assert send(client, access_token=alice, prompt="Hi").status_code == 200
        assert send(client, access_token=bob, prompt="Hi").status_code == 200
    devices = [w.headers["oai-device-id"] for w in writes(emulator)]
    assert devices[0] == devices[2] and devices[1] == devices[3] and devices[0] != devices[1]
    # a renewed token of the same account keeps the device
    client = make_app().test_client()
    send(client, access_token=emulator.mint_access_token(email="alice@example.com", exp_in=99),
         prompt="Hi")
    assert writes(emulator)[-1].headers["oai-device-id"] == devices[0]


def test_every_continuation_gets_a_fresh_bundle_and_conduit_token(client, token, emulator):
    emulator.switches.max_tokens_cuts = 2
    emulator.switches.answer = "one two three four five six"
    response = send(client, access_token=token, prompt="Hi")
    assert response.json["text"] == "one two three four five six"
    assert [w.json["action"] for w in writes(emulator)] == ["next", "continue", "continue"]
    assert len(posts(emulator, "/finalize")) == 3
    assert len({w.headers["openai-sentinel-chat-requirements-token"]
                for w in writes(emulator)}) == 3
    assert len({w.headers["x-oai-turn-trace-id"] for w in writes(emulator)}) == 3
    assert "messages" not in writes(emulator)[1].json


def test_a_refused_bundle_is_retried_once_with_fresh_ones(client, token, emulator):
    emulator.switches.reject_writes = 1
    assert send(client, access_token=token, prompt="Hi").status_code == 200
    assert len(writes(emulator)) == 2 and len(posts(emulator, "/finalize")) == 2
    emulator.switches.reject_writes = 2
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 403
    assert response.json["code"] == "upstream_sentinel_rejected"
    assert "proxy" in response.json["message"].lower()


def test_a_null_conduit_token_gets_one_more_prepare(client, token, emulator):
    emulator.switches.conduit_null_times = 1
    assert send(client, access_token=token, prompt="Hi").status_code == 200
    prepares = posts(emulator, "/f/conversation/prepare")
    assert len(prepares) == 2 and len(writes(emulator)) == 1


def test_a_site_without_two_phase_sentinel_gets_the_one_step_call(client, token, emulator):
    emulator.switches.two_phase_sentinel = False
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 200, response.json
    one_step = posts(emulator, "/sentinel/chat-requirements")
    assert len(one_step) == 1
    assert writes(emulator)[0].headers["openai-sentinel-turnstile-token"]


@pytest.mark.parametrize("switch", ["arkose_required", "turnstile_required"])
def test_challenges_that_need_a_browser_end_with_a_clear_403(client, token, emulator, switch):
    setattr(emulator.switches, switch, True)
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 403 and response.json["code"] == "sentinel_required"
    assert not writes(emulator)


def test_a_session_observer_demand_is_skipped(client, token, emulator):
    emulator.switches.so_required = True
    assert send(client, access_token=token, prompt="Hi").status_code == 200


def test_a_body_field_the_upstream_refuses_is_named_in_a_502(app, token, emulator):
    from chatgpt_web.errors import ApiError
    from chatgpt_web.upstream.conversation import ChatMessage, ConversationRequest

    request = ConversationRequest((ChatMessage("user", "Hi"),), "auto",
                                  extra={"thinking_effort": "high"})  # past our own check
    conversations = app.extensions["chatgpt_web"].conversations
    with pytest.raises(ApiError) as caught:
        list(conversations.stream(token, request, from_base_url(emulator.url)))
    assert caught.value.status == 502 and caught.value.code == "upstream_bad_request"
    assert caught.value.param == "thinking_effort"


# --- dialects ---------------------------------------------------------------------------------

def test_auto_falls_back_to_2024_on_a_mirror_and_remembers_it(client, token, emulator):
    emulator.switches.dialect = "2024"
    assert send(client, access_token=token, prompt="one").json["text"] == "Echo: one"
    assert send(client, access_token=token, prompt="two").json["text"] == "Echo: two"
    assert len(posts(emulator, "/f/conversation/prepare")) == 1  # asked once, then remembered
    assert len(posts(emulator, "/backend-api/conversation")) == 2


def test_protocol_2026_does_not_fall_back(make_app, token, emulator):
    emulator.switches.dialect = "2024"
    client = make_app(CHATGPT_PROTOCOL="2026").test_client()
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 502
    assert response.json["code"] == "upstream_protocol_mismatch"


def test_protocol_2024_speaks_only_the_old_paths(make_app, token, emulator):
    client = make_app(CHATGPT_PROTOCOL="2024").test_client()
    assert send(client, access_token=token, prompt="Hi").status_code == 200
    paths = {r.path for r in emulator.requests}
    assert "/backend-api/conversation" in paths
    assert not [p for p in paths if "/f/" in p or p.endswith(("/prepare", "/finalize"))]


def test_a_reverse_proxy_gets_the_2026_siblings(client, token, emulator):
    response = send(client, access_token=token, prompt="Hi",
                    reverse_proxy=emulator.url + "/api/conversation")
    assert response.status_code == 200
    paths = [r.path for r in emulator.requests if r.method == "POST"]
    assert paths == ["/api/f/conversation/prepare", "/api/sentinel/chat-requirements/prepare",
                     "/api/sentinel/chat-requirements/finalize", "/api/f/conversation"]


# --- hand-off ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["resume", "poll"])
def test_a_handed_off_answer_arrives_whole(make_app, token, emulator, mode):
    emulator.switches.handoff = mode
    emulator.switches.answer = "a long and careful answer"
    app = make_app()
    app.extensions["chatgpt_web"].conversations.poll_interval = 0.05
    client = app.test_client()
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "a long and careful answer"
    assert posts(emulator, "/f/conversation/resume")
    reads = [r for r in emulator.requests if r.method == "GET" and "/conversation/" in r.path]
    assert bool(reads) == (mode == "poll")
    streamed = client.post("/send_message", data={"access_token": token, "prompt": "Hi",
                                                  "stream": "true"}).get_data(as_text=True)
    deltas = [json.loads(line[6:])["delta"] for line in streamed.split("\n")
              if line.startswith('data: {"delta"')]
    assert "".join(deltas) == "a long and careful answer"


def test_an_account_refused_for_unusual_activity_gives_way_to_the_next(make_app, tmp_path,
                                                                       emulator):
    import json
    tokens = {name: emulator.mint_access_token(email=f"{name}@example.com") for name in "ab"}
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([{"name": name, "access_token": token}
                                for name, token in tokens.items()]))
    app = make_app(ACCOUNTS_FILE=str(path))
    emulator.switches.reject_writes = 2  # the first account's write and its one retry
    response = app.test_client().post("/send_message", data={"prompt": "Hi"})
    assert response.status_code == 200, response.json
    served = [w.headers["authorization"] for w in writes(emulator)]
    assert len(served) == 3 and served[0] == served[1] != served[2]
    states = {row["id"]: row for row in app.extensions["chatgpt_web"].pool.report()}
    assert any(row["last_error"] for row in states.values())


def test_the_memory_of_2024_only_upstreams_is_bounded():
    from chatgpt_web.upstream import conversation
    from chatgpt_web.upstream.endpoints import Upstream

    memory = conversation.DialectMemory()
    upstreams = [Upstream(f"https://mirror{i}.example/api")
                 for i in range(conversation.MAX_REMEMBERED_UPSTREAMS + 5)]
    for upstream in upstreams:
        memory.remember_2024_only(upstream)
    assert len(memory._until) == conversation.MAX_REMEMBERED_UPSTREAMS
    assert memory.is_2024_only(upstreams[-1]) and not memory.is_2024_only(upstreams[0])


@pytest.mark.parametrize("reasoning_effort, sent", [("low", "standard"), ("medium", "extended"),
                                                    ("high", "max"), (None, None)])
def test_reasoning_effort_reaches_the_write_as_thinking_effort(client, token, emulator,
                                                                reasoning_effort, sent):
    body = {"model": "gpt-5", "messages": [{"role": "user", "content": "Hi"}]}
    if reasoning_effort:
        body["reasoning_effort"] = reasoning_effort
    response = client.post("/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.json
    for request in [*writes(emulator), *posts(emulator, "/f/conversation/prepare")]:
        assert request.json.get("thinking_effort") == sent


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_two_instances_visiting_a_new_account_at_once_agree_on_its_device(kind, emulator,
                                                                           tmp_path, request):
    """Both instances read "no device yet" before either stores one (a barrier holds each read
    until the other has read too); each home page offers its own oai-did; the first to store
    wins and the other adopts it, so the account never shows the site two devices."""
    from chatgpt_web.upstream.endpoints import from_base_url

    both_read = threading.Barrier(2, timeout=30)
    base = DiskStore if kind == "disk" else RedisStore

    class ReadTogether(base):
        def get(self, key):
            value = super().get(key)
            if key.startswith(DEVICE_PREFIX) and value is None:
                both_read.wait()
            return value

    # Resolved here, once: redis_url empties the server when it is first asked for, and two
    # threads asking for it at once both ran it, the second emptying what the first had stored.
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None

    def open_store():
        if kind == "disk":
            return ReadTogether(str(tmp_path / "cache"))
        return ReadTogether(redis_url, "race:")

    config = Config.from_env({"CHATGPT_BASE_URL": emulator.url, "CACHE_DIR": str(tmp_path)})
    upstream = from_base_url(emulator.url)
    access_token = emulator.mint_access_token(email="new@example.com")
    devices = [None, None]
    # Both stores opened here: fixtures are not for other threads to request.
    stores = [open_store(), open_store()]

    def visit(n):
        with new_session(config) as session:
            devices[n] = Bootstrap(stores[n]).visit(session, upstream, access_token,
                                                    30).device_id

    threads = [threading.Thread(target=visit, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    offered = [r for r in emulator.requests_to("/") if r.method == "GET"]
    assert len(offered) == 2  # both visited the home page, each offered a fresh oai-did
    assert devices[0] is not None and devices[0] == devices[1]
    assert open_store().get(DEVICE_PREFIX + account_key(access_token)) == {
        "id": devices[0]}


VISITORS = 8


def visit_at_once(emulator, tmp_path, bootstrap: Bootstrap, access_token: str) -> list:
    """VISITORS threads of one process visit the home page at once (a burst of answers on a
    fresh worker); what each visit returned, or the exception it raised. The emulator holds
    the page for a second, so every thread has asked for it before the first GET is answered."""
    emulator.switches.request_delays = (("/", 1.0),)
    config = Config.from_env({"CHATGPT_BASE_URL": emulator.url, "CACHE_DIR": str(tmp_path)})
    upstream = from_base_url(emulator.url)
    together = threading.Barrier(VISITORS, timeout=30)
    outcomes: list = [None] * VISITORS

    def visit(n):
        with new_session(config) as session:
            together.wait()
            try:
                outcomes[n] = bootstrap.visit(session, upstream, access_token, 30)
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                outcomes[n] = exc

    threads = [threading.Thread(target=visit, args=(n,)) for n in range(VISITORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def home_page_gets(emulator) -> int:
    return len([r for r in emulator.requests_to("/") if r.method == "GET" and r.path == "/"])


def test_answers_of_one_process_visiting_at_once_read_the_page_once(emulator, tmp_path):
    """While one answer reads the home page, the others wait for that read instead of loading
    the page again: one GET, one device id for all."""
    access_token = emulator.mint_access_token(email="burst@example.com")
    bootstrap = Bootstrap(DiskStore(str(tmp_path / "cache")))
    visits = visit_at_once(emulator, tmp_path, bootstrap, access_token)
    assert home_page_gets(emulator) == 1
    assert all(isinstance(visit, Visit) for visit in visits)
    assert {visit.device_id for visit in visits} == {visits[0].device_id}
    assert {visit.page for visit in visits} == {visits[0].page}


def test_when_the_reading_answer_fails_the_next_one_reads_the_page(emulator, tmp_path):
    """The first read fails before its GET (its store is down for one call): that answer gets
    the error, and the waiting answers do not hang or fail with it; one of them reads the
    page, once, for all."""
    failed = threading.Event()

    class DownOnce(DiskStore):
        def get(self, key):
            if key.startswith(DEVICE_PREFIX) and not failed.is_set():
                failed.set()
                raise ServiceUnavailable("the state store is down", code="store_unavailable")
            return super().get(key)

    access_token = emulator.mint_access_token(email="down@example.com")
    bootstrap = Bootstrap(DownOnce(str(tmp_path / "cache")))
    outcomes = visit_at_once(emulator, tmp_path, bootstrap, access_token)
    errors = [o for o in outcomes if isinstance(o, ServiceUnavailable)]
    visits = [o for o in outcomes if isinstance(o, Visit)]
    assert len(errors) == 1 and len(visits) == VISITORS - 1
    assert home_page_gets(emulator) == 1
    assert {visit.device_id for visit in visits} == {visits[0].device_id}


def test_an_answers_requests_ride_one_kept_alive_connection(client, token, emulator):
    """The page, both prepares, the finalize and the write of a turn go out on one connection
    (curl_transfer.py: one handle per answer), which the site keeps open between them. Over
    HTTP/1.1 (the emulator's) that holds from the second turn on too: by default the conduit
    prepare runs beside the sentinel only where the connection multiplexes."""
    send(client, access_token=token, prompt="Hi")
    send(client, access_token=token, prompt="Hi again")
    ports = [r.client_port for r in emulator.requests]
    assert len(ports) == 9 and None not in ports  # the page is fetched once
    assert len(set(ports)) == 1


def test_beside_over_http1_takes_a_second_kept_alive_connection(make_app, token, emulator):
    client = make_app(CONDUIT_PREPARE_BESIDE="on").test_client()
    send(client, access_token=token, prompt="Hi")  # the first: in order (not known 2026 yet)
    # Held, the conduit prepare is still on its connection when the sentinel prepare is sent:
    # answered first (a loaded machine), it would hand that connection back for the sentinel.
    emulator.switches.request_delays = (("/f/conversation/prepare", HOLD),)
    send(client, access_token=token, prompt="Hi again")
    send(client, access_token=token, prompt="And again")
    ports = [r.client_port for r in emulator.requests]
    assert len(ports) == 13 and len(set(ports[:5])) == 1
    assert len(set(ports)) == 2 and ports[0] in ports[5:]  # both kept for the next turn
    conduit = [r.client_port for r in posts(emulator, "/f/conversation/prepare")]
    sentinel = [r.client_port for r in posts(emulator, "/sentinel/chat-requirements/prepare")]
    assert conduit[1] != sentinel[1] and conduit[2] != sentinel[2]


# Seconds the emulator holds the conduit prepare's answer below: far longer than a sentinel
# prepare takes to be sent, even on a loaded machine.
HOLD = 3.0


@pytest.mark.parametrize("protocol", ["2026", "auto"])
def test_the_sentinel_prepare_does_not_wait_for_the_conduit_token(make_app, token, emulator,
                                                                  protocol):
    """The browser asks for the conduit token while the user types, so the site does not order
    it against the sentinel: the service sends the sentinel prepare while the conduit prepare
    is unanswered, a round trip less before each answer's first word. (With `auto`, from the
    second turn on: only an upstream known to answer the conduit prepare gets it beside.)"""
    client = make_app(CHATGPT_PROTOCOL=protocol, CONDUIT_PREPARE_BESIDE="on").test_client()
    if protocol == "auto":
        assert send(client, access_token=token, prompt="Hi").status_code == 200
    emulator.switches.request_delays = (("/f/conversation/prepare", HOLD),)
    response = send(client, access_token=token, prompt="Hi again")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: Hi again"
    conduit = posts(emulator, "/f/conversation/prepare")[-1]
    sentinel = posts(emulator, "/sentinel/chat-requirements/prepare")[-1]
    assert sentinel.time < conduit.time + HOLD  # (which of the two arrives first is open)
    write = writes(emulator)[-1]
    assert write.time >= conduit.time + HOLD  # and the write waited for the token
    assert write.headers["x-oai-turn-trace-id"] == conduit.headers["x-oai-turn-trace-id"]


def conduit_seconds() -> float:
    return REGISTRY.get_sample_value("chatgpt_web_upstream_seconds_sum", {"step": "conduit"}) or 0


@pytest.mark.parametrize("setting", ["auto", "on"])
def test_the_conduit_prepare_is_timed_in_either_order(make_app, token, emulator, setting):
    """The upstream latency metric of the conduit step covers its round trip when it comes first,
    and what the answer still waited for it when it ran beside the sentinel."""
    client = make_app(CONDUIT_PREPARE_BESIDE=setting).test_client()
    assert send(client, access_token=token, prompt="Hi").status_code == 200
    emulator.switches.request_delays = (("/f/conversation/prepare", 1.0),)
    before = conduit_seconds()
    assert send(client, access_token=token, prompt="Hi again").status_code == 200
    assert conduit_seconds() - before >= 0.5


@pytest.mark.parametrize("setting, turns", [("on", 1), ("auto", 2), ("off", 2)],
                         ids=["on-a-first-turn", "auto-over-http1", "off"])
def test_otherwise_the_sentinel_prepare_follows_the_conduit_token(make_app, token, emulator,
                                                                  setting, turns):
    """In order: a first turn with CHATGPT_PROTOCOL=auto (an upstream that may be a 2024-only
    mirror answers the conduit prepare 404, and then gets no 2026 sentinel call), a connection
    that does not multiplex under `auto` (the emulator speaks HTTP/1.1), and `off`."""
    client = make_app(CONDUIT_PREPARE_BESIDE=setting).test_client()
    emulator.switches.request_delays = (("/f/conversation/prepare", 0.2),)
    for turn in range(turns):
        assert send(client, access_token=token, prompt=f"Hi {turn}").status_code == 200
    conduit = posts(emulator, "/f/conversation/prepare")[-1]
    sentinel = posts(emulator, "/sentinel/chat-requirements/prepare")[-1]
    assert sentinel.time >= conduit.time + 0.2
