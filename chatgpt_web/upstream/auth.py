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

import json
import re
import uuid
import warnings
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlencode, urljoin, urlsplit

from ..config import Config
from ..errors import ApiError
from ..transport import Response, Session, new_session, upstream_errors
from .browser import Chrome, sentinel_config
from .endpoints import from_base_url
from .errors import is_cloudflare_page, login_error
from .pow import DEFAULT_BUILD_ID, ProofOfWorkSolver, requirements_token_2026

SESSION_COOKIE = "__Secure-next-auth.session-token"
# NextAuth splits a longer cookie value into `name.0`, `name.1`, ...: 4096 bytes per cookie less
# its estimate of what the attributes take (163).
COOKIE_CHUNK = 4096 - 163
MAX_SESSION_CHUNKS = 10


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

STEP_TIMEOUT = 30.0
_MAX_REDIRECTS = 5
_MAX_PAGES = 8
# `state` as it appears in a Location, a link or a form of the Auth0 pages (OpenAIAuth reads it from
# the body; the value itself is URL-safe, so anything else ends it).
_STATE_IN_TEXT = re.compile(rb"""state=([A-Za-z0-9._~%-]+)""")
_HEADERS = {"Accept-Language": "en-US,en;q=0.9"}
# auth.openai.com page types (the `page.type` of each JSON answer) and what they ask for.
_PASSWORD_PAGES = {"login_password"}
_EMAIL_CODE_PAGES = {"email_otp_verification", "email_otp_send"}
_TOTP_PAGES = {"mfa_challenge", "mfa_verify", "totp_challenge"}
_SIGNUP_PAGES = {"create_account_password", "create_account", "about_you"}


@dataclass(frozen=True)
class LoginResult:
    """An access token, plus the credentials the upstream issued anew while getting it."""

    access_token: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)  # a rotated or new session cookie
    refresh_token: str | None = field(default=None, repr=False)  # the rotated refresh token
    second_factor: bool = False  # the login passed a one-time code (e-mailed or authenticator)
    client_id: str | None = None  # the OAuth client that took the refresh token


class PendingLogin(dict):
    """A sign-in stopped at an e-mailed code: the cookie jar and page that a later call with the
    code resumes (a new sign-in would mail a new code and void the one the caller holds).
    Holds login cookies: whoever keeps it must encrypt it."""


def session_cookie_header(token: str) -> str:
    """The Cookie header that carries session `token` as NextAuth expects: one cookie when it
    fits, else `name.0`, `name.1`, ... of COOKIE_CHUNK characters."""
    if len(token) <= COOKIE_CHUNK:
        return f"{SESSION_COOKIE}={token}"
    chunks = [token[i:i + COOKIE_CHUNK] for i in range(0, len(token), COOKIE_CHUNK)]
    return "; ".join(f"{SESSION_COOKIE}.{n}={chunk}" for n, chunk in enumerate(chunks))


def join_session_token(text: str) -> str:
    """The session token in what a caller pasted: the value itself (as devtools shows the joined
    cookie), or a Cookie header / list of `name=value` pairs, whose numbered chunks are joined."""
    text = text.strip()
    if SESSION_COOKIE not in text:
        return text
    whole, pieces = None, {}
    for pair in re.split(r"[;\n]", text):
        name, _, value = pair.strip().partition("=")
        name, value = name.strip(), value.strip()
        if name == SESSION_COOKIE:
            whole = value
        elif name.startswith(SESSION_COOKIE + ".") and name.rsplit(".", 1)[1].isdigit():
            pieces[int(name.rsplit(".", 1)[1])] = value
    if whole:
        return whole
    if pieces and sorted(pieces) == list(range(len(pieces))):
        return "".join(pieces[n] for n in sorted(pieces))
    return text


