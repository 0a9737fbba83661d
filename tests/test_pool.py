"""The server-held account pool: rotation, health, failover before the first byte, pins."""
import json
import random

import pytest

from chatgpt_web.errors import ConfigError
from chatgpt_web.pool import load_accounts

# The tests that use the emulator run against the site as it is now and against a mirror
# that only knows the 2024 paths (tests/conftest.py).
BOTH_DIALECTS = True


def write_accounts(tmp_path, entries):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(entries))
    return str(path)


def served_by(emulator):
    """The bearer token of every conversation POST, in order."""
    return [r.headers["authorization"].split(" ", 1)[1]
            for r in emulator.requests_to("/conversation") if r.method == "POST"]


@pytest.fixture
def two_accounts(emulator):
    return {"a": emulator.mint_access_token(email="a@example.com"),
            "b": emulator.mint_access_token(email="b@example.com")}


@pytest.fixture(params=["disk", "redis"])
def store_env(request) -> dict:
    """The pool's state on the default disk store, then on a real Redis."""
    return {"REDIS_URL": request.getfixturevalue("redis_url")} if request.param == "redis" else {}


@pytest.fixture
def pooled(make_app, tmp_path, two_accounts, store_env):
    """An app whose pool holds accounts "a" and "b" (access tokens), rotation seeded."""
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "a", "access_token": two_accounts["a"]},
        {"name": "b", "access_token": two_accounts["b"]},
    ]), **store_env)
    pool = app.extensions["chatgpt_web"].pool
    pool._rng = random.Random(7)
    return app


def send(client, **fields):
    return client.post("/send_message", data={"prompt": "Hi", **fields})


def report(app):
    return {row["id"]: row for row in app.extensions["chatgpt_web"].pool.report()}


def test_send_message_without_a_token_is_served_by_the_pool(pooled, emulator, two_accounts):
    client = pooled.test_client()
    # The weighted rotation uses both. The choice is random: ask until both have served (64
    # tries: missing one every time has odds of 2**-63; 12 tries missed one 1 time in 2048).
    for _ in range(64):
        assert send(client).status_code == 200
        if set(served_by(emulator)) == set(two_accounts.values()):
            break
    assert set(served_by(emulator)) == set(two_accounts.values())


def test_weights_shape_the_rotation(make_app, tmp_path, emulator, two_accounts):
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "a", "access_token": two_accounts["a"], "weight": 9},
        {"name": "b", "access_token": two_accounts["b"], "weight": 1},
    ]))
    pool = app.extensions["chatgpt_web"].pool
    pool._rng = random.Random(1)
    picks = [pool.choose().id for _ in range(1000)]
    assert 850 < picks.count("a") < 950


def test_without_pool_a_missing_token_is_still_400(client):
    response = send(client)
    assert response.status_code == 400 and response.json["code"] == "missing_field"


def test_rate_limited_account_rests_and_request_fails_over(pooled, emulator, two_accounts):
    emulator.switches.fail_with = "rate_limit"
    emulator.switches.clears_in = 120
    emulator.switches.fail_times = 1
    client = pooled.test_client()
    response = send(client)
    assert response.status_code == 200, response.json
    first, second = served_by(emulator)
    assert first != second  # the second account answered the same request
    resting = [row for row in report(pooled).values() if row["status"] == "resting"]
    assert len(resting) == 1 and resting[0]["last_error"] == "upstream_rate_limited"
    # While it rests, every request goes to the other account.
    for _ in range(5):
        assert send(client).status_code == 200
    assert set(served_by(emulator)[2:]) == {second}


def test_account_whose_token_is_refused_is_marked_dead_and_skipped(make_app, tmp_path, emulator,
                                                                   two_accounts):
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "good", "access_token": two_accounts["a"]},
        {"name": "revoked", "access_token": "not-a-valid-token"},
    ]))
    client = app.test_client()
    # The choice is random: ask until "revoked" has had its turn (64 tries: missing it every
    # time has odds of 2**-64, where 8 tries missed it 1 time in 256 and failed a CI run).
    for _ in range(64):
        assert send(client).status_code == 200
        if report(app)["revoked"]["status"] == "dead":
            break
    assert report(app)["revoked"]["status"] == "dead"
    for _ in range(4):
        assert send(client).status_code == 200
    assert served_by(emulator).count("not-a-valid-token") <= 1  # never tried again


def test_expired_password_account_token_is_renewed_by_one_relogin(make_app, tmp_path, emulator):
    emulator.auth.add_account("pool@example.com", "pw-123456")
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "p", "email": "pool@example.com", "password": "pw-123456"}]))
    client = app.test_client()
    assert send(client).status_code == 200
    logins = len(emulator.requests_to("/api/accounts/password/verify"))
    assert logins == 1
    assert send(client).status_code == 200  # token reused from the cache: no second login
    assert len(emulator.requests_to("/api/accounts/password/verify")) == 1
    emulator.switches.fail_with = "token_expired"
    emulator.switches.fail_times = 1
    response = send(client)
    assert response.status_code == 200, response.json
    assert len(emulator.requests_to("/api/accounts/password/verify")) == 2
    assert report(app)["p"]["status"] == "healthy"


