"""POST /get_access_token: the three login flows against the emulator's login pages, over real
HTTP through curl_cffi, and the on-disk token cache in front of them."""
import json
import logging
import os
import re
import tempfile
import threading

import diskcache
import jwt
import pytest

from chatgpt_web import tokens
from chatgpt_web.tokens import Credential
from tests.emulator.auth_pages import SESSION_COOKIE, totp

EMAIL, PASSWORD = "ada@example.com", "correct horse battery staple"
TOTP_EMAIL, TOTP_SECRET = "grace@example.com", "JBSWY3DPEHPK3PXP"
EMAIL_OTP_EMAIL = "hedy@example.com"
PROFILE_CLAIM = "https://api.openai.com/profile"
AUTH_CLAIM = "https://api.openai.com/auth"


@pytest.fixture
def auth(emulator):
    """The emulator's sign-in pages with three accounts: a password alone, with an authenticator
    app, with codes e-mailed at each sign-in."""
    emulator.auth.add_account(EMAIL, PASSWORD)
    emulator.auth.add_account(TOTP_EMAIL, PASSWORD, totp_secret=TOTP_SECRET)
    emulator.auth.add_account(EMAIL_OTP_EMAIL, PASSWORD, email_otp=True)
    return emulator.auth


def get_token(client, **fields):
    return client.post("/get_access_token", data=fields)


def upstream_calls(emulator) -> int:
    return len(emulator.requests)


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def cache_files_bytes(directory) -> bytes:
    data = b""
    for root, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(root, name), "rb") as handle:
                data += handle.read()
    return data


# -- the three flows -----------------------------------------------------------------------------

SIGN_IN_PATHS = ["/api/auth/csrf", "/api/auth/signin/openai", "/api/accounts/authorize", "/log-in",
                 "/backend-api/sentinel/req", "/api/accounts/authorize/continue",
                 "/backend-api/sentinel/req", "/api/accounts/password/verify",
                 "/api/accounts/consent", "/api/auth/callback/openai", "/api/auth/session"]


def test_email_and_password_sign_in_on_auth_openai_com(client, auth, emulator):
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert response.status_code == 200, response.json
    body = response.json
    token_claims = claims(body["access_token"])
    assert token_claims[PROFILE_CLAIM]["email"] == EMAIL
    assert AUTH_CLAIM in token_claims
    assert body["expires_at"] == token_claims["exp"]
    assert body["session_token"] in auth.live_sessions(EMAIL)
    paths = [r.path for r in emulator.requests]
    # ... then one GET /backend-api/me: the first token of an account is checked once.
    assert paths == SIGN_IN_PATHS + ["/backend-api/me"]
    signin = emulator.requests_to("/api/auth/signin/openai")[0]
    assert signin.args["login_hint"] == EMAIL and signin.args["screen_hint"] == "login_or_signup"
    continued = emulator.requests_to("/api/accounts/authorize/continue")[0].json
    assert continued == {"username": {"kind": "email", "value": EMAIL}}
    assert emulator.requests_to("/api/accounts/password/verify")[0].json == {"password": PASSWORD}


def test_each_accounts_call_carries_the_sentinel_token_of_its_flow(client, auth, emulator):
    assert get_token(client, email=TOTP_EMAIL, password=PASSWORD,
                     otp=totp(TOTP_SECRET)).status_code == 200
    device = emulator.requests_to("/api/auth/signin/openai")[0].args["ext-oai-did"]
    asked = [json.loads(r.body) for r in emulator.requests_to("/backend-api/sentinel/req")]
    calls = [r for r in emulator.requests if r.path.startswith("/api/accounts/")
             and r.method == "POST"]
    assert [r.path.rsplit("/accounts/", 1)[1] for r in calls] == [
        "authorize/continue", "password/verify", "mfa/verify"]
    headers = [json.loads(r.headers["openai-sentinel-token"]) for r in calls]
    assert [h["flow"] for h in headers] == ["authorize_continue", "password_verify", "mfa_verify"]
    assert [a["flow"] for a in asked] == [h["flow"] for h in headers]
    for header in headers:
        assert set(header) == {"p", "t", "c", "id", "flow"} and header["id"] == device
        assert header["p"].startswith("gAAAAAB")  # the proof of work the sentinel asked for
    assert all(a["p"].startswith("gAAAAAC") and a["id"] == device for a in asked)