def login_with_password(config: Config, email: str, password: str, otp: str | None = None,
                        pending: PendingLogin | None = None) -> LoginResult:
    """Sign in as the browser does; `pending` resumes a sign-in that stopped at an e-mailed code.

    :raise Unauthorized: invalid_credentials, mfa_required, invalid_otp (the message says which
        kind of code; an mfa_required for an e-mailed code carries `.pending`).
    :raise RateLimited: login_rate_limited.
    :raise UpstreamError: login_failed (Cloudflare or an unexpected page), naming the step.
    """
    if config.login_flow == "auth0":
        return _login_auth0(config, email, password, otp)
    return _OpenAILogin(config).run(email, password, otp, pending)


def login_with_session_token(config: Config, session_token: str) -> LoginResult:
    """Exchange the browser's session cookie for an access token.

    :raise Unauthorized: session_expired.
    :raise RateLimited: login_rate_limited.
    :raise UpstreamError: login_failed.
    """
    flow = _Flow(config)
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
    flow = _Flow(config)
    clients = refresh_clients(config, client_id)
    with flow.session:
        for number, client in enumerate(clients, 1):
            body = {"client_id": client.client_id, "grant_type": "refresh_token",
                    "refresh_token": refresh_token}
            if client.redirect_uri:
                body["redirect_uri"] = client.redirect_uri
            response = flow.post(step, flow.auth("/oauth/token"), json=body)
            if not _refused(response):
                break
            code = _error_code(response)
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
                **_HEADERS, "Authorization": f"Bearer {access_token}",
                "Accept": "application/json"})
    except ApiError:
        return None
    if response.status_code == 200:
        return True
    if _refused(response, (401, 403)):
        return False
    return None


