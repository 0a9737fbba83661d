"""Scoped client keys (KEYS_FILE and /admin/keys), their quotas, GET /v1/key and the usage ledger,
through the official openai SDK against the service on a real port, the emulator behind it."""
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from chatgpt_web.errors import ConfigError, RateLimited
from chatgpt_web.key_policy import KeyPolicy
from chatgpt_web.keys import key_digest
from chatgpt_web.ledger import Ledger
from chatgpt_web.store import DiskStore
from chatgpt_web.usage import count_messages, count_text
from tests.service_fixtures import LiveServer

ADMIN = "admin-scoped-keys"
ALICE = "sk-cw-alice-scoped-key"
BOB = "sk-cw-bob-scoped-key"
PLAIN = "sk-cw-plain-unscoped"
HELLO = [{"role": "user", "content": "Hello"}]


def entry(key, **scopes):
    return {"hash": "sha256:" + key_digest(key), **scopes}


@pytest.fixture
def accounts(tmp_path, emulator):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([{"name": "pooled", "access_token": emulator.mint_access_token()}]))
    return str(path)


@pytest.fixture
def serve(make_app, tmp_path, accounts):
    """serve(keys=[...], **env) -> a LiveServer of an app with that KEYS_FILE and a pool."""
    servers = []

    def factory(keys=(), **env):
        keys_file = tmp_path / "keys.json"
        keys_file.write_text(json.dumps({"keys": list(keys)}))
        server = LiveServer(make_app(KEYS_FILE=str(keys_file), API_KEYS=PLAIN, ADMIN_KEY=ADMIN,
                                     ACCOUNTS_FILE=accounts, RATE_LIMIT_IP="off", **env))
        servers.append(server)
        return server
    yield factory
    for server in servers:
        server.stop()


def sdk(server, key, **options):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key,
                         **{"max_retries": 0, **options})


def admin(server, method, path, body=None):
    response = httpx.request(method, server.url + path, json=body,
                             headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    return response


def ask(client, model="gpt-4o", **extra):
    return client.chat.completions.create(model=model, messages=HELLO, **extra)


# --- scopes ------------------------------------------------------------------------------------

def test_a_keys_file_key_is_served_within_its_scopes(serve):
    server = serve([entry(ALICE, id="alice", models=["gpt-4o*", "gpt-4"], backends=["web"])])
    assert ask(sdk(server, ALICE)).choices[0].message.content
    assert ask(sdk(server, ALICE), model="gpt-4o-mini").choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(sdk(server, ALICE), model="o1")
    assert refused.value.code == "model_not_allowed"
    assert refused.value.body["param"] == "model"
    assert refused.value.response.headers["x-should-retry"] == "false"
    # API_KEYS keep working, unscoped.
    assert ask(sdk(server, PLAIN), model="o1").choices[0].message.content


@pytest.mark.parametrize("scopes, status, code", [
    ({"ips": ["10.0.0.0/8"]}, 403, "ip_not_allowed"),
    ({"backends": ["relay"]}, 403, "backend_not_allowed"),
    ({"disabled": True}, 401, "key_disabled"),
    ({"expires_at": "2020-01-01T00:00:00Z"}, 401, "key_expired"),
])
def test_a_request_outside_a_scope_names_the_scope(serve, scopes, status, code):
    server = serve([entry(ALICE, id="alice", **scopes)])
    error_class = (openai.PermissionDeniedError if status == 403
                   else openai.AuthenticationError)
    with pytest.raises(error_class) as refused:
        ask(sdk(server, ALICE))
    assert refused.value.status_code == status and refused.value.code == code


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses",
                                  "/v1/images/generations", "/send_message"])