@pytest.mark.parametrize("encoding", ["form", "multipart", "json"])
def test_get_access_token_accepts_form_multipart_and_json(client, auth, encoding):
    fields = {"email": EMAIL, "password": PASSWORD}
    if encoding == "json":
        response = client.post("/get_access_token", json=fields)
    elif encoding == "multipart":
        response = client.post("/get_access_token", data=fields,
                               content_type="multipart/form-data")
    else:
        response = client.post("/get_access_token", data=fields)
    assert response.status_code == 200, response.json
    assert claims(response.json["access_token"])[PROFILE_CLAIM]["email"] == EMAIL


def test_account_with_an_authenticator_signs_in_with_its_code(client, auth, emulator):
    # One code, read once: computed again after the sign-in it may be the next 30 s window's.
    code = totp(TOTP_SECRET)
    response = get_token(client, email=TOTP_EMAIL, password=PASSWORD, otp=code)
    assert response.status_code == 200, response.json
    assert claims(response.json["access_token"])[PROFILE_CLAIM]["email"] == TOTP_EMAIL
    [verify] = emulator.requests_to("/api/accounts/mfa/verify")
    assert verify.json["type"] == "totp" and verify.json["code"] == code


def test_otp_as_shown_by_authenticator_apps_is_accepted(client, auth):
    code = totp(TOTP_SECRET)
    response = get_token(client, email=TOTP_EMAIL, password=PASSWORD,
                         otp=f"{code[:3]} {code[3:]}")
    assert response.status_code == 200, response.json


def test_account_with_an_emailed_code_signs_in_over_two_calls(client, auth, emulator):
    first = get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD)
    assert (first.status_code, first.json["code"]) == (401, "mfa_required")
    assert "e-mailed" in first.json["message"]
    [code] = auth.mailbox[EMAIL_OTP_EMAIL]
    second = get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD, otp=code)
    assert second.status_code == 200, second.json
    assert claims(second.json["access_token"])[PROFILE_CLAIM]["email"] == EMAIL_OTP_EMAIL
    # The second call finished the sign-in that mailed the code instead of starting one anew.
    assert len(emulator.requests_to("/api/auth/signin/openai")) == 1
    assert auth.mailbox[EMAIL_OTP_EMAIL] == [code]
    assert emulator.requests_to("/api/accounts/email-otp/validate")[0].json == {"code": code}


def test_a_code_given_before_it_was_mailed_starts_the_two_calls(client, auth):
    # The code of an earlier sign-in is void: the one that mails a new one must stop and ask.
    response = get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD, otp="123456")
    assert (response.status_code, response.json["code"]) == (401, "mfa_required")
    [code] = auth.mailbox[EMAIL_OTP_EMAIL]
    assert get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD,
                     otp=code).status_code == 200


@pytest.mark.parametrize("email, kind", [(TOTP_EMAIL, "authenticator"),
                                         (EMAIL_OTP_EMAIL, "e-mailed")])
def test_a_wrong_code_is_invalid_otp_naming_its_kind(client, auth, email, kind):
    if email == EMAIL_OTP_EMAIL:
        get_token(client, email=email, password=PASSWORD)
    response = get_token(client, email=email, password=PASSWORD, otp="000000")
    assert (response.status_code, response.json["code"]) == (401, "invalid_otp")
    assert kind in response.json["message"]


def test_a_missing_authenticator_code_is_mfa_required_naming_its_kind(client, auth):
    response = get_token(client, email=TOTP_EMAIL, password=PASSWORD)
    assert (response.status_code, response.json["code"]) == (401, "mfa_required")
    assert "authenticator" in response.json["message"]


def test_session_token_gives_access_token_and_the_rotated_cookie(client, auth, emulator):
    session_token = auth.add_session(EMAIL)
    response = get_token(client, session_token=session_token)
    assert response.status_code == 200, response.json
    assert claims(response.json["access_token"])[PROFILE_CLAIM]["email"] == EMAIL
    rotated = response.json["session_token"]
    assert auth.live_sessions(EMAIL) == [rotated] and rotated != session_token


