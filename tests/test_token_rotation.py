"""Rotating credentials: session cookies and refresh tokens are spent by each use, so the service
keeps the newest, never sends a spent one again, renews each credential once however many
threads, workers and instances ask at the same moment, checks accounts with GET /backend-api/me
at most once per ACCOUNT_CHECK_INTERVAL, and never lets the cache skip a second factor."""
import json
import multiprocessing
import threading
import time

import pytest
from curl_cffi import requests as curl_requests

from chatgpt_web.config import Config
from chatgpt_web.errors import ConfigError
from chatgpt_web.pool import load_accounts
from chatgpt_web.tokens import NEXT_PREFIX
from tests.emulator.auth_pages import CODEX_CLIENT_ID, IOS_CLIENT_ID, IOS_LEGACY_CLIENT_ID, totp

EMAIL, PASSWORD = "ada@example.com", "correct horse battery staple"
TOTP_EMAIL, TOTP_SECRET = "grace@example.com", "JBSWY3DPEHPK3PXP"
EMAIL_OTP_EMAIL = "hedy@example.com"
SESSION_COOKIE = "__Secure-next-auth.session-token"


@pytest.fixture
def auth(emulator):
    emulator.auth.add_account(EMAIL, PASSWORD)
    emulator.auth.add_account(TOTP_EMAIL, PASSWORD, totp_secret=TOTP_SECRET)
    emulator.auth.add_account(EMAIL_OTP_EMAIL, PASSWORD, email_otp=True)
    return emulator.auth


@pytest.fixture(params=["disk", "redis"])
def store_env(request) -> dict:
    return {"REDIS_URL": request.getfixturevalue("redis_url")} if request.param == "redis" else {}


@pytest.fixture
def uncached(make_app, auth):
    """An app that never reuses an access token (each one expires inside the margin), so that
    every request spends the session or refresh token again."""
    auth.switches.access_token_exp_in = 300

    def factory(**env):
        return make_app(TOKEN_EXPIRY_MARGIN="600", **env)
    return factory


def get_token(client, **fields):
    return client.post("/get_access_token", data=fields)


def sent_session_tokens(emulator) -> list[str]:
    """The session token of each /api/auth/session call, joined from its chunk cookies."""
    sent = []
    for request in emulator.requests_to("/api/auth/session"):
        cookies = dict(pair.split("=", 1) for pair in request.headers["cookie"].split("; "))
        sent.append(cookies.get(SESSION_COOKIE) or "".join(
            cookies[f"{SESSION_COOKIE}.{n}"] for n in range(len(cookies))))
    return sent


def sent_refresh(emulator) -> list[tuple[str, str]]:
    return [(r.json["refresh_token"], r.json["client_id"])
            for r in emulator.requests_to("/oauth/token")]


def write_accounts(tmp_path, entries) -> str:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(entries))
    return str(path)


# -- session tokens ------------------------------------------------------------------------------

def test_a_spent_session_token_is_never_sent_again(uncached, auth, emulator):
    client = uncached().test_client()
    first_token = auth.add_session(EMAIL)
    first = get_token(client, session_token=first_token)
    assert first.status_code == 200, first.json
    # A caller who kept the old cookie is led to the newest instead of being refused.
    again = get_token(client, session_token=first_token)
    assert again.status_code == 200, again.json
    later = get_token(client, session_token=first.json["session_token"])
    assert later.status_code == 200, later.json
    sent = sent_session_tokens(emulator)
    assert sent[0] == first_token and sent[1] == first.json["session_token"]
    assert len(set(sent)) == len(sent) == 3  # each one used once, as the upstream demands
    assert later.json["session_token"] == auth.live_sessions(EMAIL)[0]


def test_a_pooled_session_account_survives_rotations_and_restarts(uncached, auth, emulator,
                                                                  tmp_path, store_env):
    configured = auth.add_session(EMAIL)
    accounts = write_accounts(tmp_path, [{"name": "s", "session_token": configured}])
    for _ in range(2):  # two instances one after the other, sharing the store
        client = uncached(ACCOUNTS_FILE=accounts, **store_env).test_client()
        for _ in range(2):
            response = client.post("/send_message", data={"prompt": "Hi"})
            assert response.status_code == 200, response.json
    sent = sent_session_tokens(emulator)
    assert sent[0] == configured and len(set(sent)) == len(sent) == 4