@pytest.mark.parametrize("model", [["gpt-4o"], 4, {"id": "gpt-4o"}])
def test_a_model_that_is_not_text_is_400_before_a_scope_refuses_the_key(serve, path, model):
    """A regression: a non-string `model` used to count as "no model" in the scope check, so a key
    limited to the relay got 403 backend_not_allowed for what is a malformed body."""
    server = serve([entry(ALICE, id="alice", backends=["relay"], models=["o1"])])
    response = httpx.post(server.url + path, json={"model": model, "prompt": "Hi"},
                          headers={"Authorization": f"Bearer {ALICE}"}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json().get("error", response.json())
    assert error["code"] == "invalid_field"
    if path.startswith("/v1/"):  # the original project's face has no `param`
        assert error["param"] == "model"


@pytest.mark.parametrize("path, content_type", [
    ("/v1/chat/completions", "application/json"),
    ("/v1/chat/completions", None),  # read as JSON without the header, as its route does
    ("/v1/responses", "application/json"),
    ("/v1/images/generations", "application/json"),
    ("/send_message", "application/json"),
])
def test_a_malformed_body_is_400_before_a_scope_refuses_the_key(serve, path, content_type):
    """As the OpenAI API does: the key is checked (401), then the body (400), then what the key
    may use (403). This key may use neither the web accounts nor the model asked for."""
    server = serve([entry(ALICE, id="alice", backends=["relay"], models=["o1"])])
    headers = {"Authorization": f"Bearer {ALICE}"}
    if content_type:
        headers["Content-Type"] = content_type
    response = httpx.post(server.url + path, content=b'{"model": "gpt-4o", "messages": [',
                          headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json().get("error", response.json())
    assert error["code"] == "invalid_json"
    # A readable body is then refused for the scope.
    response = httpx.post(server.url + path, json={"model": "gpt-4o", "prompt": "Hi"},
                          headers={"Authorization": f"Bearer {ALICE}"}, timeout=30)
    assert response.status_code == 403, response.text


def test_an_ip_inside_the_allow_list_is_served(serve):
    server = serve([entry(ALICE, id="alice", ips=["127.0.0.0/8", "::1"])])
    assert ask(sdk(server, ALICE)).choices[0].message.content


def test_a_key_has_its_own_rate_limit(serve):
    server = serve([entry(ALICE, id="alice", rate="2/hour")], RATE_LIMIT="100/hour")
    client = sdk(server, ALICE)
    client.models.list()
    client.models.list()
    with pytest.raises(openai.RateLimitError) as refused:
        client.models.list()
    assert refused.value.code == "rate_limited"
    sdk(server, PLAIN).models.list()  # the others keep RATE_LIMIT


def test_a_bad_keys_file_stops_the_start_without_quoting_the_hash(make_app, tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"id": "x", "hash": ALICE}]}))
    with pytest.raises(Exception) as failed:
        make_app(KEYS_FILE=str(path))
    assert "KEYS_FILE key 1" in str(failed.value) and ALICE not in str(failed.value)


@pytest.mark.parametrize("quota, field", [
    ({"requests": "0/day"}, "'quota.requests' is 0/day"),
    ({"tokens": ["5000/day", "0/month"]}, "'quota.tokens' is 0/month"),
])
def test_a_zero_quota_stops_the_start_naming_the_key_and_field(make_app, tmp_path, quota, field):
    """0 is ambiguous (no requests? no limit?): it is refused, with what to write instead."""
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [entry(PLAIN, id="bob"),
                                         entry(ALICE, id="alice", quota=quota)]}))
    with pytest.raises(ConfigError) as failed:
        make_app(KEYS_FILE=str(path))
    message = str(failed.value)
    assert message.startswith('KEYS_FILE key 2 (id "alice"): ' + field)
    assert '"disabled": true' in message and "leave the quota out" in message


# --- quotas ------------------------------------------------------------------------------------

def counting_client(server, key, responses):
    """The SDK with its default retries, recording every answer it received."""
    hooks = {"response": [lambda response: responses.append(response.status_code)]}
    return sdk(server, key, max_retries=2,
               http_client=httpx.Client(event_hooks=hooks, timeout=30))