def test_a_long_session_token_is_sent_in_nextauth_chunks(client, auth, emulator):
    session_token = auth.add_session(EMAIL)
    assert len(session_token) > 3933
    assert get_token(client, session_token=session_token).status_code == 200
    cookie = emulator.requests_to("/api/auth/session")[0].headers["cookie"]
    pieces = dict(pair.split("=", 1) for pair in cookie.split("; "))
    assert list(pieces) == [f"{SESSION_COOKIE}.0", f"{SESSION_COOKIE}.1"]
    assert len(pieces[f"{SESSION_COOKIE}.0"]) == 3933
    assert "".join(pieces.values()) == session_token


def test_a_short_session_token_is_sent_whole(client, auth, emulator):
    auth.switches.session_token_chars = 1500
    session_token = auth.add_session(EMAIL)
    assert get_token(client, session_token=session_token).status_code == 200
    sent = emulator.requests_to("/api/auth/session")[0]
    assert sent.headers["cookie"] == f"{SESSION_COOKIE}={session_token}"


def test_a_pasted_cookie_header_with_chunks_is_joined(client, auth):
    session_token = auth.add_session(EMAIL)
    pasted = (f"{SESSION_COOKIE}.1={session_token[3933:]}; "
              f"{SESSION_COOKIE}.0={session_token[:3933]}")
    response = get_token(client, session_token=pasted)
    assert response.status_code == 200, response.json


def test_rotated_session_token_finds_the_cached_access_token(client, auth, emulator):
    first = get_token(client, session_token=auth.add_session(EMAIL)).json
    calls = upstream_calls(emulator)
    second = get_token(client, session_token=first["session_token"])
    assert second.json["access_token"] == first["access_token"]
    assert upstream_calls(emulator) == calls


def test_refresh_token_gives_access_token_and_its_rotated_successor(client, auth, emulator):
    refresh_token = auth.add_refresh_token(EMAIL)
    response = get_token(client, refresh_token=refresh_token)
    assert response.status_code == 200, response.json
    assert claims(response.json["access_token"])[PROFILE_CLAIM]["email"] == EMAIL
    rotated = response.json["refresh_token"]
    assert rotated != refresh_token and not auth.refresh_tokens[rotated]["used"]
    sent = emulator.requests_to("/oauth/token")[0].json
    assert sent["grant_type"] == "refresh_token" and sent["refresh_token"] == refresh_token
    assert sent["client_id"] == "pdlLIX2Y72MIl2rhLhTE9VV9bN905kBh"


# -- failures ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, status, code", [
    ({"email": EMAIL, "password": "wrong password"}, 401, "invalid_credentials"),
    ({"email": "nobody@example.com", "password": PASSWORD}, 401, "invalid_credentials"),
    ({"email": TOTP_EMAIL, "password": PASSWORD}, 401, "mfa_required"),
    ({"email": TOTP_EMAIL, "password": PASSWORD, "otp": "000000"}, 401, "invalid_otp"),
    ({"session_token": "not-a-session"}, 401, "session_expired"),
    ({"refresh_token": "x" * 45}, 401, "refresh_token_invalid"),
])
def test_refused_credentials_are_401(client, auth, fields, status, code):
    response = get_token(client, **fields)
    assert (response.status_code, response.json["code"]) == (status, code)
    for secret in fields.values():
        assert secret not in response.json["message"]


@pytest.mark.parametrize("style", ["refresh_error", "empty"])
def test_expired_session_token_is_401(client, auth, style):
    session_token = auth.add_session(EMAIL)
    auth.expire_session(session_token)
    auth.switches.session_error_style = style
    response = get_token(client, session_token=session_token)
    assert (response.status_code, response.json["code"]) == (401, "session_expired")


def test_revoked_refresh_token_is_401(client, auth):
    refresh_token = auth.add_refresh_token(EMAIL)
    auth.revoke_refresh_token(refresh_token)
    response = get_token(client, refresh_token=refresh_token)
    assert (response.status_code, response.json["code"]) == (401, "refresh_token_invalid")


def test_provider_rate_limit_at_signin_is_429(client, auth):
    auth.switches.signin_rate_limited = True
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert (response.status_code, response.json["code"]) == (429, "login_rate_limited")
    assert "login: signin" in response.json["message"]


@pytest.mark.parametrize("step, fields", [
    ("password_verify", {"email": EMAIL, "password": PASSWORD}),
    ("oauth_token", {"refresh_token": None}),
])
def test_http_429_during_login_is_429_with_retry_after(client, auth, step, fields):
    if "refresh_token" in fields:
        fields = {"refresh_token": auth.add_refresh_token(EMAIL)}
    auth.switches.rate_limited_at = step
    response = get_token(client, **fields)
    assert (response.status_code, response.json["code"]) == (429, "login_rate_limited")
    assert response.headers["Retry-After"] == "30"


