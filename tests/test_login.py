"""POST /get_access_token: the three login flows against the emulator's login pages, over real
HTTP through curl_cffi, and the on-disk token cache in front of them."""
import logging
import os
import tempfile
import threading

import diskcache
import jwt
import pytest

from chatgpt_web.tokens import Credential

EMAIL, PASSWORD = "ada@example.com", "correct horse battery staple"
MFA_EMAIL, OTP = "grace@example.com", "424242"
PROFILE_CLAIM = "https://api.openai.com/profile"
AUTH_CLAIM = "https://api.openai.com/auth"


@pytest.fixture
def auth(emulator):
    """The emulator's login pages with two accounts, one of them with MFA."""
    emulator.auth.add_account(EMAIL, PASSWORD)
    emulator.auth.add_account(MFA_EMAIL, PASSWORD, otp=OTP)
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

def test_email_and_password_log_in_through_the_browser_flow(client, auth, emulator):
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert response.status_code == 200, response.json
    body = response.json
    token_claims = claims(body["access_token"])
    assert token_claims[PROFILE_CLAIM]["email"] == EMAIL
    assert AUTH_CLAIM in token_claims
    assert body["expires_at"] == token_claims["exp"]
    assert body["session_token"] in auth.sessions
    paths = [r.path for r in emulator.requests]
    assert paths == ["/api/auth/csrf", "/api/auth/signin/auth0", "/authorize",
                     "/u/login/identifier", "/u/login/identifier", "/u/login/password",
                     "/authorize/resume", "/api/auth/callback/auth0", "/api/auth/session"]


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


def test_account_with_mfa_logs_in_with_otp(client, auth, emulator):
    response = get_token(client, email=MFA_EMAIL, password=PASSWORD, otp=OTP)
    assert response.status_code == 200, response.json
    assert claims(response.json["access_token"])[PROFILE_CLAIM]["email"] == MFA_EMAIL
    assert [r.path for r in emulator.requests].count("/authorize/resume") == 2


def test_otp_as_shown_by_authenticator_apps_is_accepted(client, auth):
    response = get_token(client, email=MFA_EMAIL, password=PASSWORD, otp="424 242")
    assert response.status_code == 200, response.json


def test_login_state_is_read_from_the_page_when_authorize_does_not_redirect(client, auth):
    auth.switches.state_in_body_only = True
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert response.status_code == 200, response.json


def test_session_token_gives_access_token_and_the_rotated_cookie(client, auth, emulator):
    session_token = auth.add_session(EMAIL)
    response = get_token(client, session_token=session_token)
    assert response.status_code == 200, response.json
    assert claims(response.json["access_token"])[PROFILE_CLAIM]["email"] == EMAIL
    rotated = response.json["session_token"]
    assert rotated != session_token and rotated in auth.sessions
    sent = emulator.requests_to("/api/auth/session")[0]
    assert sent.headers.get("cookie") == f"__Secure-next-auth.session-token={session_token}"


def test_rotated_session_token_finds_the_cached_access_token(client, auth, emulator):
    first = get_token(client, session_token=auth.add_session(EMAIL)).json
    calls = upstream_calls(emulator)
    second = get_token(client, session_token=first["session_token"])
    assert second.json["access_token"] == first["access_token"]
    assert upstream_calls(emulator) == calls


def test_refresh_token_gives_access_token(client, auth, emulator):
    refresh_token = auth.add_refresh_token(EMAIL)
    response = get_token(client, refresh_token=refresh_token)
    assert response.status_code == 200, response.json
    assert claims(response.json["access_token"])[PROFILE_CLAIM]["email"] == EMAIL
    assert "refresh_token" not in response.json
    sent = emulator.requests_to("/oauth/token")[0].json
    assert sent["grant_type"] == "refresh_token" and sent["refresh_token"] == refresh_token
    assert sent["client_id"] == "pdlLIX2Y72MIl2rhLhTE9VV9bN905kBh"


def test_rotated_refresh_token_is_handed_back(client, auth):
    auth.switches.rotate_refresh_tokens = True
    refresh_token = auth.add_refresh_token(EMAIL)
    response = get_token(client, refresh_token=refresh_token)
    assert response.status_code == 200, response.json
    assert response.json["refresh_token"] != refresh_token
    assert not auth.refresh_tokens[response.json["refresh_token"]]["revoked"]


# -- failures ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, status, code", [
    ({"email": EMAIL, "password": "wrong password"}, 401, "invalid_credentials"),
    ({"email": "nobody@example.com", "password": PASSWORD}, 401, "invalid_credentials"),
    ({"email": MFA_EMAIL, "password": PASSWORD}, 401, "mfa_required"),
    ({"email": MFA_EMAIL, "password": PASSWORD, "otp": "000000"}, 401, "invalid_otp"),
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
    ("password", {"email": EMAIL, "password": PASSWORD}),
    ("oauth_token", {"refresh_token": None}),
])
def test_http_429_during_login_is_429_with_retry_after(client, auth, step, fields):
    if "refresh_token" in fields:
        fields = {"refresh_token": auth.add_refresh_token(EMAIL)}
    auth.switches.rate_limited_at = step
    response = get_token(client, **fields)
    assert (response.status_code, response.json["code"]) == (429, "login_rate_limited")
    assert response.headers["Retry-After"] == "30"