def test_an_exhausted_request_quota_is_429_until_the_reset_and_the_sdk_does_not_retry(serve):
    # A day's quota resets at midnight UTC: a test begun just before it would see the reset.
    start = datetime.now(UTC)
    to_midnight = (datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
                   - start).total_seconds()
    if to_midnight < 20:
        time.sleep(to_midnight + 0.5)
    server = serve([entry(ALICE, id="alice", quota={"requests": "2/day"})])
    statuses = []
    client = counting_client(server, ALICE, statuses)
    ask(client)
    ask(client, stream=True).close()
    with pytest.raises(openai.RateLimitError) as refused:
        ask(client)
    error = refused.value
    assert error.code == "quota_exhausted"
    now = datetime.now(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    wait = int(error.response.headers["Retry-After"])
    assert abs(wait - (midnight - now).total_seconds()) < 5
    if wait > 60:
        assert error.response.headers["x-should-retry"] == "false"
        assert statuses == [200, 200, 429]  # no retries spent on a quota gone for hours
    # Another key is not affected.
    assert ask(sdk(server, PLAIN)).choices[0].message.content


def test_a_token_quota_refuses_the_answer_that_no_longer_fits(serve):
    server = serve([entry(ALICE, id="alice", quota={"tokens": ["60/day", "1000/month"]})])
    client = sdk(server, ALICE)
    first = ask(client)
    assert first.usage.total_tokens > 0
    prompt = first.usage.prompt_tokens
    used = first.usage.total_tokens
    while True:  # each answer's prompt and a completion reserve are held before it starts
        try:
            used += ask(client).usage.total_tokens
        except openai.RateLimitError as refused:
            assert refused.code == "quota_exhausted"
            assert int(refused.response.headers["retry-after"]) > 60  # the day's reset
            break
    status = client.get("/key", cast_to=httpx.Response).json()["usage"]["day"]["tokens"]
    # Never past the quota: the refused prompt did not fit in what was left.
    assert status["used"] == used <= 60 and status["remaining"] < prompt
    assert status["held"] == 0  # nothing in flight


def test_answers_in_flight_hold_their_tokens_so_together_they_never_pass_the_quota(serve,
                                                                                     emulator):
    server = serve([entry(ALICE, id="alice", quota={"tokens": "200/day"})])
    client = sdk(server, ALICE)
    release = threading.Event()
    emulator.switches.answer_fn = lambda body: "Fine." if release.wait(60) else "late"
    first: list = []
    worker = threading.Thread(target=lambda: first.append(ask(client)))
    worker.start()
    try:
        deadline = time.monotonic() + 30  # until the first answer is upstream (its hold taken)
        while not [r for r in emulator.requests_to("/conversation") if r.method == "POST"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        held = client.get("/key", cast_to=httpx.Response).json()["usage"]["day"]["tokens"]
        assert held["used"] == 0 and held["held"] == 200  # prompt + all that is left (< 1024)
        with pytest.raises(openai.RateLimitError) as refused:
            ask(client)
        assert refused.value.code == "quota_exhausted"
        assert refused.value.response.headers["retry-after"] == "2"  # frees when it ends
    finally:
        release.set()
        worker.join(60)
    [answer] = first
    after = client.get("/key", cast_to=httpx.Response).json()["usage"]["day"]["tokens"]
    assert after["held"] == 0 and after["used"] == answer.usage.total_tokens
    assert ask(client).choices[0].message.content == "Fine."  # room again


def test_a_hold_is_given_back_when_the_answer_fails_and_lapses_if_never_settled(tmp_path):
    now = [time.time()]
    ledger = Ledger(DiskStore(str(tmp_path / "store")), clock=lambda: now[0], hold_ttl=300)
    policy = KeyPolicy.from_record({"hash": "sha256:" + "0" * 64, "id": "k",
                                   "quota": {"tokens": "5000/day"}}, "test")
    first = ledger.hold_tokens("k", policy, 100)
    assert ledger.status(policy, "k")["day"]["tokens"]["held"] == 1124  # prompt + reserve
    ledger.drop_hold("k", first)  # the answer failed: nothing counted
    assert ledger.status(policy, "k")["day"]["tokens"] == {
        "used": 0, "limit": 5000, "remaining": 5000, "held": 0}
    second = ledger.hold_tokens("k", policy, 100)
    ledger.record("k", "gpt-4o", "web", 100, 30, hold=second)  # replaced by what was used
    assert ledger.status(policy, "k")["day"]["tokens"]["used"] == 130
    assert ledger.status(policy, "k")["day"]["tokens"]["held"] == 0
    ledger.hold_tokens("k", policy, 4000)  # its process dies: never settled
    with pytest.raises(RateLimited):
        ledger.hold_tokens("k", policy, 100)
    now[0] += 301
    assert ledger.hold_tokens("k", policy, 100)  # the dead hold lapsed
    assert ledger.hold_tokens("k", None, 10**9) is None  # no token quota: nothing held


def test_a_structured_output_retry_is_one_request_with_the_tokens_of_both(serve, emulator):
    server = serve([entry(ALICE, id="alice", quota={"requests": "10/day"})])
    replies = iter(["Sure: name Oslo", '{"name": "Oslo"}'])
    emulator.switches.answer_fn = lambda body: next(replies)
    schema = {"type": "object", "properties": {"name": {"type": "string"}},
              "required": ["name"]}
    answer = sdk(server, ALICE).chat.completions.create(
        model="gpt-4o", messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert json.loads(answer.choices[0].message.content) == {"name": "Oslo"}
    writes = [r for r in emulator.requests_to("/conversation") if r.method == "POST"]
    assert len(writes) == 2  # the model had its second chance
    [row] = admin(server, "GET", "/admin/usage").json()["usage"]
    assert row["requests"] == 1
    slug = row["model"]
    assert row["completion_tokens"] == (count_text("Sure: name Oslo", slug)
                                        + count_text('{"name": "Oslo"}', slug))
    assert row["prompt_tokens"] > count_messages([("user", "Hello")], slug)  # both prompts
    shown = sdk(server, ALICE).get("/key", cast_to=httpx.Response).json()
    assert shown["usage"]["day"]["requests"]["used"] == 1
    assert shown["usage"]["day"]["tokens"]["used"] == row["prompt_tokens"] + row[
        "completion_tokens"]


def test_quota_resets_with_the_utc_day(tmp_path):
    store = DiskStore(str(tmp_path / "store"))
    now = [datetime(2026, 12, 4, 23, 59, 50, tzinfo=UTC).timestamp()]
    ledger = Ledger(store, clock=lambda: now[0])
    policy = KeyPolicy.from_record(entry(ALICE, id="alice", quota={"requests": "1/day"}))
    ledger.admit("alice", policy)
    with pytest.raises(Exception) as refused:
        ledger.admit("alice", policy)
    assert refused.value.code == "quota_exhausted" and refused.value.retry_after == 10
    assert "x-should-retry" not in refused.value.headers  # 10 s: the SDK may wait for it
    now[0] += 11  # the next UTC day
    ledger.admit("alice", policy)


def test_concurrency_cap_counts_slots_across_threads(tmp_path):
    ledger = Ledger(DiskStore(str(tmp_path / "store")))
    policy = KeyPolicy.from_record(entry(ALICE, id="alice", concurrency=3))
    taken, refused = [], []

    def take():
        try:
            taken.append(ledger.lease(policy, 60))
        except Exception as error:
            refused.append(error.code)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 3 and refused == ["concurrency_limited"] * 5
    ledger.release("alice", taken[0])
    assert ledger.in_flight("alice") == 2
    take()
    assert len(taken) == 4


def test_a_stream_holds_its_slot_until_it_is_closed(serve):
    server = serve([entry(ALICE, id="alice", concurrency=1)])
    client = sdk(server, ALICE)
    chunks = list(ask(client, stream=True))
    assert chunks
    # The stream was read to its end: its slot is free again for the next request, at once (it
    # is given back before the server ends the body), and a whole answer's before it is sent.
    assert ask(client).choices[0].message.content
    assert client.get("/key", cast_to=httpx.Response).json()["in_flight"] == 0


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO, "stream": True}),
    ("/send_message", {"prompt": "Hello", "stream": True}),
])
def test_a_streams_slot_is_free_before_its_last_event_goes_out(make_app, tmp_path, accounts,
                                                                path, body):
    """A regression: the slot was given back after the last event ([DONE]) had gone out, but the
    openai SDK closes the connection as soon as it reads [DONE], so its next request could find
    the slot still taken (429). The body is read here chunk by chunk, as the server sends it."""
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [entry(ALICE, id="alice", concurrency=1)]}))
    app = make_app(KEYS_FILE=str(keys_file), ACCOUNTS_FILE=accounts, RATE_LIMIT_IP="off")
    client = app.test_client()
    auth = {"Authorization": f"Bearer {ALICE}"}
    response = client.post(path, json=body, headers=auth, buffered=False)
    assert response.status_code == 200
    in_flight_before_done = []
    for chunk in response.response:
        if chunk.endswith(b"data: [DONE]\n\n"):
            in_flight_before_done.append(client.get("/v1/key", headers=auth).json["in_flight"])
        elif not in_flight_before_done:
            assert client.get("/v1/key", headers=auth).json["in_flight"] == 1
    response.close()
    assert in_flight_before_done == [0]
    # The request was counted before its end, too.
    assert client.get("/v1/key", headers=auth).json["usage"]["day"]["requests"]["used"] == 1