PASSWORD_STEPS = [("csrf", "login: csrf"), ("signin_openai", "login: signin"),
                  ("accounts_authorize", "login: authorize"), ("login_page", "login: authorize"),
                  ("sentinel_req", "login: email (sentinel)"),
                  ("authorize_continue", "login: email"),
                  ("password_verify", "login: password"), ("consent", "login: callback"),
                  ("callback_openai", "login: callback"), ("session", "login: session")]


@pytest.mark.parametrize("step, name", PASSWORD_STEPS + [("mfa_verify",
                                                          "login: authenticator code")])
def test_cloudflare_page_anywhere_in_the_sign_in_is_502_naming_the_step(
        client, auth, step, name):
    auth.switches.cloudflare_at = step
    response = get_token(client, email=TOTP_EMAIL, password=PASSWORD, otp=totp(TOTP_SECRET))
    assert (response.status_code, response.json["code"]) == (502, "login_failed")
    assert response.json["message"].startswith(name + ":")
    assert "Just a moment" not in response.json["message"]
    assert "<" not in response.json["message"]


@pytest.mark.parametrize("step, name", [s for s in PASSWORD_STEPS if s[0] != "login_page"])
def test_unexpected_page_in_the_sign_in_is_502_naming_the_step(client, auth, step, name):
    auth.switches.unexpected_at = step
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert (response.status_code, response.json["code"]) == (502, "login_failed")
    assert response.json["message"].startswith(name + ":")
    assert "Maintenance" not in response.json["message"]


def test_a_refused_sentinel_token_is_502_not_a_wrong_password(client, auth):
    auth.switches.sentinel_pow_difficulty = "000000"  # a proof no client finds
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert (response.status_code, response.json["code"]) == (502, "login_failed")
    assert response.json["message"].startswith("login: email")


@pytest.mark.parametrize("step, make_fields, name", [
    ("session", lambda auth: {"session_token": auth.add_session(EMAIL)}, "session token: session"),
    ("oauth_token", lambda auth: {"refresh_token": auth.add_refresh_token(EMAIL)},
     "refresh token: oauth/token"),
])
def test_cloudflare_page_in_token_exchanges_is_502_naming_the_step(client, auth, step,
                                                                    make_fields, name):
    auth.switches.cloudflare_at = step
    response = get_token(client, **make_fields(auth))
    assert (response.status_code, response.json["code"]) == (502, "login_failed")
    assert response.json["message"].startswith(name + ":")


@pytest.mark.parametrize("fields, code", [
    ({}, "missing_field"),
    ({"email": EMAIL}, "missing_field"),
    ({"password": PASSWORD}, "missing_field"),
    ({"otp": "424242"}, "missing_field"),
    ({"email": EMAIL, "password": PASSWORD, "session_token": "s"}, "conflicting_fields"),
    ({"session_token": "s", "refresh_token": "r"}, "conflicting_fields"),
    ({"session_token": "s", "otp": "424242"}, "conflicting_fields"),
])
def test_missing_or_conflicting_credentials_are_400_without_upstream_call(
        client, auth, emulator, fields, code):
    response = get_token(client, **fields)
    assert (response.status_code, response.json["code"]) == (400, code)
    assert upstream_calls(emulator) == 0


def test_secrets_never_reach_the_logs(client, auth, caplog):
    caplog.set_level(logging.DEBUG)
    session_token = auth.add_session(EMAIL)
    refresh_token = auth.add_refresh_token(EMAIL)
    code = totp(TOTP_SECRET)
    answers = [get_token(client, email=EMAIL, password=PASSWORD).json,
               get_token(client, email=EMAIL, password="wrong password").json,
               get_token(client, session_token=session_token).json,
               get_token(client, refresh_token=refresh_token).json,
               get_token(client, email=TOTP_EMAIL, password=PASSWORD, otp=code).json,
               get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD).json]
    mailed = auth.mailbox[EMAIL_OTP_EMAIL][-1]
    answers.append(get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD, otp=mailed).json)
    secrets = [PASSWORD, "wrong password", session_token, refresh_token, code, mailed]
    secrets += [answer[name] for answer in answers
                for name in ("access_token", "session_token", "refresh_token") if name in answer]
    assert len(secrets) > 12
    for secret in secrets:
        assert secret not in caplog.text
    for answer in answers:
        assert all(secret not in answer.get("message", "") for secret in secrets)


