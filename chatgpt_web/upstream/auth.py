"""The three ways to get an access token from a ChatGPT web account (docs/protocol-auth.md).

* `login_with_password()`: the browser's sign-in. By default (CHATGPT_LOGIN_FLOW=openai) NextAuth's
  `openai` provider and the JSON pages of auth.openai.com, each step routed by the `page.type` of
  the answer before it; with CHATGPT_LOGIN_FLOW=auth0 the 2023 Auth0 pages. One cookie jar, every
  redirect followed by us (sessions never follow redirects) within the configured origins.
* `login_with_session_token()`: `GET /api/auth/session` with the NextAuth session cookie, sent in
  numbered chunks when it is too long for one cookie; the cookie the answer rotates is handed back.
* `login_with_refresh_token()`: the OAuth refresh grant at `{CHATGPT_AUTH_URL}/oauth/token`, with
  the client id the token was issued to; the rotated refresh token is handed back.

`check_access_token()` asks `GET /backend-api/me` whether the backend still takes an access token.
Every request runs inside a named step ("login: password", ...). Failures become errors through
`upstream.errors.login_error()` and name the step, never the page, the password or a token.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..errors import ApiError
from ..transport import new_session, upstream_errors
from .endpoints import from_base_url
from .errors import login_error
from .signin_auth0 import login_auth0
from .signin_flow import (
    HEADERS,
    STEP_TIMEOUT,
    LoginResult,
    SignInFlow,
    error_code,
    join_session_token,
    refused,
)
from .signin_openai import OpenAISignIn, PendingLogin

__all__ = ["KNOWN_REFRESH_CLIENTS", "LoginResult", "PendingLogin", "RefreshClient",
           "check_access_token", "join_session_token", "login_with_password",
           "login_with_refresh_token", "login_with_session_token", "refresh_clients"]


@dataclass(frozen=True)
class RefreshClient:
    """An OAuth client that refresh tokens are issued to, and how its app sends the refresh."""

    client_id: str
    redirect_uri: str | None = None


_IOS_REDIRECT = "com.openai.chat://auth.openai.com/ios/com.openai.chat/callback"
# The known clients, in the order they are tried when neither the account nor the configuration
# names one (docs/protocol-auth.md): the iOS app before 2025, the iOS app since 2025, Codex.
KNOWN_REFRESH_CLIENTS = (
    RefreshClient("pdlLIX2Y72MIl2rhLhTE9VV9bN905kBh", _IOS_REDIRECT),
    RefreshClient("app_LlGpXReQgckcGGUo2JrYvtJK", _IOS_REDIRECT),
    RefreshClient("app_EMoamEEZ73f0CkXaXp7hrann"),
)
# Error codes of /oauth/token meaning "not this client": nothing was spent, try the next one.
_WRONG_CLIENT = {"invalid_client", "unauthorized_client"}

def login_with_password(config: Config, email: str, password: str, otp: str | None = None,
                        pending: PendingLogin | None = None) -> LoginResult:
    """Sign in as the browser does; `pending` resumes a sign-in that stopped at an e-mailed code.

    :raise Unauthorized: invalid_credentials, mfa_required, invalid_otp (the message says which
        kind of code; an mfa_required for an e-mailed code carries `.pending`).
    :raise RateLimited: login_rate_limited.
    :raise UpstreamError: login_failed (Cloudflare or an unexpected page), naming the step.
    """
    if config.login_flow == "auth0":
        return login_auth0(config, email, password, otp)
    return OpenAISignIn(config).run(email, password, otp, pending)


def login_with_session_token(config: Config, session_token: str) -> LoginResult:
    """Exchange the browser's session cookie for an access token.

    :raise Unauthorized: session_expired.
    :raise RateLimited: login_rate_limited.
    :raise UpstreamError: login_failed.
    """
    flow = SignInFlow(config)
    with flow.session:
        return flow.exchange_session("session token: session", "session_expired",
                                     given=session_token)


def refresh_clients(config: Config, client_id: str | None = None) -> list[RefreshClient]:
    """The clients to try for a refresh token: the account's, else the configured one, else the
    known ones in turn."""
    chosen = client_id or config.refresh_client_id
    if chosen:
        known = {client.client_id: client for client in KNOWN_REFRESH_CLIENTS}
        return [known.get(chosen, RefreshClient(chosen))]
    return list(KNOWN_REFRESH_CLIENTS)


def login_with_refresh_token(config: Config, refresh_token: str,
                             client_id: str | None = None) -> LoginResult:
    """Exchange a refresh token for an access token at `{CHATGPT_AUTH_URL}/oauth/token`.

    The token is spent by a successful answer: the rotated one in the result is the only one
    that works from then on (using a spent one revokes its whole family).

    :raise Unauthorized: refresh_token_invalid, refresh_token_reused.
    :raise RateLimited: login_rate_limited.
    :raise UpstreamError: login_failed.
    """
    step = "refresh token: oauth/token"
    flow = SignInFlow(config)
    clients = refresh_clients(config, client_id)
    with flow.session:
        for number, client in enumerate(clients, 1):
            body = {"client_id": client.client_id, "grant_type": "refresh_token",
                    "refresh_token": refresh_token}
            if client.redirect_uri:
                body["redirect_uri"] = client.redirect_uri
            response = flow.post(step, flow.auth("/oauth/token"), json=body)
            if not refused(response):
                break
            code = error_code(response)
            if code in _WRONG_CLIENT and number < len(clients):
                continue
            if code == "refresh_token_reused":
                raise login_error("refresh_token_reused", step)
            raise login_error("refresh_token_invalid", step)
        answer = flow.json(step, response)
    access_token = answer.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise login_error("login_failed", step, "the answer has no access_token")
    rotated = answer.get("refresh_token")
    rotated = rotated if isinstance(rotated, str) and rotated and rotated != refresh_token else None
    return LoginResult(access_token, refresh_token=rotated, client_id=client.client_id)


def check_access_token(config: Config, access_token: str) -> bool | None:
    """Whether the backend takes `access_token` (`GET /backend-api/me`): True, False when it
    refuses it (401/403 such as token_invalidated or account_deactivated), None when it cannot
    tell (unreachable, Cloudflare, a 5xx): then nothing should be concluded."""
    url = from_base_url(config.base_url).url("/me")
    try:
        with new_session(config) as session, upstream_errors("account check"):
            response = session.get(url, timeout=STEP_TIMEOUT, headers={
                **HEADERS, "Authorization": f"Bearer {access_token}",
                "Accept": "application/json"})
    except ApiError:
        return None
    if response.status_code == 200:
        return True
    if refused(response, (401, 403)):
        return False
    return None