# --- run-time keys -----------------------------------------------------------------------------

def test_admin_creates_lists_updates_and_revokes_keys(serve):
    server = serve([entry(ALICE, id="alice")])
    made = admin(server, "POST", "/admin/keys", {"id": "carol", "label": "Carol's bot",
                                                 "models": ["gpt-4o"], "concurrency": 2})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith("sk-cw-") and "hash" not in made.json()
    assert ask(sdk(server, key)).choices[0].message.content

    listed = admin(server, "GET", "/admin/keys").json()["keys"]
    assert [row["id"] for row in listed] == ["alice", "carol"]
    assert key not in json.dumps(listed) and key_digest(key) not in json.dumps(listed)

    changed = admin(server, "PATCH", "/admin/keys/carol", {"models": ["o1"]})
    assert changed.status_code == 200 and changed.json()["models"] == ["o1"]
    with pytest.raises(openai.PermissionDeniedError):
        ask(sdk(server, key))
    assert admin(server, "PATCH", "/admin/keys/carol", {"models": None}).json().get("models") \
        is None
    assert ask(sdk(server, key)).choices[0].message.content

    assert admin(server, "POST", "/admin/keys", {"id": "carol"}).json()["code"] \
        == "key_exists"
    assert admin(server, "PATCH", "/admin/keys/alice", {"label": "x"}).json()["code"] \
        == "key_read_only"
    bad = admin(server, "POST", "/admin/keys", {"id": "dave", "quota": {"requests": "lots"}})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_key_policy"

    assert admin(server, "DELETE", "/admin/keys/carol").json() == {"id": "carol",
                                                                   "revoked": True}
    with pytest.raises(openai.AuthenticationError):
        ask(sdk(server, key))
    assert admin(server, "DELETE", "/admin/keys/carol").status_code == 404