def test_a_rotated_cookie_that_comes_back_in_chunks_is_joined(client, auth):
    response = get_token(client, session_token=auth.add_session(EMAIL))
    rotated = response.json["session_token"]
    # About 5 KB: the emulator set it as `.0` and `.1` cookies, as NextAuth does.
    assert len(rotated) > 3933 and auth.live_sessions(EMAIL) == [rotated]


# -- refresh tokens ------------------------------------------------------------------------------

def test_a_spent_refresh_token_is_never_sent_again(uncached, auth, emulator):
    client = uncached().test_client()
    original = auth.add_refresh_token(EMAIL)
    first = get_token(client, refresh_token=original)
    assert first.status_code == 200, first.json
    again = get_token(client, refresh_token=original)
    assert again.status_code == 200, again.json
    assert [token for token, _ in sent_refresh(emulator)] == [original, first.json["refresh_token"]]
    assert again.json["refresh_token"] not in (original, first.json["refresh_token"])
    assert not any(entry["revoked"] for entry in auth.refresh_tokens.values())


def test_a_refresh_token_spent_elsewhere_is_reported_as_reused(client, auth, emulator):
    token = auth.add_refresh_token(EMAIL)
    outside = curl_requests.post(emulator.url + "/oauth/token", json={
        "grant_type": "refresh_token", "refresh_token": token, "client_id": IOS_LEGACY_CLIENT_ID})
    assert outside.status_code == 200
    response = get_token(client, refresh_token=token)
    assert (response.status_code, response.json["code"]) == (401, "refresh_token_reused")
    assert "family" in response.json["message"] and token not in response.json["message"]


def test_the_known_clients_are_tried_until_the_one_that_issued_the_token(uncached, auth,
                                                                          emulator):
    client = uncached().test_client()
    token = auth.add_refresh_token(EMAIL, client_id=IOS_CLIENT_ID)
    first = get_token(client, refresh_token=token)
    assert first.status_code == 200, first.json
    assert [client_id for _, client_id in sent_refresh(emulator)] == [IOS_LEGACY_CLIENT_ID,
                                                                       IOS_CLIENT_ID]
    # Its successor is sent with the client that worked, at once.
    assert get_token(client, refresh_token=first.json["refresh_token"]).status_code == 200
    assert sent_refresh(emulator)[-1][1] == IOS_CLIENT_ID and len(sent_refresh(emulator)) == 3


def test_chatgpt_refresh_client_id_chooses_the_client(make_app, auth, emulator):
    client = make_app(CHATGPT_REFRESH_CLIENT_ID=CODEX_CLIENT_ID).test_client()
    token = auth.add_refresh_token(EMAIL, client_id=CODEX_CLIENT_ID)
    assert get_token(client, refresh_token=token).status_code == 200
    assert [client_id for _, client_id in sent_refresh(emulator)] == [CODEX_CLIENT_ID]


def test_an_account_entry_names_its_own_client(make_app, auth, emulator, tmp_path):
    token = auth.add_refresh_token(EMAIL, client_id=CODEX_CLIENT_ID)
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "codex", "refresh_token": token, "client_id": CODEX_CLIENT_ID}]))
    response = app.test_client().post("/send_message", data={"prompt": "Hi"})
    assert response.status_code == 200, response.json
    assert sent_refresh(emulator) == [(token, CODEX_CLIENT_ID)]


def _refresh_in_threads(env, ready, go, queue, threads):
    """A worker process: its own store and pool, `threads` threads asking for one account's
    token the moment `go` is set."""
    from chatgpt_web.config import Config
    from chatgpt_web.pool import AccountPool, load_accounts
    from chatgpt_web.store import open_store
    from chatgpt_web.tokens import TokenProvider

    config = Config.from_env(env)
    store = open_store(config)
    pool = AccountPool(load_accounts(config.accounts_file), store, TokenProvider(config, store))
    [account] = pool.accounts.values()
    results = []

    def work():
        go.wait(30)
        try:
            results.append(pool.access_token(account))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            results.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    ready.release()
    for worker in workers:
        worker.join(60)
    queue.put(results)


