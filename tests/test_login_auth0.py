"""CHATGPT_LOGIN_FLOW=auth0: the 2023 sign-in on Auth0's HTML pages, for mirrors that still serve
it, against the emulator's Auth0 pages over real HTTP."""
import pytest

EMAIL, PASSWORD = "ada@example.com", "correct horse battery staple"
MFA_EMAIL, OTP = "grace@example.com", "424242"
PROFILE_CLAIM = "https://api.openai.com/profile"


@pytest.fixture
def client(make_app):
    return make_app(CHATGPT_LOGIN_FLOW="auth0").test_client()


@pytest.fixture
def auth(emulator):
    emulator.auth.add_account(EMAIL, PASSWORD)
    emulator.auth.add_account(MFA_EMAIL, PASSWORD, otp=OTP)
    return emulator.auth


def get_token(client, **fields):
    return client.post("/get_access_token", data=fields)


def test_email_and_password_log_in_through_the_auth0_pages(client, auth, emulator):
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert response.status_code == 200, response.json
    assert response.json["session_token"] in auth.live_sessions(EMAIL)
    paths = [r.path for r in emulator.requests]
    assert paths == ["/api/auth/csrf", "/api/auth/signin/auth0", "/authorize",
                     "/u/login/identifier", "/u/login/identifier", "/u/login/password",
                     "/authorize/resume", "/api/auth/callback/auth0", "/api/auth/session",
                     "/backend-api/me"]


def test_account_with_mfa_logs_in_with_otp(client, auth, emulator):
    response = get_token(client, email=MFA_EMAIL, password=PASSWORD, otp="424 242")
    assert response.status_code == 200, response.json
    assert [r.path for r in emulator.requests].count("/authorize/resume") == 2


def test_login_state_is_read_from_the_page_when_authorize_does_not_redirect(client, auth):
    auth.switches.state_in_body_only = True
    assert get_token(client, email=EMAIL, password=PASSWORD).status_code == 200


@pytest.mark.parametrize("fields, code", [
    ({"email": EMAIL, "password": "wrong password"}, "invalid_credentials"),
    ({"email": "nobody@example.com", "password": PASSWORD}, "invalid_credentials"),
    ({"email": MFA_EMAIL, "password": PASSWORD}, "mfa_required"),
    ({"email": MFA_EMAIL, "password": PASSWORD, "otp": "000000"}, "invalid_otp"),
])
def test_refused_sign_ins_are_401(client, auth, fields, code):
    response = get_token(client, **fields)
    assert (response.status_code, response.json["code"]) == (401, code)


def test_a_second_factor_login_is_not_served_from_the_cache_without_the_code(client, auth,
                                                                            emulator):
    assert get_token(client, email=MFA_EMAIL, password=PASSWORD, otp=OTP).status_code == 200
    calls = len(emulator.requests)
    response = get_token(client, email=MFA_EMAIL, password=PASSWORD)
    assert (response.status_code, response.json["code"]) == (401, "mfa_required")
    assert len(emulator.requests) == calls


PASSWORD_STEPS = [("csrf", "login: csrf"), ("signin", "login: signin"),
                  ("authorize", "login: authorize"), ("identifier", "login: identifier"),
                  ("password", "login: password"), ("resume", "login: resume"),
                  ("callback", "login: callback"), ("session", "login: session")]


@pytest.mark.parametrize("step, name", PASSWORD_STEPS + [("mfa", "login: mfa")])
def test_cloudflare_page_anywhere_in_the_flow_is_502_naming_the_step(client, auth, step, name):
    auth.switches.cloudflare_at = step
    response = get_token(client, email=MFA_EMAIL, password=PASSWORD, otp=OTP)
    assert (response.status_code, response.json["code"]) == (502, "login_failed")
    assert response.json["message"].startswith(name + ":")
    assert "<" not in response.json["message"]


@pytest.mark.parametrize("step, name", [s for s in PASSWORD_STEPS if s[0] != "identifier"])
def test_unexpected_page_in_the_flow_is_502_naming_the_step(client, auth, step, name):
    auth.switches.unexpected_at = step
    response = get_token(client, email=EMAIL, password=PASSWORD)
    assert (response.status_code, response.json["code"]) == (502, "login_failed")
    assert response.json["message"].startswith(name + ":")
    assert "Maintenance" not in response.json["message"]