# -- the token cache -----------------------------------------------------------------------------

@pytest.mark.parametrize("make_fields", [
    lambda auth: {"email": EMAIL, "password": PASSWORD},
    lambda auth: {"session_token": auth.add_session(EMAIL)},
    lambda auth: {"refresh_token": auth.add_refresh_token(EMAIL)},
], ids=["password", "session_token", "refresh_token"])
def test_second_identical_request_is_served_from_cache_without_upstream_call(
        client, auth, emulator, make_fields):
    fields = make_fields(auth)
    first = get_token(client, **fields)
    assert first.status_code == 200, first.json
    calls = upstream_calls(emulator)
    second = get_token(client, **fields)
    assert second.status_code == 200
    assert second.json["access_token"] == first.json["access_token"]
    assert second.json["expires_at"] == first.json["expires_at"]
    assert upstream_calls(emulator) == calls


def test_email_matches_differently_cased_email_in_cache(client, auth, emulator):
    get_token(client, email=EMAIL, password=PASSWORD)
    calls = upstream_calls(emulator)
    assert get_token(client, email=EMAIL.upper(), password=PASSWORD).status_code == 200
    assert upstream_calls(emulator) == calls


def test_same_email_with_another_password_is_not_served_from_cache(client, auth, emulator):
    assert get_token(client, email=EMAIL, password=PASSWORD).status_code == 200
    calls = upstream_calls(emulator)
    response = get_token(client, email=EMAIL, password="guessed password")
    assert (response.status_code, response.json["code"]) == (401, "invalid_credentials")
    assert upstream_calls(emulator) > calls


def test_force_logs_in_again(client, auth, emulator):
    first = get_token(client, email=EMAIL, password=PASSWORD).json
    logins = len(emulator.requests_to("/api/accounts/password/verify"))
    second = get_token(client, email=EMAIL, password=PASSWORD, force="true")
    assert second.status_code == 200
    assert len(emulator.requests_to("/api/accounts/password/verify")) == logins + 1
    assert second.json["access_token"] != first["access_token"]
    # The new token replaced the old one in the cache.
    third = get_token(client, email=EMAIL, password=PASSWORD).json
    assert third["access_token"] == second.json["access_token"]


def test_token_within_the_expiry_margin_is_not_cached(make_app, auth, emulator):
    client = make_app(TOKEN_EXPIRY_MARGIN="600").test_client()
    auth.switches.access_token_exp_in = 300  # expires before the margin would let it be reused
    first = get_token(client, email=EMAIL, password=PASSWORD)
    assert first.status_code == 200
    calls = upstream_calls(emulator)
    assert get_token(client, email=EMAIL, password=PASSWORD).status_code == 200
    assert upstream_calls(emulator) > calls


def test_expired_token_in_the_store_is_never_served(app, auth, emulator, service_env):
    # An entry whose store expiry has not passed but whose JWT has (a clock change, an older
    # margin): the JWT's own exp decides.
    credential = Credential.password(EMAIL, PASSWORD)
    stale = emulator.mint_access_token(exp_in=-60, email=EMAIL)
    with diskcache.Cache(service_env["CACHE_DIR"], disk=diskcache.JSONDisk) as cache:
        cache.set(credential.cache_key(), {"sealed": tokens._seal(credential, "access", stale),
                                           "expires_at": claims(stale)["exp"]})
    response = get_token(app.test_client(), email=EMAIL, password=PASSWORD)
    assert response.status_code == 200
    assert response.json["access_token"] != stale
    assert len(emulator.requests_to("/api/accounts/password/verify")) == 1


def test_unparsable_token_in_the_store_is_never_served(app, auth, emulator, service_env):
    credential = Credential.session_token("some-session")
    with diskcache.Cache(service_env["CACHE_DIR"], disk=diskcache.JSONDisk) as cache:
        cache.set(credential.cache_key(), {"sealed": tokens._seal(credential, "access",
                                                                  "not-a-jwt"),
                                           "expires_at": 4102444800})
    response = get_token(app.test_client(), session_token="some-session")
    assert (response.status_code, response.json["code"]) == (401, "session_expired")


