"""The 2023 sign-in (CHATGPT_LOGIN_FLOW=auth0), for mirrors that still serve it: NextAuth
`signin/auth0`, Auth0's HTML forms (`/u/login/identifier`, `/u/login/password`,
`/u/mfa-otp-challenge`), `/authorize/resume`, the callback and `/api/auth/session`.
"""
from __future__ import annotations

import re
from urllib.parse import unquote, urlencode, urlsplit

from ..config import Config
from .errors import login_error
from .signin_flow import MAX_REDIRECTS, LoginResult, SignInFlow, origin, query_value, refused

# `state` as it appears in a Location, a link or a form of the Auth0 pages (OpenAIAuth reads it from
# the body; the value itself is URL-safe, so anything else ends it).
_STATE_IN_TEXT = re.compile(rb"""state=([A-Za-z0-9._~%-]+)""")


def login_auth0(config: Config, email: str, password: str, otp: str | None) -> LoginResult:
    """The 2023 sign-in (CHATGPT_LOGIN_FLOW=auth0): NextAuth `auth0`, then Auth0's HTML forms."""
    flow = SignInFlow(config)
    with flow.session:
        authorize_url = flow.next_auth_signin("/api/auth/signin/auth0?prompt=login")
        state = _authorize(flow, "login: authorize", authorize_url)

        step = "login: identifier"
        identifier_url = flow.auth("/u/login/identifier?" + urlencode({"state": state}))
        flow.check(step, flow.get(step, identifier_url))
        response = flow.post(step, identifier_url, data={
            "state": state, "username": email, "js-available": "false",
            "webauthn-available": "true", "is-brave": "false",
            "webauthn-platform-available": "true", "action": "default"})
        if refused(response):
            raise login_error("invalid_credentials", step)
        flow.check(step, response, ok=(200, 302))

        step = "login: password"
        response = flow.post(step, flow.auth("/u/login/password?" + urlencode({"state": state})),
                             data={"state": state, "username": email, "password": password,
                                   "action": "default"})
        if refused(response):
            raise login_error("invalid_credentials", step)
        resume_url = flow.redirect(step, response, "/authorize/resume")

        callback_url, second_factor = _resume(flow, "login: resume", resume_url, otp)
        step = "login: callback"
        response = flow.get(step, callback_url)
        flow.redirect(step, response)
        if not flow.session_token():
            raise login_error("login_failed", step, "no session cookie was set")

        result = flow.exchange_session("login: session", "login_failed")
    return LoginResult(result.access_token, result.session_token, second_factor=second_factor)


def _authorize(flow: SignInFlow, step: str, url: str) -> str:
    """Open the provider's /authorize URL and return the login `state`, taken from the first
    Location that carries it, or else from the final URL or page."""
    if origin(url) not in flow.origins:
        raise login_error("login_failed", step, "the sign-in URL leads to an unexpected host")
    for _ in range(MAX_REDIRECTS):
        response = flow.get(step, url)
        if response.status_code in (301, 302, 303, 307, 308):
            url = flow.redirect(step, response)
            state = query_value(url, "state")
            if state and "/u/login" in urlsplit(url).path:
                return state
            continue
        flow.check(step, response)
        # A followed URL names the login state only once it is a login page; before that,
        # its `state` is NextAuth's, not the provider's.
        state = _state_in_body(response.content)
        if "/u/login" in urlsplit(url).path:
            state = query_value(url, "state") or state
        if state:
            return state
        raise login_error("login_failed", step, "no login state in the answer")
    raise login_error("login_failed", step, "too many redirects")


def _resume(flow: SignInFlow, step: str, resume_url: str, otp: str | None) -> tuple[str, bool]:
    """Follow /authorize/resume to the NextAuth callback URL, answering the one-time-code
    challenge on the way if the account has MFA; (that URL, whether a code was asked)."""
    target = flow.redirect(step, flow.get(step, resume_url))
    second_factor = urlsplit(target).path.endswith("/u/mfa-otp-challenge")
    if second_factor:
        mfa_step = "login: mfa"
        if not otp:
            raise login_error("mfa_required", mfa_step)
        state = query_value(target, "state")
        if not state:
            raise login_error("login_failed", mfa_step, "no state in the challenge URL")
        response = flow.post(mfa_step, target,
                             # Authenticator apps show "123 456"; the form wants digits.
                             data={"state": state, "code": "".join(otp.split()),
                                   "action": "default"})
        if refused(response):
            raise login_error("invalid_otp", mfa_step)
        resume_url = flow.redirect(mfa_step, response, "/authorize/resume")
        target = flow.redirect(step, flow.get(step, resume_url))
    if "/api/auth/callback/" not in urlsplit(target).path:
        raise login_error("login_failed", step, "unexpected redirect")
    return target, second_factor


def _state_in_body(body: bytes) -> str | None:
    match = _STATE_IN_TEXT.search(body[:200_000])
    if not match:
        return None
    return unquote(match.group(1).decode("ascii"))