PASSWORD_STEPS = [("csrf", "login: csrf"), ("signin", "login: signin"),
                  ("authorize", "login: authorize"), ("identifier", "login: identifier"),
                  ("password", "login: password"), ("resume", "login: resume"),
                  ("callback", "login: callback"), ("session", "login: session")]


@pytest.mark.parametrize("step, name", PASSWORD_STEPS + [("mfa", "login: mfa")])
def test_cloudflare_page_anywhere_in_the_password_flow_is_502_naming_the_step(
        client, auth, step, name):
    auth.switches.cloudflare_at = step
    response = get_token(client, email=MFA_EMAIL, password=PASSWORD, otp=OTP)
    assert (response.status_code, response.json["code"]) == (502, "login_failed")
    assert response.json["message"].startswith(name + ":")
    assert "Just a moment" not in response.json["message"]
    assert "<" not in response.json["message"]


@pytest.mark.parametrize("step, name", [s for s in PASSWORD_STEPS if s[0] != "identifier"])
def test_unexpected_page_in_the_password_flow_is_502_naming_the_step(client, auth, step, name):
    auth.switches.unexpected_at = step
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert (response.status_code, response.json["code"]) == (502, "login_failed")
    assert response.json["message"].startswith(name + ":")
    assert "Maintenance" not in response.json["message"]


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
    ({"otp": OTP}, "missing_field"),
    ({"email": EMAIL, "password": PASSWORD, "session_token": "s"}, "conflicting_fields"),
    ({"session_token": "s", "refresh_token": "r"}, "conflicting_fields"),
    ({"session_token": "s", "otp": OTP}, "conflicting_fields"),
])
def test_missing_or_conflicting_credentials_are_400_without_upstream_call(
        client, auth, emulator, fields, code):
    response = get_token(client, **fields)
    assert (response.status_code, response.json["code"]) == (400, code)
    assert upstream_calls(emulator) == 0


def test_secrets_never_reach_the_logs(client, auth, caplog):
    caplog.set_level(logging.DEBUG)
    session_token = auth.add_session(EMAIL)
    get_token(client, email=EMAIL, password=PASSWORD)
    get_token(client, email=EMAIL, password="wrong password")
    get_token(client, session_token=session_token)
    for secret in (PASSWORD, "wrong password", session_token):
        assert secret not in caplog.text


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
    logins = len(emulator.requests_to("/u/login/password"))
    second = get_token(client, email=EMAIL, password=PASSWORD, force="true")
    assert second.status_code == 200
    assert len(emulator.requests_to("/u/login/password")) == logins + 1
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
    key = Credential.password(EMAIL, PASSWORD).cache_key()
    stale = emulator.mint_access_token(exp_in=-60, email=EMAIL)
    with diskcache.Cache(service_env["CACHE_DIR"], disk=diskcache.JSONDisk) as cache:
        cache.set(key, {"access_token": stale, "expires_at": claims(stale)["exp"]})
    response = get_token(app.test_client(), email=EMAIL, password=PASSWORD)
    assert response.status_code == 200
    assert response.json["access_token"] != stale
    assert len(emulator.requests_to("/u/login/password")) == 1


def test_unparsable_token_in_the_store_is_never_served(app, auth, emulator, service_env):
    key = Credential.session_token("some-session").cache_key()
    with diskcache.Cache(service_env["CACHE_DIR"], disk=diskcache.JSONDisk) as cache:
        cache.set(key, {"access_token": "not-a-jwt", "expires_at": 4102444800})
    response = get_token(app.test_client(), session_token="some-session")
    assert (response.status_code, response.json["code"]) == (401, "session_expired")


def test_cache_holds_no_secret_in_keys_and_no_password_at_all(client, auth, service_env):
    session_token = auth.add_session(EMAIL)
    refresh_token = auth.add_refresh_token(EMAIL)
    answers = [get_token(client, email=EMAIL, password=PASSWORD).json,
               get_token(client, session_token=session_token).json,
               get_token(client, refresh_token=refresh_token).json]
    secrets = [EMAIL, PASSWORD, session_token, refresh_token]
    secrets += [answer["session_token"] for answer in answers if "session_token" in answer]
    with diskcache.Cache(service_env["CACHE_DIR"], disk=diskcache.JSONDisk) as cache:
        keys = [key for key in cache.iterkeys() if key.startswith("token:")]
        assert len(keys) >= 3
        for key in keys:
            assert key.startswith("token:v1:") and len(key) == len("token:v1:") + 64
            assert all(secret not in key for secret in secrets)
            assert set(cache.get(key)) == {"access_token", "expires_at"}
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
    assert len(emulator.requests_to("/u/login/password")) == 1


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