@pytest.mark.parametrize("kind", ["refresh_token", "session_token"])
def test_one_pooled_account_renewed_by_many_threads_and_two_processes_renews_once(
        service_env, auth, emulator, tmp_path, store_env, kind):
    token = auth.add_refresh_token(EMAIL) if kind == "refresh_token" else auth.add_session(EMAIL)
    env = {**service_env, **store_env,
           "ACCOUNTS_FILE": write_accounts(tmp_path, [{"name": "r", kind: token}])}
    spawn = multiprocessing.get_context("spawn")
    ready, go, queue = spawn.Semaphore(0), spawn.Event(), spawn.Queue()
    processes = [spawn.Process(target=_refresh_in_threads, args=(env, ready, go, queue, 8))
                 for _ in range(2)]
    for process in processes:
        process.start()
    for _ in processes:
        assert ready.acquire(timeout=60)
    go.set()
    results = [result for _ in processes for result in queue.get(timeout=90)]
    for process in processes:
        process.join(30)
    assert len(results) == 16 and len(set(results)) == 1, results  # one token for everyone
    assert results[0].startswith("eyJ")
    if kind == "refresh_token":
        assert [sent for sent, _ in sent_refresh(emulator)] == [token]  # one upstream refresh
        assert [e["used"] for e in auth.refresh_tokens.values()] == [True, False]  # no reuse
        assert not any(entry["revoked"] for entry in auth.refresh_tokens.values())
    else:
        assert sent_session_tokens(emulator) == [token]  # one exchange, never a spent cookie
        assert len(auth.live_sessions(EMAIL)) == 1


def test_a_caller_who_follows_a_fresh_rotation_uses_its_token_instead_of_renewing_again(
        app, auth, emulator, monkeypatch):
    """Regression: the link from a spent refresh token to its successor was written before the
    successor's access token was stored. A caller arriving in between followed the link, took the
    successor's lock (not the renewer's), found nothing cached and renewed the successor again."""
    token = auth.add_refresh_token(EMAIL)
    store = app.extensions["chatgpt_web"].store
    linked, follower_done = threading.Event(), threading.Event()
    real_set = store.set

    def set_then_pause_after_the_link(key, *args, **kwargs):
        result = real_set(key, *args, **kwargs)
        if key.startswith(NEXT_PREFIX):
            linked.set()
            follower_done.wait(10)  # the renewer stalls here, as on a loaded machine
        return result

    monkeypatch.setattr(store, "set", set_then_pause_after_the_link)
    answers = {}

    def renew(name):
        answers[name] = app.test_client().post("/get_access_token",
                                               data={"refresh_token": token})

    renewer = threading.Thread(target=renew, args=("renewer",))
    renewer.start()
    assert linked.wait(10)
    renew("follower")
    follower_done.set()
    renewer.join(10)
    assert answers["renewer"].status_code == answers["follower"].status_code == 200
    assert answers["follower"].json["access_token"] == answers["renewer"].json["access_token"]
    assert [sent for sent, _ in sent_refresh(emulator)] == [token]  # one upstream refresh


# -- the account check ---------------------------------------------------------------------------

def test_an_account_is_checked_once_per_interval_never_per_request(uncached, auth, emulator):
    client = uncached(ACCOUNT_CHECK_INTERVAL="2").test_client()
    session_token = auth.add_session(EMAIL)
    for _ in range(3):
        response = client.post("/send_message", data={"session_token": session_token,
                                                      "prompt": "Hi"})
        assert response.status_code == 200, response.json
    assert len(emulator.requests_to("/backend-api/me")) == 1
    time.sleep(2.1)
    assert client.post("/send_message", data={"session_token": session_token,
                                               "prompt": "Hi"}).status_code == 200
    assert len(emulator.requests_to("/backend-api/me")) == 2


def test_a_token_the_backend_refuses_is_detected_and_remembered(client, auth, emulator):
    session_token = auth.add_session(EMAIL)
    auth.invalidate_access_tokens(EMAIL)  # /api/auth/session still hands out tokens
    first = get_token(client, session_token=session_token)
    assert (first.status_code, first.json["code"]) == (401, "token_invalidated")
    again = get_token(client, session_token=session_token)
    assert (again.status_code, again.json["code"]) == (401, "token_invalidated")
    assert len(emulator.requests_to("/backend-api/me")) == 1
    assert len(emulator.requests_to("/api/auth/session")) == 1  # the spent cookie not resent


def test_a_pooled_account_refused_at_its_check_is_dead_and_the_other_serves(make_app, auth,
                                                                           emulator, tmp_path):
    auth.add_account("b@example.com", PASSWORD)
    auth.invalidate_access_tokens(EMAIL)
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "revoked", "session_token": auth.add_session(EMAIL), "weight": 100},
        {"name": "fine", "email": "b@example.com", "password": PASSWORD}]))
    client = app.test_client()
    for _ in range(4):
        response = client.post("/send_message", data={"prompt": "Hi"})
        assert response.status_code == 200, response.json
    report = {row["id"]: row for row in app.extensions["chatgpt_web"].pool.report()}
    assert report["revoked"]["status"] == "dead"
    assert report["revoked"]["last_error"] == "token_invalidated"
    assert len(emulator.requests_to("/api/auth/session")) == 2  # one per account, once


