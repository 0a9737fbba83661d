"""What the pool knows about each account's health and models, and what the operator hears of it:
the model each answer came from (the real capture's internal slug is no downgrade), the share of
answers from another model, refusals and failed renewals in a row, and the model lists of the
pooled accounts (which account offers what, and the union /v1/models shows)."""
from __future__ import annotations

import json

import pytest

from chatgpt_web import models
from chatgpt_web.account_models import AccountModels
from chatgpt_web.errors import UpstreamError
from chatgpt_web.pool import DEGRADED_MIN_ANSWERS
from chatgpt_web.store import MemoryStore
from chatgpt_web.upstream.stream import StreamReducer, iter_sse

ADMIN = "admin-secret-for-health"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
CAPTURE = "delta-v1-capture.txt"


def strip_annotations(text: str) -> bytes:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")).encode()


def write_accounts(tmp_path, entries) -> str:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(entries))
    return str(path)


def rows(client) -> dict:
    answer = client.get("/admin/accounts", headers=ADMIN_HEADERS)
    assert answer.status_code == 200, answer.json
    return {row["id"]: row for row in answer.json["accounts"]}


def look_for_alerts(client) -> None:
    """Let the app's alert watcher look at the pool now (answers let it look at most once per
    ALERT_INTERVAL, in a thread; the receiver gets what is due either way)."""
    client.application.extensions["chatgpt_web"].alerts.run()


def check(client, account: str) -> bool:
    """The console's "check" action (renew the token, list one conversation): did it pass?"""
    answer = client.post(f"/admin/accounts/{account}/check", headers=ADMIN_HEADERS)
    assert answer.status_code == 200, answer.json
    return answer.json["ok"]


def send(client, model="gpt-4o", prompt="Hi"):
    answer = client.post("/send_message", data={"prompt": prompt, "model": model})
    assert answer.status_code == 200, answer.json
    return answer.json


@pytest.fixture
def solo(make_app, tmp_path, emulator, receiver):
    """A pool of one account, the admin key, and alerts to a local webhook."""
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "solo", "access_token": emulator.mint_access_token(email="solo@example.com")}]),
        ADMIN_KEY=ADMIN, ALERT_WEBHOOK_URL=receiver.url,
        ALERT_WEBHOOK_ALLOW=receiver.url.rsplit("/", 1)[0] + "/")
    return app.test_client()


# --- which model answered ------------------------------------------------------------------------

def test_the_capture_names_an_internal_slug_beside_the_public_one(samples_dir):
    reducer = StreamReducer()
    for event in iter_sse([strip_annotations((samples_dir / CAPTURE).read_text())]):
        list(reducer.feed(event))
    completion = reducer.result()
    assert completion.model_slug == "i-mini"  # server_ste_metadata: an internal name
    assert completion.message_model_slug == "gpt-5-2"  # the answering message: the public slug


@pytest.mark.parametrize("requested, served, verdict", [
    ("gpt-5-2", "gpt-5-2", True),
    ("gpt-4o", "gpt-4o-2024-08-06", True),   # a dated snapshot is the same model
    ("gpt-5-6", "gpt-5-2", False),           # another public model
    ("gpt-4o", "gpt-4o-mini", False),
    ("gpt-5-2", "i-mini", None),             # an internal name says nothing
    ("gpt-4o", "some-new-thing", None),      # nor does a slug no list knows
    ("auto", "gpt-4o-mini", None),           # auto lets the backend choose
    ("gpt-4o", None, None),
])
def test_an_answer_is_judged_only_on_public_slugs(requested, served, verdict):
    assert models.answered_as_asked(requested, served) is verdict
    assert models.answered_as_asked("gpt-4o", "some-new-thing", ("some-new-thing",)) is False


def test_the_captured_turn_on_a_pooled_account_is_judged_by_its_message(solo, emulator,
                                                                        samples_dir):
    emulator.switches.replay_file = str(samples_dir / CAPTURE)
    send(solo, model="gpt-5-2")
    row = rows(solo)["solo"]
    assert row["downgraded"] is None  # i-mini is not another model than gpt-5-2
    assert row["model_share"]["answers"] == 1 and row["model_share"]["other_model"] == 0
    send(solo, model="gpt-5-6")
    row = rows(solo)["solo"]
    assert row["downgraded"]["requested"] == "gpt-5-6"
    assert row["downgraded"]["served"] == "gpt-5-2"
    assert row["model_share"] == {"answers": 2, "other_model": 1, "share": 0.5,
                                  "window_seconds": 7200}