def test_a_key_made_on_one_worker_is_known_to_another_app_on_the_same_store(serve):
    first = serve()
    key = admin(first, "POST", "/admin/keys", {"id": "erin"}).json()["key"]
    second = serve()  # a second app on the same CACHE_DIR, as a second worker process is
    assert ask(sdk(second, key)).choices[0].message.content
    admin(second, "DELETE", "/admin/keys/erin")
    with pytest.raises(openai.AuthenticationError):
        ask(sdk(first, key))


def run_keys(env, *args, module="chatgpt_web.keys"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_the_command_line_manages_the_stores_keys(serve, service_env, tmp_path):
    env = {**service_env, "KEYS_FILE": str(tmp_path / "keys.json")}
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [entry(ALICE, id="alice")]}))
    made = run_keys(env, "create", "frank", "--models", "gpt-4o", "--quota", "requests=5/day")
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("it is not stored anywhere): ")[1].split()[0]
    server = serve([entry(ALICE, id="alice")])
    assert ask(sdk(server, key)).choices[0].message.content
    listed = run_keys(env, "keys", "list", module="chatgpt_web")  # the package's command line
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["id"] for row in rows] == ["alice", "frank"]
    assert rows[1]["quota"] == {"requests": ["5/day"]} and key not in listed.stdout
    assert run_keys(env, "update", "frank", "--disable").returncode == 0
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(sdk(server, key))
    assert refused.value.code == "key_disabled"
    assert run_keys(env, "revoke", "frank").returncode == 0
    assert run_keys(env, "revoke", "frank").returncode == 1


def test_keys_new_prints_a_keys_file_entry():
    done = subprocess.run([sys.executable, "-m", "chatgpt_web.keys", "new", "alice"],
                          capture_output=True, text=True, check=True)
    key = done.stdout.split("it is not stored anywhere): ")[1].split()[0]
    line = done.stdout.split("entry for KEYS_FILE: ")[1].strip()
    assert json.loads(line) == {"id": "alice", "hash": "sha256:" + key_digest(key),
                                "label": "alice"}


# --- GET /v1/key and the ledger ----------------------------------------------------------------

def test_v1_key_shows_the_callers_scopes_limits_and_usage_but_never_the_key(serve):
    server = serve([entry(ALICE, id="alice", label="Alice", models=["gpt-4o"],
                          rate="50/hour", concurrency=2,
                          quota={"requests": ["10/day"], "tokens": "100000/month"})])
    client = sdk(server, ALICE)
    answer = ask(client)
    shown = client.get("/key", cast_to=httpx.Response).json()
    assert shown["id"] == "alice" and shown["label"] == "Alice" and shown["scoped"] is True
    assert shown["models"] == ["gpt-4o"] and shown["rate_limit"] == "50/hour"
    assert shown["concurrency"] == 2
    assert shown["usage"]["day"]["requests"] == {"used": 1, "limit": 10, "remaining": 9}
    assert shown["usage"]["month"]["tokens"]["used"] == answer.usage.total_tokens
    assert shown["usage"]["month"]["tokens"]["remaining"] == 100000 - answer.usage.total_tokens
    text = json.dumps(shown)
    assert ALICE not in text and key_digest(ALICE) not in text
    plain = sdk(server, PLAIN).get("/key", cast_to=httpx.Response).json()
    assert plain["scoped"] is False and plain["rate_limit"] == "120/hour"