def test_account_refused_after_relogin_is_dead(make_app, tmp_path, emulator):
    emulator.auth.add_account("pool@example.com", "pw-123456")
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "p", "email": "pool@example.com", "password": "pw-123456"}]))
    emulator.switches.fail_with = "token_expired"
    response = send(app.test_client())
    assert response.status_code == 503 and response.json["code"] == "no_account_available"
    assert report(app)["p"]["status"] == "dead"
    assert len(emulator.requests_to("/api/accounts/password/verify")) == 2


def test_cloudflare_refusal_counts_against_the_account(pooled, emulator):
    emulator.switches.fail_with = "cloudflare"
    emulator.switches.fail_times = 1
    assert send(pooled.test_client()).status_code == 200
    rows = [row for row in report(pooled).values() if row["last_error"] == "cloudflare_challenge"]
    assert len(rows) == 1 and rows[0]["status"] == "resting"


def test_caller_sees_an_error_only_when_no_account_can_serve(pooled, emulator):
    emulator.switches.fail_with = "rate_limit"
    emulator.switches.clears_in = 30
    response = send(pooled.test_client())
    assert response.status_code == 503 and response.json["code"] == "no_account_available"
    assert 1 <= int(response.headers["Retry-After"]) <= 31
    assert len(served_by(emulator)) == 2


def test_upstream_errors_that_are_not_the_accounts_fault_do_not_fail_over(pooled, emulator):
    emulator.switches.fail_with = "server_error"
    response = send(pooled.test_client())
    assert response.status_code == 502
    assert len(served_by(emulator)) == 1
    assert all(row["status"] == "healthy" for row in report(pooled).values())


def test_conversation_stays_on_the_account_that_created_it(pooled, emulator):
    client = pooled.test_client()
    first = send(client).json
    owner = served_by(emulator)[0]
    answer = first
    for _ in range(4):
        answer = send(client, conversation_id=first["conversation_id"],
                      parent_message_id=answer["parent_message_id"]).json
        assert answer["conversation_id"] == first["conversation_id"]
    assert set(served_by(emulator)) == {owner}


def test_conversation_whose_account_is_gone_is_409(pooled, emulator):
    client = pooled.test_client()
    first = send(client).json
    pool = pooled.extensions["chatgpt_web"].pool
    owner = pool.pinned(first["conversation_id"])
    pool._update(owner, status="dead")
    response = send(client, conversation_id=first["conversation_id"],
                    parent_message_id=first["parent_message_id"])
    assert response.status_code == 409 and response.json["code"] == "conversation_account_gone"


def test_unknown_conversation_on_the_pool_is_409(pooled):
    response = send(pooled.test_client(), conversation_id="6974e0a3-b684-8321-a73a-bf4e7b6dfafe",
                    parent_message_id="0fe98393-5d68-4e41-9fb6-75b50f27c79e")
    assert response.status_code == 409


def test_pooled_token_is_never_sent_to_a_callers_proxy(pooled, emulator):
    response = send(pooled.test_client(), reverse_proxy="https://93.184.216.34/api/conversation")
    assert response.status_code == 400 and response.json["code"] == "reverse_proxy_not_allowed"
    assert emulator.requests == []


def test_two_instances_sharing_redis_see_the_same_health_and_pins(make_app, tmp_path, emulator,
                                                                   two_accounts, redis_url):
    """Two apps, as two instances would be: their own CACHE_DIR, one Redis."""
    accounts = write_accounts(tmp_path, [{"name": "a", "access_token": two_accounts["a"]},
                                         {"name": "b", "access_token": two_accounts["b"]}])
    one, two = (make_app(ACCOUNTS_FILE=accounts, REDIS_URL=redis_url,
                         CACHE_DIR=str(tmp_path / name))
                for name in ("one", "two"))
    # A 429 met by the first instance rests that account for the second one too.
    emulator.switches.fail_with = "rate_limit"
    emulator.switches.clears_in = 120
    emulator.switches.fail_times = 1
    assert send(one.test_client()).status_code == 200
    assert report(two) == report(one)
    resting = [row["id"] for row in report(two).values() if row["status"] == "resting"]
    assert len(resting) == 1
    healthy = ({"a", "b"} - set(resting)).pop()
    assert {two.extensions["chatgpt_web"].pool.choose().id for _ in range(20)} == {healthy}

    # A conversation started on one instance continues on the other, on the same account.
    first = send(two.test_client()).json
    owner = served_by(emulator)[-1]
    follow_up = send(one.test_client(), conversation_id=first["conversation_id"],
                     parent_message_id=first["parent_message_id"])
    assert follow_up.status_code == 200 and served_by(emulator)[-1] == owner

    # An account one instance finds dead is dead for the other.
    one.extensions["chatgpt_web"].pool._update(one.extensions["chatgpt_web"].pool.accounts[healthy],
                                               status="dead")
    assert report(two)[healthy]["status"] == "dead"
    response = send(two.test_client())
    assert response.status_code == 503 and response.json["code"] == "no_account_available"
    assert 1 <= int(response.headers["Retry-After"]) <= 121  # only the resting one is left