class _OpenAILogin:
    """The sign-in of today: NextAuth's `openai` provider, then auth.openai.com's JSON pages."""

    def __init__(self, config: Config):
        self.config = config
        self.flow = _Flow(config)
        self.chrome = Chrome.from_target(config.impersonate)
        self.solver = ProofOfWorkSolver(max_difficulty=config.pow_max_difficulty)
        self.device_id = str(uuid.uuid4())
        self.second_factor = False
        self.resumed = False

    def run(self, email: str, password: str, otp: str | None,
            pending: PendingLogin | None) -> LoginResult:
        flow = self.flow
        with flow.session:
            if pending:
                answer = self._resume(pending)
            else:
                self._start(email)
                answer = self._accounts("login: email", "/api/accounts/authorize/continue",
                                        "authorize_continue",
                                        {"username": {"kind": "email", "value": email}},
                                        refused="invalid_credentials")
            code = "".join(otp.split()) if otp else None  # apps show "123 456"
            for _ in range(_MAX_PAGES):
                page = answer.get("page") if isinstance(answer.get("page"), dict) else {}
                kind = page.get("type")
                if kind in _PASSWORD_PAGES:
                    answer = self._accounts("login: password", "/api/accounts/password/verify",
                                            "password_verify", {"password": password},
                                            refused="invalid_credentials")
                elif kind in _SIGNUP_PAGES:
                    raise login_error("invalid_credentials", "login: email",
                                      "no account uses this e-mail address")
                elif kind in _EMAIL_CODE_PAGES:
                    answer = self._email_code(code)
                    code = None  # one code per call: another page asking for one needs a new one
                elif kind in _TOTP_PAGES:
                    answer = self._totp(page, code)
                    code = None
                elif isinstance(answer.get("continue_url"), str):
                    self._follow_to_callback("login: callback", answer["continue_url"])
                    break
                else:
                    raise login_error("login_failed", "login: page",
                                      "an answer named no known page and no continue_url")
            else:
                raise login_error("login_failed", "login: page", "too many pages")
            result = flow.exchange_session("login: session", "login_failed")
        return LoginResult(result.access_token, result.session_token,
                           second_factor=self.second_factor)

    def _start(self, email: str) -> None:
        flow = self.flow
        csrf = flow.json("login: csrf", flow.get("login: csrf", flow.base("/api/auth/csrf")))
        csrf_token = csrf.get("csrfToken")
        if not isinstance(csrf_token, str):
            raise login_error("login_failed", "login: csrf", "the answer has no csrfToken")
        step = "login: signin"
        query = urlencode({"prompt": "login", "ext-oai-did": self.device_id,
                           "screen_hint": "login_or_signup", "login_hint": email,
                           "auth_session_logging_id": str(uuid.uuid4())})
        response = flow.post(step, flow.base("/api/auth/signin/openai?" + query),
                             data={"callbackUrl": "/", "csrfToken": csrf_token, "json": "true"})
        authorize_url = flow.json(step, response).get("url")
        if not isinstance(authorize_url, str):
            raise login_error("login_failed", step, "the answer has no url")
        if (_query_value(authorize_url, "error")
                or urlsplit(authorize_url).path.endswith("/api/auth/error")):
            raise login_error("login_rate_limited", step)
        step = "login: authorize"
        page = flow.open_page(step, authorize_url)
        # /authorize always sends the browser on to the sign-in page: an answer of its own is
        # an error or maintenance page.
        if page.url and urlsplit(str(page.url)).path == urlsplit(authorize_url).path:
            raise login_error("login_failed", step, "the sign-in page did not open")

    def _email_code(self, code: str | None) -> dict:
        step = "login: e-mailed code"
        self.second_factor = True
        # A new sign-in mails a new code and voids older ones: a code the caller already holds
        # belongs to the sign-in that stopped here before, which the next call resumes.
        if not code or not self.resumed:
            error = login_error("mfa_required", step, "the account asks for the one-time code "
                                "just e-mailed to it: call again with it as otp within a few "
                                "minutes")
            error.param = "otp"
            error.pending = PendingLogin(cookies=self.flow.cookies(), device_id=self.device_id,
                                         page={"type": "email_otp_verification"})
            raise error
        return self._accounts(step, "/api/accounts/email-otp/validate", "email_otp_validate",
                              {"code": code}, refused="invalid_otp",
                              refused_reason="the e-mailed one-time code was refused")

    def _totp(self, page: dict, code: str | None) -> dict:
        step = "login: authenticator code"
        self.second_factor = True
        if not code:
            error = login_error("mfa_required", step, "the account has two-factor "
                                "authentication: pass the authenticator app's current code as otp")
            error.param = "otp"
            raise error
        payload = page.get("payload") if isinstance(page.get("payload"), dict) else {}
        factors = payload.get("factors") if isinstance(payload.get("factors"), list) else []
        factor = next((f for f in factors if isinstance(f, dict) and f.get("type") == "totp"
                       and isinstance(f.get("id"), str)), None)
        if factor is None:
            raise login_error("login_failed", step, "the page offers no authenticator factor")
        return self._accounts(step, "/api/accounts/mfa/verify", "mfa_verify",
                              {"type": "totp", "id": factor["id"], "code": code},
                              refused="invalid_otp",
                              refused_reason="the authenticator code was refused")

    def _resume(self, pending: PendingLogin) -> dict:
        self.resumed = True
        self.device_id = str(pending.get("device_id") or self.device_id)
        self.flow.restore_cookies(pending.get("cookies") or [])
        return {"page": pending.get("page") or {}}

    def _accounts(self, step: str, path: str, flow_name: str, body: dict, *, refused: str,
                  refused_reason: str | None = None) -> dict:
        """POST one auth.openai.com step with its sentinel token; the JSON answer, routed by
        its error code when it has one."""
        flow = self.flow
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Origin": _origin(flow.config.auth_url),
                   "openai-sentinel-token": self._sentinel_token(step, flow_name)}
        response = flow.post(step, flow.auth(path), data=json.dumps(body), headers=headers)
        if is_cloudflare_page(response.content) or response.status_code == 429:
            flow.check(step, response)
        try:
            answer = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            flow.check(step, response)
            raise login_error("login_failed", step, "the answer is not the expected JSON")
        error = answer.get("error")
        if error or response.status_code >= 400:
            code = _error_code(response) or ""
            if "sentinel" in code:
                raise login_error("login_failed", step, "the anti-bot check refused the call")
            if code == "invalid_auth_step":
                raise login_error("login_failed", step, "the sign-in session was not found "
                                  "(its cookies were refused or it expired)")
            if response.status_code in (400, 401, 403):
                raise login_error(refused, step, refused_reason)
            flow.check(step, response)
        return answer

    def _sentinel_token(self, step: str, flow_name: str) -> str:
        """The `openai-sentinel-token` header of one step: JSON {p, t, c, id, flow}, where `c`
        comes from the sentinel's /req for this flow and `p` is the proof of work it asked for."""
        flow = self.flow
        config = self._fingerprint()
        p = requirements_token_2026(config)
        with upstream_errors(step + " (sentinel)"):
            response = flow.session.post(
                _sentinel_url(self.config), timeout=STEP_TIMEOUT,
                data=json.dumps({"p": p, "id": self.device_id, "flow": flow_name},
                                separators=(",", ":")),
                headers={**_HEADERS, "Content-Type": "text/plain;charset=UTF-8"})
        answer = flow.json(step + " (sentinel)", response)
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise login_error("login_failed", step, "the sentinel answer has no token")
        proof = p
        work = answer.get("proofofwork") if isinstance(answer.get("proofofwork"), dict) else {}
        if work.get("required"):
            try:
                proof = self.solver.fnv_proof_token(str(work.get("seed", "")),
                                                    str(work.get("difficulty", "")), config)
            except ApiError:
                raise login_error("login_failed", step,
                                  "the sentinel's proof of work could not be solved") from None
        return json.dumps({"p": proof, "t": "", "c": token, "id": self.device_id,
                           "flow": flow_name}, separators=(",", ":"))

    def _fingerprint(self) -> list:
        """The browser config of the auth pages' sentinel: the 2026 layout, but the screen as
        "WIDTHxHEIGHT" text in slot 0, as sentinel.openai.com's SDK writes it (the chat SDK
        writes a number)."""
        sdk_url = _origin(_sentinel_url(self.config)) + "/backend-api/sentinel/sdk.js"
        config = sentinel_config(self.chrome, build_id=DEFAULT_BUILD_ID, sdk_url=sdk_url)
        config[0] = "1920x1080"
        return config

    def _follow_to_callback(self, step: str, url: str) -> None:
        """Follow `continue_url` through its redirects to NextAuth's callback, which sets the
        session cookie."""
        flow = self.flow
        if _origin(url) not in flow.origins:
            raise login_error("login_failed", step, "the next page is on an unexpected host")
        for _ in range(_MAX_REDIRECTS):
            response = flow.get(step, url)
            if "/api/auth/callback/" in urlsplit(url).path:
                flow.redirect(step, response)  # NextAuth answers 302 home, or to its error page
                if urlsplit(response.headers.get("Location") or "").path.endswith(
                        "/api/auth/error"):
                    raise login_error("login_failed", step, "the callback was refused")
                if not flow.session_token():
                    raise login_error("login_failed", step, "no session cookie was set")
                return
            url = flow.redirect(step, response)
        raise login_error("login_failed", step, "too many redirects")