def test_the_ledger_counts_concurrent_streams_exactly(serve):
    server = serve([entry(ALICE, id="alice"), entry(BOB, id="bob")])
    answers, errors = [], []

    def stream(key):
        try:
            chunks = list(ask(sdk(server, key), stream=True))
            answers.append((key, "".join(c.choices[0].delta.content or "" for c in chunks
                                         if c.choices)))
        except Exception as error:  # collected: an assert in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=stream, args=(key,)) for key in [ALICE] * 5 + [BOB] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(answers) == 8
    report = admin(server, "GET", "/admin/usage").json()
    rows = {row["key"]: row for row in report["usage"]}
    assert set(rows) == {"alice", "bob"}
    slug = rows["alice"]["model"]
    prompt = count_messages([("user", "Hello")], slug)
    for key, name, count in ((ALICE, "alice", 5), (BOB, "bob", 3)):
        assert rows[name]["requests"] == count and rows[name]["backend"] == "web"
        assert rows[name]["prompt_tokens"] == count * prompt
        assert rows[name]["completion_tokens"] == sum(count_text(text, slug)
                                                      for owner, text in answers if owner == key)
    as_csv = admin(server, "GET", "/admin/usage?format=csv&key=bob")
    assert as_csv.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(row["key"], row["requests"]) for row in parsed] == [("bob", "3")]
    assert "Hello" not in json.dumps(report) and "Hello" not in as_csv.text


def test_usage_report_checks_its_dates(serve):
    server = serve()
    bad = admin(server, "GET", "/admin/usage?from=yesterday")
    assert bad.status_code == 400 and "'from'" in bad.json()["message"]
    assert admin(server, "GET", "/admin/usage?from=2020-01-01").status_code == 400


# --- two instances, one Redis ------------------------------------------------------------------

def test_two_instances_on_one_redis_count_a_quota_exactly(make_app, tmp_path, accounts,
                                                          redis_url):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [entry(ALICE, id="alice",
                                                    quota={"requests": "5/day"})]}))
    servers = [LiveServer(make_app(KEYS_FILE=str(keys_file), ADMIN_KEY=ADMIN,
                                   ACCOUNTS_FILE=accounts, REDIS_URL=redis_url,
                                   CACHE_DIR=str(tmp_path / f"cache-{name}"),
                                   RATE_LIMIT_IP="off"))
               for name in ("a", "b")]
    try:
        made = admin(servers[0], "POST", "/admin/keys", {"id": "bob",
                                                        "quota": {"requests": "4/day"}})
        bob = made.json()["key"]
        outcomes = []

        def one(server, key):
            try:
                ask(sdk(server, key))
                outcomes.append((key, 200))
            except openai.RateLimitError as refused:
                outcomes.append((key, refused.code))

        jobs = [(servers[i % 2], key) for i in range(8) for key in (ALICE, bob)]
        threads = [threading.Thread(target=one, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for key, quota in ((ALICE, 5), (bob, 4)):
            mine = [result for owner, result in outcomes if owner == key]
            assert mine.count(200) == quota
            assert mine.count("quota_exhausted") == 8 - quota
        # The ledger and /v1/key agree across the two instances.
        rows = admin(servers[1], "GET", "/admin/usage").json()["usage"]
        assert {row["key"]: row["requests"] for row in rows} == {"alice": 5, "bob": 4}
        shown = sdk(servers[1], bob).get("/key", cast_to=httpx.Response).json()
        assert shown["usage"]["day"]["requests"]["remaining"] == 0
    finally:
        for server in servers:
            server.stop()


def test_per_key_metrics_only_when_asked(serve):
    quiet = serve([entry(ALICE, id="alice-quiet")])
    ask(sdk(quiet, ALICE))
    scrape = httpx.get(quiet.url + "/metrics", headers={"Authorization": f"Bearer {PLAIN}"}).text
    assert 'key="alice-quiet"' not in scrape
    loud = serve([entry(BOB, id="bob-loud")], METRICS_PER_KEY="true")
    ask(sdk(loud, BOB))
    scrape = httpx.get(loud.url + "/metrics", headers={"Authorization": f"Bearer {PLAIN}"}).text
    assert 'chatgpt_web_key_requests_total{key="bob-loud"} 1.0' in scrape
    assert 'chatgpt_web_key_tokens_total{key="bob-loud",kind="prompt"}' in scrape