def test_health_updates_from_two_pools_merge_instead_of_overwriting(redis_url, two_accounts):
    """Each update writes only its own fields, so concurrent facts about one account all stay."""
    import threading

    from chatgpt_web.errors import RateLimited
    from chatgpt_web.pool import Account, AccountPool
    from chatgpt_web.store import RedisStore
    account = Account("a", "access_token", access_token=two_accounts["a"])
    one, two = (AccountPool([account], RedisStore(redis_url), tokens=None, clock=lambda: 1000.0)
                for _ in range(2))
    # Each pool records its own facts (one field per update) at the same time as the other.
    writers = [threading.Thread(target=lambda pool=pool, name=name: [
        pool._update(account, **{f"{name}-{i}": i}) for i in range(100)])
        for pool, name in ((one, "one"), (two, "two"))]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    state = two.state(account)
    assert sum(key.startswith(("one-", "two-")) for key in state) == 200  # no write was lost
    one._update(account, token_expires_at=2000)
    two._fault(account, RateLimited("slow down", "upstream_rate_limited", retry_after=30))
    state = one.state(account)
    assert state["rest_until"] == 1030.0 and state["last_error"] == "upstream_rate_limited"
    assert state["status"] == "healthy" and state["token_expires_at"] == 2000  # defaults + stored


def test_simultaneous_refusals_from_two_pools_all_count_as_strikes(redis_url, two_accounts):
    """Two instances refused by Cloudflare at the same moment make two strikes, not one."""
    import threading

    from chatgpt_web.errors import Forbidden
    from chatgpt_web.pool import DEFAULT_REST, MAX_STRIKE_REST, Account, AccountPool
    from chatgpt_web.store import RedisStore
    account = Account("a", "access_token", access_token=two_accounts["a"])
    pools = [AccountPool([account], RedisStore(redis_url, prefix=f"strikes-{id(two_accounts)}:"),
                         tokens=None, clock=lambda: 1000.0) for _ in range(2)]
    refused = Forbidden("challenge", "cloudflare_challenge")
    writers = [threading.Thread(target=lambda pool=pool: [pool._fault(account, refused)
                                                          for _ in range(25)])
               for pool in pools]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    pools[1]._fault(account, refused)  # the last word, so the record holds the latest count
    state = pools[0].state(account)
    assert state["strikes"] == 51  # read-then-write counting loses some of them
    assert state["rest_until"] == 1000.0 + MAX_STRIKE_REST > 1000.0 + DEFAULT_REST


def test_report_never_shows_secrets(make_app, tmp_path, emulator, two_accounts):
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"access_token": two_accounts["a"]},
        {"email": "secret-person@example.com", "password": "hunter2-secret"},
    ]))
    text = json.dumps(app.extensions["chatgpt_web"].pool.report())
    for secret in (two_accounts["a"], "secret-person", "hunter2-secret"):
        assert secret not in text


@pytest.mark.parametrize("entries", [
    [], [{"weight": 1}], [{"email": "x@y.z"}], [{"access_token": "t", "weight": 0}],
    [{"access_token": "t", "session_token": "s"}], [{"name": "same", "access_token": "t1"},
                                                    {"name": "same", "access_token": "t2"}],
])
def test_malformed_accounts_file_is_refused_without_quoting_secrets(tmp_path, entries):
    with pytest.raises(ConfigError) as caught:
        load_accounts(write_accounts(tmp_path, entries))
    assert "t1" not in str(caught.value) and "x@y.z" not in str(caught.value)


def test_an_answer_started_on_an_account_is_closed_when_the_store_then_fails():
    """The answer began (its upstream transfer is open) and then recording the account's health
    failed: the caller gets the store's error, and the transfer and its in-flight count end."""
    from chatgpt_web.errors import ServiceUnavailable
    from chatgpt_web.metrics import STREAMS_IN_FLIGHT
    from chatgpt_web.pool import Account, AccountPool
    from chatgpt_web.store import MemoryStore
    from chatgpt_web.upstream.stream import TextDelta

    class FailingStore(MemoryStore):
        failing = False

        def get(self, key):
            if self.failing:
                raise ServiceUnavailable("the state store cannot be reached", "store_unavailable")
            return super().get(key)

    store = FailingStore()
    closed = []

    class Client:
        def stream(self, access_token, request, upstream):
            try:
                store.failing = True  # the store goes away as the answer begins
                yield TextDelta("Hi")
            finally:
                closed.append(True)

    pool = AccountPool([Account("a", "access_token", access_token="not-a-jwt")], store,
                       tokens=None)
    in_flight = STREAMS_IN_FLIGHT._value.get()
    request = type("Request", (), {"conversation_id": None, "model": "auto"})()
    with pytest.raises(ServiceUnavailable):
        pool.run(Client(), request, upstream=None)
    assert closed == [True] and STREAMS_IN_FLIGHT._value.get() == in_flight