def _sentinel_url(config: Config) -> str:
    """The sentinel that auth.openai.com's pages call: sentinel.openai.com beside auth.openai.com;
    for any other CHATGPT_AUTH_URL (a mirror, the emulator) the same origin serves it."""
    parts = urlsplit(config.auth_url)
    host = parts.netloc
    if host.startswith("auth."):
        host = "sentinel." + host[len("auth."):]
    return f"{parts.scheme}://{host}/backend-api/sentinel/req"


def _login_auth0(config: Config, email: str, password: str, otp: str | None) -> LoginResult:
    """The 2023 sign-in (CHATGPT_LOGIN_FLOW=auth0): NextAuth `auth0`, then Auth0's HTML forms."""
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

        callback_url, second_factor = flow.resume("login: resume", resume_url, otp)
        step = "login: callback"
        response = flow.get(step, callback_url)
        flow.redirect(step, response)
        if not flow.session_token():
            raise login_error("login_failed", step, "no session cookie was set")

        result = flow.exchange_session("login: session", "login_failed")
    return LoginResult(result.access_token, result.session_token, second_factor=second_factor)


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

    def post(self, step: str, url: str, headers: dict | None = None, **kwargs) -> Response:
        with upstream_errors(step):
            response = self.session.post(url, headers={**_HEADERS, **(headers or {})},
                                         timeout=STEP_TIMEOUT, **kwargs)
        self._remember_session_cookie(response)
        return response

    def open_page(self, step: str, url: str) -> Response:
        """GET `url` and follow its redirects (within our origins) to the page they end on."""
        if _origin(url) not in self.origins:
            raise login_error("login_failed", step, "the sign-in URL leads to an unexpected host")
        for _ in range(_MAX_REDIRECTS):
            response = self.get(step, url)
            if response.status_code not in (301, 302, 303, 307, 308):
                return self.check(step, response)
            url = self.redirect(step, response)
        raise login_error("login_failed", step, "too many redirects")

    def cookies(self) -> list[list[str]]:
        """This flow's cookie jar as [name, value, domain, path] rows (secrets: encrypt them)."""
        return [[c.name, c.value or "", c.domain or "", c.path or "/"]
                for c in self.session.cookies.jar]

    def restore_cookies(self, rows: list) -> None:
        for row in rows:
            if isinstance(row, list) and len(row) == 4 and all(isinstance(v, str) for v in row):
                name, value, domain, path = row
                with warnings.catch_warnings():
                    # curl_cffi notes that a `__Host-` cookie keeps its host and path "/": it
                    # does, as it did when it was read.
                    warnings.simplefilter("ignore")
                    self.session.cookies.set(name, value, domain=domain, path=path)

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

    def resume(self, step: str, resume_url: str, otp: str | None) -> tuple[str, bool]:
        """Follow /authorize/resume to the NextAuth callback URL, answering the one-time-code
        challenge on the way if the account has MFA; (that URL, whether a code was asked)."""
        target = self.redirect(step, self.get(step, resume_url))
        second_factor = urlsplit(target).path.endswith("/u/mfa-otp-challenge")
        if second_factor:
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
        return target, second_factor

    def exchange_session(self, step: str, refused: str, given: str | None = None) -> LoginResult:
        """`GET /api/auth/session`; `refused` is the outcome when it has no access token.

        With `given`, that session cookie is sent; otherwise the one in this flow's jar is.
        """
        cookie = session_cookie_header(given) if given else None
        response = self.get(step, self.base("/api/auth/session"), cookie=cookie)
        if _refused(response, (401, 403)):
            raise login_error(refused, step)
        answer = self.json(step, response)
        access_token = answer.get("accessToken")
        # NextAuth answers 200 `{}` (or with error RefreshAccessTokenError) for a dead session.
        if answer.get("error") or not isinstance(access_token, str) or not access_token:
            raise login_error(refused, step)
        rotated = self.session_token()
        if rotated is None and isinstance(answer.get("sessionToken"), str):
            # The 2026 answer also names the session token in its body.
            rotated = answer["sessionToken"] or None
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


def _error_code(response: Response) -> str | None:
    """The error code of an OAuth / auth.openai.com JSON answer: `{"error": "<code>"}` (OAuth)
    or `{"error": {"code": "<code>", ...}}` (2026)."""
    try:
        answer = json.loads(response.content[:100_000])
    except (ValueError, UnicodeDecodeError):
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        error = error.get("code")
    return error if isinstance(error, str) else None


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