# -- the cache and a second factor ---------------------------------------------------------------

def test_a_second_factor_is_never_skipped_through_the_cache(client, auth, emulator):
    signed_in = get_token(client, email=TOTP_EMAIL, password=PASSWORD, otp=totp(TOTP_SECRET))
    assert signed_in.status_code == 200, signed_in.json
    calls = len(emulator.requests)
    without_code = get_token(client, email=TOTP_EMAIL, password=PASSWORD)
    assert (without_code.status_code, without_code.json["code"]) == (401, "mfa_required")
    assert "session_token" in without_code.json["message"]
    assert len(emulator.requests) == calls  # answered without asking the identity provider
    wrong_code = get_token(client, email=TOTP_EMAIL, password=PASSWORD, otp="000000")
    assert (wrong_code.status_code, wrong_code.json["code"]) == (401, "invalid_otp")
    # The session token the sign-in returned is the way back in, from the cache.
    calls = len(emulator.requests)
    again = get_token(client, session_token=signed_in.json["session_token"])
    assert again.status_code == 200, again.json
    assert again.json["access_token"] == signed_in.json["access_token"]
    assert len(emulator.requests) == calls


def test_an_emailed_code_is_never_skipped_through_the_cache(client, auth, emulator):
    assert get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD).status_code == 401
    code = auth.mailbox[EMAIL_OTP_EMAIL][-1]
    assert get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD,
                     otp=code).status_code == 200
    calls = len(emulator.requests)
    response = get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD)
    assert (response.status_code, response.json["code"]) == (401, "mfa_required")
    assert len(emulator.requests) == calls


# -- settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("env, variable", [
    ({"CHATGPT_LOGIN_FLOW": "saml"}, "CHATGPT_LOGIN_FLOW"),
    ({"ACCOUNT_CHECK_INTERVAL": "0"}, "ACCOUNT_CHECK_INTERVAL"),
    ({"CHATGPT_AUTH_URL": "auth.openai.com"}, "CHATGPT_AUTH_URL"),
])
def test_bad_login_settings_are_refused_naming_the_variable(env, variable):
    with pytest.raises(ConfigError) as refused:
        Config.from_env(env)
    assert variable in str(refused.value)


def test_login_defaults_are_todays_site():
    config = Config.from_env({})
    assert (config.auth_url, config.login_flow, config.refresh_client_id,
            config.account_check_interval) == ("https://auth.openai.com", "openai", None, 3600)


def test_a_pooled_account_with_an_authenticator_signs_in_once_with_its_own_codes(
        make_app, auth, emulator, tmp_path):
    app = make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "2fa", "email": TOTP_EMAIL, "password": PASSWORD, "totp_secret": TOTP_SECRET}]))
    client = app.test_client()
    for _ in range(3):
        response = client.post("/send_message", data={"prompt": "Hi"})
        assert response.status_code == 200, response.json
    [verify] = emulator.requests_to("/api/accounts/mfa/verify")  # then served from the cache
    assert verify.json["code"] == totp(TOTP_SECRET) or verify.json["code"] == totp(
        TOTP_SECRET, time.time() - 30)


@pytest.mark.parametrize("entry", [
    {"email": "a@example.com", "password": "pw", "totp_secret": "not base32!"},
    {"session_token": "rt_x", "totp_secret": TOTP_SECRET},
])
def test_a_totp_secret_is_base32_and_goes_with_a_password(tmp_path, entry):
    with pytest.raises(ConfigError) as refused:
        load_accounts(write_accounts(tmp_path, [entry]))
    assert "totp_secret" in str(refused.value) and "not base32" not in str(refused.value)


@pytest.mark.parametrize("entry", [
    {"email": "a@example.com", "password": "pw", "client_id": "app_x"},
    {"refresh_token": "rt_x", "client_id": ""},
    {"refresh_token": "rt_x", "client_id": 7},
])
def test_a_client_id_belongs_to_a_refresh_token_entry(tmp_path, entry):
    with pytest.raises(ConfigError) as refused:
        load_accounts(write_accounts(tmp_path, [entry]))
    assert "client_id" in str(refused.value) and "rt_x" not in str(refused.value)
