"""The three ways to get an access token from a ChatGPT web account (protocol §5).

* `login_with_password()`: the browser's NextAuth + Auth0 login (§5.2) against CHATGPT_BASE_URL and
  CHATGPT_AUTH_URL, in one cookie jar, following every redirect ourselves (sessions never follow
  redirects) so each step can be checked, then `/api/auth/session`.
* `login_with_session_token()`: `GET /api/auth/session` with the `__Secure-next-auth.session-token`
  cookie (§5.1); the cookie the upstream rotates in its answer is handed back.
* `login_with_refresh_token()`: the iOS app's refresh grant at `{auth}/oauth/token` (§5.3).

Every request runs inside a named step ("login: password", ...). Failures become errors through
`upstream.errors.login_error()` and name the step, never the page, the password or a token.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlencode, urljoin, urlsplit

from ..config import Config
from ..transport import Response, Session, new_session, upstream_errors
from .errors import is_cloudflare_page, login_error

SESSION_COOKIE = "__Secure-next-auth.session-token"
# The iOS app's public OAuth client (protocol §5.3): refresh tokens are issued to it.
IOS_CLIENT_ID = "pdlLIX2Y72MIl2rhLhTE9VV9bN905kBh"
IOS_REDIRECT_URI = "com.openai.chat://auth0.openai.com/ios/com.openai.chat/callback"

STEP_TIMEOUT = 30.0
_MAX_REDIRECTS = 5
# `state` as it appears in a Location, a link or a form of the Auth0 pages (OpenAIAuth reads it from
# the body; the value itself is URL-safe, so anything else ends it).
_STATE_IN_TEXT = re.compile(rb"""state=([A-Za-z0-9._~%-]+)""")
_HEADERS = {"Accept-Language": "en-US,en;q=0.9"}


@dataclass(frozen=True)
class LoginResult:
    """An access token, plus the credentials the upstream issued anew while getting it."""

    access_token: str
    session_token: str | None = None  # the rotated or new session cookie, when one was set
    refresh_token: str | None = None  # a new refresh token, when the provider rotated it


def login_with_password(config: Config, email: str, password: str,
                        otp: str | None = None) -> LoginResult:
    """Sign in as the browser does (protocol §5.2).

    :raise Unauthorized: invalid_credentials, mfa_required, invalid_otp.
    :raise RateLimited: login_rate_limited.
    :raise UpstreamError: login_failed (Cloudflare or an unexpected page), naming the step.
    """
    flow = _Flow(config)
    with flow.session:
        csrf = flow.json("login: csrf", flow.get("login: csrf", flow.base("/api/auth/csrf")))
        csrf_token = csrf.get("csrfToken")
        if not isinstance(csrf_token, str):
            raise login_error("login_failed", "login: csrf", "the answer has no csrfToken")

        step = "login: signin"
        response = flow.post(step, flow.base("/api/auth/signin/auth0?prompt=login"),
                             data={"callbackUrl": "/", "csrfToken": csrf_token, "json": "true"})
        authorize_url = flow.json(step, response).get("url")
        if not isinstance(authorize_url, str):
            raise login_error("login_failed", step, "the answer has no url")
        # NextAuth reports a refused sign-in (Auth0 rate limit) as a url to its error page.
        if (_query_value(authorize_url, "error")
                or urlsplit(authorize_url).path.endswith("/api/auth/error")):
            raise login_error("login_rate_limited", step)

        state = flow.authorize("login: authorize", authorize_url)

        step = "login: identifier"
        identifier_url = flow.auth("/u/login/identifier?" + urlencode({"state": state}))
        flow.check(step, flow.get(step, identifier_url))
        response = flow.post(step, identifier_url, data={
            "state": state, "username": email, "js-available": "false",
            "webauthn-available": "true", "is-brave": "false",
            "webauthn-platform-available": "true", "action": "default"})
        if _refused(response):
            raise login_error("invalid_credentials", step)
        flow.check(step, response, ok=(200, 302))

        step = "login: password"
        response = flow.post(step, flow.auth("/u/login/password?" + urlencode({"state": state})),
                             data={"state": state, "username": email, "password": password,
                                   "action": "default"})
        if _refused(response):
            raise login_error("invalid_credentials", step)
        resume_url = flow.redirect(step, response, "/authorize/resume")

        callback_url = flow.resume("login: resume", resume_url, otp)
        step = "login: callback"
        response = flow.get(step, callback_url)
        flow.redirect(step, response)
        if not flow.session_token():
            raise login_error("login_failed", step, "no session cookie was set")

        return flow.exchange_session("login: session", "login_failed")


def login_with_session_token(config: Config, session_token: str) -> LoginResult:
    """Exchange the browser's session cookie for an access token (protocol §5.1).

    :raise Unauthorized: session_expired.
    :raise RateLimited: login_rate_limited.
    :raise UpstreamError: login_failed.
    """
    flow = _Flow(config)
    with flow.session:
        return flow.exchange_session("session token: session", "session_expired",
                                     given=session_token)


def login_with_refresh_token(config: Config, refresh_token: str) -> LoginResult:
    """Exchange a refresh token of the iOS app for an access token (protocol §5.3).

    :raise Unauthorized: refresh_token_invalid.
    :raise RateLimited: login_rate_limited.
    :raise UpstreamError: login_failed.
    """
    step = "refresh token: oauth/token"
    flow = _Flow(config)
    with flow.session:
        response = flow.post(step, flow.auth("/oauth/token"), json={
            "client_id": IOS_CLIENT_ID, "grant_type": "refresh_token",
            "redirect_uri": IOS_REDIRECT_URI, "refresh_token": refresh_token})
        if _refused(response):
            raise login_error("refresh_token_invalid", step)
        answer = flow.json(step, response)
    access_token = answer.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise login_error("login_failed", step, "the answer has no access_token")
    rotated = answer.get("refresh_token")
    rotated = rotated if isinstance(rotated, str) and rotated and rotated != refresh_token else None
    return LoginResult(access_token, refresh_token=rotated)


class _Flow:
    """One login: one curl_cffi session (one cookie jar) and the checks every step shares."""

    def __init__(self, config: Config):
        self.config = config
        self.session: Session = new_session(config)
        # Redirects are followed only within the two configured origins: the flow must not be
        # steered to a host the operator did not choose.
        self.origins = {_origin(config.base_url), _origin(config.auth_url)}
        self._cookie_from_answers: str | None = None

    def base(self, path: str) -> str:
        return self.config.base_url + path

    def auth(self, path: str) -> str:
        return self.config.auth_url + path

    def get(self, step: str, url: str, cookie: str | None = None) -> Response:
        # A given cookie goes in the header as is: the jar would re-flag `__Secure-` cookies.
        headers = {**_HEADERS, "Cookie": cookie} if cookie else _HEADERS
        with upstream_errors(step):
            response = self.session.get(url, headers=headers, timeout=STEP_TIMEOUT)
        self._remember_session_cookie(response)
        return response

    def post(self, step: str, url: str, **kwargs) -> Response:
        with upstream_errors(step):
            response = self.session.post(url, headers=_HEADERS, timeout=STEP_TIMEOUT, **kwargs)
        self._remember_session_cookie(response)
        return response

    def check(self, step: str, response: Response, ok: tuple[int, ...] = (200,)) -> Response:
        """Return `response` if its status is in `ok`; else the error for Cloudflare, a rate
        limit or an unexpected answer at `step`."""
        if response.status_code in ok and not is_cloudflare_page(response.content):
            return response
        if is_cloudflare_page(response.content):
            raise login_error("login_failed", step,
                              "the upstream answered with a Cloudflare challenge page; use a "
                              "residential CHATGPT_PROXY or a session token")
        if response.status_code == 429:
            raise login_error("login_rate_limited", step,
                              retry_after=_retry_after(response))
        raise login_error("login_failed", step,
                          f"unexpected answer (HTTP {response.status_code})")

    def json(self, step: str, response: Response) -> dict:
        """The JSON object of a 200 answer at `step`."""
        self.check(step, response)
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise login_error("login_failed", step, "the answer is not the expected JSON")
        return data

    def redirect(self, step: str, response: Response, path: str | None = None) -> str:
        """The absolute Location of a redirect at `step`, which must lead to one of our origins
        (and to `path`, if given)."""
        self.check(step, response, ok=(301, 302, 303, 307, 308))
        location = response.headers.get("Location") or ""
        target = urljoin(str(response.url or ""), location) if location else ""
        if not target or _origin(target) not in self.origins:
            raise login_error("login_failed", step, "unexpected redirect")
        if path and not urlsplit(target).path.endswith(path):
            raise login_error("login_failed", step, "unexpected redirect")
        return target

    def authorize(self, step: str, url: str) -> str:
        """Open the provider's /authorize URL and return the login `state`, taken from the first
        Location that carries it, or else from the final URL or page (§5.2 step 3)."""
        if _origin(url) not in self.origins:
            raise login_error("login_failed", step, "the sign-in URL leads to an unexpected host")
        for _ in range(_MAX_REDIRECTS):
            response = self.get(step, url)
            if response.status_code in (301, 302, 303, 307, 308):
                url = self.redirect(step, response)
                state = _query_value(url, "state")
                if state and "/u/login" in urlsplit(url).path:
                    return state
                continue
            self.check(step, response)
            # A followed URL names the login state only once it is a login page; before that,
            # its `state` is NextAuth's, not the provider's.
            state = _state_in_body(response.content)
            if "/u/login" in urlsplit(url).path:
                state = _query_value(url, "state") or state
            if state:
                return state
            raise login_error("login_failed", step, "no login state in the answer")
        raise login_error("login_failed", step, "too many redirects")

    def resume(self, step: str, resume_url: str, otp: str | None) -> str:
        """Follow /authorize/resume to the NextAuth callback URL, answering the one-time-code
        challenge on the way if the account has MFA (§5.2 step 7)."""
        target = self.redirect(step, self.get(step, resume_url))
        if urlsplit(target).path.endswith("/u/mfa-otp-challenge"):
            mfa_step = "login: mfa"
            if not otp:
                raise login_error("mfa_required", mfa_step)
            state = _query_value(target, "state")
            if not state:
                raise login_error("login_failed", mfa_step, "no state in the challenge URL")
            response = self.post(mfa_step, target,
                                 # Authenticator apps show "123 456"; the form wants digits.
                                 data={"state": state, "code": "".join(otp.split()),
                                       "action": "default"})
            if _refused(response):
                raise login_error("invalid_otp", mfa_step)
            resume_url = self.redirect(mfa_step, response, "/authorize/resume")
            target = self.redirect(step, self.get(step, resume_url))
        if "/api/auth/callback/" not in urlsplit(target).path:
            raise login_error("login_failed", step, "unexpected redirect")
        return target

    def exchange_session(self, step: str, refused: str, given: str | None = None) -> LoginResult:
        """`GET /api/auth/session`; `refused` is the outcome when it has no access token.

        With `given`, that session cookie is sent; otherwise the one in this flow's jar is.
        """
        cookie = f"{SESSION_COOKIE}={given}" if given else None
        response = self.get(step, self.base("/api/auth/session"), cookie=cookie)
        if _refused(response, (401, 403)):
            raise login_error(refused, step)
        answer = self.json(step, response)
        access_token = answer.get("accessToken")
        # NextAuth answers 200 `{}` (or with error RefreshAccessTokenError) for a dead session.
        if answer.get("error") or not isinstance(access_token, str) or not access_token:
            raise login_error(refused, step)
        rotated = self.session_token()
        if given is not None and rotated == given:
            rotated = None
        return LoginResult(access_token, session_token=rotated)

    def session_token(self) -> str | None:
        """The newest session cookie the upstream set in this flow, if any."""
        return self._cookie_from_answers

    def _remember_session_cookie(self, response: Response) -> None:
        token = _session_cookie_in(response)
        if token:
            self._cookie_from_answers = token


def _refused(response: Response, statuses: tuple[int, ...] = (400, 401, 403)) -> bool:
    """True if the provider refused what we sent (as opposed to a Cloudflare wall)."""
    return response.status_code in statuses and not is_cloudflare_page(response.content)


def _session_cookie_in(response: Response) -> str | None:
    """The session cookie set by `response`'s Set-Cookie headers. NextAuth splits cookies over
    4 KB into `name.0`, `name.1`, ...; the pieces are joined in order."""
    whole, pieces = None, {}
    for header in _set_cookie_headers(response):
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0].strip()
        name = name.strip()
        if not value:
            continue  # a deletion (NextAuth clears the cookie of a dead session)
        if name == SESSION_COOKIE:
            whole = value
        elif name.startswith(SESSION_COOKIE + ".") and name.rsplit(".", 1)[1].isdigit():
            pieces[int(name.rsplit(".", 1)[1])] = value
    if whole:
        return whole
    if pieces:
        return "".join(pieces[index] for index in sorted(pieces))
    return None


def _set_cookie_headers(response: Response) -> list[str]:
    headers = response.headers
    if hasattr(headers, "get_list"):
        return list(headers.get_list("set-cookie") or [])
    value = headers.get("set-cookie")
    return [value] if value else []


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _query_value(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def _state_in_body(body: bytes) -> str | None:
    match = _STATE_IN_TEXT.search(body[:200_000])
    if not match:
        return None
    return unquote(match.group(1).decode("ascii"))


def _retry_after(response: Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None
