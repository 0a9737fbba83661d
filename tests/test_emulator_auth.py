"""The emulator's sign-in pages on their own, spoken to over HTTP as a browser would: sentinel
tokens on api/accounts/*, chunked rotating session cookies, refresh-token families, /me."""
import base64
import json

import pytest
from curl_cffi import requests as curl_requests

from tests.emulator.auth_pages import (
    COOKIE_CHUNK,
    IOS_CLIENT_ID,
    IOS_LEGACY_CLIENT_ID,
    REFRESH_REUSED,
    SESSION_COOKIE,
    totp,
)

EMAIL, PASSWORD = "ada@example.com", "pw-0123456789"


def requirements_token() -> str:
    return "gAAAAAC" + base64.b64encode(json.dumps([1920, "date", 1, 1]).encode()).decode()


@pytest.fixture
def browser(emulator):
    """A cookie jar at the authorize step of a sign-in, its device id, and no proof of work."""
    emulator.auth.add_account(EMAIL, PASSWORD)
    emulator.auth.switches.sentinel_pow_required = False
    session = curl_requests.Session(allow_redirects=False)
    session.device_id = "0b1c2d3e-0000-4000-8000-000000000000"
    response = session.get(emulator.url + "/api/accounts/authorize", params={
        "redirect_uri": emulator.url + "/api/auth/callback/openai", "state": "s",
        "device_id": session.device_id})
    assert response.status_code == 302 and response.headers["Location"] == "/log-in"
    return session


def sentinel_header(emulator, session, flow, **override) -> str:
    answer = session.post(emulator.url + "/backend-api/sentinel/req", data=json.dumps(
        {"p": requirements_token(), "id": session.device_id, "flow": flow})).json()
    header = {"p": requirements_token(), "t": "", "c": answer["token"],
              "id": session.device_id, "flow": flow, **override}
    return json.dumps(header)


def continue_with_email(emulator, session, header):
    return session.post(emulator.url + "/api/accounts/authorize/continue",
                        json={"username": {"kind": "email", "value": EMAIL}},
                        headers={"openai-sentinel-token": header} if header else {})


def test_totp_matches_the_rfc_6238_test_vector():
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp(secret, at=59) == "287082" and totp(secret, at=1111111109) == "081804"


def test_accounts_calls_need_a_sentinel_token_of_their_flow(emulator, browser):
    assert continue_with_email(emulator, browser, None).status_code == 403
    wrong_flow = sentinel_header(emulator, browser, "password_verify")
    assert continue_with_email(emulator, browser, wrong_flow).status_code == 403
    other_device = sentinel_header(emulator, browser, "authorize_continue", id="another")
    assert continue_with_email(emulator, browser, other_device).status_code == 403
    header = sentinel_header(emulator, browser, "authorize_continue")
    answer = continue_with_email(emulator, browser, header)
    assert answer.status_code == 200
    assert answer.json()["page"]["type"] == "login_password"
    reused = continue_with_email(emulator, browser, header)
    assert reused.status_code == 403 and reused.json()["error"]["code"] == "invalid_sentinel_token"


def test_a_required_proof_of_work_must_be_solved(emulator, browser):
    emulator.auth.switches.sentinel_pow_required = True
    unsolved = sentinel_header(emulator, browser, "authorize_continue")
    assert continue_with_email(emulator, browser, unsolved).status_code == 403


def test_routing_is_by_page_type_and_an_unknown_email_is_offered_sign_up(emulator, browser):
    emulator.auth.accounts.clear()
    answer = continue_with_email(emulator, browser,
                                 sentinel_header(emulator, browser, "authorize_continue"))
    assert answer.status_code == 200
    assert answer.json()["page"]["type"] == "create_account_password"


def test_a_long_session_cookie_is_set_in_chunks_and_rotated_once(emulator):
    token = emulator.auth.add_session(EMAIL)
    chunks = {"Cookie": f"{SESSION_COOKIE}.0={token[:COOKIE_CHUNK]}; "
                        f"{SESSION_COOKIE}.1={token[COOKIE_CHUNK:]}"}
    first = curl_requests.get(emulator.url + "/api/auth/session", headers=chunks)
    assert first.json()["accessToken"]
    set_cookies = first.headers.get_list("set-cookie")
    assert any(c.startswith(f"{SESSION_COOKIE}.0=") for c in set_cookies)
    assert any(c.startswith(f"{SESSION_COOKIE}.1=") for c in set_cookies)
    assert first.json()["sessionToken"] in emulator.auth.live_sessions(EMAIL)
    # The cookie just rotated is refused from now on.
    assert curl_requests.get(emulator.url + "/api/auth/session", headers=chunks).json() == {}


def refresh(emulator, token, client_id=IOS_LEGACY_CLIENT_ID):
    return curl_requests.post(emulator.url + "/oauth/token", json={
        "grant_type": "refresh_token", "refresh_token": token, "client_id": client_id})


def test_refresh_tokens_rotate_and_a_reuse_revokes_the_whole_family(emulator):
    first = emulator.auth.add_refresh_token(EMAIL)
    second = refresh(emulator, first).json()["refresh_token"]
    reused = refresh(emulator, first)
    assert reused.status_code == 401
    assert reused.json()["error"] == {"message": REFRESH_REUSED, "type": "invalid_request_error",
                                      "param": None, "code": "refresh_token_reused"}
    newest = refresh(emulator, second)
    assert newest.status_code == 401
    assert newest.json()["error"]["code"] == "refresh_token_invalidated"


def test_a_refresh_token_is_taken_only_from_its_own_client(emulator):
    token = emulator.auth.add_refresh_token(EMAIL, client_id=IOS_CLIENT_ID)
    wrong = refresh(emulator, token)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_client"
    assert refresh(emulator, token, IOS_CLIENT_ID).status_code == 200  # nothing was spent


def test_me_refuses_an_invalidated_account_with_token_invalidated(emulator):
    token = emulator.mint_access_token(email=EMAIL)
    me = emulator.url + "/backend-api/me"
    headers = {"Authorization": f"Bearer {token}"}
    assert curl_requests.get(me, headers=headers).json()["email"] == EMAIL
    emulator.auth.invalidate_access_tokens(EMAIL)
    refused = curl_requests.get(me, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["detail"]["code"] == "token_invalidated"