def test_cache_holds_no_readable_secret_in_keys_or_values(client, auth, service_env):
    session_token = auth.add_session(EMAIL)
    refresh_token = auth.add_refresh_token(EMAIL)
    answers = [get_token(client, email=EMAIL, password=PASSWORD).json,
               get_token(client, session_token=session_token).json,
               get_token(client, refresh_token=refresh_token).json,
               get_token(client, email=EMAIL_OTP_EMAIL, password=PASSWORD).json]
    secrets = [EMAIL, PASSWORD, EMAIL_OTP_EMAIL, session_token, refresh_token]
    secrets += [answer[name] for answer in answers
                for name in ("access_token", "session_token", "refresh_token") if name in answer]
    assert len(secrets) == 11
    with diskcache.Cache(service_env["CACHE_DIR"], disk=diskcache.JSONDisk) as cache:
        keys = [key for key in cache.iterkeys() if key.startswith("token:")]
        # password, session and refresh entries, two spent tokens' successors, a pending sign-in
        assert len(keys) >= 6
        for key in keys:
            assert key.startswith("token:v2:")
            assert re.fullmatch(r"token:v2:([a-z]+:)?[0-9a-f]{64}(:reset)?", key)
            assert all(secret not in key for secret in secrets)
    stored = cache_files_bytes(service_env["CACHE_DIR"])
    for secret in secrets:
        assert secret.encode() not in stored


def test_cache_directory_is_private(client, auth, service_env):
    get_token(client, email=EMAIL, password=PASSWORD)
    assert os.stat(service_env["CACHE_DIR"]).st_mode & 0o777 == 0o700


def test_unusable_cache_dir_falls_back_with_one_warning(make_app, auth, emulator, tmp_path,
                                                        monkeypatch, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    fallback_root = tmp_path / "tmp"
    fallback_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(fallback_root))
    client = make_app(CACHE_DIR=str(blocker / "cache")).test_client()
    with caplog.at_level(logging.WARNING):
        assert get_token(client, email=EMAIL, password=PASSWORD).status_code == 200
        calls = upstream_calls(emulator)
        assert get_token(client, email=EMAIL, password=PASSWORD).status_code == 200
    assert upstream_calls(emulator) == calls
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cache" in warnings[0].getMessage()
    assert any(fallback_root.iterdir())


def test_concurrent_identical_logins_log_in_once(app, auth, emulator):
    results = []

    def login():
        results.append(get_token(app.test_client(), email=EMAIL, password=PASSWORD))

    threads = [threading.Thread(target=login) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [200] * 4
    assert len({r.json["access_token"] for r in results}) == 1
    assert len(emulator.requests_to("/api/accounts/password/verify")) == 1


# -- /send_message with other credentials --------------------------------------------------------

def test_send_message_with_session_token_works_end_to_end(client, auth, emulator):
    session_token = auth.add_session(EMAIL)
    first = client.post("/send_message", data={"session_token": session_token, "prompt": "Hi"})
    assert first.status_code == 200, first.json
    assert first.json["text"] == "Echo: Hi"
    second = client.post("/send_message", data={"session_token": session_token, "prompt": "Again"})
    assert second.status_code == 200, second.json
    assert len(emulator.requests_to("/api/auth/session")) == 1


def test_send_message_with_refresh_token_works(client, auth, emulator):
    refresh_token = auth.add_refresh_token(EMAIL)
    response = client.post("/send_message", json={"refresh_token": refresh_token, "prompt": "Hi"})
    assert response.status_code == 200, response.json
    assert len(emulator.requests_to("/oauth/token")) == 1


def test_send_message_with_expired_session_token_is_401(client, auth):
    session_token = auth.add_session(EMAIL)
    auth.expire_session(session_token)
    response = client.post("/send_message", data={"session_token": session_token, "prompt": "Hi"})
    assert (response.status_code, response.json["code"]) == (401, "session_expired")


def test_send_message_takes_only_one_credential(client, auth, token, emulator):
    response = client.post("/send_message", data={"access_token": token, "prompt": "Hi",
                                                  "session_token": auth.add_session(EMAIL)})
    assert (response.status_code, response.json["code"]) == (400, "conflicting_fields")
    assert upstream_calls(emulator) == 0