def test_an_internal_server_slug_alone_is_no_downgrade(solo, emulator):
    emulator.switches.force_format = "v1"
    emulator.switches.internal_model = "i-mini"
    send(solo, model="gpt-4o")
    row = rows(solo)["solo"]
    assert row["downgraded"] is None and row["degraded"] is False
    assert row["model_share"]["answers"] == 1 and row["model_share"]["other_model"] == 0


# --- the share of answers from another model ----------------------------------------------------

def test_a_share_of_answers_from_another_model_makes_the_account_degraded(solo, emulator,
                                                                           receiver):
    emulator.switches.force_format = "v1"
    emulator.switches.served_model = "gpt-4o-mini"
    for _ in range(DEGRADED_MIN_ANSWERS - 1):
        send(solo, model="gpt-4o")
    row = rows(solo)["solo"]
    assert row["model_share"]["other_model"] == DEGRADED_MIN_ANSWERS - 1
    assert row["degraded"] is False  # too few answers to say
    send(solo, model="gpt-4o")
    row = rows(solo)["solo"]
    assert row["degraded"] is True and row["model_share"]["share"] == 1.0
    look_for_alerts(solo)
    alert = receiver.wait_for("degraded")
    assert alert["account"] == "solo" and alert["model_share"]["other_model"] == 4
    # As many answers from the model asked: half is not more than half.
    emulator.switches.served_model = None
    for _ in range(DEGRADED_MIN_ANSWERS):
        send(solo, model="gpt-4o")
    row = rows(solo)["solo"]
    assert row["model_share"]["share"] == 0.5
    assert row["degraded"] is False and row["downgraded"] is None


def test_the_banner_flag_clears_with_the_first_answer_without_it(solo, emulator):
    emulator.switches.force_format = "v1"
    emulator.switches.degraded = True
    send(solo, model="auto")  # auto: the model says nothing, the banner does
    row = rows(solo)["solo"]
    assert row["downgraded"]["banner"] == "account_sharing_degrade" and row["degraded"] is True
    emulator.switches.degraded = False
    send(solo, model="auto")
    row = rows(solo)["solo"]
    assert row["downgraded"] is None and row["degraded"] is False


# --- refusals and renewals in a row ---------------------------------------------------------------

def test_refusals_in_a_row_are_counted_alerted_and_reset_by_a_success(solo, emulator, receiver):
    emulator.switches.fail_with = "cloudflare"
    emulator.switches.fail_at = "any"
    for count in (1, 2, 3):
        assert check(solo, "solo") is False
        assert rows(solo)["solo"]["refusals"] == count
    look_for_alerts(solo)
    alert = receiver.wait_for("refused")
    assert alert["account"] == "solo" and alert["refusals"] == 3
    emulator.switches.fail_with = None
    assert check(solo, "solo") is True
    assert rows(solo)["solo"]["refusals"] == 0


def test_failed_renewals_in_a_row_are_counted_alerted_and_reset(make_app, tmp_path, emulator,
                                                                receiver):
    session = emulator.auth.add_session("renew@example.com")
    client = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "renewing", "session_token": session}]),
        ADMIN_KEY=ADMIN, ALERT_WEBHOOK_URL=receiver.url,
        ALERT_WEBHOOK_ALLOW=receiver.url.rsplit("/", 1)[0] + "/").test_client()
    emulator.auth.switches.rate_limited_at = "session"
    for count in (1, 2):
        assert check(client, "renewing") is False
        row = rows(client)["renewing"]
        assert row["refresh_failures"] == count and row["refresh_error"]
    look_for_alerts(client)
    alert = receiver.wait_for("refresh_failing")
    assert alert["account"] == "renewing" and alert["refresh_failures"] == 2
    emulator.auth.switches.rate_limited_at = None
    assert check(client, "renewing") is True
    row = rows(client)["renewing"]
    assert row["refresh_failures"] == 0 and row["refresh_error"] is None
    assert "renew@example.com" not in json.dumps(row) and session not in json.dumps(row)


# --- the pooled accounts' model lists -------------------------------------------------------------

@pytest.fixture
def tokens(emulator) -> dict:
    return {name: emulator.mint_access_token(email=f"{name}@example.com")
            for name in ("free", "plus")}


@pytest.fixture
def mixed(make_app, tmp_path, emulator, tokens):
    """Two accounts: "free" lists neither gpt-4o nor gpt-7-preview; "plus" lists both."""
    emulator.switches.models_of = (("free@example.com", ("auto", "gpt-5-mini")),)
    emulator.switches.extra_models = ("gpt-7-preview",)
    return make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": name, "access_token": token} for name, token in tokens.items()]),
        ADMIN_KEY=ADMIN).test_client()


def model_reads(emulator) -> list[str]:
    """The token of each GET /backend-api/models, in order."""
    return [r.headers["authorization"].removeprefix("Bearer ")
            for r in emulator.requests_to("/backend-api/models") if r.method == "GET"]


def test_v1_models_shows_a_pool_caller_what_the_pool_offers(mixed, emulator, tokens):
    listed = [m["id"] for m in mixed.get("/v1/models").json["data"]]
    assert "gpt-7-preview" in listed  # only "plus" lists it
    assert sorted(model_reads(emulator)) == sorted(tokens.values())  # each list read once
    mixed.get("/v1/models")
    assert len(model_reads(emulator)) == 2  # then kept (6 h)
    assert rows(mixed)["free"]["models"] == ["auto", "gpt-5-mini"]


def test_a_model_goes_to_the_accounts_that_offer_it(mixed, emulator, tokens):
    mixed.get("/v1/models")  # both lists read
    for _ in range(6):
        answer = mixed.post("/v1/chat/completions", json={
            "model": "gpt-7-preview", "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 200, answer.json
        send(mixed, model="gpt-4o")
    writers = [r.headers["authorization"].removeprefix("Bearer ")
               for r in emulator.requests_to("/conversation") if r.method == "POST"]
    assert writers == [tokens["plus"]] * 12
    # A model both offer goes to both (the choice is random: ask until both answered, at most
    # 64 times; missing one account every time has odds of 2**-63).
    for _ in range(64):
        send(mixed, model="gpt-5-mini")
        writers = [r.headers["authorization"].removeprefix("Bearer ")
                   for r in emulator.requests_to("/conversation") if r.method == "POST"]
        if set(writers[12:]) == set(tokens.values()):
            break
    assert set(writers[12:]) == set(tokens.values())


def test_a_list_is_read_once_after_an_answer_and_kept(mixed, emulator):
    send(mixed, model="gpt-5-mini")
    [read] = model_reads(emulator)  # the answering account's list, with its token
    for _ in range(4):
        send(mixed, model="gpt-5-mini")
    reads = model_reads(emulator)
    assert reads[0] == read and len(set(reads)) == len(reads)  # never one account twice


def test_a_failing_models_endpoint_is_asked_once_per_retry_between_workers():
    store, calls = MemoryStore(), []

    def failing(token):
        calls.append(token)
        raise UpstreamError("the models endpoint failed", "upstream_error")

    for _worker in range(3):
        assert AccountModels(store, failing, retry=600).refresh("a", lambda: "t") is False
    assert calls == ["t"]  # one read between three workers: the others saw the claim
    assert AccountModels(store, failing).known("a") is None


def test_a_list_is_fresh_for_its_ttl_then_used_until_replaced():
    now, calls = [1000.0], []
    listing = {"models": [{"slug": "gpt-4o"}], "default_model_slug": "auto"}

    def fetch(token):
        calls.append(token)
        return listing

    lists = AccountModels(MemoryStore(), fetch, ttl=100, retry=0.000001, clock=lambda: now[0])
    assert lists.offers("a", "gpt-4o") is None  # not read yet
    assert lists.refresh("a", lambda: "t") is True
    assert lists.known("a") == ("gpt-4o", "auto") and lists.offers("a", "gpt-6") is False
    assert lists.refresh("a", lambda: "t") is False and calls == ["t"]  # fresh for `ttl`
    now[0] += 101
    assert lists.stale("a") and lists.known("a") == ("gpt-4o", "auto")  # old, still used
    listing = {"models": [{"slug": "gpt-6"}]}
    assert lists.refresh("a", lambda: "t2") is True and lists.known("a") == ("gpt-6",)
